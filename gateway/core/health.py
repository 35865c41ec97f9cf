"""The floor's health: one pure function of what the daemon knows, ok / degraded / failed and why.

``assess(facts, limits)`` is the only judge. Its result drives ``floorctl health``, the
``health`` field of the MQTT status, the ``floorgate_health*`` metrics and the systemd
watchdog: WATCHDOG=1 is withheld only for the *critical* reasons (a loop of the daemon
that stopped turning — a bus owner, the committer, the database writer), because a
restart is what cures those; a broker away, a device offline or a jumped clock are not
cured by restarting, and a restart loop would only cost the floor its buses meanwhile.

- **failed**: the floor cannot do all of its job (a loop stalled, a bus down, a call panel
  or a room's call point that cannot be heard, the database unwritable).
- **degraded**: it does its job on the floor but something needs a look (the broker
  unreachable for longer than ``broker_down_s``, devices offline, publishes refused, the
  disk nearly full, the wall clock stepped recently).

Every reason has a stable ``code`` (a bounded set: metrics label it) and a sentence.
Pure: every time is an argument of the facts.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

from gateway.model.messages import HealthReasonCode

__all__ = [
    "REASON_CODES",
    "BusFacts",
    "Health",
    "HealthFacts",
    "HealthLimits",
    "Level",
    "Loop",
    "Reason",
    "assess",
]

NAMES_SHOWN = 5  # devices named in a reason's sentence; the rest are counted


class Level(enum.StrEnum):
    """How the floor is, worst last."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """0 ok, 1 degraded, 2 failed."""
        return _RANK[self]


_RANK = {Level.OK: 0, Level.DEGRADED: 1, Level.FAILED: 2}

REASON_CODES: tuple[HealthReasonCode, ...] = get_args(HealthReasonCode)
"""Every reason code ``assess`` may give, in the order reasons are listed."""

# Technical alarms (gateway.core.alarms points) and what each says about the floor's health.
_ALARM_REASONS: dict[str, tuple[HealthReasonCode, Level]] = {
    "callpanel_offline": ("call_path", Level.FAILED),
    "call_point_unreachable": ("call_path", Level.FAILED),
    "call_point_fault": ("call_path", Level.FAILED),
    "uplink_refused": ("uplink_refused", Level.DEGRADED),
    "storage": ("storage", Level.FAILED),
}


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason the floor is not ok; ``critical``: the watchdog is withheld for it."""

    code: HealthReasonCode
    level: Level
    message: str
    critical: bool = False

    def to_dict(self) -> dict[str, object]:
        """The reason as JSON (status payload, floorctl)."""
        return {"code": self.code, "level": str(self.level), "message": self.message}


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict: the worst level of the reasons (ok when there are none)."""

    level: Level
    reasons: tuple[Reason, ...] = ()

    @property
    def critical(self) -> tuple[Reason, ...]:
        """The reasons that withhold the watchdog."""
        return tuple(r for r in self.reasons if r.critical)

    @property
    def codes(self) -> tuple[str, ...]:
        """The reason codes, once each, in order."""
        return tuple(dict.fromkeys(r.code for r in self.reasons))

    def to_dict(self) -> dict[str, object]:
        """``{"level": ..., "reasons": [{code, level, message}]}``."""
        return {"level": str(self.level), "reasons": [r.to_dict() for r in self.reasons]}


@dataclass(frozen=True, slots=True)
class Loop:
    """A critical loop of the daemon and how long it has been silent."""

    name: str  # bus[rs485-a], callpanel[panel], committer, store
    silent_s: float
    max_silence_s: float


@dataclass(frozen=True, slots=True)
class BusFacts:
    """A Modbus bus: its port or endpoint lost, its devices, which are offline."""

    name: str
    gone: bool
    devices: int
    offline: tuple[str, ...] = ()  # device names, e.g. "1203/lock"


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What the daemon knows now, gathered by the engine (gateway.engine.health)."""

    broker_down_s: float | None = None  # None while the broker link is up
    loops: tuple[Loop, ...] = ()
    buses: tuple[BusFacts, ...] = ()
    # open technical alarms: (point, room or call-panel bus, None for the floor's own)
    alarms: tuple[tuple[str, str | None], ...] = ()
    storage: tuple[str, ...] = ()  # storage trouble short of an unwritable database
    clock_jump: tuple[float, float] | None = None  # (seconds stepped, seconds ago)
    devices_total: int = field(default=0)


