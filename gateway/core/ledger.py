"""The savings ledger of one room: what each local day cost and saved, pure.

operations.md, "Savings ledger": per room and local day, seconds in each energy mode,
fan-coil run time (from ``run_minutes``, else from ``fan_state``), lights on while absent
or unsold, setback degree-hours, and kWh when the room has a meter. A ``RoomLedger``
accounts time lazily: every change of what it measures first brings the totals up to
``now`` under the old state, so the result does not depend on how often anything is read.
The day ends at local midnight of the floor's time zone (``next_midnight``); the totals
of the day that ended are the ``energy.daily`` event.

Setback degree-hours: the degrees the policy moved the setpoint away from the comfort
setpoint, times the hours it held them (away and unsold; a window's power-off counts no
degrees, since nothing is held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

__all__ = ["COUNTER_WRAP", "DayTotals", "RoomLedger", "local_date", "next_midnight"]

COUNTER_WRAP = 65536  # run_minutes wraps 65535 -> 0


def local_date(now: datetime, tz: tzinfo) -> date:
    """The local calendar day of ``now`` in the floor's time zone."""
    return now.astimezone(tz).date()


def next_midnight(day: date, tz: tzinfo) -> datetime:
    """The instant (UTC) the local day ``day`` ends."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)


@dataclass(slots=True)
class DayTotals:
    """One room's totals for one local day."""

    day: date
    seconds: dict[str, float] = field(default_factory=dict)
    hvac_run_s: float = 0.0
    lights_on_absent_s: float = 0.0
    setback_degree_hours: float = 0.0
    energy_kwh: float | None = None

    def doc(self) -> dict[str, object]:
        """The ``energy.daily`` data (and the stored row)."""
        return {
            "date": self.day.isoformat(),
            "seconds": {m: round(s) for m, s in sorted(self.seconds.items())},
            "hvac_run_s": round(self.hvac_run_s),
            "lights_on_absent_s": round(self.lights_on_absent_s),
            "setback_degree_hours": round(self.setback_degree_hours, 3),
            "energy_kwh": None if self.energy_kwh is None else round(self.energy_kwh, 3),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, object]) -> DayTotals:
        """A stored row back (ValueError if it is not one)."""
        seconds = doc.get("seconds")
        kwh = doc.get("energy_kwh")
        return cls(
            day=date.fromisoformat(str(doc["date"])),
            seconds={str(k): float(v) for k, v in dict(seconds or {}).items()},  # type: ignore[call-overload]
            hvac_run_s=float(doc.get("hvac_run_s") or 0),  # type: ignore[arg-type]
            lights_on_absent_s=float(doc.get("lights_on_absent_s") or 0),  # type: ignore[arg-type]
            setback_degree_hours=float(doc.get("setback_degree_hours") or 0),  # type: ignore[arg-type]
            energy_kwh=None if kwh is None else float(kwh),  # type: ignore[arg-type]
        )


@dataclass(slots=True)
class RoomLedger:
    """One room's running totals and what they are measured from now."""

    day: DayTotals
    at: datetime  # accounted up to here
    mode: str | None = None
    setback_c: float = 0.0
    fan_running: bool = False
    lights_absent: bool = False  # a light is on while the room is absent or unsold
    run_minutes: int | None = None  # the last run_minutes read: run time comes from it
    kwh: float | None = None  # the last meter reading

    def advance(self, now: datetime) -> None:
        """Account the time since the last change under the current state."""
        dt = (now - self.at).total_seconds()
        if dt <= 0:
            return
        self.at = now
        if self.mode is not None:
            self.day.seconds[self.mode] = self.day.seconds.get(self.mode, 0.0) + dt
        if self.fan_running and self.run_minutes is None:
            self.day.hvac_run_s += dt
        if self.lights_absent:
            self.day.lights_on_absent_s += dt
        self.day.setback_degree_hours += self.setback_c * dt / 3600.0

    def set_mode(self, now: datetime, mode: str, setback_c: float) -> None:
        """The energy mode changed (with the degrees it sets back from comfort)."""
        self.advance(now)
        self.mode, self.setback_c = mode, setback_c

    def set_fan(self, now: datetime, running: bool) -> None:
        """The fan-coil started or stopped (counts when no run_minutes is read)."""
        self.advance(now)
        self.fan_running = running

    def set_lights_absent(self, now: datetime, on: bool) -> None:
        """Lights on while absent or unsold began or ended."""
        self.advance(now)
        self.lights_absent = on

    def run_minutes_read(self, now: datetime, value: int) -> None:
        """A run_minutes reading: its advance (wrapping) is run time."""
        self.advance(now)
        if self.run_minutes is not None:
            self.day.hvac_run_s += 60.0 * ((value - self.run_minutes) % COUNTER_WRAP)
        self.run_minutes = value

    def kwh_read(self, now: datetime, value: float) -> None:
        """A meter reading: its advance is the day's energy."""
        self.advance(now)
        if self.kwh is not None and value >= self.kwh:
            self.day.energy_kwh = (self.day.energy_kwh or 0.0) + (value - self.kwh)
        elif self.day.energy_kwh is None:
            self.day.energy_kwh = 0.0
        self.kwh = value

    def rollover(self, now: datetime, tz: tzinfo) -> DayTotals | None:
        """At or after local midnight: close the day (returned), start the next one."""
        end = next_midnight(self.day.day, tz)
        if now < end:
            return None
        self.advance(end)
        done = self.day
        metered = done.energy_kwh is not None or self.kwh is not None
        self.day = DayTotals(local_date(now, tz), energy_kwh=0.0 if metered else None)
        self.at = max(self.at, end)
        self.advance(now)
        return done
