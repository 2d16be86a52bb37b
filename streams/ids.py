"""Deterministic output ids: the same input event always yields the same ids."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

_NAMESPACE: UUID = uuid5(NAMESPACE_URL, "https://github.com/loyalty-stream/loyalty-stream")


def derive_id(*parts: str) -> str:
    """A UUIDv5 of ``parts`` (e.g. source kind, source event id, output kind, reason)."""
    return str(uuid5(_NAMESPACE, "/".join(parts)))
