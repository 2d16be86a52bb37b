"""The referral agent: the registry of referral codes, partitioned by code.

A member's partition cannot see who owns a code typed at signup, so codes live in their own
table keyed by code. Member partitions send ``register`` (at enrolment), ``erase`` (at a
GDPR erase) and ``claim`` (a signup with a code); a claim is answered here with one
``ReferralOutcome`` per side, sent to each member's own partition
(``loyalty.member-commands``), where the points are credited idempotently.

Its messages are validated like inputs (``schemas.decode.decode_referral_op``) and must sit
on their code's partition (``wrong_partition``); a message that fails is dead-lettered and
the agent goes on.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from loyalty.agents.accounts import PROCESSING_ERROR, wall_clock_ms
from loyalty.agents.batching import REJECTIONS
from loyalty.agents.deadletters import send_dead_letter
from loyalty.core import codes
from loyalty.schemas.decode import INVALID_VALUE, InvalidEvent, decode_referral_op
from loyalty.schemas.events import (
    ACCEPTED,
    REFEREE,
    REFERRER,
    REFERRER_ERASED,
    SELF_REFERRAL,
    UNKNOWN_REFERRAL_CODE,
)
from loyalty.streams import metrics
from loyalty.streams.partitioning import check_placement, owner_partition
from loyalty.streams.settings import Settings
from loyalty.streams.topics import Topics
from loyalty.tables.definitions import Tables

ERASED_OWNER = b""


def claim_status(owner: bytes | None, claimant: bytes) -> str:
    """How a claim of a code ends, given the code's owner in the registry."""
    if owner is None:
        return UNKNOWN_REFERRAL_CODE
    if owner == ERASED_OWNER:
        return REFERRER_ERASED
    if owner == claimant:
        return SELF_REFERRAL
    return ACCEPTED


class ReferralProcessor:
    def __init__(self, settings: Settings, topics: Topics, tables: Tables) -> None:
        self.partitions = settings.partitions
        self.topics = topics
        self.code_to_member = tables.referral_code_to_member

    async def process(self, message: Any) -> None:
        try:
            await self._process(message)
        except REJECTIONS as error:
            await send_dead_letter(
                self.topics.deadletter, message, error.reason, error.message, wall_clock_ms()
            )
        except Exception as error:  # noqa: BLE001 - a bug must not stop the worker
            text = f"{type(error).__name__}: {error}"
            await send_dead_letter(
                self.topics.deadletter, message, PROCESSING_ERROR, text, wall_clock_ms()
            )

    async def _process(self, message: Any) -> None:
        op = decode_referral_op(message.value)
        code = check_placement(message.key, op["code"], message.partition, self.partitions)
        kind = op["op"]
        if kind == "register":
            if codes.referral_code(op["member_id"]) != op["code"]:
                # A member's code derives from its id: anything else is forged.
                raise InvalidEvent(INVALID_VALUE, "code is not the member's referral code")
            # First owner wins; a (40-bit) collision keeps the first and is counted.
            owner = self.code_to_member.get(code)
            if owner is None:
                self.code_to_member[code] = op["member_id"].encode()
            elif owner != op["member_id"].encode():
                metrics.EVENTS.labels(message.topic, "code_collision").inc()
        elif kind == "erase":
            self.code_to_member[code] = ERASED_OWNER
        elif kind == "claim":
            await self._answer_claim(op, code)
        metrics.EVENTS.labels(message.topic, "processed").inc()

    async def _answer_claim(self, op: dict[str, Any], code: bytes) -> None:
        claimant = op["member_id"].encode()
        owner = self.code_to_member.get(code)
        status = claim_status(owner, claimant)
        answer = {
            "signup_event_id": op["signup_event_id"],
            "code": op["code"],
            "status": status,
            "occurred_at": op["occurred_at"],
        }
        await self._send(claimant, {**answer, "member_id": op["member_id"], "role": REFEREE})
        if status == ACCEPTED and owner is not None:
            await self._send(owner, {**answer, "member_id": owner.decode(), "role": REFERRER})

    async def _send(self, member_key: bytes, command: dict[str, Any]) -> None:
        await self.topics.member_commands.send(
            key=member_key,
            value=orjson.dumps(command),
            partition=owner_partition(member_key, self.partitions),
            force=True,
        )


def register(app: faust.App, processor: ReferralProcessor) -> None:
    @app.agent(processor.topics.referrals, name="loyalty.process_referrals")
    async def process_referrals(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await processor.process(event.message)
