"""floorgate_central: events in seq order, gaps filled by replay, lost ranges, scale-out.

The pure ``Sequencer`` with hypothesis; the ``Floor``'s replay loop over a fake broker
that answers ``replay`` as the gateway does (mqtt-api.md "Replay").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import floorgate_central as fc
from floorgate_central.client import Central
from gateway.core import commands as gw
from tests.test_central import EXAMPLE_KEY, ROOT, FakeBroker, examples, ok
from tests.waiting import until

EVENT = examples("event")[0]


def event(seq: int, type_: str = "door.opened", event_id: str | None = None) -> fc.Event:
    doc = {**EVENT, "seq": seq, "id": event_id or f"e{seq}", "type": type_}
    return fc.Event.parse(doc)


def seqs(events: list[fc.Event]) -> list[int]:
    return [e.seq for e in events]


# -- the pure sequencer ----------------------------------------------------------------------


def test_events_behind_a_gap_are_held_until_it_is_filled() -> None:
    s = fc.Sequencer(hold=True)
    assert seqs(s.accept(event(1))) == [1]
    assert s.accept(event(4)) == []  # 2..3 missing: held
    assert s.accept(event(5)) == []
    assert s.filter.missing == [fc.SeqRange(2, 3)]
    assert seqs(s.accept(event(3))) == []
    out = s.accept(event(2))  # replayed: everything now in order
    assert seqs(out) == [2, 3, 4, 5]
    assert all(e.gap is None for e in out)
    assert s.accept(event(4)) == []  # a duplicate
    assert s.held == 0


def test_a_lost_range_is_skipped_and_marked_on_the_next_event() -> None:
    s = fc.Sequencer(hold=True)
    s.accept(event(1))
    s.accept(event(6))
    assert seqs(s.accept(event(3))) == []
    out = s.lose(fc.SeqRange(2, 2))
    assert [(e.seq, e.gap) for e in out] == [(3, fc.SeqRange(2, 2))]
    out = s.lose(fc.SeqRange(4, 5))
    assert [(e.seq, e.gap) for e in out] == [(6, fc.SeqRange(4, 5))]
    assert s.filter.missing == []


def test_released_events_come_with_their_gap_and_late_fills_after() -> None:
    s = fc.Sequencer(hold=True)
    s.accept(event(1))
    s.accept(event(3))
    s.accept(event(4))
    out = s.release()
    assert [(e.seq, e.gap) for e in out] == [(3, fc.SeqRange(2, 2)), (4, None)]
    assert seqs(s.accept(event(2))) == [2]  # late, out of order, but not lost
    assert s.filter.missing == []


def test_without_hold_every_event_comes_at_once_with_its_gap() -> None:
    s = fc.Sequencer(hold=False)
    s.accept(event(1))
    assert [(e.seq, e.gap) for e in s.accept(event(4))] == [(4, fc.SeqRange(2, 3))]
    assert seqs(s.accept(event(2))) == [2]


def test_a_new_database_releases_what_was_held_and_counts_again() -> None:
    s = fc.Sequencer(hold=True)
    s.accept(event(10))
    s.accept(event(12))
    out = s.accept(event(1, "gateway.started", "new-1"))
    assert seqs(out) == [12, 1]
    assert seqs(s.accept(event(2, event_id="new-2"))) == [2]


def test_a_resumed_floor_counts_gaps_from_the_seq_handed_over() -> None:
    s = fc.Sequencer(hold=True, last_seq=41)
    assert s.accept(event(44)) == []
    assert s.filter.missing == [fc.SeqRange(42, 43)]


@given(
    order=st.permutations(list(range(1, 31))),
    dropped=st.sets(st.integers(2, 30), max_size=8),
    dupes=st.lists(st.integers(1, 30), max_size=10),
)
def test_whatever_the_arrival_order_events_come_once_in_seq_order(
    order: list[int], dropped: set[int], dupes: list[int]
) -> None:
    s = fc.Sequencer(hold=True)
    out = s.accept(event(1))
    arrivals = [n for n in [*order, *dupes] if n != 1 and n not in dropped]
    for n in arrivals:
        out += s.accept(event(n))
    for n in sorted(dropped):
        out += s.lose(fc.SeqRange(n, n))
    assert seqs(out) == sorted(set(range(1, 31)) - dropped)
    marked = [n for e in out if e.gap for n in range(e.gap.first, e.gap.last + 1)]
    # every lost seq is marked once, except those after the last delivered event
    assert set(marked) == {n for n in dropped if n < max(seqs(out))}
    assert s.held == 0


# -- the floor fills gaps by replay ----------------------------------------------------------

FAST = fc.GapFilling(grace_s=0.01, hold_s=30, wait_s=1, rounds=2)


def gateway(stored: set[int], *, lost: set[int] = frozenset()) -> Any:  # type: ignore[assignment]
    """Answers every replay as a gateway storing ``stored``: events first, then the reply."""

    def answer(n: int, env: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        assert env["type"] == "replay"
        body = env["body"]
        wanted = range(body["from_seq"], body.get("to_seq", max(stored | lost | {0})) + 1)
        out = [
            (f"{ROOT}/replay", {**EVENT, "seq": s, "id": f"e{s}"}) for s in wanted if s in stored
        ]
        gone = [s for s in wanted if s in lost]
        missing = [{"from_seq": s, "to_seq": s} for s in gone]
        result = {"count": len(out), "first_seq": None, "last_seq": None, "missing": missing}
        return [*out, (f"{ROOT}/reply", ok(env, result=result))]

    return answer


def central_with(answer: Any, gaps: fc.GapFilling = FAST) -> tuple[Central, FakeBroker]:
    central = Central("127.0.0.1", client_id="desk", keys={"demo-12": EXAMPLE_KEY}, gaps=gaps)
    broker = FakeBroker(central, answer)
    central._client = broker  # type: ignore[assignment]
    status = {**examples("status")[0], "gateway": "demo-12"}
    deliver(central, "status", status)
    return central, broker


def deliver(central: Central, sub: str, doc: dict[str, Any]) -> None:
    message = aiomqtt.Message(f"{ROOT}/{sub}", json.dumps(doc).encode(), 1, False, 1, None)
    central._dispatch(message)


async def collect(stream: fc.Stream[fc.Event], n: int) -> list[fc.Event]:
    async with asyncio.timeout(5):
        return [await anext(stream) for _ in range(n)]


async def test_a_gap_is_filled_by_replay_and_events_come_in_order() -> None:
    central, broker = central_with(gateway({2, 3, 4}))
    floor = await central.floor("demo-12", timeout_s=1)
    with floor.events() as stream:
        for seq in (1, 5, 6):
            deliver(central, "events", {**EVENT, "seq": seq, "id": f"e{seq}"})
        got = await collect(stream, 6)
    assert seqs(got) == [1, 2, 3, 4, 5, 6]
    assert all(e.gap is None for e in got)
    sent = broker.sent[0][1]
    assert (sent["type"], sent["body"]) == ("replay", {"from_seq": 2, "to_seq": 4})
    assert floor.missing == []
    assert floor.lost == []


async def test_what_the_gateway_no_longer_has_is_reported_lost_by_range() -> None:
    central, _ = central_with(gateway({4}, lost={2, 3}))
    floor = await central.floor("demo-12", timeout_s=1)
    with floor.events() as stream:
        for seq in (1, 5):
            deliver(central, "events", {**EVENT, "seq": seq, "id": f"e{seq}"})
        got = await collect(stream, 3)
    assert [(e.seq, e.gap) for e in got] == [(1, None), (4, fc.SeqRange(2, 3)), (5, None)]
    assert floor.lost == [fc.SeqRange(2, 2), fc.SeqRange(3, 3)]
    assert floor.missing == []


async def test_a_gap_nobody_fills_is_released_after_the_hold_and_kept_missing() -> None:
    never = fc.GapFilling(grace_s=0.01, hold_s=0.2, wait_s=0.05, rounds=1)
    central, broker = central_with(gateway(set()), never)
    floor = await central.floor("demo-12", timeout_s=1)
    with floor.events() as stream:
        for seq in (1, 3):
            deliver(central, "events", {**EVENT, "seq": seq, "id": f"e{seq}"})
        got = await collect(stream, 2)
    assert [(e.seq, e.gap) for e in got] == [(1, None), (3, fc.SeqRange(2, 2))]
    assert floor.missing == [fc.SeqRange(2, 2)]
    assert len(broker.sent) == 1  # abandoned: not asked again at every event
    deliver(central, "events", {**EVENT, "seq": 4, "id": "e4"})
    await until(lambda: len(floor.history) == 3, timeout=5)
    assert len(broker.sent) == 1


async def test_without_a_key_a_gap_is_marked_and_nothing_is_held() -> None:
    central = Central("127.0.0.1", client_id="desk", keys={}, gaps=FAST)
    central._client = FakeBroker(central, gateway(set()))  # type: ignore[assignment]
    deliver(central, "status", {**examples("status")[0], "gateway": "demo-12"})
    floor = await central.floor("demo-12", timeout_s=1)
    with floor.events() as stream:
        for seq in (1, 3):
            deliver(central, "events", {**EVENT, "seq": seq, "id": f"e{seq}"})
        got = await collect(stream, 2)
    assert [(e.seq, e.gap) for e in got] == [(1, None), (3, fc.SeqRange(2, 2))]


async def test_resync_and_replay_are_signed_commands() -> None:
    def answer(n: int, env: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{ROOT}/reply", ok(env, result={}))]

    central, broker = central_with(answer)
    floor = await central.floor("demo-12", timeout_s=1)
    assert (await floor.resync()).ok
    assert (await floor.replay(5, 9)).ok
    assert [(e["type"], e["body"]) for _, e, _ in broker.sent] == [
        ("resync", {}),
        ("replay", {"from_seq": 5, "to_seq": 9}),
    ]


# -- discovery and scale-out -----------------------------------------------------------------


async def test_a_floor_is_discovered_from_its_inventory_too() -> None:
    central = Central("127.0.0.1", client_id="desk", keys={})
    deliver(central, "inventory", examples("inventory")[0])
    floor = central.floors[examples("inventory")[0]["gateway"]]  # floor() awaits the status
    assert floor.inventory is not None
    assert floor.inventory.rooms
    assert floor.inventory.rooms[0].devices
    assert floor.status is None


def test_partitions_split_a_fleet_stably_and_evenly() -> None:
    roots = [f"hotel/site/gw-{n}" for n in range(1000)]
    members = [fc.partition_of(r, 2) for r in roots]
    assert members == [fc.partition_of(r, 2) for r in roots]  # stable
    assert 400 < members.count(0) < 600
    one = Central("127.0.0.1", client_id="a", keys={}, partition=(0, 2))
    two = Central("127.0.0.1", client_id="b", keys={}, partition=(1, 2))
    assert all(one.owns(r) != two.owns(r) for r in roots)  # each floor: exactly one member


def test_a_shared_group_shares_only_the_event_streams() -> None:
    central = Central("127.0.0.1", client_id="a", keys={}, roots=["hotel/+/+"], share_group="g")
    topics = central._topics()
    assert "$share/g/hotel/+/+/events" in topics
    assert "$share/g/hotel/+/+/replay" in topics
    assert "hotel/+/+/rooms/+/state" in topics  # retained: never through $share


# -- operator signatures (Ed25519), both ways ------------------------------------------------


def test_an_operators_replay_passes_the_gateways_check_and_a_forgery_does_not() -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    roles = frozenset({"front_desk"})
    creds = gw.Credentials(EXAMPLE_KEY, {"desk-7": gw.Operator("desk-7", (public,), roles)})
    env = fc.envelope("replay", {"from_seq": 1, "to_seq": 9}, fc.Operator("desk-7", private))
    verdict = gw.authenticate(json.dumps(env).encode(), creds)
    assert isinstance(verdict, gw.Authenticated)
    assert verdict.operator == "desk-7"
    forged = {**env, "body": {"from_seq": 1, "to_seq": 10}}
    assert isinstance(gw.authenticate(json.dumps(forged).encode(), creds), gw.Refused)
    stranger = fc.envelope(
        "replay", {"from_seq": 1}, fc.Operator("desk-7", Ed25519PrivateKey.generate())
    )
    assert isinstance(gw.authenticate(json.dumps(stranger).encode(), creds), gw.Refused)


async def test_a_floor_catches_up_from_its_last_seq_after_a_lost_session() -> None:
    central, broker = central_with(gateway({3, 4}))
    floor = await central.floor("demo-12", timeout_s=1)
    with floor.events() as stream:
        for seq in (1, 2):
            deliver(central, "events", {**EVENT, "seq": seq, "id": f"e{seq}"})
        floor.catch_up()  # as after a CONNACK without Session Present
        got = await collect(stream, 4)
    assert seqs(got) == [1, 2, 3, 4]
    assert broker.sent[0][1]["body"] == {"from_seq": 3}
