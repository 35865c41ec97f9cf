"""The floor's health (gateway.core.health): each reason, its level and text, the watchdog.

Pure: facts in, verdict out. The supervisor's use of the verdict (WATCHDOG=1 withheld for
the critical reasons only) is tested here too, with a real datagram socket.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from drivers.busview import BusSummary
from gateway.adapters.mqtt import UplinkStats
from gateway.adapters.sdnotify import Notifier
from gateway.core.health import (
    REASON_CODES,
    BusFacts,
    HealthFacts,
    HealthLimits,
    Level,
    Loop,
    assess,
)
from gateway.engine.health import HealthMonitor
from gateway.supervisor import Supervisor
from tests.waiting import until

T0 = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
BUS = BusFacts("rs485-a", gone=False, devices=9)


def only(facts: HealthFacts, limits: HealthLimits | None = None) -> tuple[str, str, str, bool]:
    """The one reason of a verdict: (level, code, message, critical)."""
    health = assess(facts, limits)
    assert len(health.reasons) == 1, health
    (r,) = health.reasons
    assert health.level is r.level
    return str(r.level), r.code, r.message, r.critical


def test_a_floor_with_nothing_wrong_is_ok() -> None:
    health = assess(HealthFacts(buses=(BUS,), loops=(Loop("committer", 0.5, 30),)))
    assert (health.level, health.reasons, health.to_dict()) == (
        Level.OK,
        (),
        {"level": "ok", "reasons": []},
    )


def test_broker_unreachable_counts_only_past_the_limit() -> None:
    assert assess(HealthFacts(broker_down_s=59.0)).level is Level.OK
    assert only(HealthFacts(broker_down_s=75.4)) == (
        "degraded",
        "broker_unreachable",
        "the broker has been unreachable for 75 s; events wait in the outbox",
        False,
    )
    assert assess(HealthFacts(broker_down_s=5.0), HealthLimits(broker_down_s=3)).level is (
        Level.DEGRADED
    )


def test_a_bus_not_turning_fails_the_floor_and_withholds_the_watchdog() -> None:
    facts = HealthFacts(loops=(Loop("bus[rs485-a]", 20.2, 15.0), Loop("committer", 0.1, 30)))
    assert only(facts) == (
        "failed",
        "loop_stalled",
        "bus[rs485-a] has not turned for 20 s (limit 15 s)",
        True,
    )


def test_a_database_that_does_not_answer_is_storage_and_critical() -> None:
    assert only(HealthFacts(loops=(Loop("store", 12.0, 10.0),))) == (
        "failed",
        "storage",
        "the database has not answered for 12 s (limit 10 s)",
        True,
    )


def test_storage_trouble_short_of_that_degrades() -> None:
    facts = HealthFacts(storage=("the disk of /var/lib/floorgate is 97% full (40 MiB free)",))
    assert only(facts) == (
        "degraded",
        "storage",
        "the disk of /var/lib/floorgate is 97% full (40 MiB free)",
        False,
    )


def test_devices_offline_are_named_and_counted() -> None:
    offline = tuple(f"120{i}/lock" for i in range(1, 8))
    facts = HealthFacts(buses=(BusFacts("lan", False, 20, offline[:2]), BusFacts("a", False, 9)))
    assert only(facts) == (
        "degraded",
        "devices_offline",
        "2 of 29 devices offline: 1201/lock, 1202/lock",
        False,
    )
    many = HealthFacts(buses=(BusFacts("lan", False, 20, offline),))
    assert only(many)[2] == (
        "7 of 20 devices offline: 1201/lock, 1202/lock, 1203/lock, 1204/lock, 1205/lock and 2 more"
    )


def test_a_bus_lost_or_silent_fails_the_floor_but_does_not_withhold_the_watchdog() -> None:
    gone = assess(HealthFacts(buses=(BusFacts("lan", True, 2, ("1203/tstat", "1203/lock")),)))
    assert gone.level is Level.FAILED
    assert [(r.code, r.message, r.critical) for r in gone.reasons] == [
        ("bus_down", "bus lan: port or endpoint lost", False),
        ("devices_offline", "2 of 2 devices offline: 1203/lock, 1203/tstat", False),
    ]
    silent = assess(HealthFacts(buses=(BusFacts("lan", False, 1, ("1203/tstat",)),)))
    assert silent.reasons[0].message == "bus lan: none of its devices answers"
    assert silent.critical == ()


def test_technical_alarms_say_what_cannot_be_heard() -> None:
    facts = HealthFacts(
        alarms=(
            ("call_point_unreachable", "1204"),
            ("callpanel_offline", "panel"),
            ("call_point_unreachable", "1201"),
            ("lock_tamper", "1203"),  # a guest-facing alarm, not the floor's health
        )
    )
    health = assess(facts)
    assert health.level is Level.FAILED
    assert [(r.code, r.message) for r in health.reasons] == [
        ("call_path", "call points cannot be read: 1201, 1204"),
        ("call_path", "a call panel is silent, calls from its rooms cannot be heard: panel"),
    ]


def test_publishes_refused_degrade() -> None:
    assert only(HealthFacts(alarms=(("uplink_refused", None),))) == (
        "degraded",
        "uplink_refused",
        "the broker refuses the floor's publishes",
        False,
    )


def test_a_clock_jump_degrades_for_a_while() -> None:
    assert only(HealthFacts(clock_jump=(-3600.0, 12.0))) == (
        "degraded",
        "clock_jump",
        "the wall clock was stepped -3600 s, 12 s ago: keep NTP running",
        False,
    )
    assert assess(HealthFacts(clock_jump=(-3600.0, 601.0))).level is Level.OK
    held = assess(HealthFacts(clock_jump=(5.0, 20.0)), HealthLimits(clock_jump_hold_s=10))
    assert held.level is Level.OK


@given(
    down=st.none() | st.floats(0, 1e5),
    stalled=st.booleans(),
    offline=st.integers(0, 5),
    gone=st.booleans(),
    jump=st.none() | st.tuples(st.floats(-1e5, 1e5), st.floats(0, 1e4)),
)
def test_the_level_is_the_worst_reason_and_only_stalled_loops_are_critical(
    down: float | None,
    stalled: bool,
    offline: int,
    gone: bool,
    jump: tuple[float, float] | None,
) -> None:
    facts = HealthFacts(
        broker_down_s=down,
        loops=(Loop("bus[a]", 20.0 if stalled else 1.0, 15.0),),
        buses=(BusFacts("a", gone, 5, tuple(f"1/{i}" for i in range(offline))),),
        clock_jump=jump,
    )
    health = assess(facts)
    worst = max((r.level.rank for r in health.reasons), default=0)
    assert health.level.rank == worst
    assert {r.code for r in health.critical} == ({"loop_stalled"} if stalled else set())
    assert all(code in REASON_CODES for code in health.codes)


# -- the monitor and the watchdog ----------------------------------------------------------


def _link(*, connected: bool, since: datetime) -> UplinkStats:
    return UplinkStats(connected, "x", since, 0, 0, None, 0, 0, None, 0)


def _bus(*states: str) -> BusSummary:
    offline = tuple(f"120{i}/lock" for i, s in enumerate(states) if s == "offline")
    return BusSummary("a", False, len(states), offline)


def test_the_monitor_gathers_the_facts_of_the_running_floor() -> None:
    loops = [("bus[a]", 1.0, 15.0), ("committer", 0.2, 30.0)]
    monitor = HealthMonitor(
        link=lambda: _link(connected=False, since=T0),
        buses={"a": lambda: _bus("online", "offline", "unknown")},
        loops=lambda: loops,
        alarms=lambda: [("callpanel_offline", None)],
        clock_jump=lambda: (90.0, 3.0),
        wall=lambda: T0 + timedelta(seconds=61),
    )
    facts = monitor.facts()
    assert facts.broker_down_s == 61.0
    assert facts.buses == (BusFacts("a", False, 3, ("1201/lock",)),)  # unknown: not yet
    assert monitor.health().codes == (
        "call_path",
        "broker_unreachable",
        "devices_offline",
        "clock_jump",
    )
    assert monitor.critical() == []
    loops[0] = ("bus[a]", 16.0, 15.0)
    assert monitor.critical() == ["bus[a] has not turned for 16 s (limit 15 s)"]


class RecordingNotifier(Notifier):
    """Records every notification with what the watchdog gate said just before."""

    def __init__(self) -> None:
        super().__init__("/nonexistent/notify", watchdog_usec=40_000)  # a ping every 20 ms
        self.gate_said: list[str] = []
        self.pings: list[tuple[str, ...]] = []

    def notify(self, *lines: str) -> None:
        if "WATCHDOG=1" in lines:
            self.pings.append(tuple(self.gate_said))


async def test_the_watchdog_is_withheld_for_critical_reasons_only() -> None:
    notifier = RecordingNotifier()
    supervisor = Supervisor(notifier=notifier)
    stalled = False
    asked: list[list[str]] = []

    def gate() -> list[str]:
        facts = HealthFacts(  # the broker away for ten minutes, and maybe a bus stuck
            broker_down_s=600.0, loops=(Loop("bus[a]", 20.0 if stalled else 0.1, 15.0),)
        )
        notifier.gate_said = [r.message for r in assess(facts).critical]
        asked.append(notifier.gate_said)
        return notifier.gate_said

    supervisor.watchdog_gate(gate)
    run = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: len(notifier.pings) >= 3, timeout=5)  # degraded: still fed
        stalled = True
        await until(lambda: len([a for a in asked if a]) >= 3, timeout=5)
        stalled = False
        pinged = len(notifier.pings)
        await until(lambda: len(notifier.pings) > pinged, timeout=5)
    finally:
        supervisor.request_stop("test")
        await run
    assert all(said == () for said in notifier.pings)  # never pinged while withheld
