"""Lock sync: token helpers, the slot plan, the access-log follower against a simulated ring."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.effects import Emit
from gateway.core.locksync import (
    LOG_SEQ_MAX,
    Desired,
    LogEntry,
    LogFollower,
    SlotPlan,
    access_event,
    int_to_token,
    normalize_token,
    plan_lock,
    plan_slots,
    token_hash,
    token_to_int,
)

K1, K2, K3 = "00000000000000a1", "00000000000000a2", "00000000000000a3"
V1, V2, V3 = 0xA1, 0xA2, 0xA3

# -- tokens -----------------------------------------------------------------------------


def test_tokens_are_16_hex_digits_in_either_case() -> None:
    assert normalize_token(" 00000000000000AB ") == "00000000000000ab"
    for bad in ("", "ab", "00000000000000a", "000000000000000ab", "00000000000000ag", "0" * 16):
        with pytest.raises(ValueError):
            normalize_token(bad)


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_token_int_round_trip(v: int) -> None:
    token = int_to_token(v)
    assert len(token) == 16
    assert token == token.lower()
    assert token_to_int(token) == v
    assert token_to_int(token.upper()) == v


def test_int_to_token_refuses_what_is_not_a_token() -> None:
    for v in (0, -1, 2**64):
        with pytest.raises(ValueError):
            int_to_token(v)


def test_token_hash_is_the_spec_prefix_whatever_the_case() -> None:
    # mqtt.md: first 8 hex digits of SHA-256 of the token as 16 lowercase hex digits.
    expected = hashlib.sha256(b"00000000deadbeef").hexdigest()[:8]
    assert token_hash("00000000DEADBEEF") == token_hash("00000000deadbeef") == expected
    assert len(expected) == 8


# -- slot plan --------------------------------------------------------------------------


def apply(slots: list[int | None], plan: SlotPlan) -> list[int | None]:
    out = list(slots)
    for i, v in plan.writes:
        out[i] = v
    return out


def test_a_lock_already_right_needs_no_write() -> None:
    plan = plan_slots(frozenset({K1, K2}), [0, V2, 0, V1])
    assert plan == SlotPlan((), 0, 0)


def test_missing_tokens_fill_empty_slots() -> None:
    plan = plan_slots(frozenset({K1, K2}), [0, 0, 0, 0])
    assert plan == SlotPlan(((0, V1), (1, V2)), added=2, removed=0)


def test_an_unwanted_token_is_overwritten_rather_than_cleared_then_filled() -> None:
    plan = plan_slots(frozenset({K2}), [0, V1, 0])
    assert plan == SlotPlan(((1, V2),), added=1, removed=1)


def test_unwanted_tokens_and_duplicates_are_cleared_first() -> None:
    plan = plan_slots(frozenset({K1, K3}), [V1, 0, V2, V1, 0])
    # slot 2 (foreign) and slot 3 (a second copy) must go: one takes K3, the other is cleared
    assert plan == SlotPlan(((2, V3), (3, 0)), added=1, removed=2)


def test_revocations_come_before_fills_of_empty_slots() -> None:
    plan = plan_slots(frozenset({K1, K2, K3}), [0, 0, 0x99])
    assert plan.writes[0][0] == 2  # the foreign token goes first
    assert sorted(apply([0, 0, 0x99], plan)) == [V1, V2, V3]


def test_unknown_slots_are_written_but_not_counted_as_removed() -> None:
    plan = plan_slots(frozenset({K1}), [None, None, 0])
    assert plan == SlotPlan(((0, V1), (1, 0)), added=1, removed=0)


def test_too_few_slots_leaves_tokens_unplaced() -> None:
    plan = plan_slots(frozenset({K1, K2, K3}), [0, 0x99])
    assert (plan.added, plan.removed, plan.unplaced) == (2, 1, 1)


@given(
    desired=st.frozensets(st.integers(min_value=1, max_value=12), max_size=6),
    slots=st.lists(st.none() | st.integers(min_value=0, max_value=12), min_size=6, max_size=10),
)
def test_plan_reaches_exactly_the_desired_set_with_fewest_writes(
    desired: frozenset[int], slots: list[int | None]
) -> None:
    tokens = frozenset(int_to_token(v) for v in desired)
    plan = plan_slots(tokens, slots)
    after = apply(slots, plan)
    held = [v for v in after if v]
    assert None not in after
    assert sorted(held) == sorted(desired)  # each desired token exactly once, nothing else
    seen: set[int] = set()
    must = 0  # slots that have to be written whatever the plan: unknown, unwanted, copies
    for v in slots:
        if v is None or (v and (v not in desired or v in seen)):
            must += 1
        elif v:
            seen.add(v)
    assert len(plan.writes) == must + max(0, len(desired - seen) - must)
    assert len({i for i, _ in plan.writes}) == len(plan.writes)


def test_staff_tokens_go_to_the_last_slots_and_guests_never_there() -> None:
    desired = Desired(frozenset({K1}), frozenset({K2}), staff_slots=2)
    plan = plan_lock(desired, [0, 0, 0, 0])
    assert apply([0, 0, 0, 0], plan) == [V1, 0, V2, 0]
    assert (plan.added, plan.removed, plan.moved) == (2, 0, 0)
    # The staff region full of guests' tokens: cleared, never used for a guest.
    plan = plan_lock(Desired(frozenset({K1, K3}), frozenset(), staff_slots=2), [0, 0, V1, V3])
    assert apply([0, 0, V1, V3], plan) in ([V1, V3, 0, 0], [V3, V1, 0, 0])


def test_a_token_in_the_wrong_region_is_written_first_then_its_old_slot_cleared() -> None:
    # A guest token left in a staff slot (a lock from before the staff slots existed).
    plan = plan_lock(Desired(frozenset({K1}), frozenset(), staff_slots=2), [0, 0, 0, V1])
    assert plan.writes == ((0, V1), (3, 0))
    assert (plan.added, plan.moved) == (0, 1)


@given(
    guest=st.frozensets(st.integers(min_value=1, max_value=12), max_size=5),
    staff=st.frozensets(st.integers(min_value=1, max_value=12), max_size=3),
    slots=st.lists(st.none() | st.integers(min_value=0, max_value=12), min_size=9, max_size=9),
)
def test_each_region_ends_holding_exactly_its_tokens_and_kept_ones_never_leave(
    guest: frozenset[int], staff: frozenset[int], slots: list[int | None]
) -> None:
    desired = Desired(
        frozenset(int_to_token(v) for v in guest), frozenset(int_to_token(v) for v in staff), 3
    )
    plan = plan_lock(desired, slots)
    after = apply(slots, plan)
    assert sorted(v for v in after[:6] if v) == sorted(guest)
    assert sorted(v for v in after[6:] if v) == sorted(staff)
    # A desired token the lock already held is in the lock after every single write
    # (unless each region is full of the other's tokens: a swap needs a spare slot).
    held = {v for v in slots if v} & (guest | staff)
    spare = [
        sum(1 for v in part if v is None or v == 0 or v not in guest | staff) >= len(want)
        for part, want in ((slots[:6], guest), (slots[6:], staff))
    ]
    if not any(spare):
        return
    state = list(slots)
    for i, v in plan.writes:
        state[i] = v
        assert held <= set(state), (slots, plan.writes)


# -- access log -------------------------------------------------------------------------


class Ring:
    """devices.md FG-LOCK-1 access log: entry with seq s at k = s mod 16; head wraps to 1."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self.slots: list[tuple[int, str, int] | None] = [None] * 16

    def append(self, result: str = "granted", token: int = V1) -> int:
        self.head = 1 if self.head >= LOG_SEQ_MAX else self.head + 1
        self.slots[self.head % 16] = (self.head, result, token)
        return self.head

    def read(self, indices: tuple[int, ...]) -> list[tuple[int, str, int]]:
        return [e for k in indices if (e := self.slots[k]) is not None]


