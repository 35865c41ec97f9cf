"""The MQTT uplink against a real Mosquitto: status and will, current state first, the
outbox (in order, nothing lost across broker restarts and kill -9), retained state,
commands end to end, TLS + password, and the outbox's retention and disk cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.backoff import Backoff
from gateway.adapters import journal, schema
from gateway.adapters.mqtt import Uplink
from gateway.adapters.signals import Broadcast, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.floor import (
    FloorConfig,
    GatewaySection,
    MqttSection,
    PolicySection,
    PollSection,
)
from gateway.core import commands as checks
from gateway.engine.commands import CommandProcessor
from gateway.model.messages import EventEnvelope, Status
from tests.engine_harness import Clock, Harness, running_engine
from tests.mosquitto import (  # noqa: F401 (fixtures)
    HOST,
    Collector,
    Mosquitto,
    collecting,
    free_port,
    mosquitto_fixture,
    mqtt_certs,
    read_retained,
)
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = "hotel/test/test-12"
GATEWAY = "test-12"
KEY = bytes.fromhex("5a" * 32)
STARTED = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def floor_config(directory: Path, port: int, **mqtt: Any) -> FloorConfig:
    """A floor with no buses or rooms: the uplink only reads [gateway] and [mqtt]."""
    key_file = directory / "command.key"
    key_file.write_text(KEY.hex())
    return FloorConfig(
        path=directory / "floor.toml",
        gateway=GatewaySection(id=GATEWAY, state_dir=directory),
        mqtt=MqttSection(
            host=HOST,
            port=port,
            root=ROOT,
            command_key_file=key_file,
            **{"keepalive_s": 5, "reconnect_jitter_s": 0.0, **mqtt},
        ),
        policy=PolicySection(),
        escalation=(),
        buses=(),
        rooms=(),
        floorpanel=None,
        poll=PollSection(),
    )


class Floor:
    """What the engine would give the uplink: current state, and a command sink."""

    def __init__(self) -> None:
        self.retained = RetainedChanges()
        self.committed = Broadcast()
        self.alarms: dict[str, dict[str, object]] = {}
        self.rooms: dict[str, dict[str, object]] = {"1201": room("1201"), "1203": room("1203")}
        self.commands: list[bytes] = []

    def current_state(self) -> Sequence[tuple[str, dict[str, object] | None]]:
        items: list[tuple[str, dict[str, object] | None]] = []
        items += [(f"alarms/{a}", p) for a, p in self.alarms.items()]
        items += [(f"rooms/{r}/state", p) for r, p in self.rooms.items()]
        return items

    async def on_command(self, payload: bytes) -> bytes | None:
        self.commands.append(payload)
        return None


def room(room_id: str, **over: object) -> dict[str, object]:
    return {"schema": 1, "room": room_id, "occupancy": "vacant", **over}


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state" / "floor.db", synchronous="NORMAL")
    yield s
    await s.close()


@pytest.fixture
def floor() -> Floor:
    return Floor()


@pytest.fixture(params=["5", "3.1.1"])
def protocol(request: pytest.FixtureRequest) -> str:
    """The v1 suite runs under MQTT 5 and, for old brokers, 3.1.1."""
    return str(request.param)


@pytest.fixture
def make_uplink(tmp_path: Path, store: Store, floor: Floor, protocol: str) -> Callable[..., Uplink]:
    def make(
        port: int, on_command: Any = None, beat: Callable[[], None] | None = None, **mqtt: Any
    ) -> Uplink:
        return Uplink(
            floor_config(tmp_path, port, **{"protocol": protocol, **mqtt}),
            store,
            version="9.9.9",
            started_at=STARTED,
            current_state=floor.current_state,
            on_command=on_command or floor.on_command,
            retained=floor.retained,
            outbox=floor.committed,
            backoff=Backoff(initial_s=0.02, cap_s=0.2),
            beat=beat,
            coalesce_s=0.05,
        )

    return make


@contextlib.asynccontextmanager
async def running(uplink: Uplink) -> AsyncIterator[asyncio.Task[None]]:
    """Run the uplink for the block; cancel it (a clean stop) and leave no task behind."""
    task = asyncio.create_task(uplink.run(), name="uplink")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert {t for t in asyncio.all_tasks() if t.get_name().startswith("uplink")} == set()


async def append(store: Store, n: int, *, low_value: bool = False, size: int = 0) -> None:
    now = datetime.now(UTC)

    def op(conn: sqlite3.Connection) -> None:
        for i in range(n):
            room_id = None if i % 5 == 0 else "1203"
            data = {"i": i, "pad": "x" * size} if size else {"i": i}
            journal.append_event(conn, "door.opened", room=room_id, data=data, ts=now,
                                low_value=low_value)  # fmt: skip

    await store.write(op)


def seqs(collector: Collector) -> list[int]:
    """The seq of each event received, each event once (by id), in order of first arrival."""
    return [e["seq"] for e in collector.unique(f"{ROOT}/events")]


async def eventually(
    store: Store, check: Callable[[sqlite3.Connection], bool], timeout: float = 5.0
) -> None:
    """Wait (bounded) until ``check`` holds on the committed database."""
    async with asyncio.timeout(timeout):
        while not await store.read(check):
            await asyncio.sleep(0.005)


def _is_online_status(message: aiomqtt.Message) -> bool:
    if message.topic.value != f"{ROOT}/status":
        return False
    return bool(json.loads(message.payload)["online"])  # type: ignore[arg-type]


def undelivered(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL").fetchone()[0])


async def test_connect_publishes_status_then_state_then_events_in_order(
    mosquitto: Mosquitto, store: Store, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    floor.alarms["a-1"] = {"schema": 1, "alarm_id": "a-1", "state": "active"}
    await append(store, 150)
    uplink = make_uplink(mosquitto.port, max_in_flight=4)
    in_flight: set[int] = set()

    def drained() -> bool:
        in_flight.add(uplink.stats().in_flight)
        return len(seqs(col)) >= 150

    async with collecting(mosquitto, f"{ROOT}/#") as col, running(uplink):
        await until(drained)
        assert max(in_flight) <= 4
        await eventually(store, lambda c: undelivered(c) == 0)
        topics = [m.topic.value for m in col.messages]
        assert topics[:4] == [
            f"{ROOT}/status",
            f"{ROOT}/alarms/a-1",
            f"{ROOT}/rooms/1201/state",
            f"{ROOT}/rooms/1203/state",
        ]
        assert seqs(col) == list(range(1, 151))
        status = Status.model_validate_json(col.payloads(f"{ROOT}/status")[0])
        assert (status.online, status.gateway, status.version) == (True, GATEWAY, "9.9.9")
        assert status.started_at == STARTED
        events = col.unique(f"{ROOT}/events")
        envelopes = [EventEnvelope.model_validate(e) for e in events]
        assert envelopes[0].room is None
        assert "room" not in events[0]
        assert envelopes[1].room == "1203"
        assert envelopes[1].data == {"i": 1}
        assert all(e.gateway == GATEWAY for e in envelopes)
        assert await store.read(undelivered) == 0
        # Live events follow as they are appended.
        await append(store, 3)
        floor.committed.notify()
        await until(lambda: len(seqs(col)) == 153)
        stats = uplink.stats()
        assert stats.connected
        assert stats.reconnects == 0
        assert stats.last_error is None
    assert (
        await read_retained(mosquitto, f"{ROOT}/rooms/1203/state")
        == json.dumps(floor.rooms["1203"], separators=(",", ":")).encode()
    )


async def test_clean_stop_sends_the_last_events_then_the_offline_status(
    mosquitto: Mosquitto, store: Store, make_uplink: Callable[..., Uplink]
) -> None:
    uplink = make_uplink(mosquitto.port)
    async with collecting(mosquitto, f"{ROOT}/#") as col:
        async with running(uplink):
            await until(lambda: col.payloads(f"{ROOT}/status"))
            online = await read_retained(mosquitto, f"{ROOT}/status")
            assert online is not None
            assert json.loads(online)["online"] is True
            # As the daemon does on a stop: gateway.stopping, then cancel (nobody wakes
            # the drainer: the stop itself sends what is undelivered).
            await store.write(
                lambda c: journal.append_event(
                    c, "gateway.stopping", room=None, data={}, ts=datetime.now(UTC)
                )
            )
        await until(lambda: len(col.payloads(f"{ROOT}/status")) == 2)
        topics = [m.topic.value for m in col.messages]
        assert topics[-2:] == [f"{ROOT}/events", f"{ROOT}/status"]
        assert json.loads(col.payloads(f"{ROOT}/events")[-1])["type"] == "gateway.stopping"
    assert await store.read(undelivered) == 0
    offline = await read_retained(mosquitto, f"{ROOT}/status")
    assert offline is not None
    assert json.loads(offline) == {**json.loads(online), "online": False}


async def test_broker_restarts_while_events_are_appended_lose_nothing(
    mosquitto: Mosquitto, store: Store, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    total = 300
    uplink = make_uplink(mosquitto.port)
    appended = 0

    async def produce() -> None:
        nonlocal appended
        while appended < total:
            await append(store, 1)
            appended += 1
            floor.committed.notify()
            await asyncio.sleep(0.002)  # a steady trickle of events, not a wait for anything

    async with collecting(mosquitto, f"{ROOT}/events") as col, running(uplink):
        producer = asyncio.create_task(produce())
        for stop_at in (60, 160):
            await until(lambda: appended >= stop_at)  # noqa: B023
            mosquitto.stop()
            await until(lambda: not uplink.connected)
            await until(lambda: appended >= stop_at + 40)  # noqa: B023
            mosquitto.start()
            await until(lambda: uplink.connected)
        await producer
        await until(lambda: set(seqs(col)) >= set(range(1, total + 1)), timeout=30)
        assert seqs(col) == list(range(1, total + 1))
        await eventually(store, lambda c: undelivered(c) == 0)
        await uplink.maintain(datetime.now(UTC), purge=False)
        stats = uplink.stats()
        assert (stats.outbox_depth, stats.oldest_undelivered, stats.in_flight) == (0, None, 0)
        assert stats.reconnects == 2
        assert stats.last_error is not None


async def test_current_state_goes_out_before_the_backlog_after_reconnect(
    mosquitto: Mosquitto, store: Store, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    uplink = make_uplink(mosquitto.port)
    async with collecting(mosquitto, f"{ROOT}/#") as col, running(uplink):
        await until(lambda: len(col.payloads(f"{ROOT}/rooms/1203/state")) == 1)
        mosquitto.stop()
        await until(lambda: not uplink.connected)
        before = len(col.messages)
        # During the outage: a backlog, an emergency, a room change, an alarm cleared.
        await append(store, 400)
        floor.committed.notify()
        floor.alarms["a-9"] = {"schema": 1, "alarm_id": "a-9", "state": "active"}
        floor.rooms["1201"] = room("1201", occupancy="occupied")
        floor.retained.set("rooms/1201/state", floor.rooms["1201"])
        floor.retained.set("alarms/a-old", None)
        mosquitto.start()
        await until(lambda: len(seqs(col)) >= 400, timeout=30)
        # From the new session's online status on; skip the copies the broker sends to the
        # collector on resubscribing (retain flag) and its redeliveries of older messages.
        live = [m for m in col.messages[before:] if not m.retain]
        start = next(i for i, m in enumerate(live) if _is_online_status(m))
        live = live[start:]
        topics = [m.topic.value for m in live]
        first_event = topics.index(f"{ROOT}/events")
        # Session Present: the broker still holds 1203's unchanged state; 1201 changed.
        assert topics[:first_event] == [
            f"{ROOT}/status",
            f"{ROOT}/alarms/a-9",
            f"{ROOT}/rooms/1201/state",
            f"{ROOT}/alarms/a-old",
        ]
        assert live[3].payload == b""  # the clearing of a resolved alarm is not lost
        assert json.loads(live[2].payload)["occupancy"] == "occupied"  # type: ignore[arg-type]
        assert seqs(col) == list(range(1, 401))


async def test_link_lost_while_sending_the_current_state_is_noticed_at_once(
    mosquitto: Mosquitto, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    rooms = floor.current_state

    def current_state() -> Sequence[tuple[str, dict[str, object] | None]]:
        mosquitto.kill()  # the broker dies between CONNACK and the state's PUBACKs
        return rooms()

    floor.current_state = current_state  # type: ignore[method-assign]
    uplink = make_uplink(mosquitto.port)
    async with running(uplink):
        await until(lambda: uplink.stats().failures >= 1, timeout=30)
        # Seen by the message reader, not by waiting out the PUBACK timeout.
        assert "timed out" not in (uplink.stats().last_error or "")


async def test_retained_changes_coalesce_latest_wins_and_resync(
    mosquitto: Mosquitto, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    uplink = make_uplink(mosquitto.port)
    topic = f"{ROOT}/rooms/1203/state"
    async with collecting(mosquitto, f"{ROOT}/#") as col, running(uplink):
        await until(lambda: len(col.payloads(topic)) == 1)
        for n in range(20):
            floor.retained.set("rooms/1203/state", room("1203", n=n))
        floor.retained.set("alarms/a-1", {"alarm_id": "a-1"})
        await until(lambda: len(col.payloads(f"{ROOT}/alarms/a-1")) == 1)
        assert [json.loads(p).get("n") for p in col.payloads(topic)] == [None, 19]
        floor.retained.set("alarms/a-1", None)
        await until(lambda: col.payloads(f"{ROOT}/alarms/a-1")[-1:] == [b""])
        assert await read_retained(mosquitto, f"{ROOT}/alarms/a-1") is None
        assert await read_retained(mosquitto, topic) == col.payloads(topic)[-1]

        status_before = len(col.payloads(f"{ROOT}/status"))
        before = len(col.payloads(topic))
        floor.retained.resync()
        # Until the last of the three is in: 1201's alone may be read before 1203's.
        await until(lambda: len(col.payloads(topic)) == before + 1)
        assert len(col.payloads(f"{ROOT}/rooms/1201/state")) == 2
        assert len(col.payloads(f"{ROOT}/status")) == status_before + 1
        resync = [m.topic.value for m in col.messages[-3:]]
        assert resync == [f"{ROOT}/status", f"{ROOT}/rooms/1201/state", topic]


async def test_commands_sent_while_away_arrive_on_return(
    mosquitto: Mosquitto, floor: Floor, make_uplink: Callable[..., Uplink]
) -> None:
    async with collecting(mosquitto, f"{ROOT}/status") as col:
        async with running(make_uplink(mosquitto.port)):
            await until(lambda: col.payloads(f"{ROOT}/status"))
        async with aiomqtt.Client(HOST, mosquitto.port) as central:
            await central.publish(f"{ROOT}/cmd", b"while away", qos=1)
        async with running(make_uplink(mosquitto.port)):
            await until(lambda: floor.commands == [b"while away"])


async def test_a_stop_as_a_command_is_answered_still_stops_the_uplink(
    mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    # On Python 3.11 asyncio.wait_for (aiomqtt's PUBACK wait, here the handler's) returns
    # and drops a cancel that lands in the same loop iteration (CPython gh-86296): the
    # command reader then read on, and a stop waited for the shutdown bound.
    answers: list[asyncio.Future[None]] = []

    async def on_command(payload: bytes) -> bytes | None:
        answers.append(asyncio.get_running_loop().create_future())
        await asyncio.wait_for(answers[-1], timeout=30)
        return None

    uplink = make_uplink(mosquitto.port, on_command=on_command)
    task = asyncio.create_task(uplink.run(), name="uplink")
    try:
        async with collecting(mosquitto, f"{ROOT}/#") as col:
            # The room states follow the subscription to {root}/cmd.
            await until(lambda: col.payloads(f"{ROOT}/rooms/1203/state"))
        async with aiomqtt.Client(HOST, mosquitto.port) as central:
            await central.publish(f"{ROOT}/cmd", b"{}", qos=1)
        await until(lambda: answers)
        answers[0].set_result(None)  # the command is answered...
        task.cancel()  # ...as the daemon stops
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the uplink kept running after it was cancelled"
    finally:
        for t in asyncio.all_tasks():  # a reader that lost its cancel ignores the next
            if t.get_name().startswith("uplink"):
                t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_tls_with_client_certificate_and_password(
    mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    c = mosquitto.certs
    uplink = make_uplink(
        mosquitto.tls_port,
        tls_ca_file=c.ca,
        tls_cert_file=c.client_cert,
        tls_key_file=c.client_key,
        username=mosquitto.username,
        password_file=mosquitto.password_file,
    )
    async with collecting(mosquitto, f"{ROOT}/status") as col, running(uplink):
        await until(lambda: col.payloads(f"{ROOT}/status"))
        assert uplink.connected


async def test_wrong_password_retries_without_crashing(
    mosquitto: Mosquitto, tmp_path: Path, make_uplink: Callable[..., Uplink]
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    uplink = make_uplink(mosquitto.auth_port, username=mosquitto.username, password_file=wrong)
    async with running(uplink) as task:
        await until(lambda: uplink.stats().failures >= 3)
        assert not task.done()
        stats = uplink.stats()
        assert not stats.connected
        assert stats.last_error is not None
        assert "not authori" in stats.last_error.lower()
        assert "not-the-password" not in stats.last_error
        # The right password (read again at each connect) gets it in.
        wrong.write_text(mosquitto.password)
        await until(lambda: uplink.connected)


async def test_broker_down_at_start_then_up(
    mosquitto: Mosquitto, store: Store, make_uplink: Callable[..., Uplink]
) -> None:
    mosquitto.stop()
    await append(store, 20)
    beats: list[int] = []
    uplink = make_uplink(mosquitto.port, beat=lambda: beats.append(1))
    async with running(uplink) as task:
        await until(lambda: uplink.stats().failures >= 2)
        await until(lambda: len(beats) >= 3)  # progress is reported while the link is down
        assert not task.done()
        assert not uplink.connected
        assert "refused" in (uplink.stats().last_error or "").lower()
        mosquitto.start()
        await until(lambda: uplink.connected)
        await eventually(store, lambda c: undelivered(c) == 0)


def signed(env: dict[str, Any], key: bytes = KEY) -> bytes:
    return json.dumps({**env, "sig": checks.sign(env, key)}).encode()


def lights_command(command_id: str, issued_at: datetime) -> dict[str, Any]:
    return {
        "schema": 1,
        "id": command_id,
        "type": "set_lights",
        "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "body": {"room": "1203", "circuits": {"bath": True}},
    }


async def test_commands_end_to_end_through_the_broker(
    mosquitto: Mosquitto, run_dir: Path, tmp_path: Path
) -> None:
    async with running_engine(run_dir, Clock(live=True)) as floor:
        processor = CommandProcessor(floor.store, KEY, floor.inbox.submit)
        uplink = Uplink(
            floor_config(tmp_path, mosquitto.port),
            floor.store,
            version="9.9.9",
            started_at=STARTED,
            current_state=floor.engine.current_state,
            on_command=processor.handle,
            retained=floor.retained,
            outbox=floor.committed,
            backoff=Backoff(initial_s=0.02, cap_s=0.2),
            coalesce_s=0.05,
        )
        await _commands_through_the_broker(mosquitto, floor, uplink)


async def _commands_through_the_broker(
    mosquitto: Mosquitto, floor: Harness, uplink: Uplink
) -> None:
    now = datetime.now(UTC)
    sends = [
        signed(lights_command("ok-1", now)),
        signed(lights_command("ok-1", now)),  # duplicate
        json.dumps(lights_command("unsigned-1", now)).encode(),
        signed(lights_command("wrong-key-1", now), key=b"\x07" * 32),
        signed(lights_command("stale-1", now - timedelta(seconds=400))),
        signed({**lights_command("bad-body-1", now), "body": {"room": 1203}}),
        b'{"id": "junk-1", "type": ',
        b"no id at all",
        b'{"id": "huge-1", "pad": "' + b"x" * (1 << 20) + b'"}',
        signed(lights_command("ok-2", now)),  # still serving after all that
    ]
    expected = [
        ("ok-1", True, None, None),
        ("ok-1", True, None, True),
        ("unsigned-1", False, "unauthenticated", None),
        ("wrong-key-1", False, "unauthenticated", None),
        ("stale-1", False, "stale", None),
        ("bad-body-1", False, "invalid", None),
        ("junk-1", False, "invalid", None),
        ("huge-1", False, "invalid", None),
        ("ok-2", True, None, None),
    ]
    async with (
        collecting(mosquitto, f"{ROOT}/#") as col,
        running(uplink),
        aiomqtt.Client(HOST, mosquitto.port) as central,
    ):
        await until(lambda: col.payloads(f"{ROOT}/status"))
        for payload in sends:
            await central.publish(f"{ROOT}/cmd", payload, qos=1)
        await until(lambda: len(col.payloads(f"{ROOT}/reply")) == len(expected))
        replies = [json.loads(p) for p in col.payloads(f"{ROOT}/reply")]
        got = [
            (r["id"], r["ok"], r.get("error", {}).get("code"), r.get("duplicate")) for r in replies
        ]
        assert got == expected
        baths = [w.value for w in floor.actuators.writes if w.point == "light_bath"]
        assert baths == [True, True]
        rejected = ["unsigned-1", "wrong-key-1", "stale-1", "bad-body-1", "junk-1", "huge-1"]
        await until(lambda: len(seqs(col)) == len(rejected))
        events = col.unique(f"{ROOT}/events")
        assert [e["type"] for e in events] == ["command.rejected"] * len(rejected)
        assert [e["data"]["id"] for e in events] == rejected
        assert "room" not in events[0]


async def test_disk_cap_sheds_only_low_value_events(
    store: Store, make_uplink: Callable[..., Uplink]
) -> None:
    uplink = make_uplink(free_port(), outbox_max_mib=1)  # no broker: never delivered
    await append(store, 200, size=1000)
    await append(store, 2500, size=1000, low_value=True)
    await append(store, 500, size=1000, low_value=True)
    await store.write(lambda c: schema.mark_delivered(c, range(2701, 3201), datetime.now(UTC)))
    await append(store, 200, size=1000)
    assert await store.read(schema.used_bytes) > 3 << 20

    def counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
        q = "SELECT COUNT(*) FROM events WHERE low_value = ? AND (delivered_at IS NULL) = ?"
        high = conn.execute(q, (0, 1)).fetchone()[0]
        low_undelivered = conn.execute(q, (1, 1)).fetchone()[0]
        low_delivered = conn.execute(q, (1, 0)).fetchone()[0]
        return high, low_undelivered, low_delivered

    await uplink.maintain(datetime.now(UTC))
    high, low_undelivered, low_delivered = await store.read(counts)
    assert high == 400  # never shed
    assert low_delivered == 0  # delivered low-value events go first
    assert 0 < low_undelivered < 2500  # then the oldest undelivered, only as many as needed
    assert await store.read(schema.used_bytes) <= 1 << 20
    stats = uplink.stats()
    assert stats.shed == 2500 - low_undelivered
    assert await store.read(schema.events_shed) == stats.shed  # persisted
    assert stats.outbox_depth == 400 + low_undelivered
    survivors = await store.read(
        lambda c: [r[0] for r in c.execute("SELECT seq FROM events ORDER BY seq")]
    )
    assert survivors[:200] == list(range(1, 201))  # the oldest high-value events are kept


async def test_delivered_events_are_purged_after_the_keep_time(
    store: Store, make_uplink: Callable[..., Uplink]
) -> None:
    uplink = make_uplink(free_port(), events_keep_days=7)
    await append(store, 10)
    now = datetime.now(UTC)
    await store.write(lambda c: schema.mark_delivered(c, [1, 2, 3], now - timedelta(days=8)))
    await store.write(lambda c: schema.mark_delivered(c, [4, 5], now - timedelta(days=6)))
    await uplink.maintain(now)
    remaining = await store.read(
        lambda c: [r[0] for r in c.execute("SELECT seq FROM events ORDER BY seq")]
    )
    assert remaining == list(range(4, 11))
    stats = uplink.stats()
    assert stats.outbox_depth == 5
    oldest = await store.read(lambda c: c.execute("SELECT ts FROM events WHERE seq = 6").fetchone())
    assert stats.oldest_undelivered == oldest[0]


CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from gateway.adapters.mqtt import Uplink
from gateway.adapters.store import Store
from drivers.backoff import Backoff
from gateway.adapters.signals import Broadcast, RetainedChanges
from tests.test_uplink import floor_config

async def main() -> None:
    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    store = await Store.open(directory / "state" / "floor.db", synchronous="NORMAL")
    async def no_command(payload: bytes) -> None:
        return None
    uplink = Uplink(floor_config(directory, port, max_in_flight=4), store, version="child",
                    started_at=datetime.now(UTC), current_state=lambda: [],
                    on_command=no_command, retained=RetainedChanges(), outbox=Broadcast(),
                    backoff=Backoff(initial_s=0.02, cap_s=0.2))
    await uplink.run()

asyncio.run(main())
"""


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        repo = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(repo)}
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(port)],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_kill_9_publishes_the_will_and_a_restart_loses_nothing(
    mosquitto: Mosquitto,
    store: Store,
    make_uplink: Callable[..., Uplink],
    child: Callable[[int], subprocess.Popen[bytes]],
) -> None:
    total = 3000
    await append(store, total)
    async with collecting(mosquitto, f"{ROOT}/#") as col:
        proc = child(mosquitto.port)
        await until(lambda: len(seqs(col)) >= 300, timeout=20)
        os.kill(proc.pid, signal.SIGKILL)  # mid-drain
        proc.wait()
        statuses = lambda: [json.loads(p) for p in col.payloads(f"{ROOT}/status")]  # noqa: E731
        await until(lambda: any(s["online"] is False for s in statuses()))
        will = [s for s in statuses() if not s["online"]][-1]
        assert (will["gateway"], will["version"]) == (GATEWAY, "child")
        delivered_before = await store.read(lambda c: total - undelivered(c))
        assert delivered_before < total
        uplink = make_uplink(mosquitto.port)
        async with running(uplink):
            await until(lambda: set(seqs(col)) >= set(range(1, total + 1)), timeout=20)
            assert seqs(col) == list(range(1, total + 1))
            await eventually(store, lambda c: undelivered(c) == 0)
