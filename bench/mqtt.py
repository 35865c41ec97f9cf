"""MQTT uplink figures against a local Mosquitto (figures, not a timed test).

Sections (``--sections``, default all):

``drain``
  1. Outage: N events are produced while the broker is down (the uplink is running and
     reconnecting), then the broker returns. Reported: time from the broker's restart to
     the current state (status, every room, every open alarm) at a subscriber, time to the
     first backlog event, the drain rate, lost/out-of-order events (must be 0), and the
     worst event-loop lag while draining (a 10 ms ticker standing in for call sampling).
  2. Steady 200 events/s: event-to-subscriber latency p50/p99.
  3. Command-to-reply: signed ``set_lights`` commands with an in-memory handler, p50/p99.
``reconnect``
  Publishes a broker restart costs a 60-room floor with one open alarm: counted at a
  subscriber that is in place before the uplink comes back, from its reconnect to its
  first event; with a broker that keeps sessions (Session Present) and one that does not.
``outage``
  The broker stopped for ``--outage-s`` (60) with a call raised in the middle; the
  uplink with its default reconnect settings. Reported: broker back -> the alarm at a
  subscriber.
``hung``
  The broker stopped with SIGSTOP (TCP open, nothing answered) while the uplink drains;
  reported: SIGSTOP -> the uplink drops the link (keepalive ``--keepalive-s``).
``flap``
  The outbox stall: after a long outage (the reconnect backoff at its cap) the broker
  returns, dies again while the gateway's new session is still sending its current state
  (when its status has reached a subscriber), and is started again at once. Reported,
  per trial: that last start -> the first backlog event at a subscriber.

The subscriber runs in its own process (clocks: CLOCK_MONOTONIC, shared across
processes). The bench builds the uplink only with the options the code under test has,
so the same script measures the base commit for before/after figures:
``PYTHONPATH=/path/to/base/checkout python bench/mqtt.py --sections reconnect,outage``.
Usage: ``python bench/mqtt.py [--events 100000] [--rooms 40] [--window 32] [--sections …]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import json
import logging
import os
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

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
from gateway.core.inputs import CommandRefused, Input, RunCommand
from gateway.engine.commands import CommandProcessor
from gateway.model.messages import Reply, ReplyError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.mosquitto
from tests.mosquitto import HOST, Mosquitto, make_certs

ROOT = "hotel/bench/bench-12"
SUBSCRIBER = r"""
import asyncio, json, sys, time
import aiomqtt

