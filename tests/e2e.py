"""Harness for end-to-end tests: floorgated (a real process) + floorsim + a real Mosquitto.

A central system's view: signed commands over MQTT, events and retained state back; the
simulated hardware shows what the gateway wrote (lock slots, lamps, setpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floorsim.sim import FloorSim
from gateway.config.load import load_floor
from gateway.core.commands import canonical_json, sign
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

ROOT = "hotel/demo/12"
TOKEN = "00c0ffee00c0ffee"
WAIT_S = 25.0


@dataclass
class Floor:
    """The running gateway, its simulator and a central system's MQTT view."""

    sim: FloorSim
    broker: Mosquitto
    events: Collector
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
        """Sign (the floor's HMAC key, or an operator's Ed25519 key) and send a command;
        its reply."""
        env: dict[str, Any] = {
            "schema": 1,
            "id": uuid.uuid4().hex,
            "type": type_,
            "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "body": body,
        }
        if operator is None:
            env["sig"] = sign(env, self.key)
        else:
            env |= {"alg": "ed25519", "operator": operator[0]}
            env["sig"] = operator[1].sign(canonical_json(env)).hex()
        async with aiomqtt.Client(HOST, self.broker.port, timeout=5) as client:
            await client.publish(f"{ROOT}/cmd", json.dumps(env).encode(), qos=1)
        reply: dict[str, Any] = await until(
            lambda: next((r for r in self.docs("reply") if r["id"] == env["id"]), None),
            timeout=WAIT_S,
        )
        return reply

    def typed(self, type_: str) -> list[dict[str, Any]]:
        """Events of one type received so far."""
        return [e for e in self.all_events() if e["type"] == type_]

    def all_events(self) -> list[dict[str, Any]]:
        """Every event received on {root}/events, in arrival order."""
        return self.docs("events")

    def docs(self, subtopic: str) -> list[dict[str, Any]]:
        """Every JSON payload received on {root}/{subtopic}, in arrival order."""
        return [json.loads(p) for p in self.events.payloads(f"{ROOT}/{subtopic}")]

    async def event(self, type_: str, room: str | None = None, n: int = 1) -> dict[str, Any]:
        """Wait for the n-th event of a type (for a room)."""

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
    path = run_dir / "floor.toml"
    text = tomli_w.dumps(data)
    text = text.replace("${FLOORGATE_MQTT_PORT:-1883}", str(broker.port))
    text = text.replace("${FLOORGATE_MODBUS_PORT:-15020}", str(modbus_port))
    path.write_text(text)
    return path


def start(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.daemon", "--config", str(path), "--log-format", "json"],
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
) -> AsyncIterator[Floor]:
    """floorsim, a central collector and floorgated, until the block ends."""
    modbus_port = free_port()
    path = floor_file(run_dir, broker, modbus_port, policy=policy, escalation=escalation, edit=edit)
    config, _ = load_floor(path)
    key = bytes.fromhex((run_dir / "command.key").read_text().strip())
    async with (
        FloorSim(config, tcp_ports={"lan": modbus_port}) as sim,
        collecting(broker, f"{ROOT}/#", identifier="central") as events,
    ):
        floor = Floor(sim, broker, events, key, path, start(path))
        try:
            await floor.event("gateway.started")
            yield floor
        finally:
            stop(floor.proc)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


async def retained_until(
    broker: Mosquitto, topic: str, pred: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait (bounded) until the retained JSON on ``topic`` satisfies ``pred`` ({} = none)."""
    async with asyncio.timeout(WAIT_S):
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
