"""Device health: a pure state machine fed with transaction outcomes.

A device starts UNKNOWN. Its first good answer makes it ONLINE; ``offline_after``
consecutive failed transactions make it OFFLINE (from UNKNOWN too, so a device that never
answers is reported). While OFFLINE it is not polled but probed, one cheap read at a time,
on a jittered exponential backoff (``equal`` jitter: never much earlier than planned)
capped at ``probe_max_s``, so a dead device costs at most one timeout per probe. The
first good answer makes it ONLINE again and resets the backoff.

Besides the state it keeps what the CLI shows: success rate and latency over the recent
transactions, last seen, consecutive failures, totals and the last failure's reason.
Time is an argument (``now``, seconds, any monotonic origin); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from dataclasses import dataclass, field

from drivers.backoff import Backoff

__all__ = ["DeviceHealth", "HealthState", "Transition"]

RECENT = 200  # transactions kept for the success rate and latency percentiles
PROBE_MIN_S = 0.5


class HealthState(enum.StrEnum):
    """Whether a device answers."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


class Transition(enum.Enum):
    """A change of state the caller reports (as DeviceOnline/DeviceOffline)."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class DeviceHealth:
    """One device's health; feed it every transaction's outcome."""

    offline_after: int = 3
    probe_max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    state: HealthState = HealthState.UNKNOWN
    consecutive_failures: int = 0
    transactions: int = 0
    failures: int = 0
    reason: str | None = None  # the last failure's reason ("timeout", "crc", ...)
    last_seen: float | None = None
    probe_at: float | None = None  # when OFFLINE: the next probe is due then
    backoff: Backoff = field(init=False, repr=False)
    _outcomes: deque[bool] = field(init=False, repr=False)
    _latencies: deque[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.offline_after < 1:
            raise ValueError(f"offline_after {self.offline_after} < 1")
        self.backoff = Backoff(
            initial_s=min(PROBE_MIN_S, self.probe_max_s),
            cap_s=self.probe_max_s,
            jitter="equal",
            rng=self.rng,
        )
        self._outcomes = deque(maxlen=RECENT)
        self._latencies = deque(maxlen=RECENT)

    def success(self, now: float, latency_s: float) -> Transition | None:
        """A transaction was answered; ONLINE if the device was not."""
        self._count(ok=True)
        self._latencies.append(latency_s)
        self.last_seen = now
        self.consecutive_failures = 0
        self.probe_at = None
        self.backoff.reset()
        if self.state is HealthState.ONLINE:
            return None
        self.state = HealthState.ONLINE
        return Transition.ONLINE

    def failure(self, now: float, reason: str) -> Transition | None:
        """A transaction failed; OFFLINE after ``offline_after`` in a row (probe scheduled)."""
        self._count(ok=False)
        self.failures += 1
        self.consecutive_failures += 1
        self.reason = reason
        if self.state is HealthState.OFFLINE:
            self.probe_at = now + self.backoff.next_delay()
            return None
        if self.consecutive_failures < self.offline_after:
            return None
        self.state = HealthState.OFFLINE
        self.probe_at = now + self.backoff.next_delay()
        return Transition.OFFLINE

    def probe_now(self, now: float) -> None:
        """Probe an OFFLINE device at once (its bus came back); no-op otherwise."""
        if self.state is HealthState.OFFLINE:
            self.backoff.reset()
            self.probe_at = now

    def probe_due(self, now: float) -> bool:
        """True if the device is OFFLINE and its probe is due."""
        return self.probe_at is not None and now >= self.probe_at

    @property
    def online(self) -> bool:
        """True only when ONLINE (not UNKNOWN, not OFFLINE)."""
        return self.state is HealthState.ONLINE

    @property
    def success_rate(self) -> float | None:
        """Share of the recent transactions that were answered (None before any)."""
        if not self._outcomes:
            return None
        return sum(self._outcomes) / len(self._outcomes)

    def latency_s(self, quantile: float) -> float | None:
        """A quantile (0..1, nearest rank) of the recent answered transactions' latency."""
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile {quantile} outside 0..1")
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        rank = max(1, math.ceil(quantile * len(ordered)))
        return ordered[rank - 1]

    def _count(self, *, ok: bool) -> None:
        self.transactions += 1
        self._outcomes.append(ok)
