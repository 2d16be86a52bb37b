"""Short, human-typeable codes (Crockford base32: no I, L, O or U to misread).

Coupon codes carry a tag of their owner and a check character, so a station can be told
"not yours" or "unknown" for a code without asking another partition which member owns it.
"""

from __future__ import annotations

import hashlib

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})

OWNER_TAG_LENGTH = 3
COUPON_BODY_LENGTH = 6
REFERRAL_CODE_LENGTH = 8


def _encode(digest: bytes, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(ALPHABET[index])
    return "".join(chars)


def _hash(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _check_char(payload: str) -> str:
    return ALPHABET[sum((i + 1) * ALPHABET.index(c) for i, c in enumerate(payload)) % 32]


def normalize(code: str) -> str:
    """What a person typed, as the canonical code: upper case, no separators, 0 for O."""
    return code.upper().replace("-", "").replace(" ", "").translate(_LOOK_ALIKES)


def referral_code(member_id: str) -> str:
    return _encode(_hash("referral", member_id), REFERRAL_CODE_LENGTH)


def owner_tag(member_id: str) -> str:
    return _encode(_hash("owner", member_id), OWNER_TAG_LENGTH)


def coupon_code(owner_id: str, source: str) -> str:
    """The coupon code ``source`` (e.g. the event that earned it) issues to ``owner_id``."""
    payload = owner_tag(owner_id) + _encode(_hash("coupon", owner_id, source), COUPON_BODY_LENGTH)
    return payload + _check_char(payload)


def is_well_formed_coupon(code: str) -> bool:
    """True for a code this engine could have issued (right length, alphabet, check char)."""
    length = OWNER_TAG_LENGTH + COUPON_BODY_LENGTH + 1
    return (
        len(code) == length
        and all(c in ALPHABET for c in code)
        and _check_char(code[:-1]) == code[-1]
    )
