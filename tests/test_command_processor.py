"""CommandProcessor: replay cache, refusals and their events, atomic persist, handlers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.adapters import schema
from gateway.adapters.store import Store
from gateway.core import commands as checks
from gateway.engine.commands import CommandProcessor, Decision
from gateway.model.messages import Reply, ResyncBody, SetLightsBody

KEY = bytes.fromhex("a5" * 32)
T0 = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def command(
    id: str = "c1",
    type: str = "set_lights",
    body: dict[str, Any] | None = None,
    issued_at: datetime = T0,
    key: bytes = KEY,
) -> bytes:
    env: dict[str, Any] = {
        "schema": 1,
        "id": id,
        "type": type,
        "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "body": body if body is not None else {"room": "1203", "circuits": {"main": True}},
    }
    env["sig"] = checks.sign(env, key)
    return json.dumps(env).encode()


def reply(raw: bytes | None) -> dict[str, Any]:
    assert raw is not None
    data: dict[str, Any] = json.loads(raw)
    Reply.model_validate(data)  # every reply matches the wire model
    return data


class Lights:
    """A test handler: persists a row and an event, applies in memory, records calls."""

    def __init__(self) -> None:
        self.calls: list[SetLightsBody] = []
        self.applied: list[dict[str, bool]] = []
        self.decision: Decision | None = None  # a refusal to return instead

    def __call__(self, body: BaseModel, now: datetime) -> Decision:
        assert isinstance(body, SetLightsBody)
        self.calls.append(body)
        if self.decision is not None:
            return self.decision
        circuits = {str(k): v for k, v in body.circuits.items()}
        row = f"lit-{len(self.calls)}"

        def persist(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (row, body.room))
            schema.append_event(conn, "room.keycard", room=body.room, data={"on": True}, ts=now)

        return Decision(
            ok=True,
            result={"pending": [f"{body.room}/rio"]},
            persist=persist,
            apply=lambda: self.applied.append(circuits),
        )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "floor.db", synchronous="NORMAL")
    yield s
    await s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wakes() -> list[int]:
    return []


@pytest.fixture
def lights() -> Lights:
    return Lights()


@pytest.fixture
def processor(store: Store, clock: Clock, wakes: list[int], lights: Lights) -> CommandProcessor:
    p = CommandProcessor(
        store,
        KEY,
        "demo-12",
        clock=clock,
        on_event_appended=lambda: wakes.append(1),
        rooms=["1201", "1203"],
    )
    p.register("set_lights", SetLightsBody, lights)
    return p


def events(conn: sqlite3.Connection) -> list[tuple[str, str | None, dict[str, Any]]]:
    rows = conn.execute("SELECT type, room, data FROM events ORDER BY seq")
    return [(t, r, json.loads(d)) for t, r, d in rows]


def replay_ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM commands ORDER BY id")]


def meta(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT key FROM meta")]


async def test_ok_command_persists_records_and_applies(
    processor: CommandProcessor, store: Store, lights: Lights, wakes: list[int]
) -> None:
    out = reply(await processor.handle(command()))
    assert out == {"schema": 1, "id": "c1", "ok": True, "result": {"pending": ["1203/rio"]}}
    assert lights.applied == [{"main": True}]
    assert await store.read(meta) == ["lit-1"]
    assert await store.read(events) == [("room.keycard", "1203", {"on": True})]
    assert await store.read(replay_ids) == ["c1"]
    assert wakes


async def test_duplicate_returns_the_original_reply_even_when_stale(
    processor: CommandProcessor, store: Store, lights: Lights, clock: Clock
) -> None:
    first = reply(await processor.handle(command()))
    clock.now = T0 + timedelta(hours=23)  # stale by now, but still a duplicate
    again = reply(await processor.handle(command()))
    assert again == {**first, "duplicate": True}
    assert len(lights.calls) == 1
    assert len(await store.read(events)) == 1  # a duplicate emits no new event
    clock.now = T0 + timedelta(hours=24, seconds=1)  # out of the window: checked afresh
    late = reply(await processor.handle(command()))
    assert late["error"]["code"] == "stale"
    assert "duplicate" not in late


async def test_unauthenticated_is_not_recorded_and_may_be_resent(
    processor: CommandProcessor, store: Store, lights: Lights
) -> None:
    out = reply(await processor.handle(command(key=b"\x00" * 32)))
    assert (out["ok"], out["error"]["code"]) == (False, "unauthenticated")
    assert lights.calls == []
    assert await store.read(replay_ids) == []
    assert await store.read(events) == [
        ("command.rejected", None, {"id": "c1", "code": "unauthenticated"})
    ]
    assert reply(await processor.handle(command()))["ok"] is True


@pytest.mark.parametrize("offset", [timedelta(seconds=-301), timedelta(seconds=31)])
async def test_stale_is_not_recorded_and_may_be_resent(
    processor: CommandProcessor, store: Store, lights: Lights, offset: timedelta
) -> None:
    out = reply(await processor.handle(command(issued_at=T0 + offset)))
    assert out["error"]["code"] == "stale"
    assert await store.read(replay_ids) == []
    assert lights.calls == []
    assert (await store.read(events))[-1][2] == {"id": "c1", "code": "stale"}
    assert reply(await processor.handle(command()))["ok"] is True


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (command(body={"room": 1203, "circuits": {"main": True}}), "invalid"),
        (command(type="open_sesame"), "invalid"),
        (command(type="resync", body={}), "invalid"),  # in the spec, not registered here
        (command(body={"room": "9999", "circuits": {"main": True}}), "unknown_room"),
    ],
)
async def test_refusals_after_freshness_are_recorded_with_their_event(
    processor: CommandProcessor, store: Store, lights: Lights, payload: bytes, code: str
) -> None:
    out = reply(await processor.handle(payload))
    assert out["error"]["code"] == code
    assert lights.calls == []
    assert await store.read(replay_ids) == ["c1"]
    assert await store.read(events) == [("command.rejected", None, {"id": "c1", "code": code})]
    again = reply(await processor.handle(payload))
    assert again == {**out, "duplicate": True}
    assert len(await store.read(events)) == 1


async def test_handler_refusal_changes_nothing_but_is_recorded(
    processor: CommandProcessor, store: Store, lights: Lights
) -> None:
    lights.decision = Decision(ok=False, code="conflict", message="room is vacant")
    out = reply(await processor.handle(command()))
    assert out["error"] == {"code": "conflict", "message": "room is vacant"}
    assert await store.read(meta) == []
    assert lights.applied == []
    assert await store.read(replay_ids) == ["c1"]
    assert await store.read(events) == [
        ("command.rejected", None, {"id": "c1", "code": "conflict"})
    ]


async def test_persist_that_raises_leaves_nothing_and_replies_internal(
    processor: CommandProcessor, store: Store
) -> None:
    def broken(body: BaseModel, now: datetime) -> Decision:
        def persist(conn: sqlite3.Connection) -> None:
            schema.append_event(conn, "room.dnd", room="1203", data={"on": True}, ts=now)
            conn.execute("INSERT INTO meta (key, value) VALUES ('half', 'done')")
            raise RuntimeError("disk on fire")

        return Decision(ok=True, persist=persist, apply=lambda: pytest.fail("applied"))

    processor.register("resync", ResyncBody, broken)
    payload = command(id="r1", type="resync", body={})
    out = reply(await processor.handle(payload))
    assert out["error"]["code"] == "internal"
    assert await store.read(replay_ids) == []
    assert await store.read(events) == []
    assert await store.read(meta) == []
    assert await store.read(schema.current_seq) == 0  # not even a seq was used up


async def test_handler_that_raises_or_returns_junk_is_internal_and_retryable(
    processor: CommandProcessor, store: Store
) -> None:
    attempts: list[int] = []

    def flaky(body: BaseModel, now: datetime) -> Decision:
        attempts.append(1)
        if len(attempts) == 1:
            raise KeyError("bug")
        if len(attempts) == 2:
            return "yes"  # type: ignore[return-value]
        return Decision(ok=True, result={"n": len(attempts)})

    processor.register("resync", ResyncBody, flaky)
    payload = command(id="r1", type="resync", body={})
    assert reply(await processor.handle(payload))["error"]["code"] == "internal"
    assert reply(await processor.handle(payload))["error"]["code"] == "internal"
    assert await store.read(replay_ids) == []
    assert reply(await processor.handle(payload))["result"] == {"n": 3}


async def test_apply_that_raises_keeps_the_committed_reply(
    processor: CommandProcessor, store: Store
) -> None:
    def bad_apply() -> None:
        raise RuntimeError("in-memory bug")

    processor.register("resync", ResyncBody, lambda b, n: Decision(ok=True, apply=bad_apply))
    out = reply(await processor.handle(command(id="r1", type="resync", body={})))
    assert out["ok"] is True
    assert await store.read(replay_ids) == ["r1"]


async def test_unreadable_payload_gets_no_reply_and_writes_nothing(
    processor: CommandProcessor, store: Store
) -> None:
    for payload in (b"", b"garbage", b"[]", b'{"id": 5}', b"\x00" * (1 << 20)):
        assert await processor.handle(payload) is None
    assert await store.read(events) == []


async def test_malformed_and_oversized_with_a_readable_id(
    processor: CommandProcessor, store: Store
) -> None:
    broken = reply(await processor.handle(b'{"id": "m1", "type": "set_lights", "body": {'))
    assert (broken["id"], broken["error"]["code"]) == ("m1", "invalid")
    big = command(id="big", body={"room": "1203", "circuits": {"main": True}, "x": "y" * 70000})
    assert len(big) > checks.MAX_PAYLOAD_BYTES
    huge = reply(await processor.handle(big))
    assert (huge["id"], huge["error"]["code"]) == ("big", "invalid")
    assert await store.read(replay_ids) == []  # never authenticated: not recorded
    codes = [e[2] for e in await store.read(events)]
    assert codes == [{"id": "m1", "code": "invalid"}, {"id": "big", "code": "invalid"}]


async def test_async_handlers_run_one_command_at_a_time(
    processor: CommandProcessor,
) -> None:
    running: list[str] = []
    overlaps: list[int] = []
    gate = asyncio.Event()

    async def slow(body: BaseModel, now: datetime) -> Decision:
        running.append("x")
        overlaps.append(len(running))
        await gate.wait()
        running.pop()
        return Decision(ok=True)

    processor.register("resync", ResyncBody, slow)
    first = asyncio.create_task(processor.handle(command(id="a", type="resync", body={})))
    second = asyncio.create_task(processor.handle(command(id="b", type="resync", body={})))
    await asyncio.sleep(0)
    gate.set()
    replies = [reply(r) for r in await asyncio.gather(first, second)]
    assert [r["ok"] for r in replies] == [True, True]
    assert overlaps == [1, 1]


async def test_replay_rows_are_purged_after_24_hours(
    processor: CommandProcessor, store: Store, clock: Clock
) -> None:
    await processor.handle(command(id="old"))
    clock.now = T0 + timedelta(hours=25)
    await processor.handle(command(id="new", issued_at=clock.now))  # purges, at most hourly
    assert await store.read(replay_ids) == ["new"]
    clock.now = T0 + timedelta(hours=50)
    assert await processor.purge(clock.now) == 1
    assert await store.read(replay_ids) == []


def test_decision_contract() -> None:
    with pytest.raises(ValueError, match="no code"):
        Decision(ok=True, code="conflict")
    with pytest.raises(ValueError, match="one of"):
        Decision(ok=False, code="stale")
    with pytest.raises(ValueError, match="changes nothing"):
        Decision(ok=False, code="conflict", persist=lambda c: None)


def test_register_twice_is_an_error(processor: CommandProcessor) -> None:
    with pytest.raises(ValueError, match="already"):
        processor.register("set_lights", SetLightsBody, Lights())
    assert set(processor.types) == {"set_lights"}
