"""The order of a member partition's records across co-partitioned topics (issue 19, defect
3), on plain values: no broker, no event loop."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty.agents.accounts import member_inputs_by_rank
from loyalty.streams.ordering import CoPartitionedOrder
from loyalty.streams.settings import TopicNames

MEMBERS, TRANSACTIONS, COMMANDS = "members", "transactions", "member-commands"
TOPICS = (MEMBERS, TRANSACTIONS, COMMANDS)
IDLE_MS = 100


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: float

    def __repr__(self) -> str:
        return f"{self.topic}-{self.partition}@{self.offset}"


def order(idle_ms: float = IDLE_MS) -> CoPartitionedOrder[Record]:
    return CoPartitionedOrder(TOPICS, idle_ms, lambda record: record)


def caught_up(topic: str, partition: int, received: int | None) -> bool:
    return False


class Lags:
    """A ``lagging`` whose answers the test sets; remembers what it was asked."""

    def __init__(self, *lagging: tuple[str, int]) -> None:
        self.lagging = set(lagging)
        self.asked: list[tuple[str, int, int | None]] = []

    def __call__(self, topic: str, partition: int, received: int | None) -> bool:
        self.asked.append((topic, partition, received))
        return (topic, partition) in self.lagging


def test_records_of_a_partition_go_by_timestamp_across_topics():
    sale = Record(TRANSACTIONS, 0, 7, 11.0)
    signup = Record(MEMBERS, 0, 3, 10.0)
    # Faust handed the sale over first (its round robin); the signup is older.
    assert order().release([sale, signup], 0, caught_up) == [signup, sale]


def test_one_topic_partition_is_never_reordered():
    late = Record(TRANSACTIONS, 0, 1, 20.0)
    early = Record(TRANSACTIONS, 0, 2, 5.0)  # an older timestamp behind a newer one
    signup = Record(MEMBERS, 0, 1, 10.0)
    # Only heads are compared: the signup goes before the head at 20, the 5 after it.
    assert order().release([late, early, signup], 0, caught_up) == [signup, late, early]


def test_equal_timestamps_go_by_the_rank_of_their_topic():
    command = Record(COMMANDS, 0, 1, 10.0)
    sale = Record(TRANSACTIONS, 0, 1, 10.0)
    signup = Record(MEMBERS, 0, 1, 10.0)
    assert order().release([command, sale, signup], 0, caught_up) == [signup, sale, command]


def test_a_record_waits_for_a_topic_partition_known_to_have_records_not_received():
    ordering = order()
    sale = Record(TRANSACTIONS, 0, 7, 11.0)
    lags = Lags((MEMBERS, 0))
    assert ordering.release([sale], 0, lags) == []
    assert ordering.held == 1
    assert ordering.wake_at_ms == IDLE_MS
    assert (MEMBERS, 0, None) in lags.asked
    signup = Record(MEMBERS, 0, 3, 10.0)
    lags.lagging.clear()
    assert ordering.release([signup], 1, lags) == [signup, sale]
    assert ordering.held == 0
    assert ordering.expired == 0


def test_the_wait_is_bounded_and_not_repeated_until_the_partition_delivers():
    ordering = order()
    lags = Lags((MEMBERS, 0))
    first = Record(TRANSACTIONS, 0, 1, 1.0)
    assert ordering.release([first], 1000, lags) == []
    assert ordering.release([], 1000 + IDLE_MS - 1, lags) == []
    assert ordering.release([], 1000 + IDLE_MS, lags) == [first]
    assert ordering.expired == 1
    # Still lagging, but its wait ran out: later records are not held for it again...
    second = Record(TRANSACTIONS, 0, 2, 2.0)
    assert ordering.release([second], 2000, lags) == [second]
    # ...until it delivers a record: then a new wait may start.
    signup = Record(MEMBERS, 0, 1, 3.0)
    assert ordering.release([signup], 2001, lags) == [signup]
    third = Record(TRANSACTIONS, 0, 3, 4.0)
    assert ordering.release([third], 2002, lags) == []
    assert ordering.wake_at_ms == 2002 + IDLE_MS
    assert ordering.expired == 1


def test_a_caught_up_partition_ends_an_expired_wait_too():
    ordering = order()
    lags = Lags((MEMBERS, 0))
    ordering.release([Record(TRANSACTIONS, 0, 1, 1.0)], 0, lags)
    ordering.release([], IDLE_MS, lags)  # expired
    lags.lagging.clear()
    ordering.release([Record(TRANSACTIONS, 0, 2, 2.0)], 200, lags)  # caught up: forgotten
    lags.lagging.add((MEMBERS, 0))
    assert ordering.release([Record(TRANSACTIONS, 0, 3, 3.0)], 300, lags) == []


def test_the_partition_asked_about_is_told_the_last_offset_received():
    ordering = order()
    lags = Lags()
    ordering.release([Record(MEMBERS, 0, 41, 1.0), Record(MEMBERS, 0, 42, 2.0)], 0, lags)
    lags.asked.clear()
    ordering.release([Record(TRANSACTIONS, 0, 9, 3.0)], 1, lags)
    assert sorted(lags.asked) == [(COMMANDS, 0, None), (MEMBERS, 0, 42)]


def test_merging_stops_where_a_topic_partition_runs_out_and_lags():
    ordering = order()
    signup = Record(MEMBERS, 0, 1, 1.0)
    sales = [Record(TRANSACTIONS, 0, 1, 2.0), Record(TRANSACTIONS, 0, 2, 3.0)]
    lags = Lags((MEMBERS, 0))  # more member events on their way
    assert ordering.release([*sales, signup], 0, lags) == [signup]
    assert ordering.held == 2
    update = Record(MEMBERS, 0, 2, 2.5)
    lags.lagging.clear()
    assert ordering.release([update], 1, lags) == [sales[0], update, sales[1]]


def test_partitions_wait_independently():
    ordering = order()
    lags = Lags((MEMBERS, 0))
    held = Record(TRANSACTIONS, 0, 1, 1.0)
    other = Record(TRANSACTIONS, 1, 1, 1.0)
    assert ordering.release([held, other], 0, lags) == [other]
    assert ordering.held == 1


def test_no_wait_when_the_idle_time_is_zero():
    ordering = order(idle_ms=0)
    lags = Lags((MEMBERS, 0))
    sale, signup = Record(TRANSACTIONS, 0, 1, 2.0), Record(MEMBERS, 0, 1, 1.0)
    assert ordering.release([sale, signup], 0, lags) == [signup, sale]
    assert lags.asked == []


def test_records_of_a_topic_outside_the_ranking_are_ordered_last_on_ties():
    other = Record("elsewhere", 0, 1, 1.0)
    sale = Record(TRANSACTIONS, 0, 1, 1.0)
    assert order().release([other, sale], 0, caught_up) == [sale, other]


def test_how_long_each_wait_lasted_is_reported_once_it_ends():
    ordering = order()
    lags = Lags((MEMBERS, 0))
    ordering.release([Record(TRANSACTIONS, 0, 1, 2.0)], 1000, lags)
    ordering.release([], 1004, lags)
    assert ordering.waited_ms == []
    lags.lagging.clear()
    ordering.release([Record(MEMBERS, 0, 1, 1.0)], 1007, lags)
    assert ordering.waited_ms == [7]


# The open rule of issue 19: two records of one member produced in one batch, without
# waiting for the first acknowledgement.
INPUTS = TopicNames()
SENT_AT = 1_767_225_600.123  # Kafka timestamps as Faust carries them: seconds, to the ms


def account_order() -> CoPartitionedOrder[Record]:
    return CoPartitionedOrder(member_inputs_by_rank(INPUTS), 1000, lambda record: record)


def test_one_batch_on_two_topics_same_millisecond_the_member_event_goes_first():
    sale = Record(INPUTS.transactions, 3, 10, SENT_AT)
    signup = Record(INPUTS.members, 3, 4, SENT_AT)
    assert account_order().release([sale, signup], 0, caught_up) == [signup, sale]


def test_one_batch_on_two_topics_a_millisecond_apart_goes_by_timestamp():
    sale = Record(INPUTS.transactions, 3, 10, SENT_AT)
    signup = Record(INPUTS.members, 3, 4, SENT_AT + 0.001)  # sent a millisecond after
    assert account_order().release([signup, sale], 0, caught_up) == [sale, signup]


def test_one_batch_on_one_topic_goes_in_the_order_kafka_stored_it():
    first = Record(INPUTS.transactions, 3, 10, SENT_AT + 0.005)
    second = Record(INPUTS.transactions, 3, 11, SENT_AT)  # a smaller timestamp behind
    assert account_order().release([first, second], 0, caught_up) == [first, second]


def test_ties_between_topics_follow_the_documented_rank():
    assert member_inputs_by_rank(INPUTS) == (
        "loyalty.members",
        "loyalty.members.rekeyed",
        "loyalty.transactions",
        "loyalty.transactions.rekeyed",
        "loyalty.member-commands",
        "loyalty.daily",
    )
