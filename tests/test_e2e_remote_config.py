"""Remote configuration end to end: apply_config confirmed, rolled back, refused, killed.

The daemon runs as a process on floorsim and a real Mosquitto (tests/e2e.py). floorsim
serves the whole demo floor; the gateway starts without room 1204, so adding it back is
a good change. Confirmation windows are shrunk through the floor file's
``[remote_config] confirm_min_s`` (operations.md allows 30..900 on a real floor).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import tomli_w

from gateway.cli.client import Client
from gateway.config.load import load_floor
from gateway.model.errors import DaemonUnreachableError
from tests.conftest import demo_floor_dict
from tests.e2e import (  # noqa: F401 (fixtures)
    BUS_TIMEOUT_MS,
    HOST,
    ROOT,
    WAIT_S,
    Floor,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    serving,
    start,
    stop,
)
from tests.mosquitto import Mosquitto, free_port
from tests.waiting import until

CONFIRM_S = 4


def floor_text(
    broker: Mosquitto, modbus_port: int, edit: Callable[[dict[str, Any]], None] | None = None
) -> str:
    """The demo floor on this test's broker and Modbus port, with short windows allowed."""
    data = demo_floor_dict()
    data["remote_config"] = {"confirm_min_s": 1}
    data["escalation"] = [{"after_s": 0, "notify": "floor-staff"}]
    for bus in data["bus"]:
        if bus["kind"] != "callpanel":
            bus["timeout_ms"] = BUS_TIMEOUT_MS
    if edit is not None:
        edit(data)
    text = tomli_w.dumps(data)
    text = text.replace("${FLOORGATE_MQTT_PORT:-1883}", str(broker.port))
    return text.replace("${FLOORGATE_MODBUS_PORT:-15020}", str(modbus_port))


def without_1204(data: dict[str, Any]) -> None:
    data["room"] = [r for r in data["room"] if r["id"] != "1204"]


@contextlib.asynccontextmanager
async def floor_without_1204(run_dir: Path, broker: Mosquitto) -> AsyncIterator[Floor]:
    """floorsim with the whole demo floor, the gateway on the floor without room 1204."""
    modbus_port = free_port()
    sim_path = run_dir / "sim.toml"
    sim_path.write_text(floor_text(broker, modbus_port))
    path = run_dir / "floor.toml"
    path.write_text(floor_text(broker, modbus_port, without_1204))
    sim_config, _ = load_floor(sim_path)
    async with serving(run_dir, broker, path, sim_config, modbus_port) as floor:
        yield floor


async def apply(f: Floor, text: str, confirm_s: int = CONFIRM_S, **extra: Any) -> dict[str, Any]:
    body = {"floor_toml": text, "sha256": _sha(text), "confirm_s": confirm_s, **extra}
    return await f.command("apply_config", body)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def audited(run_dir: Path) -> list[str]:
    """The configuration steps in the audit log, in order."""
    with contextlib.closing(sqlite3.connect(run_dir / "state" / "floorgate.db")) as conn:
        rows = conn.execute("SELECT action FROM audit WHERE action LIKE 'config.%' ORDER BY id")
        return [str(a) for (a,) in rows]


def ctl(run_dir: Path) -> Client:
    return Client(run_dir / "floorctl.sock")


def pending(run_dir: Path) -> str | None:
    """The file being confirmed, as floorctl config show says (None meanwhile if down)."""
    try:
        return ctl(run_dir).config_show().pending_sha256
    except DaemonUnreachableError:
        return None


