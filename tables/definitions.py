"""Every table of the engine, in one place: what the engine remembers.

Tables are changelog-backed and stored in RocksDB; their values are compact byte records
(``schemas.state``) encoded and decoded by the pure code, not by Faust's codecs.

The account agent writes its tables in batches, below Faust's per-key ``table[key] = value``
(which reads the partition from the current event and sends one changelog record at a
time, its local write ahead of the changelog): :func:`read` and :func:`write_local` address
one partition's RocksDB database directly, and :func:`write_local` records the changelog
offset the write corresponds to, exactly as Faust does after a changelog send, so recovery
on restart reads the changelog from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT
from rocksdict import WriteBatch

from loyalty.streams.settings import Settings
from loyalty.streams.topics import TABLE_NAMES


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
    redemption_requests: TableT
    """request_id -> encoded ``schemas.state.RedemptionRequest``: a redemption's saga, kept by
    the partition of its request id (its coordinator)."""
    reward_stock: TableT
    """reward_id -> encoded ``schemas.state.RewardStock``: units reserved from a reward, by
    the one partition that decides its stock."""


ROCKSDB_OPTIONS = {
    "write_buffer_size": 16 * 2**20,
    "max_write_buffer_number": 2,
    "block_cache_size": 32 * 2**20,
}
"""Per partition database. Faust's defaults (3 x 64 MiB memtables and a 2 GiB block cache
for each of the 24 databases of 3 tables x 8 partitions) let a busy worker's memory grow
without a useful bound; these cap a partition at 64 MiB."""


def _raw_table(app: faust.App, name: str, settings: Settings) -> TableT:
    table = app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=dict(ROCKSDB_OPTIONS),
    )
    # Faust derives a table's codecs from its types and picks JSON for ``bytes``; the
    # store and the changelog topic are created lazily from these attributes, so setting
    # them here makes both carry the bytes unchanged.
    table.key_serializer = "raw"  # type: ignore[attr-defined]
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table


def define_tables(app: faust.App, settings: Settings) -> Tables:
    return Tables(*(_raw_table(app, name, settings) for name in TABLE_NAMES))


def partition_items(table: TableT, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) this worker holds in one partition of a raw RocksDB table.

    Faust has no public per-partition iteration; the daily job needs exactly the members of
    the partition whose command it is processing (their changelog partition).
    """
    store: Any = table.data
    for key, value in store._db_for_partition(partition).items():
        if key != store.offset_key:  # Faust's own changelog offset lives beside the data
            yield key, value


def read(table: TableT, partition: int, key: bytes) -> bytes | None:
    """The value of ``key`` in one partition of a raw table (None when absent)."""
    store: Any = table.data
    value: bytes | None = store._db_for_partition(partition).get(key)
    return value


def write_local(
    table: TableT, partition: int, changes: dict[bytes, bytes | None], changelog_offset: int
) -> None:
    """Apply ``changes`` (None deletes) to one partition of a raw table, atomically, with the
    offset of its last changelog record (already acknowledged by Kafka)."""
    store: Any = table.data
    batch = WriteBatch(raw_mode=True)
    for key, value in changes.items():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    batch.put(store.offset_key, str(changelog_offset).encode())
    store._db_for_partition(partition).write(batch)
