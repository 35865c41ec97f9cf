"""The floor engine over the demo floor, with a real store and no buses: for engine tests.

``running_engine`` restores the demo floor from an empty store, runs the committer, and
records what the engine asks of the floor (device writes, lock reconciliations, panel
lamps, retained state), so a test can submit inputs and look at the store and the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.backoff import Backoff
from drivers.ids import DeviceRef, RoomId
from drivers.panelproto import LampState
from gateway.adapters.signals import Broadcast, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor
from gateway.core.decide import Stored, restore
from gateway.core.effects import WritePoint
from gateway.core.inputs import Tick
from gateway.core.state import Layout
from gateway.engine.actuators import Actuators
from gateway.engine.engine import Engine, Inbox
from gateway.engine.locks import LockKeeper
from tests.conftest import FLOORS

T0 = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)


class Clock:
    """A wall clock the test moves (``live``: the real clock)."""

    def __init__(self, now: datetime = T0, *, live: bool = False) -> None:
        self.now = now
        self.live = live

    def __call__(self) -> datetime:
        return datetime.now(UTC) if self.live else self.now


class RecordingActuators(Actuators):
    """Write queues that only record what they were asked."""

    def __init__(self) -> None:
        super().__init__({}, {})
        self.writes: list[WritePoint] = []
        self.resent: list[DeviceRef] = []

    def enqueue(self, write: WritePoint) -> None:
        self.writes.append(write)

    def resend(self, device: DeviceRef) -> None:
        self.resent.append(device)


class RecordingLocks(LockKeeper):
    """A lock keeper that only records what it was asked."""

    def __init__(self, engine_state: Any, submit: Callable[..., None]) -> None:
        super().__init__(engine_state, {}, {}, submit, heads={}, slot_verify_s=3600)
        self.wanted: list[tuple[RoomId, str, bool]] = []
        self.logs: list[DeviceRef] = []

    def want(self, room: RoomId, cause: Any, *, read_slots: bool) -> None:
        self.wanted.append((room, cause, read_slots))

    def read_log(self, device: DeviceRef) -> None:
        self.logs.append(device)


@dataclass
class Harness:
    """A running engine and what it did."""

    config: FloorConfig
    store: Store
    engine: Engine
    inbox: Inbox
    clock: Clock
    actuators: RecordingActuators
    locks: RecordingLocks
    retained: RetainedChanges
    committed: Broadcast
    lamps: list[tuple[str, str, LampState]] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)

    async def settle(self) -> None:
        """Wait until everything queued so far is committed and acted on."""
        await self.inbox.submit(Tick())

    def forget(self) -> None:
        """Clear what was recorded so far."""
        self.actuators.writes.clear()
        self.actuators.resent.clear()
        self.locks.wanted.clear()
        self.locks.logs.clear()
        self.lamps.clear()

    def events(self) -> Any:
        return self.store.read(_events)


def _events(conn: sqlite3.Connection) -> list[tuple[int, str, str | None, str]]:
    rows = conn.execute("SELECT seq, type, room, data FROM events ORDER BY seq")
    return [(int(s), str(t), r, str(d)) for s, t, r, d in rows]


def demo_config(run_dir: Path) -> FloorConfig:
    """The demo floor, its paths under ``run_dir`` (which must hold command.key)."""
    config, _ = load_floor(FLOORS / "demo.toml", environ={"FLOORGATE_RUN_DIR": str(run_dir)})
    return config


@contextlib.asynccontextmanager
async def running_engine(
    run_dir: Path,
    clock: Clock | None = None,
    stored: Stored | None = None,
    *,
    inbox: Inbox | None = None,
    layout: Layout | None = None,
    retry: Backoff | None = None,
) -> AsyncIterator[Harness]:
    """The demo floor's engine (or ``layout``), running over a fresh store in ``run_dir``."""
    clock = clock or Clock()
    config = demo_config(run_dir)
    store = await Store.open(run_dir / "floor.db", synchronous="NORMAL")
    state, restored = restore(
        layout or config.layout(),
        stored or Stored({}, [], [], {}),
        clock(),
        new_id=lambda: uuid.uuid4().hex,
    )
    inbox = inbox or Inbox()
    actuators = RecordingActuators()
    locks = RecordingLocks(state, inbox.put)
    retained, committed = RetainedChanges(), Broadcast()
    lamps: list[tuple[str, str, LampState]] = []
    restarts: list[str] = []

    def lamp(bus: str) -> Callable[[str, LampState], None]:
        return lambda room, state: lamps.append((bus, room, state))

    engine = Engine(
        state,
        restored,
        inbox,
        store,
        actuators=actuators,
        lamps={"panel": lamp("panel")},
        locks=locks,
        retained=retained,
        outbox=committed,
        wall=clock,
        retry=retry,
        restart=restarts.append,
    )
    task = asyncio.create_task(engine.run(), name="committer")
    harness = Harness(
        config, store, engine, inbox, clock, actuators, locks, retained, committed, lamps, restarts
    )
    try:
        await harness.settle()
        harness.forget()  # what restoring the floor asked for (every lamp, every lock)
        yield harness
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
