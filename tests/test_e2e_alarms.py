"""End to end: calls with the broker down, a restart mid-escalation, the call panel's
repeats and silence (tests/e2e.py harness: floorgated + floorsim + Mosquitto)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.e2e import WAIT_S, mosquitto_fixture, mqtt_certs, running, start  # noqa: F401
from tests.mosquitto import Mosquitto
from tests.waiting import until


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_a_call_while_the_broker_is_down_sounds_at_once_and_arrives_later(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, escalation=[0, 3600]) as f:
        await f.event("gateway.started")
        mosquitto.stop()
        f.sim.press("1203", "bath", ms=100)
        # No escalation level is due for an hour: the sounder is for the link being down.
        await until(lambda: f.sim.coils("floorpanel").get("floor_sounder"), timeout=WAIT_S)
        assert f.sim.coils("floorpanel").get("floor_call_lamp")
        mosquitto.start()
        raised = await f.event("alarm.raised", "1203")
        assert raised["data"]["point"] == "bath"
        seqs = [e["seq"] for e in f.all_events()]
        assert seqs == sorted(seqs)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_daemon_killed_mid_escalation_resumes_on_schedule(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, escalation=[0, 2, 4]) as f:
        f.sim.press("1203", "bed", ms=100)
        raised = await f.event("alarm.raised", "1203")
        f.proc.kill()
        f.proc.wait()
        f.proc = start(f.path)
        first = await f.event("alarm.escalated", "1203")
        second = await f.event("alarm.escalated", "1203", n=2)
        assert (first["data"]["level"], second["data"]["level"]) == (1, 2)
        assert (first["data"]["notify"], second["data"]["notify"]) == ("level-1", "level-2")
        # Each level no earlier than its delay after the raise, counted from the stored time.
        raised_at = _at(raised["data"]["raised_at"])
        assert (_at(first["ts"]) - raised_at).total_seconds() >= 2
        assert (_at(second["ts"]) - raised_at).total_seconds() >= 4
        assert len(f.typed("alarm.raised")) == 1


async def test_panel_repeats_raise_one_alarm_and_silence_is_a_technical_alarm(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        for _ in range(3):  # the same message, as a panel repeats an unacknowledged CALL
            f.sim.panel_send("CALL,1206,BED,4242")
        raised = await f.event("alarm.raised", "1206")
        assert raised["data"]["point"] == "bed"
        f.sim.panel_send("CALL,1206,BED,4243")  # a new press while the call is open
        await until(lambda: f.sim.lamps().get("1206") == "ON", timeout=WAIT_S)
        assert len(f.typed("alarm.raised")) == 1

        # The panel goes silent (not even heartbeats): after 15 s, a technical alarm.
        f.sim.set_fault("panel", "silent", True)
        offline = await f.event("callpanel.offline")
        assert offline["data"]["bus"] == "panel"
        technical = [e for e in f.typed("alarm.raised") if e["data"]["kind"] == "technical"]
        await until(
            lambda: [e for e in f.typed("alarm.raised") if e["data"]["kind"] == "technical"],
            timeout=WAIT_S,
        )
        technical = [e for e in f.typed("alarm.raised") if e["data"]["kind"] == "technical"]
        assert technical[0]["data"]["point"] == "callpanel_offline"
        f.sim.clear_fault("panel")
        await f.event("callpanel.online")
        resolved = await f.event("alarm.resolved")
        assert resolved["data"]["point"] == "callpanel_offline"