async def test_a_room_added_is_confirmed_and_a_bus_on_a_wrong_port_rolled_back(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with floor_without_1204(run_dir, mosquitto) as f:
        first = f.path.read_text()
        modbus_port = int(f.sim.config.bus("lan").port)  # type: ignore[union-attr]
        good = floor_text(mosquitto, modbus_port)
        reply = await apply(f, good)
        assert reply["ok"] is True, reply
        assert reply["result"] == {"sha256": _sha(good), "confirm_s": CONFIRM_S, "restarting": True}

        # The daemon restarts onto the new file: room 1204 appears, polled, and the window
        # ends with config.applied.
        await f.event("gateway.started", n=2)
        state = await retained_until(
            mosquitto,
            f"{ROOT}/rooms/1204/state",
            lambda s: s.get("devices", {}).get("tstat") == "online",
        )
        assert state["room"] == "1204"
        applied = await f.event("config.applied")
        assert applied["data"] == {"sha256": _sha(good), "reason": None}
        shown = ctl(run_dir).config_show()
        assert (shown.sha256, shown.source, shown.last_good) == (_sha(good), "remote", _sha(good))
        assert shown.pending_sha256 is None
        assert f.path.read_text() == first  # the local file is never written

        # A bus moved to a port nothing listens on: --check cannot know, the floor can.
        def wrong_port(data: dict[str, Any]) -> None:
            for bus in data["bus"]:
                if bus["name"] == "lan":
                    bus["port"] = free_port()

        bad = floor_text(mosquitto, modbus_port, wrong_port)
        reply = await apply(f, bad)
        assert reply["ok"] is True, reply
        rolled = await f.event("config.rolled_back")
        assert rolled["data"]["sha256"] == _sha(bad)
        assert "bus lan" in rolled["data"]["reason"]
        assert "devices offline" in rolled["data"]["reason"]
        await f.event("gateway.started", n=4)  # onto the bad file, then back
        shown = ctl(run_dir).config_show()
        assert (shown.sha256, shown.source) == (_sha(good), "remote")
        await retained_until(
            mosquitto,
            f"{ROOT}/rooms/1203/state",
            lambda s: s.get("devices", {}).get("tstat") == "online",
        )
        steps = [(e.action, e.sha256) for e in ctl(run_dir).config_history(20).entries]
        assert steps == [
            ("applying", _sha(good)),
            ("applied", _sha(good)),
            ("applying", _sha(bad)),
            ("rolled_back", _sha(bad)),
        ]
        assert f.proc.poll() is None  # the same process all along (re-executed in place)
        assert audited(run_dir) == [
            "config.apply",
            "config.watching",
            "config.applied",
            "config.apply",
            "config.watching",
            "config.rolled_back",
        ]


async def test_refusals_name_their_problems_and_a_kill_during_the_window_rolls_back(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with floor_without_1204(run_dir, mosquitto) as f:
        first = f.path.read_text()
        modbus_port = int(f.sim.config.bus("lan").port)  # type: ignore[union-attr]

        # A file --check refuses: every problem in the reply, with its line.
        def broken(data: dict[str, Any]) -> None:
            data["room"][0]["devices"][0]["profile"] = "fg-tstat-9"
            data["room"][1]["devices"][1]["unit"] = 1
            without_1204(data)

        bad = floor_text(mosquitto, modbus_port, broken)
        reply = await apply(f, bad)
        assert reply["ok"] is False
        assert reply["error"]["code"] == "invalid"
        message = reply["error"]["message"]
        assert message.startswith("2 problems: line ")
        assert "room[0].devices[0].profile: no profile named 'fg-tstat-9'" in message
        assert "room[1].devices[1].unit" in message
        refused = await f.event("config.refused")
        assert refused["data"]["sha256"] == _sha(bad)
        assert len(refused["data"]["problems"]) == 2

        # What cannot change remotely: the gateway id.
        def other_id(data: dict[str, Any]) -> None:
            data["gateway"]["id"] = "demo-13"
            without_1204(data)

        reply = await apply(f, floor_text(mosquitto, modbus_port, other_id))
        assert reply["error"]["code"] == "conflict"
        assert "gateway.id 'demo-12' → 'demo-13'" in reply["error"]["message"]
        await f.event("config.refused", n=2)

        # A sha256 that is not the file's.
        reply = await f.command(
            "apply_config", {"floor_toml": first, "sha256": "0" * 64, "confirm_s": CONFIRM_S}
        )
        assert reply["error"]["code"] == "invalid"
        assert "does not match" in reply["error"]["message"]

        # A good change, then kill -9 during its window: the next start goes back.
        def slower_door(data: dict[str, Any]) -> None:
            data["policy"]["door_held_open_s"] = 90
            without_1204(data)

        change = floor_text(mosquitto, modbus_port, slower_door)
        assert (await apply(f, change, confirm_s=600))["ok"] is True
        await f.event("gateway.started", n=2)
        await until(lambda: pending(run_dir) == _sha(change), WAIT_S, interval=0.2)
        os.kill(f.proc.pid, signal.SIGKILL)
        f.proc.wait(timeout=10)
        f.proc = start(f.path)
        rolled = await f.event("config.rolled_back")
        assert rolled["data"] == {
            "sha256": _sha(change),
            "reason": "the daemon restarted during the confirmation window",
        }
        shown = ctl(run_dir).config_show()
        assert (shown.sha256, shown.source, shown.pending_sha256) == (_sha(first), "local", None)
        assert shown.text == first
        actions = [e.action for e in ctl(run_dir).config_history(20).entries]
        assert actions == ["refused", "refused", "refused", "applying", "rolled_back"]
        assert audited(run_dir) == [
            "config.refused",
            "config.refused",
            "config.refused",
            "config.apply",
            "config.watching",
            "config.rolled_back",
        ]
