"""Sending rejected input to the dead-letter topic, original bytes included."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from faust.types import TopicT

from agents import metrics
from schemas.outputs import DeadLetter
from streams.ids import derive_id
from streams.rewards import iso_from_ms


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter(
    message: Any, reason: str, text: str, now_ms: int, redact: bool = False
) -> DeadLetter:
    """The dead letter of one Kafka message (a Faust ``Message``); ``redact`` leaves out
    its key and value (an erased member's personal data)."""
    return DeadLetter(
        deadletter_id=derive_id(
            "deadletter", message.topic, str(message.partition), str(message.offset)
        ),
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if message.timestamp is None else int(message.timestamp * 1000),
        key_b64=None if redact else _b64(message.key),
        value_b64=None if redact else _b64(message.value),
        reason=reason,
        message=text,
        failed_at=iso_from_ms(now_ms),
    )


async def send_dead_letter(
    topic: TopicT, message: Any, reason: str, text: str, now_ms: int, redact: bool = False
) -> None:
    record = dead_letter(message, reason, text, now_ms, redact)
    key = None if redact else message.key
    await topic.send(key=key, value=orjson.dumps(record), force=True)
    metrics.DEADLETTERS.labels(reason).inc()
    metrics.EVENTS.labels(message.topic, "deadlettered").inc()
