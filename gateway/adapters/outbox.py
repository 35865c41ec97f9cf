"""The outbox's upkeep, whether or not the broker can be reached (mqtt.md, operations.md).

``OutboxKeeper.run()`` looks after the outbox every ``HOUSEKEEPING_S``: delivered events
older than ``[mqtt] events_keep_days`` are purged (every ``PURGE_EVERY_S``); above
``outbox_max_mib`` the low-value events are shed, and nothing else (schema.shed_low_value);
the figures (depth, oldest undelivered, shed) are refreshed for ``floorctl`` and metrics.
``OutboxKeeper.marks()`` writes, in batches, which events the broker accepted
(``delivered``): an event is marked only after its PUBACK said so.

A store that cannot write (disk full, I/O error) stops neither: the upkeep is skipped
and the marks wait (the events stay unmarked, at worst sent again) until it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from gateway.adapters import schema
from gateway.adapters.store import Store
from gateway.config.floor import MqttSection
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

__all__ = ["HOUSEKEEPING_S", "PURGE_EVERY_S", "OutboxFigures", "OutboxKeeper"]

HOUSEKEEPING_S = 1.0
MARK_RETRY_S = 1.0
"""Wait before writing the marks again after the store failed to."""
PURGE_EVERY_S = 600.0
STOP_MARKS_S = 2.0
"""Bound on writing the last marks when stopping."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """The outbox as last looked at."""

    depth: int = 0  # undelivered events
    oldest: str | None = None  # ts of the oldest undelivered event
    shed: int = 0  # undelivered low-value events dropped at the disk cap, ever


class OutboxKeeper:
    """Purges, sheds at the disk cap, and keeps the outbox's figures."""

    def __init__(self, store: Store, mqtt: MqttSection, *, beat: Callable[[], None]) -> None:
        """``beat`` at every round (the supervisor's progress monitor)."""
        self._store = store
        self._mqtt = mqtt
        self._beat = beat
        self._over_cap = False
        self._accepted: list[int] = []
        self._accepted_wake = asyncio.Event()
        self._marking = asyncio.Lock()
        self.figures = OutboxFigures()

    def delivered(self, seq: int) -> None:
        """The broker accepted event ``seq``: mark it (soon, with others)."""
        self._accepted.append(seq)
        self._accepted_wake.set()

    def unmarked(self) -> set[int]:
        """Events accepted by the broker whose mark is not written yet (not to send again)."""
        return set(self._accepted)

    async def marks(self) -> None:
        """Write the marks as they come until cancelled, then (bounded) the last ones."""
        try:
            while True:
                await self._accepted_wake.wait()
                try:
                    await self._write_marks()
                except StoreError as exc:
                    log.warning("outbox_marks_not_written", error=str(exc))
                    self._accepted_wake.set()  # the marks are still to write
                    await asyncio.sleep(MARK_RETRY_S)
        except asyncio.CancelledError:
            # Best effort: a mark not written only means that event is sent again.
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(STOP_MARKS_S):
                    await self._write_marks()
            raise

    async def _write_marks(self) -> None:
        async with self._marking:
            self._accepted_wake.clear()
            if not self._accepted:
                return
            seqs = list(self._accepted)
            now = datetime.now(UTC)
            await self._store.write(functools.partial(schema.mark_delivered, seqs=seqs, ts=now))
            del self._accepted[: len(seqs)]  # written; those accepted meanwhile stay

    async def run(self) -> None:
        """Upkeep every second until cancelled; purge every ``PURGE_EVERY_S``."""
        next_purge = time.monotonic()
        while True:
            self._beat()
            purge = time.monotonic() >= next_purge
            if purge:
                next_purge = time.monotonic() + PURGE_EVERY_S
            try:
                await self.maintain(datetime.now(UTC), purge=purge)
            except StoreError as exc:
                log.warning("outbox_upkeep_failed", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_S)

    async def maintain(self, now: datetime, *, purge: bool = True) -> None:
        """Upkeep once: purge old delivered events, shed at the cap, refresh the figures."""
        mqtt = self._mqtt
        if purge:
            cutoff = now - timedelta(days=mqtt.events_keep_days)
            purged = await self._store.write(
                functools.partial(schema.purge_delivered, older_than=cutoff)
            )
            if purged:
                log.info("outbox_purged", events=purged, older_than=format_ts(cutoff))
        cap = mqtt.outbox_max_mib * 1024 * 1024
        over_cap = await self._store.read(schema.used_bytes) > cap
        if over_cap:
            delivered, shed = await self._store.write(
                functools.partial(schema.shed_low_value, max_bytes=cap)
            )
            if delivered or shed:
                log.warning(
                    "outbox_shed", shed=shed, delivered_dropped=delivered, cap_mib=cap >> 20
                )
            elif not self._over_cap:  # nothing may be shed: say so once, not every second
                log.warning("outbox_over_cap", cap_mib=cap >> 20, nothing_to_shed=True)
        self._over_cap = over_cap
        self.figures = await self._store.read(_figures)


def _figures(conn: sqlite3.Connection) -> OutboxFigures:
    depth, oldest = schema.outbox_backlog(conn)
    return OutboxFigures(depth, oldest, schema.events_shed(conn))
