"""Wall-clock jumps.

Stays are enforced by the gateway's wall clock (mqtt.md), while the engine sleeps on the
monotonic clock until the next boundary. When the wall clock is stepped (an NTP
correction, an RTC that was wrong at boot) a sleep computed before the step is wrong, so
the engine feeds ``ClockWatch`` (monotonic, wall) pairs and re-evaluates every boundary
at once when it reports a jump. Slewing (NTP adjusting the rate) stays under the
tolerance between two observations and is not a jump.

Pure: both clocks are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.model.time import require_aware

__all__ = ["DEFAULT_TOLERANCE_S", "ClockJump", "ClockWatch"]

DEFAULT_TOLERANCE_S = 2.0
"""A wall step smaller than this between two observations is drift, not a jump."""


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The wall clock moved ``seconds`` (signed: > 0 forward) away from monotonic time."""

    seconds: float
    expected: datetime  # the wall time monotonic time predicted
    wall: datetime  # the wall time observed


class ClockWatch:
    """Compares successive (monotonic, wall) pairs; reports steps of the wall clock."""

    def __init__(self, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
        """Watch with this tolerance (seconds, > 0); the first observation is the baseline."""
        if tolerance_s <= 0:
            raise ValueError(f"tolerance_s must be > 0, got {tolerance_s}")
        self._tolerance = tolerance_s
        self._last: tuple[float, datetime] | None = None

    def observe(self, mono: float, wall: datetime) -> ClockJump | None:
        """Record a pair; return a ClockJump if wall time moved unlike monotonic time."""
        require_aware(wall)
        last, self._last = self._last, (mono, wall)
        if last is None:
            return None
        last_mono, last_wall = last
        if mono < last_mono:
            # Monotonic time never goes back within one process: a caller mixed clocks.
            raise ValueError(f"monotonic time went back from {last_mono} to {mono}")
        expected = last_wall + timedelta(seconds=mono - last_mono)
        seconds = (wall - expected).total_seconds()
        if abs(seconds) <= self._tolerance:
            return None
        return ClockJump(seconds, expected, wall)

    def reset(self) -> None:
        """Forget the baseline (the next observation starts again)."""
        self._last = None
