"""End to end: call-panel rooms, the floor panel, and floorctl acknowledging a call."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e import WAIT_S, mosquitto_fixture, mqtt_certs, running  # noqa: F401 (fixtures)
from tests.fake_floor import assert_json_shape
from tests.mosquitto import Mosquitto
from tests.waiting import until


async def floorctl(path: Path, *args: str) -> tuple[int, str]:
    """Run floorctl against the daemon of this floor file (off the loop)."""

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "--config", str(path), *args],
            capture_output=True, text=True, timeout=60, check=False,
            env=dict(os.environ, COLUMNS="80", NO_COLOR="1"),
        )  # fmt: skip

    proc = await asyncio.to_thread(call)
    return proc.returncode, proc.stdout + proc.stderr


async def test_a_panel_call_drives_the_corridor_lamp_and_the_floor_panel(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        f.sim.press("1205", "bath", ms=50)
        raised = await f.event("alarm.raised", "1205")
        alarm_id = raised["data"]["alarm_id"]
        await until(lambda: f.sim.lamps().get("1205") == "ON", timeout=WAIT_S)
        await until(lambda: f.sim.coils("floorpanel").get("floor_call_lamp"), timeout=WAIT_S)
        # Unacknowledged past level 0 (1 s here): the floor sounder joins in.
        await f.event("alarm.escalated", "1205")
        await until(lambda: f.sim.coils("floorpanel").get("floor_sounder"), timeout=WAIT_S)

        # A technician acknowledges at the floor with floorctl: the lamp flashes.
        code, out = await floorctl(f.path, "alarms", "ack", alarm_id, "--by", "night-porter")
        assert code == 0, out
        await f.event("alarm.acknowledged", "1205")
        await until(lambda: f.sim.lamps().get("1205") == "FLASH", timeout=WAIT_S)
        await until(lambda: not f.sim.coils("floorpanel").get("floor_sounder"), timeout=WAIT_S)

        # Staff cancel at the room: lamp off, floor call lamp off.
        f.sim.staff("1205", ms=50)
        await f.event("alarm.resolved", "1205")
        await until(lambda: f.sim.lamps().get("1205") == "OFF", timeout=WAIT_S)
        await until(lambda: not f.sim.coils("floorpanel").get("floor_call_lamp"), timeout=WAIT_S)


async def test_floorctl_against_the_running_daemon(run_dir: Path, mosquitto: Mosquitto) -> None:
    async with running(run_dir, mosquitto) as f:
        f.sim.press("1203", "bed", ms=50)
        await f.event("alarm.raised", "1203")
        for sub in ("status", "floor", "rooms", "devices", "alarms", "outbox"):
            code, out = await floorctl(f.path, sub, "--json")
            assert code == 0, (sub, out)
            assert_json_shape(sub, json.loads(out))
        code, out = await floorctl(f.path, "room", "1203", "--json")
        assert code == 0, out
        assert_json_shape("room", json.loads(out))
        code, out = await floorctl(f.path, "events", "--room", "1203", "--json")
        events: dict[str, Any] = json.loads(out)
        assert "alarm.raised" in [e["type"] for e in events["events"]]
        code, out = await floorctl(f.path, "floor")
        assert code == 0
        assert all(len(line) <= 80 for line in out.splitlines()), out
        assert "1203" in out
        code, out = await floorctl(f.path, "room", "9999")
        assert code == 1, out
        code, out = await floorctl(f.path, "scan", "lan", "--json")
        assert code == 0, out
        units = {hit["unit"] for hit in json.loads(out)["hits"]}
        assert units == {1, 2, 3, 4, 5, 6}  # the TCP rooms' devices, and nothing else
