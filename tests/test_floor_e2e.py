"""End to end: a stay, an emergency call, bad commands, a restart (tests/e2e.py harness)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    token_hash,
    ts,
)
from tests.mosquitto import Mosquitto
from tests.waiting import until


async def test_a_stay_and_an_emergency_call_end_to_end(run_dir: Path, mosquitto: Mosquitto) -> None:
    async with running(run_dir, mosquitto) as f:
        now = datetime.now(UTC)
        reply = await f.command(
            "checkin",
            {
                "room": "1201",
                "stay_id": "S-1",
                "valid_from": ts(now - timedelta(minutes=1)),
                "valid_until": ts(now + timedelta(hours=2)),
                "tokens": [TOKEN.upper()],
                "preferences": {"setpoint_c": 21.5},
            },
        )
        assert reply["ok"] is True, reply
        await f.event("room.checked_in", "1201")
        # The lock holds the key; the thermostat took the guest's setpoint.
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1201"), timeout=WAIT_S)
        await until(lambda: f.sim.get("1201/tstat", "setpoint") == 21.5, timeout=WAIT_S)
        state = await retained_until(
            mosquitto, f"{ROOT}/rooms/1201/state", lambda s: s.get("occupancy") == "occupied"
        )
        assert state["stay_id"] == "S-1"

        # The key opens the door; the event names the stay and a hash, never the token.
        assert f.sim.present_token("1201", int(TOKEN, 16))["granted"] is True
        granted = await f.event("access.granted", "1201")
        assert granted["data"]["token_hash"] == token_hash(TOKEN)
        assert granted["data"]["stay_id"] == "S-1"
        assert TOKEN not in json.dumps(f.all_events())

        # A short bathroom pull: raised, lamps lit, escalated, acknowledged, reset in the room.
        f.sim.press("1201", "bath", ms=50)
        raised = await f.event("alarm.raised", "1201")
        alarm_id = raised["data"]["alarm_id"]
        assert raised["data"]["point"] == "bath"
        await until(lambda: f.sim.coils("1201/rio").get("dome_lamp") is True, timeout=WAIT_S)
        await until(lambda: f.sim.coils("1201/rio").get("reassure_lamp") is True, timeout=WAIT_S)
        escalated = await f.event("alarm.escalated", "1201")
        assert escalated["data"]["notify"] == "level-1"
        refused = await f.command("resolve_alarm", {"alarm_id": alarm_id, "by": "desk"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "conflict"
        acked = await f.command("ack_alarm", {"alarm_id": alarm_id, "by": "desk"})
        assert acked["ok"] is True, acked
        await f.event("alarm.acknowledged", "1201")
        f.sim.staff("1201", ms=50)
        resolved = await f.event("alarm.resolved", "1201")
        assert resolved["data"]["state"] == "resolved"
        await until(lambda: f.sim.coils("1201/rio").get("dome_lamp") is False, timeout=WAIT_S)
        # The retained alarm is cleared (the uplink coalesces retained state for <= 200 ms).
        await retained_until(mosquitto, f"{ROOT}/alarms/{alarm_id}", lambda s: s == {})

        # Checkout: the key is gone from the lock and refused at the door.
        reply = await f.command("checkout", {"room": "1201", "stay_id": "S-1"})
        assert reply["ok"] is True, reply
        await until(lambda: int(TOKEN, 16) not in slot_tokens(f.sim, "1201"), timeout=WAIT_S)
        assert f.sim.present_token("1201", int(TOKEN, 16))["granted"] is False
        denied = await f.event("access.denied", "1201")
        assert denied["data"]["token_hash"] == token_hash(TOKEN)

        # Events arrived in seq order without gaps.
        seqs = [e["seq"] for e in f.all_events()]
        assert seqs == sorted(seqs)
        assert sorted(set(seqs)) == list(range(min(seqs), max(seqs) + 1))


async def test_bad_commands_get_replies_and_change_nothing(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        reply = await f.command("checkin", {"room": "9999", "stay_id": "x"})
        assert reply["error"]["code"] == "invalid"
        now = datetime.now(UTC)
        reply = await f.command(
            "checkin",
            {
                "room": "9999",
                "stay_id": "S-9",
                "valid_from": ts(now),
                "valid_until": ts(now + timedelta(hours=1)),
                "tokens": [TOKEN],
            },
        )
        assert reply["error"]["code"] == "unknown_room"
        reply = await f.command("set_climate", {"room": "1203", "setpoint_c": 99})
        assert reply["error"]["code"] == "invalid"
        reply = await f.command("set_climate", {"room": "1203", "setpoint_c": 20.5})
        assert reply["ok"] is True
        await until(lambda: f.sim.get("1203/tstat", "setpoint") == 20.5, timeout=WAIT_S)
        rejected = await f.event("command.rejected", n=3)
        assert rejected["data"]["code"] == "invalid"


async def test_a_press_made_while_the_gateway_is_down_is_raised_on_restart(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        # Let the gateway read (and store) the counter once.
        await until(lambda: stored_value(run_dir, "1202/rio", "bath_count") == 0, timeout=WAIT_S)
        assert stop(f.proc) == 0
        f.sim.press("1202", "bath", ms=50)
        f.proc = start(f.path)
        raised = await f.event("alarm.raised", "1202")
        assert raised["data"]["point"] == "bath"
        assert len(f.typed("gateway.started")) == 2
