"""What a bus scheduler reports: traffic and health figures, scan hits, failure reasons.

Values for the CLI (``floorctl status``, ``floorctl scan``) and the floor engine; the
scheduler (drivers.scheduler) fills them. Pure: no I/O; time is an argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drivers.errors import BusGoneError, BusTimeoutError, FrameError, ModbusExceptionError
from drivers.profile import Profile, Table

__all__ = [
    "SCAN_TABLES",
    "BusStats",
    "BusSummary",
    "DeviceStats",
    "ScanHit",
    "TxCounter",
    "failure_reason",
    "profile_fits",
]

RATE_WINDOW_S = 10  # transactions/s is measured over this many whole seconds
SCAN_TABLES = (Table.COIL, Table.DISCRETE, Table.INPUT, Table.HOLDING)


@dataclass(frozen=True, slots=True)
class DeviceStats:
    """One device's health as the CLI shows it."""

    name: str
    state: str  # "unknown", "online", "offline"
    online: bool
    success_rate: float | None  # over the recent transactions
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    last_seen_s: float | None  # seconds ago, None if never answered
    consecutive_failures: int
    transactions: int
    polls: int
    reason: str | None  # the last failure's reason


@dataclass(frozen=True, slots=True)
class BusStats:
    """One bus: traffic, errors by kind and every device's health."""

    bus: str
    kind: str
    transactions: int
    tx_per_s: float  # over the last ~10 s
    errors: Mapping[str, int]
    devices: tuple[DeviceStats, ...]
    utilisation: float = 0.0  # share of the last ~10 s spent in transactions, 0..1
    gone: bool = False  # the port or TCP endpoint is lost (the bus pauses and reopens)


@dataclass(frozen=True, slots=True)
class BusSummary:
    """One bus in brief, for the health verdict (asked every second): whether its port or
    endpoint is lost, how many devices it has and which are offline — none of the latency
    percentiles ``BusStats`` sorts for."""

    bus: str
    gone: bool
    devices: int
    offline: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A unit id that answered a scan: what it answered and which profiles fit."""

    unit: int
    tables: tuple[Table, ...]  # answered a one-element read at address 0 with data
    refused: tuple[Table, ...]  # answered it with a Modbus exception
    profiles: tuple[str, ...]  # profiles whose maps agree with every answer


def failure_reason(exc: BaseException) -> str:
    """The reason a failed transaction is reported with: timeout, crc, exception NN..."""
    if isinstance(exc, BusTimeoutError):
        return "timeout"
    if isinstance(exc, FrameError):
        return "crc"
    if isinstance(exc, ModbusExceptionError):
        return f"exception {exc.code:02d}"
    if isinstance(exc, BusGoneError):
        return "bus gone"
    return "error"


class TxCounter:
    """Transactions of a bus: total, errors by reason, and the recent rate."""

    def __init__(self) -> None:
        """Nothing counted yet."""
        self.total = 0
        self.errors: dict[str, int] = {}
        # [second, transactions, seconds spent in them] for the recent whole seconds
        self._per_second: deque[list[float]] = deque(maxlen=RATE_WINDOW_S + 1)

    def count(self, now: float, error: str | None = None, busy_s: float = 0.0) -> None:
        """One transaction ended at ``now`` after ``busy_s``; ``error``: why it failed."""
        self.total += 1
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
        second = int(now)
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
            self._per_second[-1][2] += busy_s
        else:
            self._per_second.append([second, 1, busy_s])

    def utilisation(self, now: float, lanes: int = 1) -> float:
        """Share of the last whole ``RATE_WINDOW_S`` seconds the ``lanes`` spent busy, 0..1."""
        second = int(now)
        busy = sum(b for s, _, b in self._per_second if second - RATE_WINDOW_S <= s < second)
        return min(1.0, busy / (RATE_WINDOW_S * max(1, lanes)))

    def rate(self, now: float) -> float:
        """Transactions per second over the last whole ``RATE_WINDOW_S`` seconds."""
        second = int(now)
        done = sum(n for s, n, _ in self._per_second if second - RATE_WINDOW_S <= s < second)
        return done / RATE_WINDOW_S


def profile_fits(profile: Profile, data: Sequence[Table], refused: Sequence[Table]) -> bool:
    """True if the profile maps address 0 exactly in the tables that answered with data."""
    for table in SCAN_TABLES:
        mapped = any(p.table is table and p.address == 0 for p in profile.point)
        if (table in data) != mapped or (table in refused) == mapped:
            return False
    return True