async def main(port: int, root: str, identifier: str) -> None:
    seen: list[tuple[float, str, int | None]] = []
    mark = {"restart": None}
    stop = asyncio.Event()

    async def control() -> None:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        async for line in reader:
            cmd = line.decode().strip()
            if cmd == "dump":
                stop.set()
                return

    async def collect() -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", port, identifier=identifier,
                                          clean_session=False, timeout=5) as c:
                    await c.subscribe(root + "/#", qos=1)
                    print("ready", flush=True)
                    async for m in c.messages:
                        now = time.monotonic()
                        topic = m.topic.value[len(root) + 1:]
                        if topic == "events" and not m.retain:
                            e = json.loads(m.payload)
                            sent = e["data"].get("t")
                            seen.append((now, "events", e["seq"], sent, False))
                        else:
                            seen.append((now, topic, None, None, bool(m.retain)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.005)

    task = asyncio.create_task(collect())
    ctl = asyncio.create_task(control())
    await stop.wait()
    task.cancel()
    print(json.dumps(seen), flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


class Floor:
    """Current state of a floor of ``rooms`` rooms with one open alarm."""

    def __init__(self, rooms: int) -> None:
        self.rooms = [str(1201 + i) for i in range(rooms)]
        alarm = {"schema": 1, "alarm_id": "a-1", "room": self.rooms[0], "state": "active"}
        self.alarms: list[tuple[str, dict[str, object] | None]] = [("alarms/a-1", alarm)]

    def current_state(self) -> Sequence[tuple[str, dict[str, object] | None]]:
        items = list(self.alarms)
        items += [(f"rooms/{r}/state", {"schema": 1, "room": r}) for r in self.rooms]
        return items


def floor_config(directory: Path, port: int, window: int, **mqtt: object) -> FloorConfig:
    key = directory / "command.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32))
    # Only the settings the code under test knows (the base commit has fewer).
    known = {k: v for k, v in mqtt.items() if k in MqttSection.model_fields}
    return FloorConfig(
        path=directory / "floor.toml",
        gateway=GatewaySection(id="bench-12", state_dir=directory),
        mqtt=MqttSection(
            host=HOST, port=port, root=ROOT, command_key_file=key, max_in_flight=window, **known
        ),
        policy=PolicySection(),
        escalation=(),
        buses=(),
        rooms=(),
        floorpanel=None,
        poll=PollSection(),
    )


async def _decide_lights(store: Store, item: Input) -> bytes:
    """A stand-in engine for ``set_lights``: the reply, recorded in one transaction."""
    now = datetime.now(UTC)
    if isinstance(item, RunCommand):
        reply = Reply(id=item.id, ok=True, result={"pending": []}).to_json()
    else:
        assert isinstance(item, CommandRefused)
        reply = Reply(id=item.id, ok=False, error=ReplyError(code="invalid", message="")).to_json()
    await store.write(lambda conn: schema.record_command(conn, item.id, now, reply.decode()))
    return reply


async def append(store: Store, n: int, stamp: bool = False) -> None:
    now = datetime.now(UTC)
    data = {"t": time.monotonic()} if stamp else {}

    def op(conn: sqlite3.Connection) -> None:
        for _ in range(n):
            journal.append_event(conn, "door.opened", room="1201", data=data, ts=now)

    await store.write(op)


async def wait_for(cond: Callable[[], bool]) -> None:
    """Poll ``cond`` (the caller bounds the wait)."""
    while not cond():  # noqa: ASYNC110 (a bench polling a property)
        await asyncio.sleep(0.005)


def make_uplink(config: FloorConfig, store: Store, **kw: object) -> Uplink:
    """An Uplink with the arguments the code under test takes (the base commit has fewer)."""
    accepted = inspect.signature(Uplink).parameters
    args = {"version": "bench", "started_at": datetime.now(UTC), **kw}
    return Uplink(config, store, **{k: v for k, v in args.items() if k in accepted})  # type: ignore[arg-type]


async def subscriber(port: int, identifier: str = "bench-sub") -> asyncio.subprocess.Process:
    """The subscriber process, connected (it reconnects by itself)."""
    sub = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBSCRIBER,
        str(port),
        ROOT,
        identifier,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        limit=1 << 30,
    )
    assert sub.stdout is not None
    assert (await sub.stdout.readline()).strip() == b"ready"
    return sub


async def dump(sub: asyncio.subprocess.Process) -> list[list[Any]]:
    """Stop the subscriber; everything it saw: (time, topic, seq, stamp, retained)."""
    assert sub.stdin is not None
    assert sub.stdout is not None
    sub.stdin.write(b"dump\n")
    await sub.stdin.drain()
    line = b"ready"
    while line.strip() == b"ready":  # it says so again at every reconnect
        line = await sub.stdout.readline()
    seen: list[list[Any]] = json.loads(line)
    await sub.wait()
    return seen


async def _rig(
    prefix: str, rooms: int, *, persistence: bool = True
) -> tuple[Path, Mosquitto, Store, Floor]:
    """A work directory, a started broker of its own, a store and a synthetic floor."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = Mosquitto(work / "mosquitto", make_certs(work / "certs"), persistence=persistence)
    broker.start()
    return work, broker, await Store.open(work / "floor.db"), Floor(rooms)


async def run(events: int, rooms: int, window: int) -> None:
    work, broker, store, floor = await _rig("bench-mqtt-", rooms)
    config = floor_config(work, broker.port, window, reconnect_jitter_s=0.0)
    key = bytes.fromhex(config.mqtt.command_key_file.read_text())
    processor = CommandProcessor(store, key, functools.partial(_decide_lights, store))
    committed = Broadcast()
    uplink = make_uplink(
        config,
        store,
        current_state=floor.current_state,
        on_command=processor.handle,
        retained=RetainedChanges(),
        outbox=committed,
        backoff=Backoff(initial_s=0.05, cap_s=0.5),
    )
    sub = await subscriber(broker.port)
    try:
        task = asyncio.create_task(uplink.run())
        async with asyncio.timeout(10):
            await wait_for(lambda: uplink.connected)

        # 1. outage and backlog
        broker.stop()
        async with asyncio.timeout(10):
            await wait_for(lambda: not uplink.connected)
        for _ in range(events // 5000):
            await append(store, 5000)
        await append(store, events % 5000)
        committed.notify()
        lags: list[float] = []
        t_restart = time.monotonic()
        broker.start()
        ticker = asyncio.create_task(_ticker(lags))
        t0 = time.monotonic()
        async with asyncio.timeout(30):
            await wait_for(lambda: uplink.connected)
        t_connected = time.monotonic() - t_restart
        async with asyncio.timeout(600):
            await _until_drained(store)
        t_drained = time.monotonic() - t0
        ticker.cancel()

        # 2. steady 200 events/s for 5 s
        t_steady = time.monotonic()
        for _ in range(1000):
            await append(store, 1, stamp=True)
            committed.notify()
            await asyncio.sleep(0.005)
        async with asyncio.timeout(60):
            await _until_drained(store)

        # 3. command-to-reply
        rtts = await _commands(broker, key, 200)

        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        seen = await dump(sub)
    finally:
        with contextlib.suppress(ProcessLookupError):
            sub.kill()
        await sub.wait()
        await store.close()
        broker.kill()

    after = [s for s in seen if s[0] >= t_restart and not s[4]]
    state_topics = {t for t, _ in floor.current_state()} | {"status"}
    state_times = [s[0] for s in after if s[1] in state_topics and s[0] < t_steady]
    # The backlog's events carry no stamp (the steady phase's do): a subscriber still
    # receiving the backlog after the gateway saw its last PUBACK has not lost it.
    backlog = [s for s in after if s[1] == "events" and s[3] is None]
    firsts = list(dict.fromkeys(s[2] for s in backlog))
    state_out = max(state_times[: len(state_topics)]) - t_restart
    first_event = backlog[0][0] - t_restart
    drain_s = backlog[-1][0] - backlog[0][0]
    steady = [(s[0] - s[3]) * 1000 for s in seen if s[1] == "events" and s[3] is not None]
    print(
        f"backlog: {events} events produced while the broker was down; {rooms} rooms, "
        f"1 open alarm; window {window}"
    )
    print(f"  broker restart -> uplink connected:       {t_connected * 1000:8.1f} ms")
    print(
        f"  broker restart -> current state at sub:   {state_out * 1000:8.1f} ms "
        f"({len(state_topics)} messages)"
    )
    print(f"  broker restart -> first backlog event:    {first_event * 1000:8.1f} ms")
    print(
        f"  drain: {len(backlog)} received ({len(firsts)} distinct) in {drain_s:.2f} s = "
        f"{len(firsts) / drain_s:,.0f} events/s (gateway marked all delivered after "
        f"{t_drained:.2f} s)"
    )
    lost = events - len(set(firsts))
    in_order = firsts == sorted(firsts)
    print(f"  lost: {lost}, first occurrences in seq order: {in_order}")
    print(
        f"  event-loop lag while draining (10 ms ticker): max {max(lags):.1f} ms, "
        f"p99 {_pct(lags, 99):.1f} ms"
    )
    print(
        f"steady 200 events/s: latency p50 {_pct(steady, 50):.1f} ms, "
        f"p99 {_pct(steady, 99):.1f} ms ({len(steady)} events)"
    )
    print(
        f"set_lights command -> reply: p50 {_pct(rtts, 50):.1f} ms, "
        f"p99 {_pct(rtts, 99):.1f} ms ({len(rtts)} commands; handler without bus I/O)"
    )


async def _ticker(lags: list[float]) -> None:
    while True:
        start = time.monotonic()
        await asyncio.sleep(0.01)
        lags.append((time.monotonic() - start - 0.01) * 1000)


async def _until_drained(store: Store) -> None:
    while (await store.read(schema.outbox_backlog))[0]:  # noqa: ASYNC110 (polls the database)
        await asyncio.sleep(0.01)


async def _commands(broker: Mosquitto, key: bytes, n: int) -> list[float]:
    rtts: list[float] = []
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    async with aiomqtt.Client(HOST, broker.port, socket_options=nodelay) as central:
        await central.subscribe(f"{ROOT}/reply", qos=1)
        for i in range(n):
            env = {
                "schema": 1,
                "id": f"bench-{i}",
                "type": "set_lights",
                "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "body": {"room": "1201", "circuits": {"main": i % 2 == 0}},
            }
            env["sig"] = checks.sign(env, key)
            start = time.monotonic()
            await central.publish(f"{ROOT}/cmd", json.dumps(env), qos=1)
            async for message in central.messages:
                if json.loads(message.payload)["id"] == env["id"]:  # type: ignore[arg-type]
                    break
            rtts.append((time.monotonic() - start) * 1000)
    return rtts


def _pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[p - 1] if p < 100 else max(values)


# -- what a broker restart costs -----------------------------------------------------------


async def reconnect_cost(rooms: int, window: int) -> None:
    """Publishes of the uplink's new session after a broker restart, 60 rooms, 1 alarm."""
    for persistence in (True, False):
        await _reconnect_once(rooms, window, persistence=persistence)


async def _reconnect_once(rooms: int, window: int, *, persistence: bool) -> None:
    work, broker, store, floor = await _rig("bench-mqtt-reconnect-", rooms, persistence=persistence)
    config = floor_config(work, broker.port, window, reconnect_jitter_s=0.0)
    committed = Broadcast()
    # No jitter: after a failed attempt the next one is 2 s later, time enough for the
    # counting subscriber to be in place before the uplink returns.
    uplink = make_uplink(
        config,
        store,
        current_state=floor.current_state,
        on_command=_no_command,
        retained=RetainedChanges(),
        outbox=committed,
        backoff=Backoff(initial_s=2.0, cap_s=2.0, jitter="none"),
    )
    task = asyncio.create_task(uplink.run())
    try:
        async with asyncio.timeout(10):
            await wait_for(lambda: uplink.stats().link == "connected")
        broker.stop()
        async with asyncio.timeout(10):
            await wait_for(lambda: not uplink.connected)
        await append(store, 1)
        committed.notify()
        failures = uplink.stats().failures
        async with asyncio.timeout(10):
            await wait_for(lambda: uplink.stats().failures > failures)
        broker.start()
        sub = await subscriber(broker.port, identifier=f"bench-count-{secrets.token_hex(4)}")
        async with asyncio.timeout(20):
            await _until_drained(store)
        await asyncio.sleep(0.5)  # nothing more is on its way: the backlog was 1 event
        seen = await dump(sub)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        broker.kill()
    live = [s[1] for s in seen if not s[4]]
    until_event = live[: live.index("events")] if "events" in live else live
    rooms_sent = sum(1 for t in until_event if t.startswith("rooms/"))
    kind = "keeps sessions (Session Present)" if persistence else "loses them (no persistence)"
    print(
        f"broker restart, {rooms} rooms, 1 open alarm, a broker that {kind}: "
        f"{len(until_event)} publishes before the backlog ({rooms_sent} room states)"
    )


async def _no_command(payload: bytes) -> None:
    return None


# -- a long outage with a call in the middle ------------------------------------------------


async def outage(rooms: int, window: int, outage_s: float) -> None:
    """Broker down ``outage_s`` with a call raised halfway; the uplink's own defaults."""
    work, broker, store, floor = await _rig("bench-mqtt-outage-", rooms)
    config = floor_config(work, broker.port, window)  # defaults: jitter, backoff cap
    retained = RetainedChanges()
    uplink = make_uplink(
        config,
        store,
        current_state=floor.current_state,
        on_command=_no_command,
        retained=retained,
        outbox=Broadcast(),
    )
    sub = await subscriber(broker.port, identifier=f"bench-outage-{secrets.token_hex(4)}")
    task = asyncio.create_task(uplink.run())
    try:
        async with asyncio.timeout(10):
            await wait_for(lambda: uplink.stats().link == "connected")
        broker.stop()
        t_down = time.monotonic()
        await asyncio.sleep(outage_s / 2)
        call = {"schema": 1, "alarm_id": "call-1", "room": floor.rooms[2], "state": "active"}
        floor.alarms.append(("alarms/call-1", call))
        retained.set("alarms/call-1", call)
        await asyncio.sleep(outage_s - (time.monotonic() - t_down))
        t_back = time.monotonic()
        broker.start()
        async with asyncio.timeout(120):
            await wait_for(lambda: uplink.stats().link == "connected")
        await asyncio.sleep(0.5)
        seen = await dump(sub)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        broker.kill()
        with contextlib.suppress(ProcessLookupError):
            sub.kill()
    at_sub = [s[0] for s in seen if s[1] == "alarms/call-1" and s[0] >= t_back]
    print(
        f"broker stopped {outage_s:.0f} s, a call raised after {outage_s / 2:.0f} s: broker back"
        f" -> the call at a subscriber {at_sub[0] - t_back:6.2f} s (target <= 6 s)"
    )


# -- a hung broker ------------------------------------------------------------------------------


async def hung(rooms: int, window: int, keepalive_s: int) -> None:
    """SIGSTOP the broker while the uplink drains: how long until it drops the link."""
    work, broker, store, floor = await _rig("bench-mqtt-hung-", rooms)
    config = floor_config(work, broker.port, window, keepalive_s=keepalive_s)
    committed = Broadcast()
    uplink = make_uplink(
        config,
        store,
        current_state=floor.current_state,
        on_command=_no_command,
        retained=RetainedChanges(),
        outbox=committed,
        backoff=Backoff(initial_s=0.05, cap_s=0.5),
    )
    task = asyncio.create_task(uplink.run())
    try:
        async with asyncio.timeout(10):
            await wait_for(lambda: uplink.stats().link == "connected")
        await append(store, 200_000)  # a backlog: publishes are in flight when it hangs
        committed.notify()
        await asyncio.sleep(0.3)
        broker.pause()
        t_stop = time.monotonic()
        async with asyncio.timeout(4 * keepalive_s + 30):
            await wait_for(lambda: not uplink.connected)
        detected = time.monotonic() - t_stop
        broker.resume()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        broker.kill()
    print(
        f"hung broker (SIGSTOP while draining), keepalive {keepalive_s} s: link dropped after"
        f" {detected:5.2f} s (target <= 2 x keepalive + 2 s = {2 * keepalive_s + 2} s)"
    )


# -- a broker that fails again while the gateway syncs ---------------------------------------


async def flap(window: int, trials: int) -> None:
    """The second restart of a flapping broker -> the first backlog event at a subscriber."""
    work, broker, store, floor = await _rig("bench-mqtt-flap-", 60)
    committed = Broadcast()
    current = "reconnect_max_s" in MqttSection.model_fields
    # Each version's own reconnect backoff, as a long outage leaves it (at its cap).
    backoff = Backoff(initial_s=0.5, cap_s=5.0) if current else Backoff(initial_s=1.0, cap_s=60.0)
    uplink = make_uplink(
        floor_config(work, broker.port, window),
        store,
        current_state=floor.current_state,
        on_command=_no_command,
        retained=RetainedChanges(),
        outbox=committed,
        backoff=backoff,
    )
    task = asyncio.create_task(uplink.run())
    delays: list[float] = []
    try:
        for _ in range(trials):
            async with asyncio.timeout(120):
                await wait_for(lambda: uplink.stats().link == "connected")
                await _until_drained(store)
            broker.stop()
            async with asyncio.timeout(10):
                await wait_for(lambda: not uplink.connected)
            backoff.failures = 10
            await append(store, 50)
            committed.notify()
            delays.append(await _flap_once(broker, "status"))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        broker.kill()
    shown = ", ".join(f"{d:.1f}" for d in delays)
    print(
        f"flapping broker after a long outage: its last start -> first backlog event at a"
        f" subscriber: {shown} s (max {max(delays):.1f} s)"
    )


async def _flap_once(broker: Mosquitto, trigger: str) -> float:
    """Start the broker, kill it when the gateway's ``trigger`` topic arrives, start it
    again: how long from then to the first event at a subscriber."""
    broker.start()
    flapped = asyncio.Event()
    back = 0.0
    first_event: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        nonlocal back
        while not first_event.done():
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(HOST, broker.port, timeout=5) as client:
                    await client.subscribe(f"{ROOT}/#", qos=1)
                    async for m in client.messages:
                        topic = m.topic.value[len(ROOT) + 1 :]
                        if m.retain:
                            continue
                        if topic == trigger and not flapped.is_set():
                            flapped.set()
                            broker.kill()  # the session dies while it sends the state
                            broker.start()
                            back = time.monotonic()
                            break
                        if topic == "events" and flapped.is_set():
                            first_event.set_result(time.monotonic() - back)
                            return
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(150):
            return await first_event
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main() -> None:
    """Parse arguments, run, print figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rooms", type=int, default=40)
    p.add_argument("--window", type=int, default=32, help="[mqtt] max_in_flight")
    p.add_argument("--sections", default="drain,reconnect,outage,hung,flap")
    p.add_argument("--outage-s", type=float, default=60.0)
    p.add_argument("--keepalive-s", type=int, default=5)
    p.add_argument("--trials", type=int, default=3, help="flap: trials")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sections = set(args.sections.split(","))
    if "drain" in sections:
        asyncio.run(run(args.events, args.rooms, args.window))
    if "reconnect" in sections:
        asyncio.run(reconnect_cost(60, args.window))
    if "outage" in sections:
        asyncio.run(outage(60, args.window, args.outage_s))
    if "hung" in sections:
        asyncio.run(hung(args.rooms, args.window, args.keepalive_s))
    if "flap" in sections:
        asyncio.run(flap(args.window, args.trials))


if __name__ == "__main__":
    main()
