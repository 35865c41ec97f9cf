"""The lock keeper: what it writes, and what it reports as drift."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceOffline, DeviceOnline, PointObserved
from gateway.core import handlers
from gateway.core.decide import Stored, decide, restore
from gateway.core.inputs import Input, LockRepaired
from gateway.core.state import FloorState
from gateway.engine.locks import LockKeeper
from gateway.model.messages import CheckinBody, CheckoutBody
from tests.engine_harness import demo_config
from tests.waiting import until

TOKEN = 0x00C0FFEE00C0FFEE
LOCK = DeviceRef.parse("1203/lock")
ROOM = RoomId("1203")


@dataclass
class Bench:
    """A lock keeper over the demo floor's state, with a lock that obeys."""

    state: FloorState
    keeper: LockKeeper
    slots: list[int] = field(default_factory=lambda: [0] * 32)
    writes: list[tuple[int, int]] = field(default_factory=list)
    submitted: list[Input] = field(default_factory=list)

    def drift(self) -> list[LockRepaired]:
        return [i for i in self.submitted if isinstance(i, LockRepaired)]

    def decide(self, item: Input) -> None:
        decide(self.state, item, datetime.now(UTC))


@pytest.fixture
async def bench(run_dir: Path) -> AsyncIterator[Bench]:
    state, _ = restore(
        demo_config(run_dir).layout(), Stored({}, [], [], {}), datetime.now(UTC), new_id=str
    )
    b = Bench(state, keeper=None)  # type: ignore[arg-type]

    async def write(device: DeviceRef, point: str, value: int, *, index: int, **_: Any) -> None:
        b.writes.append((index, value))
        b.slots[index] = value

    async def read(device: DeviceRef, wants: list[tuple[str, int]], **_: Any) -> dict[Any, Any]:
        return {(p, i): b.slots[i] for p, i in wants}

    b.keeper = LockKeeper(
        state, {"lan": read}, {"lan": write}, b.submitted.append, heads={}, slot_verify_s=3600
    )
    b.decide(DeviceOnline(LOCK, 0.0))
    for i in range(32):  # the lock is heard, every slot empty
        b.decide(PointObserved(LOCK, "slot", i, 0, 0.0))
    task = asyncio.create_task(b.keeper.reconciler())
    try:
        yield b
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _checkin(state: FloorState) -> None:
    now = datetime.now(UTC)
    body = CheckinBody.model_validate(
        {
            "room": "1203",
            "stay_id": "S-1",
            "valid_from": now - timedelta(minutes=1),
            "valid_until": now + timedelta(hours=1),
            "tokens": [f"{TOKEN:016x}"],
        }
    )
    done = handlers.HANDLERS["checkin"](state, body, handlers.Context("c1", "checkin", now))
    assert isinstance(done, handlers.Done)


async def test_a_verification_while_a_checkin_commits_is_not_drift(bench: Bench) -> None:
    _checkin(bench.state)  # decided; its ReconcileLock("change") not acted on yet
    bench.keeper.expect_change(ROOM)  # as the engine says before it commits
    bench.keeper.want(ROOM, "verify", read_slots=False)  # the periodic verification
    await until(lambda: (0, TOKEN) in bench.writes)
    await asyncio.sleep(0)
    assert bench.drift() == []  # the key went in as the check-in's own work


async def test_a_slot_changed_behind_our_back_is_repaired_and_reported_once(
    bench: Bench,
) -> None:
    bench.slots[31] = 0x5555  # a foreign key, written by someone else
    bench.decide(PointObserved(LOCK, "slot", 31, 0x5555, 0.0))
    bench.keeper.want(ROOM, "verify", read_slots=False)
    await until(bench.drift)
    (repaired,) = bench.drift()
    assert (repaired.added, repaired.removed, repaired.drift) == (0, 1, True)
    assert bench.slots[31] == 0


async def test_a_lock_offline_at_checkout_reports_the_repair_as_drift(bench: Bench) -> None:
    _checkin(bench.state)
    bench.keeper.want(ROOM, "change", read_slots=False)
    await until(lambda: TOKEN in bench.slots)
    bench.decide(DeviceOffline(LOCK, "timeout", 0.0))
    now = datetime.now(UTC)
    body = CheckoutBody(room="1203", stay_id="S-1")
    handlers.HANDLERS["checkout"](bench.state, body, handlers.Context("c2", "checkout", now))
    bench.keeper.want(ROOM, "change", read_slots=False)  # offline: done when it answers
    await until(lambda: ROOM not in bench.keeper._unsynced)  # looked at while offline
    bench.decide(DeviceOnline(LOCK, 0.0))
    bench.keeper.want(ROOM, "verify", read_slots=True)
    await until(bench.drift)
    (repaired,) = bench.drift()
    assert (repaired.added, repaired.removed) == (0, 1)
    assert TOKEN not in bench.slots
