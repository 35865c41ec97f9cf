"""The floor's health, gathered: the facts the running daemon knows, judged by the core.

``HealthMonitor.health()`` collects what the uplink, the bus schedulers, the supervisor's
critical loops, the floor state's open technical alarms, the engine's clock watch and the
store already know into ``HealthFacts`` and hands them to gateway.core.health.assess, the
one judge. Facts that cost I/O (the disk's free space, the event store's size) are
refreshed by ``run()`` every ``REFRESH_S`` and read from that cache. ``run()`` also logs
every change of the verdict (``health_changed``: warning when it worsens) — the one log
line of a floor that stopped being ok.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from drivers.busview import BusSummary
from gateway.adapters import schema
from gateway.adapters.mqtt import UplinkStats
from gateway.adapters.store import Store
from gateway.core.health import (
    BusFacts,
    Health,
    HealthFacts,
    HealthLimits,
    Level,
    Loop,
    assess,
)
from gateway.model.errors import StoreError

__all__ = ["REFRESH_S", "HealthMonitor", "StorageProbe"]

log = structlog.get_logger("gateway.health")

REFRESH_S = 5.0
DISK_FREE_MIN_BYTES = 64 << 20  # less free space than this on the state directory: degraded
DISK_FREE_MIN_SHARE = 0.05
OUTBOX_NEAR_CAP = 0.9  # the event store above this share of outbox_max_mib: degraded


class StorageProbe:
    """Storage trouble short of an unwritable database: disk nearly full, outbox near its cap."""

    def __init__(self, store: Store, state_dir: Path, outbox_cap_bytes: int) -> None:
        """Watch ``state_dir``'s file system and the store's size against the outbox cap."""
        self._store = store
        self._state_dir = state_dir
        self._cap = outbox_cap_bytes

    async def problems(self) -> list[str]:
        """What is wrong now (empty: nothing)."""
        out = []
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self._state_dir)
        except OSError as exc:
            out.append(f"cannot read the free space of {self._state_dir}: {exc.strerror or exc}")
        else:
            if usage.free < DISK_FREE_MIN_BYTES or usage.free < usage.total * DISK_FREE_MIN_SHARE:
                full = 100 * (1 - usage.free / usage.total) if usage.total else 100.0
                out.append(
                    f"the disk of {self._state_dir} is {full:.0f}% full"
                    f" ({usage.free >> 20} MiB free)"
                )
        try:
            used = await self._store.read(schema.used_bytes)
        except StoreError as exc:
            out.append(f"the database cannot be read: {exc}")
        else:
            if used > self._cap * OUTBOX_NEAR_CAP:
                out.append(
                    f"the event store uses {used >> 20} of its {self._cap >> 20} MiB"
                    " (outbox_max_mib): low-value events are being shed"
                )
        return out


class HealthMonitor:
    """Gathers ``HealthFacts`` from the running floor; ``health()`` is the verdict now."""

    def __init__(
        self,
        *,
        link: Callable[[], UplinkStats],
        buses: Mapping[str, Callable[[], BusSummary]],
        loops: Callable[[], Sequence[tuple[str, float, float]]],
        alarms: Callable[[], Sequence[tuple[str, str | None]]],
        clock_jump: Callable[[], tuple[float, float] | None],
        storage: StorageProbe | None = None,
        limits: HealthLimits | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Each argument is where one kind of fact is read, at every ``health()``."""
        self._link = link
        self._buses = buses
        self._loops = loops
        self._alarms = alarms
        self._clock_jump = clock_jump
        self._storage = storage
        self.limits = limits or HealthLimits()
        self._wall = wall
        self._storage_problems: tuple[str, ...] = ()

    def facts(self) -> HealthFacts:
        """What the daemon knows now."""
        link = self._link()
        down = None if link.connected else max(0.0, (self._wall() - link.since).total_seconds())
        buses = []
        for name, summary in self._buses.items():
            s = summary()
            buses.append(BusFacts(name, s.gone, s.devices, s.offline))
        return HealthFacts(
            broker_down_s=down,
            loops=tuple(Loop(n, silent, limit) for n, silent, limit in self._loops()),
            buses=tuple(buses),
            alarms=tuple(self._alarms()),
            storage=self._storage_problems,
            clock_jump=self._clock_jump(),
            devices_total=sum(b.devices for b in buses),
        )

    def health(self) -> Health:
        """The floor's health now (gateway.core.health.assess of ``facts()``)."""
        return assess(self.facts(), self.limits)

    def critical(self) -> list[str]:
        """The reasons that withhold the systemd watchdog now (the supervisor's gate)."""
        return [r.message for r in self.health().critical]

    async def run(self) -> None:
        """Refresh the storage facts and log every change of the verdict, until cancelled."""
        last: tuple[Level, tuple[str, ...]] | None = None
        while True:
            if self._storage is not None:
                self._storage_problems = tuple(await self._storage.problems())
            health = self.health()
            now = (health.level, health.codes)
            if now != last:
                worse = last is None or health.level.rank > last[0].rank
                level = log.warning if health.level is not Level.OK and worse else log.info
                level(
                    "health_changed",
                    health=str(health.level),
                    reasons=[r.message for r in health.reasons],
                    codes=list(health.codes),
                )
                last = now
            await asyncio.sleep(REFRESH_S if self._storage is not None else 1.0)
