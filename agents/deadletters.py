"""Sending rejected input to the dead-letter topic, original bytes included (cut to fit)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from faust.types import TopicT

from loyalty.core.ids import derive_id
from loyalty.core.render import iso_from_ms
from loyalty.schemas.outputs import DeadLetter
from loyalty.streams import metrics
from loyalty.streams.topics import MAX_MESSAGE_BYTES

MAX_TEXT_CHARS = 1000
"""Longest ``message`` of a dead letter (an error's text can quote a whole value)."""
KEPT_KEY_BYTES = 16 * 1024
"""Most bytes of the original key a dead letter keeps, and uses as its own Kafka key."""
FRAMING_BYTES = 32 * 1024
"""Room in a dead letter for all but the original key and value: its other fields (the
message is at most ``MAX_TEXT_CHARS`` characters of up to 6 bytes each, JSON-escaped), and
the record's framing."""
KEPT_BYTES = (MAX_MESSAGE_BYTES - FRAMING_BYTES - KEPT_KEY_BYTES) * 3 // 4
"""Most bytes of the original key and value a dead letter keeps: base64 makes 4/3 of
them, so with its Kafka key and ``FRAMING_BYTES`` a dead letter stays under the producer
and topic limit (``MAX_MESSAGE_BYTES``); a 1 MB input is kept whole."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def kept_key(message: Any) -> bytes | None:
    """The part of the message's key a dead letter keeps (its own Kafka key too)."""
    key: bytes | None = message.key
    return None if key is None else key[:KEPT_KEY_BYTES]


def dead_letter(
    message: Any, reason: str, text: str, now_ms: int, redact: bool = False
) -> DeadLetter:
    """The dead letter of one Kafka message (a Faust ``Message``), never larger than the
    producer limit: an original key or value too big to carry whole is cut (a prefix is
    kept, ``truncated`` is true); the sizes and SHA-256 of the originals are always given.
    ``redact`` leaves out the key and the value and all about them (an erased member's
    personal data)."""
    key: bytes | None = None if redact else message.key
    value: bytes | None = None if redact else message.value
    key_part = None if key is None else key[:KEPT_KEY_BYTES]
    value_part = None if value is None else value[: KEPT_BYTES - len(key_part or b"")]
    truncated = len(key_part or b"") < len(key or b"") or len(value_part or b"") < len(value or b"")
    return DeadLetter(
        deadletter_id=derive_id(
            "deadletter", message.topic, str(message.partition), str(message.offset)
        ),
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if message.timestamp is None else int(message.timestamp * 1000),
        key_b64=_b64(key_part),
        value_b64=_b64(value_part),
        reason=reason,
        message=text[:MAX_TEXT_CHARS],
        failed_at=iso_from_ms(now_ms),
        key_size=None if key is None else len(key),
        value_size=None if value is None else len(value),
        key_sha256=_sha256(key),
        value_sha256=_sha256(value),
        truncated=truncated,
    )


async def send_dead_letter(
    topic: TopicT, message: Any, reason: str, text: str, now_ms: int, redact: bool = False
) -> None:
    record = dead_letter(message, reason, text, now_ms, redact)
    key = None if redact else kept_key(message)
    await topic.send(key=key, value=orjson.dumps(record), force=True)
    metrics.DEADLETTERS.labels(reason).inc()
    metrics.EVENTS.labels(message.topic, "deadlettered").inc()
