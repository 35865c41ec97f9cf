"""End to end: locks kept equal to what is authorised — drift, an offline lock, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.profile import Table
from tests.e2e import (  # noqa: F401 (fixtures)
    ROOT,
    TOKEN,
    WAIT_S,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    running,
    slot_tokens,
    start,
    stop,
    stored_value,
    ts,
)
from tests.mosquitto import Mosquitto
from tests.waiting import until

STRANGER = 0x0BADC0DE0BADC0DE


async def _checkin(f: object, room: str, until_dt: datetime) -> None:
    now = datetime.now(UTC)
    reply = await f.command(  # type: ignore[attr-defined]
        "checkin",
        {
            "room": room,
            "stay_id": f"S-{room}",
            "valid_from": ts(now - timedelta(minutes=1)),
            "valid_until": ts(until_dt),
            "tokens": [TOKEN],
        },
    )
    assert reply["ok"] is True, reply


async def test_a_slot_changed_behind_our_back_is_repaired_and_reported(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, {"slot_verify_s": 1}) as f:
        await _checkin(f, "1203", datetime.now(UTC) + timedelta(hours=1))
        await until(lambda: slot_tokens(f.sim, "1203") == {int(TOKEN, 16)}, timeout=WAIT_S)
        lock = f.sim.device("1203/lock")
        guest_slot = next(s["slot"] for s in f.sim.slots("1203") if s["token"])
        # The check-in's own write is done once the gateway has read it back (its point
        # cache on disk shows it); a change before that would be retried as that write.
        await until(
            lambda: stored_value(run_dir, "1203/lock", f"slot[{guest_slot}]") == int(TOKEN, 16),
            timeout=WAIT_S,
        )
        # Someone with a programming tool adds a key and wipes the guest's.
        lock.write(Table.HOLDING, 100 + 4 * guest_slot, [0, 0, 0, 0], multiple=True)
        # Beside it, so that one read sees both changes: 32 slots take four reads, and a
        # change landing between two of them is repaired (and reported) in two steps.
        stranger_slot = guest_slot + 1
        lock.write(Table.HOLDING, 100 + 4 * stranger_slot, _words(STRANGER), multiple=True)
        repaired = await f.event("lock.drift_repaired", "1203")
        assert repaired["data"]["added"] == 1, f.typed("lock.drift_repaired")
        assert repaired["data"]["removed"] == 1, f.typed("lock.drift_repaired")
        await until(lambda: slot_tokens(f.sim, "1203") == {int(TOKEN, 16)}, timeout=WAIT_S)
        assert len(f.typed("lock.drift_repaired")) == 1  # reported once


async def test_a_lock_offline_at_checkout_is_purged_when_it_answers(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        await _checkin(f, "1204", datetime.now(UTC) + timedelta(hours=1))
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1204"), timeout=WAIT_S)
        f.sim.set_fault("1204/lock", "silent")
        # The lock's own (a loaded machine may also time another of the room's devices out).
        await until(
            lambda: [e for e in f.typed("device.offline") if e["data"]["device"] == "1204/lock"],
            timeout=WAIT_S,
        )
        reply = await f.command("checkout", {"room": "1204", "stay_id": "S-1204"})
        assert reply["ok"] is True
        assert reply["result"]["pending"] == ["1204/lock"]
        assert int(TOKEN, 16) in slot_tokens(f.sim, "1204")  # it cannot hear us yet
        f.sim.clear_fault("1204/lock")
        await f.event("device.online", "1204")
        await until(lambda: not slot_tokens(f.sim, "1204"), timeout=WAIT_S)
        repaired = await f.event("lock.drift_repaired", "1204")
        assert repaired["data"]["removed"] == 1, f.typed("lock.drift_repaired")


async def test_a_stay_that_ends_is_checked_out_as_expired(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    def shrink(floor: dict[str, Any]) -> None:
        floor["energy"] = {**floor.get("energy", {}), "unsold_after_s": 2}

    async with running(run_dir, mosquitto, edit=shrink) as f:
        # The stay is short: first let the lock be heard, so its slot is written in time.
        await retained_until(
            mosquitto,
            f"{ROOT}/rooms/1203/state",
            lambda s: s.get("devices", {}).get("lock") == "online",
        )
        f.sim.set_room_temp("1203", 25.0)  # warmer than comfort: the set-back is for cooling
        await retained_until(
            mosquitto,
            f"{ROOT}/rooms/1203/state",
            lambda s: ((s.get("climate") or {}).get("temp_c") or 0) > 24,
        )
        await _checkin(f, "1203", datetime.now(UTC) + timedelta(seconds=3))
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        out = await f.event("room.checked_out", "1203")
        assert out["data"]["reason"] == "expired"
        await until(lambda: not slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        assert f.sim.present_token("1203", int(TOKEN, 16))["granted"] is False
        # Unsold within unsold_after_s: the thermostat set back to unsold_cool_c.
        await until(
            lambda: f.sim.get("1203/tstat", "setpoint") == pytest.approx(26.7), timeout=WAIT_S
        )


def _words(token: int) -> list[int]:
    return [(token >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]


async def test_a_future_stay_reaches_the_lock_at_its_start(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        now = datetime.now(UTC)
        starts = (now + timedelta(seconds=3)).replace(microsecond=0)  # as ts() sends it
        reply = await f.command(
            "checkin",
            {
                "room": "1203",
                "stay_id": "S-later",
                "valid_from": ts(starts),
                "valid_until": ts(starts + timedelta(hours=1)),
                "tokens": [TOKEN],
            },
        )
        assert reply["ok"] is True, reply
        await f.event("room.checked_in", "1203")
        assert int(TOKEN, 16) not in slot_tokens(f.sim, "1203")
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        assert datetime.now(UTC) >= starts  # not before its start


async def test_a_restart_with_stays_active_changes_nothing(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, {"slot_verify_s": 1}) as f:
        await _checkin(f, "1203", datetime.now(UTC) + timedelta(hours=1))
        await until(lambda: slot_tokens(f.sim, "1203") == {int(TOKEN, 16)}, timeout=WAIT_S)
        assert stop(f.proc) == 0
        f.proc = start(f.path)
        await f.event("gateway.started", n=2)
        # A foreign key proves the restarted reconciler ran: it removes that one only.
        f.sim.device("1203/lock").write(
            Table.HOLDING, 100 + 4 * 31, _words(STRANGER), multiple=True
        )
        repaired = await f.event("lock.drift_repaired", "1203")
        assert (repaired["data"]["added"], repaired["data"]["removed"]) == (0, 1)
        await until(lambda: slot_tokens(f.sim, "1203") == {int(TOKEN, 16)}, timeout=WAIT_S)
        assert not f.typed("room.checked_out")
        state = await retained_until(mosquitto, f"{ROOT}/rooms/1203/state", bool)
        assert state["occupancy"] == "occupied"
