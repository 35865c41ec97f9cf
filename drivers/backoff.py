"""One backoff value object for every retry loop: capped exponential, jittered, resettable.

Used for MQTT reconnects, serial reopen and offline-device probes. Jitter matters: thirty
floors that lost the same broker must not come back in lockstep. ``full`` jitter draws the
delay uniformly from [0, ceiling] (AWS "full jitter"; aiomqtt's reconnect example); ``equal``
jitter draws from [ceiling/2, ceiling], for probes that should not come back too early.
Pure: no clock, and the random source is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Delay before attempt n+1 after n failures: min(cap, initial * factor**n), jittered."""

    initial_s: float = 0.5
    cap_s: float = 60.0
    factor: float = 2.0
    jitter: Literal["full", "equal", "none"] = "full"
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError(f"need 0 < initial_s <= cap_s, got {self.initial_s}, {self.cap_s}")
        if self.factor < 1:
            raise ValueError(f"factor {self.factor} < 1")

    def ceiling(self) -> float:
        """The un-jittered delay for the current failure count."""
        # Cap the exponent so a long outage cannot overflow the float.
        exponent = min(self.failures, 64)
        return float(min(self.cap_s, self.initial_s * self.factor**exponent))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        top = self.ceiling()
        self.failures += 1
        if self.jitter == "full":
            return self.rng.uniform(0.0, top)
        if self.jitter == "equal":
            return self.rng.uniform(top / 2, top)
        return top

    def reset(self) -> None:
        """Success: the next failure starts again from ``initial_s``."""
        self.failures = 0
