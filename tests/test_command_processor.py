"""Commands end to end inside the daemon: checks, replay cache, refusals, the engine's commit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters import schema
from gateway.adapters.signals import CommandReply
from gateway.core import commands as checks
from gateway.core import handlers
from gateway.core.effects import WritePoint
from gateway.engine.commands import CommandProcessor
from gateway.model.messages import COMMAND_BODIES, Reply
from tests.engine_harness import T0, Clock, Harness, running_engine

KEY = bytes.fromhex("a5" * 32)


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


def reply(raw: CommandReply | None) -> dict[str, Any]:
    assert raw is not None
    data: dict[str, Any] = json.loads(raw.payload)
    Reply.model_validate(data)  # every reply matches the wire model
    # Only a command whose signature was verified may choose where its reply goes.
    if data["ok"] or data["error"]["code"] in ("stale", "conflict", "unknown_room"):
        assert raw.authenticated
    if not data["ok"] and data["error"]["code"] == "unauthenticated":
        assert not raw.authenticated
    return data


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def floor(run_dir: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with running_engine(run_dir, clock) as h:
        yield h


@pytest.fixture
def processor(floor: Harness, clock: Clock) -> CommandProcessor:
    return CommandProcessor(floor.store, KEY, floor.inbox.submit, clock=clock)


def events(conn: sqlite3.Connection) -> list[tuple[str, str | None, dict[str, Any]]]:
    rows = conn.execute("SELECT type, room, data FROM events ORDER BY seq")
    return [(t, r, json.loads(d)) for t, r, d in rows]


def replay_ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM commands ORDER BY id")]


def test_every_command_type_has_exactly_one_handler() -> None:
    assert set(handlers.HANDLERS) == set(COMMAND_BODIES)


async def test_ok_command_is_recorded_then_carried_out(
    processor: CommandProcessor, floor: Harness
) -> None:
    out = reply(await processor.handle(command()))
    assert out == {"schema": 1, "id": "c1", "ok": True, "result": {"pending": ["1203/rio"]}}
    assert await floor.store.read(replay_ids) == ["c1"]
    (write,) = [w for w in floor.actuators.writes if w.point == "light_main"]
    assert (str(write.device), write.value) == ("1203/rio", True)


async def test_duplicate_returns_the_original_reply_even_when_stale(
    processor: CommandProcessor, floor: Harness, clock: Clock
) -> None:
    first = reply(await processor.handle(command()))
    clock.now = T0 + timedelta(hours=23)  # stale by now, but still a duplicate
    again = reply(await processor.handle(command()))
    assert again == {**first, "duplicate": True}
    assert len([w for w in floor.actuators.writes if w.point == "light_main"]) == 1
    clock.now = T0 + timedelta(hours=24, seconds=1)  # out of the window: checked afresh
    late = reply(await processor.handle(command()))
    assert late["error"]["code"] == "stale"
    assert "duplicate" not in late


async def test_unauthenticated_is_not_recorded_and_may_be_resent(
    processor: CommandProcessor, floor: Harness
) -> None:
    out = reply(await processor.handle(command(key=b"\x00" * 32)))
    assert (out["ok"], out["error"]["code"]) == (False, "unauthenticated")
    assert floor.actuators.writes == []
    assert await floor.store.read(replay_ids) == []
    assert await floor.store.read(events) == [
        ("command.rejected", None, {"id": "c1", "code": "unauthenticated"})
    ]
    assert reply(await processor.handle(command()))["ok"] is True


@pytest.mark.parametrize("offset", [timedelta(seconds=-301), timedelta(seconds=31)])
async def test_stale_is_not_recorded_and_may_be_resent(
    processor: CommandProcessor, floor: Harness, offset: timedelta
) -> None:
    out = reply(await processor.handle(command(issued_at=T0 + offset)))
    assert out["error"]["code"] == "stale"
    assert await floor.store.read(replay_ids) == []
    assert (await floor.store.read(events))[-1][2] == {"id": "c1", "code": "stale"}
    assert reply(await processor.handle(command()))["ok"] is True


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (command(body={"room": 1203, "circuits": {"main": True}}), "invalid"),
        (command(type="open_sesame"), "invalid"),
        (command(body={"room": "9999", "circuits": {"main": True}}), "unknown_room"),
        (command(body={"room": "1205", "circuits": {"main": True}}), "conflict"),  # no rio
    ],
)
async def test_refusals_after_freshness_are_recorded_with_their_event(
    processor: CommandProcessor, floor: Harness, payload: bytes, code: str
) -> None:
    out = reply(await processor.handle(payload))
    assert out["error"]["code"] == code
    assert floor.actuators.writes == []
    assert await floor.store.read(replay_ids) == ["c1"]
    assert await floor.store.read(events) == [
        ("command.rejected", None, {"id": "c1", "code": code})
    ]
    again = reply(await processor.handle(payload))
    assert again == {**out, "duplicate": True}
    assert len(await floor.store.read(events)) == 1


async def test_a_handler_that_raises_is_internal_and_retryable(
    processor: CommandProcessor, floor: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> handlers.Done:
        raise KeyError("bug")

    monkeypatch.setitem(handlers.HANDLERS, "resync", broken)
    payload = command(id="r1", type="resync", body={})
    assert reply(await processor.handle(payload))["error"]["code"] == "internal"
    assert await floor.store.read(replay_ids) == []
    assert await floor.store.read(schema.current_seq) == 0  # nothing written, no seq used
    monkeypatch.undo()
    assert reply(await processor.handle(payload))["result"] == {}


async def test_a_store_that_cannot_answer_gives_internal(
    processor: CommandProcessor, floor: Harness
) -> None:
    await floor.store.close()
    out = reply(await processor.handle(command()))
    assert out["error"]["code"] == "internal"


async def test_unreadable_payload_gets_no_reply_and_writes_nothing(
    processor: CommandProcessor, floor: Harness
) -> None:
    for payload in (b"", b"garbage", b"[]", b'{"id": 5}', b"\x00" * (1 << 20)):
        assert await processor.handle(payload) is None
    assert await floor.store.read(events) == []


async def test_malformed_and_oversized_with_a_readable_id(
    processor: CommandProcessor, floor: Harness
) -> None:
    broken = reply(await processor.handle(b'{"id": "m1", "type": "set_lights", "body": {'))
    assert (broken["id"], broken["error"]["code"]) == ("m1", "invalid")
    big = command(id="big", body={"room": "1203", "circuits": {"main": True}, "x": "y" * 70000})
    assert len(big) > checks.MAX_PAYLOAD_BYTES
    huge = reply(await processor.handle(big))
    assert (huge["id"], huge["error"]["code"]) == ("big", "invalid")
    assert await floor.store.read(replay_ids) == []  # never authenticated: not recorded
    codes = [e[2] for e in await floor.store.read(events)]
    assert codes == [{"id": "m1", "code": "invalid"}, {"id": "big", "code": "invalid"}]


async def test_commands_run_one_at_a_time_in_arrival_order(
    processor: CommandProcessor, floor: Harness
) -> None:
    payloads = [command(id=f"c{i}", body={"room": "1203", "circuits": {"main": i % 2 == 0}})
                for i in range(10)]  # fmt: skip
    replies = await asyncio.gather(*(processor.handle(p) for p in payloads))
    assert all(reply(r)["ok"] for r in replies)
    writes = [w.value for w in floor.actuators.writes if isinstance(w, WritePoint)]
    assert writes == [i % 2 == 0 for i in range(10)]


async def test_replay_records_are_purged_after_24_hours(
    processor: CommandProcessor, floor: Harness, clock: Clock
) -> None:
    await processor.handle(command(id="old"))
    clock.now = T0 + timedelta(hours=25)
    await processor.handle(command(id="new", issued_at=clock.now))  # purges, at most hourly
    assert await floor.store.read(replay_ids) == ["new"]


async def test_a_flood_of_refused_commands_gets_every_reply_but_few_events(
    processor: CommandProcessor, floor: Harness, clock: Clock
) -> None:
    # A peer sending garbage with readable ids: unsigned, stale, broken JSON.
    payloads = []
    for i in range(300):
        kind = i % 3
        if kind == 0:
            unsigned = {**json.loads(command(id=f"u{i}")), "sig": "0" * 64}
            payloads.append(json.dumps(unsigned).encode())
        elif kind == 1:
            payloads.append(command(id=f"s{i}", issued_at=T0 - timedelta(hours=1)))
        else:
            payloads.append(f'{{"id": "j{i}", "type": '.encode())
    replies = [reply(await processor.handle(p)) for p in payloads]
    assert [r["id"] for r in replies] == [json.loads(p)["id"] if i % 3 != 2 else f"j{i}"
                                          for i, p in enumerate(payloads)]  # fmt: skip
    assert not any(r["ok"] for r in replies)
    rejected = [e for e in await floor.store.read(events) if e[0] == "command.rejected"]
    assert len(rejected) == 20  # each of the first 20 in 10 s has its own event
    assert all("id" in data for _, _, data in rejected)
    clock.now = T0 + timedelta(seconds=11)
    await floor.settle()  # the window ends: one event per code, with the count
    rejected = [e for e in await floor.store.read(events) if e[0] == "command.rejected"]
    counted = {data["code"]: data["count"] for _, _, data in rejected[20:]}
    assert counted == {"unauthenticated": 93, "stale": 93, "invalid": 94}
    assert all("id" not in data for _, _, data in rejected[20:])