def follow(f: LogFollower, ring: Ring) -> list[int]:
    read = f.on_head(ring.head)
    if read is None:
        return []
    return [e.seq for e in f.on_entries(ring.read(read.indices))]


def test_first_contact_takes_the_head_as_baseline() -> None:
    ring = Ring()
    for _ in range(5):
        ring.append()
    f = LogFollower(None)
    assert f.on_head(ring.head) is None
    assert f.last_seen == 5
    ring.append()
    assert follow(f, ring) == [6]


def test_new_entries_in_order_and_last_seen_advances() -> None:
    ring = Ring(head=10)
    f = LogFollower(10)
    for _ in range(3):
        ring.append()
    read = f.on_head(13)
    assert read is not None
    assert (read.seqs, read.indices, read.gap, read.reset) == ((11, 12, 13), (11, 12, 13), 0, False)
    assert f.last_seen == 10
    assert f.pending == read
    entries = f.on_entries(ring.read(read.indices))
    assert entries == [
        LogEntry(11, "granted", V1),
        LogEntry(12, "granted", V1),
        LogEntry(13, "granted", V1),
    ]
    assert f.last_seen == 13
    assert f.pending is None
    assert f.on_head(13) is None


def test_more_than_the_ring_records_a_gap() -> None:
    f = LogFollower(10)
    read = f.on_head(40)
    assert read is not None
    assert read.seqs == tuple(range(25, 41))
    assert read.gap == 14


