"""Which partition owns a member: the Kafka default partitioner (murmur2 of the key).

POS clients may use another partitioner (librdkafka's default is CRC32) or a wrong key, so
the engine checks ownership itself and forwards misplaced transactions to their owner.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

from loyalty.schemas.decode import InvalidEvent


@lru_cache(maxsize=1 << 16)
def owner_partition(member_key: bytes, partitions: int) -> int:
    """The partition the Java client and aiokafka's default partitioner choose for the key."""
    return (murmur2(member_key) & 0x7FFFFFFF) % partitions


WRONG_PARTITION = "wrong_partition"
"""Dead-letter reason: a record of an internal topic away from its key's owner partition,
or keyed otherwise than by its body's id."""


def check_placement(key: bytes | None, body_id: str, partition: int, partitions: int) -> bytes:
    """The owner key of a record read from an internal topic (``*.rekeyed``,
    ``loyalty.member-commands``, ``loyalty.stock-commands``, ``loyalty.redemption-steps``,
    ``loyalty.referrals``), which the engine writes keyed by the id in the record's body and
    on that key's owner partition; raises :class:`InvalidEvent` (``wrong_partition``) for a
    record written any other way, which the partition's state must not take."""
    owner_key = body_id.encode()
    if key != owner_key:
        raise InvalidEvent(
            WRONG_PARTITION,
            f"record keyed {key[:80]!r} is for {body_id!r}"
            if key
            else f"record without key is for {body_id!r}",
        )
    owner = owner_partition(owner_key, partitions)
    if partition != owner:
        raise InvalidEvent(
            WRONG_PARTITION, f"record for {body_id!r} is on partition {partition}, not {owner}"
        )
    return owner_key
