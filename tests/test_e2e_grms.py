"""Guest-room management end to end: floorgated + floorsim v1.1 + Mosquitto, with the
floor file's timings shrunk to seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.model.time import parse_ts
from tests.e2e import (  # noqa: F401 (fixtures)
    ROOT,
    TOKEN,
    WAIT_S,
    Floor,
    Mosquitto,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    running,
    ts,
)
from tests.waiting import until

LIGHTS = ("light_entry", "light_main", "light_bedside", "light_bath")
FAST = {
    "presence_check_s": 2,
    "lights_off_absent_s": 1,
    "window_delay_s": 1,
    "unsold_after_s": 2,
    "precondition_min": 1,
}


def shrink(floor: dict[str, Any]) -> None:
    floor["energy"] = {**floor.get("energy", {}), **FAST}


def state(room: str) -> str:
    return f"{ROOT}/rooms/{room}/state"


async def checkin(f: Floor, room: str, start: datetime, **prefs: Any) -> None:
    body: dict[str, Any] = {
        "room": room,
        "stay_id": f"S-{room}",
        "valid_from": ts(start),
        "valid_until": ts(start + timedelta(hours=2)),
        "tokens": [TOKEN],
    }
    if prefs:
        body["preferences"] = prefs
    reply = await f.command("checkin", body)
    assert reply["ok"] is True, reply


async def warm(f: Floor, room: str) -> None:
    """The room warmer than comfort (its set-backs are for cooling), as the gateway sees it."""
    f.sim.set_outside(32.0)
    f.sim.set_room_temp(room, 25.0)
    await retained_until(
        f.broker, state(room), lambda s: ((s.get("climate") or {}).get("temp_c") or 0) > 24
    )


def setpoint(f: Floor, room: str) -> float:
    value = f.sim.get(f"{room}/tstat", "setpoint")
    assert isinstance(value, float)
    return value


async def mode_event(f: Floor, room: str, mode: str, reason: str | None = None) -> dict[str, Any]:
    """The latest ``energy.mode`` event into ``mode`` (for ``reason``), once there is one."""

    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in f.typed("energy.mode")
            if e.get("room") == room
            and e["data"]["mode"] == mode
            and reason in (None, e["data"]["reason"])
        ]

    await until(found, timeout=WAIT_S)
    return found()[-1]


async def test_guest_leaves_away_then_comes_back_comfort(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        await warm(f, "1201")
        await checkin(f, "1201", datetime.now(UTC) - timedelta(minutes=1), setpoint_c=21.5)
        await until(lambda: setpoint(f, "1201") == pytest.approx(21.5), timeout=WAIT_S)
        f.sim.guest("1201", "in")
        await retained_until(f.broker, state("1201"), lambda s: s.get("presence") == "present")
        await until(lambda: f.sim.get("1201/rio", "light_main") is True, timeout=WAIT_S)  # welcome
        f.sim.guest("1201", "out")
        away = await mode_event(f, "1201", "away")
        assert away["data"] == {"mode": "away", "previous": "comfort", "reason": "presence"}
        await until(lambda: setpoint(f, "1201") == pytest.approx(23.5), timeout=WAIT_S)
        await until(
            lambda: not any(f.sim.get("1201/rio", c) for c in LIGHTS), timeout=WAIT_S
        )  # lights off after lights_off_absent_s
        f.sim.guest("1201", "in")  # back: comfort at once
        await mode_event(f, "1201", "comfort")
        await until(lambda: setpoint(f, "1201") == pytest.approx(21.5), timeout=WAIT_S)
        presences = [e["data"] for e in f.typed("room.presence") if e.get("room") == "1201"]
        assert {"present": False, "cause": "timeout"} in presences


async def test_window_powers_off_then_restores(run_dir: Path, mosquitto: Mosquitto) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        await checkin(f, "1203", datetime.now(UTC) - timedelta(minutes=1))
        await mode_event(f, "1203", "comfort")
        f.sim.window("1203", True)
        await mode_event(f, "1203", "window")
        await until(lambda: f.sim.get("1203/tstat", "power") == 0, timeout=WAIT_S)
        f.sim.window("1203", False)
        restored = await mode_event(f, "1203", "comfort", reason="window_closed")
        assert restored["data"]["previous"] == "window"
        await until(lambda: f.sim.get("1203/tstat", "power") == 1, timeout=WAIT_S)


async def test_checkout_reaches_unsold_within_the_limit(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        await warm(f, "1202")
        await checkin(f, "1202", datetime.now(UTC) - timedelta(minutes=1))
        await mode_event(f, "1202", "comfort")
        reply = await f.command("checkout", {"room": "1202", "stay_id": "S-1202"})
        assert reply["ok"] is True
        out = await f.event("room.checked_out", "1202")
        unsold = await mode_event(f, "1202", "unsold")
        waited = parse_ts(unsold["ts"]) - parse_ts(out["ts"])
        assert waited <= timedelta(seconds=FAST["unsold_after_s"] + 2)
        await until(lambda: setpoint(f, "1202") == pytest.approx(26.7), timeout=WAIT_S)
        await until(lambda: f.sim.get("1202/tstat", "keypad_lock") == 1, timeout=WAIT_S)
        hk = await f.event("housekeeping.changed", "1202")
        assert hk["data"] == {"status": "dirty", "previous": None, "by": "gateway"}


async def test_precondition_no_earlier_than_precondition_min(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        await warm(f, "1204")
        start = (datetime.now(UTC) + timedelta(seconds=64)).replace(microsecond=0)
        await checkin(f, "1204", start, setpoint_c=21.0)
        pre = await mode_event(f, "1204", "precondition")
        assert parse_ts(pre["ts"]) >= start - timedelta(minutes=FAST["precondition_min"])
        await until(lambda: setpoint(f, "1204") == pytest.approx(21.0), timeout=WAIT_S)


async def test_a_v1_room_io_tells_presence_by_the_key_card(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    options = {"v1_rio_rooms": ["1202"]}
    async with running(run_dir, mosquitto, edit=shrink, sim_options=options) as f:
        await retained_until(
            f.broker, state("1202"), lambda s: s.get("devices", {}).get("rio") == "online"
        )
        await checkin(f, "1202", datetime.now(UTC) - timedelta(minutes=1))
        f.sim.guest("1202", "in")  # no motion sensor: the card in the holder tells
        present = await f.event("room.presence", "1202")
        assert present["data"]["present"] is True
        await retained_until(f.broker, state("1202"), lambda s: s.get("presence") == "present")
        f.sim.guest("1202", "out")
        gone = await f.event("room.presence", "1202", n=2)
        assert gone["data"] == {"present": False, "cause": "timeout"}
        snap = await retained_until(f.broker, state("1202"), lambda s: s["presence"] == "absent")
        assert snap["devices"]["rio"] == "online"  # a v1 module is not a failing device


async def test_make_up_room_then_staff_key_measures_the_wait(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        await retained_until(
            f.broker, state("1203"), lambda s: s.get("devices", {}).get("rio") == "online"
        )
        f.sim.mur("1203", True)
        await f.event("room.mur", "1203")
        f.sim.staff("1203", ms=4000)
        started = await f.event("service.started", "1203")
        assert started["data"]["mur_wait_s"] >= 0
        await retained_until(f.broker, state("1203"), lambda s: s.get("service") == "in_progress")
        finished = await f.event("service.finished", "1203")
        assert finished["data"]["duration_s"] >= 1
        assert finished["data"]["mur_wait_s"] == started["data"]["mur_wait_s"]
        assert f.typed("alarm.raised") == []  # service, not a call


async def test_set_housekeeping_round_trip(run_dir: Path, mosquitto: Mosquitto) -> None:
    async with running(run_dir, mosquitto, edit=shrink) as f:
        reply = await f.command(
            "set_housekeeping", {"room": "1204", "status": "inspected", "by": "hk/li"}
        )
        assert reply == {"schema": 1, "id": reply["id"], "ok": True, "result": {}}
        event = await f.event("housekeeping.changed", "1204")
        assert event["data"] == {"status": "inspected", "previous": None, "by": "hk/li"}
        await retained_until(
            f.broker, state("1204"), lambda s: s.get("housekeeping") == "inspected"
        )
        bad = await f.command("set_housekeeping", {"room": "1204", "status": "tidy", "by": "x"})
        assert bad["ok"] is False
        assert bad["error"]["code"] == "invalid"