def test_wrap_65535_to_1() -> None:
    f = LogFollower(65533)
    read = f.on_head(2)
    assert read is not None
    assert read.seqs == (65534, 65535, 1, 2)
    assert read.indices == (14, 15, 1, 2)
    assert read.gap == 0


def test_wrap_collisions_lose_the_older_entry() -> None:
    # 65521..65525 share ring indices 1..5 with 1..5 (65535 ≡ 15, then 1); 65520 keeps k=0.
    f = LogFollower(65500)
    read = f.on_head(5)
    assert read is not None
    assert read.seqs == (65520, *range(65526, 65536), 1, 2, 3, 4, 5)
    assert read.gap == 40 - 16


def test_a_slot_overwritten_after_the_head_was_read_is_skipped() -> None:
    ring = Ring(head=10)
    f = LogFollower(10)
    ring.append()
    read = f.on_head(ring.head)
    assert read is not None
    for _ in range(16):  # the ring turns over before the entries are read
        ring.append()
    assert f.on_entries(ring.read(read.indices)) == []  # slot 11 now holds seq 27
    assert f.last_seen == 11
    assert follow(f, ring) == list(range(12, 28))


def test_a_failed_read_is_planned_again_with_what_came_since() -> None:
    ring = Ring(head=3)
    f = LogFollower(3)
    ring.append()
    assert f.on_head(ring.head) is not None  # ... and the read fails
    ring.append()
    assert follow(f, ring) == [4, 5]


def test_a_log_that_went_back_was_reset() -> None:
    f = LogFollower(500)
    read = f.on_head(3)
    assert read is not None
    assert read.reset
    assert read.seqs == (1, 2, 3)
    assert read.gap == 0
    f = LogFollower(500)
    read = f.on_head(0)
    assert read is not None
    assert read.reset
    assert read.indices == ()
    assert read.gap == 0
    assert f.last_seen == 0
    assert f.pending is None
    assert f.on_entries([]) == []


def test_log_seq_out_of_range() -> None:
    with pytest.raises(ValueError):
        LogFollower(70000)
    with pytest.raises(ValueError):
        LogFollower(1).on_head(-1)


@given(
    start=st.integers(min_value=0, max_value=LOG_SEQ_MAX),
    bursts=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=12),
)
def test_follower_reports_each_surviving_entry_once_in_order(start: int, bursts: list[int]) -> None:
    ring = Ring(head=start)
    f = LogFollower(start)
    for n in bursts:
        appended = [ring.append(token=i + 1) for i in range(n)]
        read = f.on_head(ring.head)
        if n == 0:
            assert read is None
            continue
        assert read is not None
        reported = [e.seq for e in f.on_entries(ring.read(read.indices))]
        survivors = [s for s in appended if (e := ring.slots[s % 16]) is not None and e[0] == s]
        assert reported == survivors == list(read.seqs)
        assert read.gap == n - len(survivors)
        assert f.last_seen == ring.head


# -- access events ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "type_", "reason"),
    [
        ("granted", "access.granted", None),
        ("denied", "access.denied", "not_authorised"),
        ("denied_deadbolt", "access.denied", "deadbolt"),
    ],
)
def test_access_events_carry_the_hash_never_the_token(
    result: str, type_: str, reason: str | None
) -> None:
    e = access_event(LogEntry(7, result, 0xDEADBEEF), "1203", "R-1")
    assert e.type == type_
    assert e.room == "1203"
    assert e.data["token_hash"] == token_hash("00000000deadbeef")
    assert e.data["stay_id"] == "R-1"
    assert e.data["log_seq"] == 7
    assert e.data.get("reason") == reason
    assert "deadbeef" not in repr(e)


def test_a_staff_key_is_named_by_its_key_id() -> None:
    event = access_event(LogEntry(7, "granted", V1), "1203", None, "hk-ana")
    assert event.data["key_id"] == "hk-ana"
    assert K1 not in repr(event)


def test_remote_unlock_has_no_token_hash() -> None:
    e = access_event(LogEntry(8, "remote_unlock", 0), "1203", None)
    assert e == Emit("access.remote_unlock", "1203", {"stay_id": None, "log_seq": 8})


def test_unknown_result_is_an_error() -> None:
    with pytest.raises(ValueError):
        access_event(LogEntry(9, "exploded", 1), "1203", None)


def test_log_entry_repr_hides_the_token() -> None:
    assert "3735928559" not in repr(LogEntry(1, "granted", 0xDEADBEEF))