@dataclass(frozen=True, slots=True)
class HealthLimits:
    """How long before a passing condition counts (the floor file's ``[health]``)."""

    broker_down_s: float = 60.0
    clock_jump_hold_s: float = 600.0


def assess(facts: HealthFacts, limits: HealthLimits | None = None) -> Health:
    """The floor's health from ``facts``: every reason, the worst level."""
    limits = limits or HealthLimits()
    reasons = [
        *_loops(facts.loops),
        *_alarms(facts.alarms),
        *_buses(facts.buses),
        *_storage(facts.storage),
        *_broker(facts.broker_down_s, limits),
        *_offline(facts),
        *_clock(facts.clock_jump, limits),
    ]
    order = {code: i for i, code in enumerate(REASON_CODES)}
    reasons.sort(key=lambda r: (order[r.code], -r.level.rank))
    level = max((r.level for r in reasons), key=lambda lv: lv.rank, default=Level.OK)
    return Health(level, tuple(reasons))


def _loops(loops: Sequence[Loop]) -> list[Reason]:
    out = []
    for loop in loops:
        if loop.silent_s <= loop.max_silence_s:
            continue
        silent = f"for {loop.silent_s:.0f} s (limit {loop.max_silence_s:g} s)"
        if loop.name == "store":
            out.append(
                Reason("storage", Level.FAILED, f"the database has not answered {silent}", True)
            )
        else:
            out.append(
                Reason("loop_stalled", Level.FAILED, f"{loop.name} has not turned {silent}", True)
            )
    return out


def _alarms(alarms: Sequence[tuple[str, str | None]]) -> list[Reason]:
    grouped: dict[str, set[str]] = {}
    for point, where in alarms:
        if point in _ALARM_REASONS:
            grouped.setdefault(point, set()).update([where] if where else [])
    out = []
    for point, places in grouped.items():
        code, level = _ALARM_REASONS[point]
        names = f": {_names(sorted(places))}" if places else ""
        out.append(Reason(code, level, _ALARM_TEXT[point] + names))
    return out


_ALARM_TEXT = {
    "callpanel_offline": "a call panel is silent, calls from its rooms cannot be heard",
    "call_point_unreachable": "call points cannot be read",
    "call_point_fault": "call-point lines are cut or shorted",
    "uplink_refused": "the broker refuses the floor's publishes",
    "storage": "the database cannot be written",
}


def _buses(buses: Sequence[BusFacts]) -> list[Reason]:
    out = []
    for bus in buses:
        if bus.gone:
            out.append(Reason("bus_down", Level.FAILED, f"bus {bus.name}: port or endpoint lost"))
        elif bus.devices and len(bus.offline) == bus.devices:
            out.append(
                Reason("bus_down", Level.FAILED, f"bus {bus.name}: none of its devices answers")
            )
    return out


def _storage(problems: Sequence[str]) -> list[Reason]:
    return [Reason("storage", Level.DEGRADED, p) for p in problems]


def _broker(down_s: float | None, limits: HealthLimits) -> list[Reason]:
    if down_s is None or down_s <= limits.broker_down_s:
        return []
    text = f"the broker has been unreachable for {down_s:.0f} s; events wait in the outbox"
    return [Reason("broker_unreachable", Level.DEGRADED, text)]


def _offline(facts: HealthFacts) -> list[Reason]:
    offline = sorted(d for bus in facts.buses for d in bus.offline)
    if not offline:
        return []
    total = facts.devices_total or sum(b.devices for b in facts.buses)
    text = f"{len(offline)} of {total} devices offline: {_names(offline)}"
    return [Reason("devices_offline", Level.DEGRADED, text)]


def _clock(jump: tuple[float, float] | None, limits: HealthLimits) -> list[Reason]:
    if jump is None:
        return []
    seconds, ago = jump
    if ago > limits.clock_jump_hold_s:
        return []
    text = f"the wall clock was stepped {seconds:+.0f} s, {ago:.0f} s ago: keep NTP running"
    return [Reason("clock_jump", Level.DEGRADED, text)]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
