"""Which partition owns a member: the Kafka default partitioner (murmur2 of the key).

POS clients may use another partitioner (librdkafka's default is CRC32) or a wrong key, so
the engine checks ownership itself and forwards misplaced transactions to their owner.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def owner_partition(member_key: bytes, partitions: int) -> int:
    """The partition the Java client and aiokafka's default partitioner choose for the key."""
    return (murmur2(member_key) & 0x7FFFFFFF) % partitions
