"""Deterministic output ids: the same input event always yields the same ids."""

from __future__ import annotations

import hashlib
from uuid import NAMESPACE_URL, UUID, uuid5

_NAMESPACE: UUID = uuid5(NAMESPACE_URL, "https://github.com/loyalty-stream/loyalty-stream")
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE.bytes)


def derive_id(*parts: str) -> str:
    """A UUIDv5 of ``parts`` (e.g. source kind, source event id, output kind, reason)."""
    # What uuid5(_NAMESPACE, name) returns, a few times faster (every output needs an id):
    # the namespace is hashed once, and the text is formatted without a UUID object.
    digest = _NAMESPACE_SHA1.copy()
    digest.update("/".join(parts).encode())
    hex_ = digest.hexdigest()
    variant = int(hex_[16], 16) & 0x3 | 0x8  # RFC 4122 variant bits 10xx
    return f"{hex_[:8]}-{hex_[8:12]}-5{hex_[13:16]}-{variant:x}{hex_[17:20]}-{hex_[20:32]}"
