"""The one grammar of identifiers: what ingest accepts and the HTTP API answers for.

An id (``member_id``, ``transaction_id``, ``event_id``, ``request_id``, ``reward_id``,
``station_id``, ...) is 1-64 ASCII characters: letters, digits and ``. _ : @ + -``, starting
with a letter or a digit. No spaces, no control or invisible characters (NUL, newline,
U+200B, U+202E), so an id prints, logs, sits in a URL path and compares as it reads.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 64
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}"
"""The grammar as a regular expression (unanchored; the JSON Schemas anchor it)."""

TYPED_CODE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@+ -]{0,63}"
"""A coupon or referral code as a person typed it: the id grammar, and spaces between
groups (``R7Z XNQ SDJ3``), which the engine drops when it reads the code."""

_ID = re.compile(ID_PATTERN)
_TYPED_CODE = re.compile(TYPED_CODE_PATTERN)


def is_identifier(text: str) -> bool:
    """True when ``text`` is an id of the grammar above (its length included)."""
    return _ID.fullmatch(text) is not None


def is_typed_code(text: str) -> bool:
    """True when ``text`` is a code as typed: an id that may also hold spaces."""
    return _TYPED_CODE.fullmatch(text) is not None
