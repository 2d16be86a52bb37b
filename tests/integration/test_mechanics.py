"""One test per program mechanic on the real broker, each with its exact expected ledger.

Expected ledgers are worked out by hand from the default program file: 1 point per litre,
x2 strictly above 15 L, +100 welcome bonus on the first sale, silver (x1.25) at 1,000
points earned, +150 for 3 fills in 7 days, a +100 newsletter coupon.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest

from loyalty.demo.worker_process import WorkerProcess
from loyalty.streams.settings import Settings
from loyalty.streams.topics import changelog_topic_name, ensure_topics, send_daily_commands
from tests.integration.harness import TopicReader, distinct, isolated_settings, produce

T0 = datetime.fromisoformat("2026-06-01T08:00:00+02:00")


@dataclass
class Engine:
    settings: Settings
    reader: TopicReader

    def send(self, topic: str, value: dict[str, Any], key: str | None = None) -> None:
        member = key if key is not None else value["member_id"]
        produce(self.settings.kafka_bootstrap, topic, [(member.encode(), orjson.dumps(value))])

    def sale(self, member: str, tx_id: str, liters: float, day: float, **extra: Any) -> None:
        value = {
            "transaction_id": tx_id,
            "member_id": member,
            "station_id": "station-7",
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
            "fuel_type": "diesel",
            "liters": liters,
            "amount": round(liters * 1.5, 2),
            **extra,
        }
        self.send(self.settings.topics.transactions, value)

    def member_event(self, member: str, event_id: str, kind: str, day: float, **extra: Any) -> None:
        key = extra.pop("key", None)
        value = {
            "event_id": event_id,
            "member_id": member,
            "type": kind,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
            **extra,
        }
        self.send(self.settings.topics.members, value, key=key)

    def of(self, topic: str, member: str, id_field: str) -> list[dict[str, Any]]:
        values = [v for v in self.reader.values(topic) if v.get("member_id") == member]
        return distinct(values, id_field)

    def rewards(self, member: str, count: int) -> list[dict[str, Any]]:
        """The member's first ``count`` reward events, once their ledger entries are read
        too (topics are read independently: a reward can be seen before its entries)."""
        topic = self.settings.topics.rewards

        def settled(_: TopicReader) -> bool:
            rewards = self.of(topic, member, "reward_id")
            if len(rewards) < count:
                return False
            entries = self.of(self.settings.topics.ledger, member, "entry_id")
            credited: Counter[str] = Counter()
            for entry in entries:
                credited[entry["source_event_id"]] += entry["delta"]
            earned: Counter[str] = Counter()
            for reward in rewards:
                earned[reward["source_event_id"]] += reward["points"]
            return all(credited[source] == points for source, points in earned.items())

        self.reader.wait_for(settled, timeout=60, what=f"{count} settled reward events of {member}")
        return self.of(topic, member, "reward_id")

    def ledger(self, member: str) -> list[tuple[str, int, int]]:
        entries = self.of(self.settings.topics.ledger, member, "entry_id")
        return [(e["reason"], e["delta"], e["balance_after"]) for e in entries]

    def notifications(self, member: str) -> list[dict[str, Any]]:
        return self.of(self.settings.topics.notifications, member, "notification_id")


@pytest.fixture(scope="module")
def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("mechanics")
    settings = isolated_settings(kafka_bootstrap, tmp)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    topics = settings.topics
    reader = TopicReader(
        kafka_bootstrap, topics.ledger, topics.rewards, topics.notifications, topics.deadletter
    )
    try:
        worker.wait_ready()
        yield Engine(settings, reader)
    finally:
        reader.close()
        worker.stop()


def member() -> str:
    return f"member-{uuid.uuid4().hex[:10]}"


def test_welcome_bonus_once_and_volume_multiplier(engine):
    m = member()
    engine.sale(m, f"{m}-1", 15.0, day=0)  # not above 15 L: 15
    engine.sale(m, f"{m}-2", 15.5, day=1)  # floor(15.5 x 2) = 31
    engine.rewards(m, 2)
    assert engine.ledger(m) == [
        ("fuel_points", 15, 15),
        ("welcome_bonus", 100, 115),
        ("fuel_points", 31, 146),
    ]


def test_signup_sends_a_localised_welcome_with_the_referral_code(engine):
    m = member()
    engine.member_event(m, f"{m}-s", "signup", day=0, locale="es", consents={"marketing": True})
    (reward,) = engine.rewards(m, 1)
    assert reward["enrolled"] is True and reward["points"] == 0
    engine.reader.wait_for(lambda r: engine.notifications(m), 30, "the welcome notification")
    (welcome,) = engine.notifications(m)
    assert welcome["kind"] == "welcome" and welcome["locale"] == "es"
    assert welcome["title"] == "¡Bienvenido al club!"
    code = welcome["data"]["referral_code"]
    assert len(code) == 8 and not set(code) & set("ILOU") and code in welcome["body"]
    assert engine.ledger(m) == []


def test_newsletter_coupon_is_issued_and_redeemed_once_at_a_station(engine):
    m = member()
    engine.member_event(m, f"{m}-s", "signup", day=0, locale="it", consents={"marketing": True})
    engine.member_event(m, f"{m}-n", "newsletter_subscribed", day=1)
    issued = engine.rewards(m, 2)[1]["coupon_issued"]
    assert issued["benefit"] == "bonus_points" and issued["value"] == 100
    engine.reader.wait_for(
        lambda r: any(n["kind"] == "coupon_issued" for n in engine.notifications(m)),
        30,
        "the coupon_issued notification",
    )
    notice = next(n for n in engine.notifications(m) if n["kind"] == "coupon_issued")
    assert notice["data"]["code"] == issued["code"] and issued["code"] in notice["body"]
    assert notice["data"]["expires_on"] == "2026-07-02"  # 30 days after 2026-06-02

    engine.sale(m, f"{m}-1", 20.0, day=2, coupon_codes=[issued["code"].lower()])
    engine.sale(m, f"{m}-2", 10.0, day=3, coupon_codes=[issued["code"], "NOPE-1234"])
    rewards = engine.rewards(m, 4)
    assert rewards[2]["coupons"] == [
        {"code": issued["code"], "status": "redeemed", "benefit": "bonus_points", "value": 100}
    ]
    assert [c["status"] for c in rewards[3]["coupons"]] == ["coupon_used", "unknown_coupon"]
    assert engine.ledger(m) == [
        ("fuel_points", 40, 40),
        ("welcome_bonus", 100, 140),
        ("coupon_bonus", 100, 240),
        ("fuel_points", 10, 250),
    ]


def test_three_fills_in_seven_days_complete_the_mission(engine):
    m = member()
    for index, day in enumerate([0, 2.5, 5, 6]):
        engine.sale(m, f"{m}-{index}", 10.0, day=day)
    rewards = engine.rewards(m, 4)
    assert [r.get("missions") for r in rewards] == [None, None, ["three_fills_7d"], None]
    assert engine.ledger(m) == [
        ("fuel_points", 10, 10),
        ("welcome_bonus", 100, 110),
        ("fuel_points", 10, 120),
        ("fuel_points", 10, 130),
        ("mission_bonus", 150, 280),
        ("fuel_points", 10, 290),  # cooldown: the 4th fill in 7 days earns no second bonus
    ]


def test_tier_upgrade_at_once_and_the_multiplier_on_the_next_fill(engine):
    m = member()
    engine.sale(m, f"{m}-1", 450.0, day=0)  # 900 + 100 welcome = 1,000 earned: silver
    engine.sale(m, f"{m}-2", 100.0, day=10)  # floor(100 x 2 x 1.25) = 250
    first, second = engine.rewards(m, 2)
    assert first["tier"] == "bronze" and first["tier_change"] == {"from": "bronze", "to": "silver"}
    assert second["tier"] == "silver" and second["tier_change"] is None
    assert engine.ledger(m) == [
        ("fuel_points", 900, 900),
        ("welcome_bonus", 100, 1000),
        ("fuel_points", 250, 1250),
    ]
    kinds = [n["kind"] for n in engine.notifications(m)]
    assert "tier_changed" in kinds


def test_refund_reverses_in_proportion_once(engine):
    m = member()
    engine.sale(m, f"{m}-1", 20.0, day=0)  # 40 + 100
    refund = {"type": "refund", "original_transaction_id": f"{m}-1"}
    engine.sale(m, f"{m}-r", 10.0, day=1, **refund)  # half: floor(140 / 2) = 70
    engine.sale(m, f"{m}-r", 10.0, day=1, **refund)  # the same refund again
    engine.sale(m, f"{m}-2", 5.0, day=2)
    engine.rewards(m, 3)
    assert engine.ledger(m) == [
        ("fuel_points", 40, 40),
        ("welcome_bonus", 100, 140),
        ("refund_reversal", -70, 70),
        ("fuel_points", 5, 75),
    ]


def test_member_events_with_a_wrong_key_are_applied_and_bad_ones_dead_lettered(engine):
    m = member()
    engine.member_event(m, f"{m}-s", "signup", day=0, key="somebody-else", locale="pl")
    engine.member_event(m, f"{m}-bad", "signup", day=0, birth_date="1990-02-30")
    engine.member_event(m, f"{m}-worse", "divorce", day=0)

    def letters() -> list[dict[str, Any]]:
        return [
            d
            for d in engine.reader.values(engine.settings.topics.deadletter)
            if m.encode() in base64.b64decode(d["value_b64"])
        ]

    engine.reader.wait_for(lambda r: len(letters()) >= 2, 60, "two dead letters")
    (reward,) = engine.rewards(m, 1)
    assert reward["enrolled"] is True
    assert sorted(d["reason"] for d in letters()) == ["invalid_value", "invalid_value"]
    assert {d["source_topic"] for d in letters()} == {engine.settings.topics.members}


def test_daily_job_through_kafka_gives_the_birthday_bonus_once(engine):
    m = member()
    engine.member_event(
        m, f"{m}-s", "signup", day=0, birth_date="1991-06-20", consents={"marketing": True}
    )
    engine.sale(m, f"{m}-1", 10.0, day=1)  # 10 + 100
    engine.rewards(m, 2)
    birthday = date(2026, 6, 20)
    send_daily_commands(engine.settings, birthday)
    send_daily_commands(engine.settings, birthday)  # the same date again changes nothing
    send_daily_commands(engine.settings, date(2026, 6, 21))
    engine.sale(m, f"{m}-2", 10.0, day=21)  # after the jobs on the member's partition
    rewards = engine.rewards(m, 4)
    daily = [r for r in rewards if r["source_type"] == "daily"]
    assert [r["source_event_id"] for r in daily] == ["daily:2026-06-20"]
    assert engine.ledger(m) == [
        ("fuel_points", 10, 10),
        ("welcome_bonus", 100, 110),
        ("birthday_bonus", 200, 310),
        ("fuel_points", 10, 320),
    ]
    assert "birthday" in [n["kind"] for n in engine.notifications(m)]


def test_daily_job_expires_points_a_year_later(engine):
    # A year before T0: the worker refuses event times and daily jobs after its clock.
    m = member()
    engine.sale(m, f"{m}-1", 20.0, day=-365)  # 2025-06-01: 40 + 100
    engine.rewards(m, 1)
    send_daily_commands(engine.settings, date(2026, 5, 25))  # notice: expires in 7 days
    send_daily_commands(engine.settings, date(2026, 6, 1))  # 365 days later
    engine.sale(m, f"{m}-2", 5.0, day=1)
    engine.rewards(m, 4)
    assert engine.ledger(m) == [
        ("fuel_points", 40, 40),
        ("welcome_bonus", 100, 140),
        ("expiry", -140, 0),
        ("fuel_points", 5, 5),
    ]
    kinds = [n["kind"] for n in engine.notifications(m)]
    assert "points_expiring" in kinds and "points_expired" in kinds


def referral_code_of(engine: Engine, m: str) -> str:
    engine.reader.wait_for(
        lambda r: any(n["kind"] == "welcome" for n in engine.notifications(m)),
        30,
        f"the welcome notification of {m}",
    )
    welcome = next(n for n in engine.notifications(m) if n["kind"] == "welcome")
    return welcome["data"]["referral_code"]


def test_referral_credits_both_members_once(engine):
    referrer, friend = member(), member()
    engine.member_event(referrer, f"{referrer}-s", "signup", day=0)
    code = referral_code_of(engine, referrer)
    engine.member_event(friend, f"{friend}-s", "signup", day=1, referral_code=code.lower())
    engine.member_event(friend, f"{friend}-s2", "signup", day=2, referral_code=code)  # once only
    friend_rewards = engine.rewards(friend, 3)
    referral = [r for r in friend_rewards if r["source_type"] == "referral"]
    assert [r["referral"] for r in referral] == [
        {"code": code, "status": "accepted", "role": "referee"}
    ]
    referrer_rewards = engine.rewards(referrer, 2)
    assert referrer_rewards[1]["referral"]["role"] == "referrer"
    assert engine.ledger(friend) == [("referral_bonus", 50, 50)]
    assert engine.ledger(referrer) == [("referral_bonus", 100, 100)]


def test_self_referral_and_unknown_codes_give_nothing_and_say_why(engine):
    m, other = member(), member()
    engine.sale(m, f"{m}-1", 10.0, day=0)  # enrolled by a card scan at the pump
    code = referral_code_of(engine, m)
    engine.member_event(m, f"{m}-s", "signup", day=1, referral_code=code)
    engine.member_event(other, f"{other}-s", "signup", day=1, referral_code="ZZZZ9999")
    mine = [r for r in engine.rewards(m, 3) if r["source_type"] == "referral"]
    theirs = [r for r in engine.rewards(other, 2) if r["source_type"] == "referral"]
    assert mine[0]["referral"]["status"] == "self_referral"
    assert theirs[0]["referral"]["status"] == "unknown_referral_code"
    assert engine.ledger(m) == [("fuel_points", 10, 10), ("welcome_bonus", 100, 110)]
    assert engine.ledger(other) == []


def test_erase_forgets_the_member_and_refuses_later_events(engine):
    m, friend = member(), member()
    engine.member_event(
        m, f"{m}-s", "signup", day=0, email=f"{m}@example.com", phone="+34600111222"
    )
    code = referral_code_of(engine, m)
    engine.sale(m, f"{m}-1", 10.0, day=1)
    engine.rewards(m, 2)
    engine.member_event(m, f"{m}-e", "erase", day=2)
    engine.sale(m, f"{m}-2", 10.0, day=3)  # after the erase: refused
    engine.member_event(friend, f"{friend}-s", "signup", day=4, referral_code=code)
    friend_rewards = engine.rewards(friend, 2)
    assert friend_rewards[1]["referral"]["status"] == "referrer_erased"
    deadletter = engine.settings.topics.deadletter
    engine.reader.wait_for(
        lambda r: any(d["reason"] == "member_erased" for d in r.values(deadletter)),
        30,
        "the refused sale's dead letter",
    )
    refused = [d for d in engine.reader.values(deadletter) if d["reason"] == "member_erased"]
    assert len(refused) == 1
    assert refused[0]["value_b64"] is None and refused[0]["key_b64"] is None
    erase = engine.rewards(m, 3)[2]
    assert erase["source_type"] == "erase"
    # Nothing names the member after the erase: no output of the refused sale, the erase
    # is the member's last reward, and no output ever carried their contact data.
    outputs = [v for topic in engine.reader.records for v in engine.reader.values(topic)]
    assert not [v for v in outputs if v.get("source_event_id") == f"{m}-2"]
    assert engine.of(engine.settings.topics.rewards, m, "reward_id")[-1] == erase
    assert not [v for v in outputs if f"{m}@example.com" in orjson.dumps(v).decode()]
    changelog = changelog_topic_name(engine.settings.app_id, "member_to_state")
    table = TopicReader(engine.settings.kafka_bootstrap, changelog)
    try:
        table.wait_for(
            lambda r: any(x.key == m.encode() and x.value is None for x in r.records[changelog]),
            30,
            "the member's tombstone in the table changelog",
        )
    finally:
        table.close()


def test_marketing_notifications_need_consent_transactional_ones_do_not(engine):
    m = member()
    engine.member_event(m, f"{m}-s", "signup", day=0, locale="en", consents={"marketing": False})
    engine.member_event(m, f"{m}-n", "newsletter_subscribed", day=1)
    engine.sale(m, f"{m}-1", 10.0, day=2)
    rewards = engine.rewards(m, 3)
    subscribed = next(r for r in rewards if r["source_type"] == "newsletter_subscribed")
    assert subscribed["coupon_issued"] is not None  # the coupon exists all the same
    engine.reader.wait_for(
        lambda r: any(n["kind"] == "points_earned" for n in engine.notifications(m)),
        30,
        "the points_earned notification",
    )
    kinds = [n["kind"] for n in engine.notifications(m)]
    assert "coupon_issued" not in kinds
    assert kinds == ["welcome", "points_earned"]
