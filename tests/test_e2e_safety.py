"""End to end: troubles apart from calls, lamp supervision, stale values, a full disk, and
kill -9 with each of them open (floorgated + floorsim + Mosquitto)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests import fullfs
from tests.e2e import (  # noqa: F401 (fixtures)
    ROOT,
    WAIT_S,
    Floor,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    running,
    start,
)
from tests.mosquitto import Mosquitto
from tests.test_e2e_calls import floorctl
from tests.waiting import until

STATE_SIZE = "6m"  # the state filesystem of the full-disk test
ROOM_STATE = f"{ROOT}/rooms/1201/state"
STALE_WAIT_S = 60.0  # the stale limit (15 s) and then some, on a loaded machine


def panel(f: Floor) -> dict[str, bool]:
    return f.sim.coils("floorpanel")


async def alarm_of(f: Floor, point: str, room: str | None, n: int = 1) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in f.typed("alarm.raised")
            if e["data"]["point"] == point and e.get("room") == room
        ]

    await until(lambda: len(found()) >= n, timeout=WAIT_S)
    return found()[n - 1]


async def resolved(f: Floor, alarm_id: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [e for e in f.typed("alarm.resolved") if e["data"]["alarm_id"] == alarm_id]

    await until(found, timeout=WAIT_S)
    return found()[0]


async def test_a_silent_room_io_is_a_trouble_acknowledged_and_kept_across_kill_9(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        await until(lambda: "trouble_lamp" in panel(f), timeout=WAIT_S)
        f.sim.set_fault("1201/rio", "silent")
        raised = await alarm_of(f, "call_point_unreachable", "1201")
        await until(lambda: panel(f)["trouble_lamp"] and panel(f)["trouble_buzzer"], timeout=WAIT_S)
        points = {e["data"]["point"] for e in f.typed("alarm.raised")}
        assert points == {"call_point_unreachable"}  # a silent module is no lamp fault
        assert not panel(f)["floor_call_lamp"]  # a trouble, not a call
        assert not panel(f)["floor_sounder"]
        alarm_id = raised["data"]["alarm_id"]
        reply = await f.command("ack_alarm", {"alarm_id": alarm_id, "by": "tech"})
        assert reply["ok"], reply
        await until(lambda: not panel(f)["trouble_buzzer"], timeout=WAIT_S)
        assert panel(f)["trouble_lamp"]  # on until the cause clears

        # kill -9 with the trouble open: it comes back as it was (acknowledged, same id).
        f.proc.kill()
        f.proc.wait()
        f.sim.set_input("floorpanel", "trouble_lamp", False)  # a panel that lost its outputs
        f.proc = start(f.path)
        await f.event("gateway.started", n=2)
        await until(lambda: panel(f)["trouble_lamp"], timeout=WAIT_S)
        doc = await retained_until(
            mosquitto, f"{ROOT}/alarms/{alarm_id}", lambda d: d.get("state") == "acknowledged"
        )
        assert doc["point"] == "call_point_unreachable"
        assert not panel(f)["trouble_buzzer"]

        f.sim.clear_fault("1201/rio")
        await resolved(f, alarm_id)
        await until(lambda: not panel(f)["trouble_lamp"], timeout=WAIT_S)


async def test_a_stuck_lamp_is_a_lamp_fault_and_the_lamp_test_clears_it(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        await until(lambda: "dome_lamp" in f.sim.coils("1201/rio"), timeout=WAIT_S)
        f.sim.set_fault("1201/rio", "stuck", 4)  # the dome lamp's coil
        f.sim.press("1201", "bed", ms=100)
        await alarm_of(f, "bed", "1201")
        fault = await alarm_of(f, "lamp_fault", "1201")
        assert fault["data"]["kind"] == "technical"
        await until(lambda: panel(f)["trouble_lamp"], timeout=WAIT_S)
        await until(lambda: f.sim.coils("1201/rio")["reassure_lamp"], timeout=WAIT_S)  # the other

        code, out = await floorctl(f.path, "lamps", "test", "1201")
        assert code == 1, out  # still stuck: said so
        assert "NOT READ BACK" in out

        f.sim.clear_fault("1201/rio", "stuck")
        code, out = await floorctl(f.path, "lamps", "test", "1201")
        assert code == 0, out
        await resolved(f, fault["data"]["alarm_id"])
        await until(lambda: f.sim.coils("1201/rio")["dome_lamp"], timeout=WAIT_S)  # the call


async def test_a_device_answering_only_some_reads_shows_its_other_values_stale(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    topic = f"{ROOM_STATE}"

    def faster(data: dict[str, Any]) -> None:  # thermostats polled every 4 s: stale after 15 s
        data.setdefault("poll", {}).setdefault("intervals_ms", {})["slow"] = 4000

    async with running(run_dir, mosquitto, edit=faster) as f:
        doc = await retained_until(
            mosquitto,
            topic,
            lambda d: bool(d) and d["climate"]["temp_c"] is not None,
            timeout_s=STALE_WAIT_S,
        )
        assert doc["stale"] == []
        assert doc["observed"]["tstat"] is not None
        f.sim.set_fault("1201/tstat", "refuse", 0)  # the room temperature's input register
        loop = asyncio.get_running_loop()
        since = loop.time()
        doc = await retained_until(
            mosquitto,
            topic,
            lambda d: bool(d) and "climate.temp_c" in d["stale"],
            timeout_s=STALE_WAIT_S,
        )
        assert loop.time() - since >= 15  # never before the stale limit
        assert doc["devices"]["tstat"] == "online"
        assert doc["climate"]["temp_c"] is not None  # the last value, listed as not current
        assert "climate.setpoint_c" not in doc["stale"]  # the reads it answers stay current
        _, out = await floorctl(f.path, "room", "1201")
        assert "STALE" in out, out
        _, out = await floorctl(f.path, "floor")
        assert "with stale values" in out, out
        f.sim.clear_fault("1201/tstat")
        await retained_until(mosquitto, topic, lambda d: d["stale"] == [])


async def test_a_call_on_a_full_disk_lights_and_sounds_and_its_events_arrive_later(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    why = fullfs.unavailable()
    if why is not None:
        pytest.skip(why)
    state = run_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    prefix = fullfs.prefix(state, STATE_SIZE)
    async with running(run_dir, mosquitto, prefix=prefix) as f:
        await until(lambda: "dome_lamp" in f.sim.coils("1203/rio"), timeout=WAIT_S)
        fullfs.fill(f.proc.pid, state)
        # The database keeps taking writes into room it already has: the floor's own
        # traffic uses it up until a write fails.
        for i in range(2000):
            if panel(f).get("trouble_lamp"):
                break
            f.sim.dnd("1204", i % 2 == 0)
            await asyncio.sleep(0.05)
        await until(lambda: panel(f)["trouble_lamp"], timeout=WAIT_S)
        f.sim.press("1203", "bath", ms=100)
        await until(lambda: f.sim.coils("1203/rio")["dome_lamp"], timeout=WAIT_S)
        await until(lambda: f.sim.coils("1203/rio")["reassure_lamp"], timeout=WAIT_S)
        await until(lambda: panel(f)["floor_call_lamp"], timeout=WAIT_S)
        await until(lambda: panel(f)["floor_sounder"], timeout=WAIT_S)  # past level 0 (1 s)
        reply = await f.command("set_lights", {"room": "1201", "circuits": {"main": True}})
        assert (reply["ok"], reply["error"]["code"]) == (False, "internal")
        assert not [e for e in f.typed("alarm.raised") if e.get("room") == "1203"]
        assert f.proc.poll() is None

        fullfs.free(f.proc.pid, state)
        call = await alarm_of(f, "bath", "1203")
        storage = await alarm_of(f, "storage", None)
        assert storage["seq"] < call["seq"]  # decision order
        await resolved(f, storage["data"]["alarm_id"])
        await until(lambda: not panel(f)["trouble_lamp"], timeout=WAIT_S)
        seqs = [e["seq"] for e in f.all_events()]
        assert sorted(seqs) == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap
        assert f.proc.poll() is None
