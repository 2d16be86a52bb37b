"""Every table of the engine, in one place: what the engine remembers.

Tables are changelog-backed and stored in RocksDB; their values are compact byte records
(``schemas.state``) encoded and decoded by the pure code, not by Faust's codecs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from streams.settings import Settings


@dataclass(frozen=True)
class Tables:
    member_to_state: TableT
    """member_id (UTF-8) -> encoded ``schemas.state.MemberState``."""
    erased_members: TableT
    """SHA-256 of an erased member_id -> b"1": later events for it are refused, and the
    member id itself is not kept."""
    referral_code_to_member: TableT
    """Referral code -> member_id of its owner (b"" once the owner was erased). Keyed and
    partitioned by code, so a claim is answered by one partition."""


def _raw_table(app: faust.App, name: str, settings: Settings) -> TableT:
    table = app.Table(name, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    # Faust derives a table's codecs from its types and picks JSON for ``bytes``; the
    # store and the changelog topic are created lazily from these attributes, so setting
    # them here makes both carry the bytes unchanged.
    table.key_serializer = "raw"  # type: ignore[attr-defined]
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table


def define_tables(app: faust.App, settings: Settings) -> Tables:
    return Tables(
        member_to_state=_raw_table(app, "member_to_state", settings),
        erased_members=_raw_table(app, "erased_members", settings),
        referral_code_to_member=_raw_table(app, "referral_code_to_member", settings),
    )


def partition_items(table: TableT, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) this worker holds in one partition of a raw RocksDB table.

    Faust has no public per-partition iteration; the daily job needs exactly the members of
    the partition whose command it is processing (their changelog partition).
    """
    store: Any = table.data
    for key, value in store._db_for_partition(partition).items():
        if key != store.offset_key:  # Faust's own changelog offset lives beside the data
            yield key, value
