"""Harness for end-to-end tests: floorgated (a real process) + floorsim + a real Mosquitto.

A central system's view: signed commands over MQTT, events and retained state back; the
simulated hardware shows what the gateway wrote (lock slots, lamps, setpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import floorgate_central as central
from floorgate_central import token_hash  # noqa: F401 (re-exported for the tests)
from floorsim.sim import FloorSim
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor
from tests.conftest import demo_floor_dict
from tests.mosquitto import (  # noqa: F401 (fixtures re-exported)
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

ROOT = "hotel/demo/demo-12"
TOKEN = "00c0ffee00c0ffee"
WAIT_S = 25.0
BUS_TIMEOUT_MS = 1000


@dataclass
class Floor:
    """The running gateway, its simulator and a central system's view (floorgate_central)."""

    sim: FloorSim
    broker: Mosquitto
    central: central.Floor
    hotel: central.Central
    key: bytes
    path: Path
    proc: subprocess.Popen[bytes]

    async def command(
        self,
        type_: str,
        body: dict[str, Any],
        *,
        operator: tuple[str, Ed25519PrivateKey] | None = None,
    ) -> dict[str, Any]:
        """Sign and send a command (the client's timeout and retry); its reply, refusals too.
        Signed with the floor's HMAC key, or by an operator's Ed25519 key."""
        signer = None if operator is None else central.Operator(operator[0], operator[1])
        reply = await self.central.send(type_, body, operator=signer)
        return dict(reply.raw)

    def typed(self, type_: str) -> list[dict[str, Any]]:
        """Events of one type received so far."""
        return [e for e in self.all_events() if e["type"] == type_]

    def all_events(self) -> list[dict[str, Any]]:
        """Every event received on {root}/events, duplicates dropped, in arrival order."""
        return [dict(e.raw) for e in self.central.history]

    async def event(self, type_: str, room: str | None = None, n: int = 1) -> dict[str, Any]:
        """Wait for the n-th distinct event of a type (for a room)."""

        def found() -> list[dict[str, Any]]:
            return [e for e in self.typed(type_) if room is None or e.get("room") == room]

        await until(lambda: len(found()) >= n, timeout=WAIT_S)
        return found()[n - 1]


def floor_file(
    run_dir: Path,
    broker: Mosquitto,
    modbus_port: int,
    *,
    policy: dict[str, Any] | None = None,
    escalation: list[int] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """The demo floor on this test's broker and Modbus port, escalating within seconds."""
    data = demo_floor_dict()
    if edit is not None:
        edit(data)
    data["policy"].update(policy or {})
    data["escalation"] = [
        {"after_s": after, "notify": f"level-{i}"} for i, after in enumerate(escalation or [0, 1])
    ]
    data["policy"]["alarm_repeat_s"] = 3600
    for bus in data["bus"]:
        if bus["kind"] != "callpanel":
            # floorsim answers in this test's process: on a loaded machine an answer may be
            # late by more than the default 150 ms, and a device timed out three times in a
            # row goes offline (an event, maybe a technical alarm) the test did not cause.
            bus["timeout_ms"] = BUS_TIMEOUT_MS
    path = run_dir / "floor.toml"
    text = tomli_w.dumps(data)
    text = text.replace("${FLOORGATE_MQTT_PORT:-1883}", str(broker.port))
    text = text.replace("${FLOORGATE_MODBUS_PORT:-15020}", str(modbus_port))
    path.write_text(text)
    return path


def start(path: Path, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """floorgated on this floor file (``prefix``: a command that execs it, e.g. unshare)."""
    daemon = [sys.executable, "-m", "gateway.daemon", "--config", str(path)]
    return subprocess.Popen(
        [*prefix, *daemon, "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.asynccontextmanager
async def running(
    run_dir: Path,
    broker: Mosquitto,
    policy: dict[str, Any] | None = None,
    escalation: list[int] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    sim_options: dict[str, Any] | None = None,
    prefix: Sequence[str] = (),
    client_id: str = "central",
) -> AsyncIterator[Floor]:
    """floorsim (``sim_options``: more FloorSim arguments), a central collector
    (``client_id``) and floorgated (started through ``prefix``), until the block ends."""
    modbus_port = free_port()
    path = floor_file(run_dir, broker, modbus_port, policy=policy, escalation=escalation, edit=edit)
    config, _ = load_floor(path)
    async with serving(
        run_dir,
        broker,
        path,
        config,
        modbus_port,
        sim_options=sim_options,
        prefix=prefix,
        client_id=client_id,
    ) as f:
        yield f


@contextlib.asynccontextmanager
async def serving(
    run_dir: Path,
    broker: Mosquitto,
    path: Path,
    sim_config: FloorConfig,
    modbus_port: int,
    *,
    sim_options: dict[str, Any] | None = None,
    prefix: Sequence[str] = (),
    client_id: str = "central",
) -> AsyncIterator[Floor]:
    """floorsim serving ``sim_config`` on ``modbus_port``, a central collector
    (``client_id``) and floorgated on the floor file ``path`` (started through
    ``prefix``), until the block ends."""
    key = bytes.fromhex((run_dir / "command.key").read_text().strip())
    async with (
        FloorSim(sim_config, tcp_ports={"lan": modbus_port}, **(sim_options or {})) as sim,
        central.Central(
            HOST, broker.port, client_id=client_id, keys={sim_config.gateway.id: key},
            roots=[sim_config.mqtt.root], reconnect_max_s=0.5,
        ) as hotel,
    ):  # fmt: skip
        await hotel.wait_connected(timeout_s=5)
        proc = start(path, prefix)
        floor: Floor | None = None
        try:
            view = await hotel.floor(sim_config.gateway.id, timeout_s=WAIT_S)
            floor = Floor(sim, broker, view, hotel, key, path, proc)
            await floor.event("gateway.started")
            yield floor
        finally:
            stop(proc if floor is None else floor.proc)  # a test may have restarted it


async def retained_until(
    broker: Mosquitto,
    topic: str,
    pred: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = WAIT_S,
) -> dict[str, Any]:
    """Wait (bounded) until the retained JSON on ``topic`` satisfies ``pred`` ({} = none)."""
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await read_retained(broker, topic)
            doc = json.loads(raw) if raw else {}
            if pred(doc):
                return doc
            await asyncio.sleep(0.05)


def stored_value(run_dir: Path, device: str, point: str) -> object:
    db = run_dir / "state" / "floorgate.db"
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT value FROM point_values WHERE device = ? AND point = ?", (device, point)
        ).fetchone()
    return None if row is None else json.loads(row[0])


def slot_tokens(sim: FloorSim, room: str) -> set[int]:
    return {s["token"] for s in sim.slots(room) if s["token"]}


def ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
