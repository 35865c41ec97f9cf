"""The lock keeper against a fake bus: it follows the authorisation as it changes, never
mistakes its own work for drift, reports real drift once, and lets changes overtake a
staff schedule's routine work."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.codec import Value
from drivers.ids import DeviceRef, RoomId
from drivers.profile import PollClass
from gateway.core.decide import Stored, restore
from gateway.core.inputs import Input, LockRepaired
from gateway.core.locksync import SLOT_COUNT
from gateway.core.staff import Lockdown, StaffAccess, StaffKey, StaffRules
from gateway.core.state import FloorState
from gateway.engine.locks import LockKeeper
from tests.engine_harness import demo_config
from tests.waiting import until

ROOM = RoomId("1203")
LOCK = DeviceRef.of(ROOM, "lock")
T0 = datetime.now(UTC)
K1, K2 = "00000000000000a1", "00000000000000a2"


class FakeBus:
    """One lock's slots; every request takes a turn of the event loop, in order."""

    def __init__(self) -> None:
        self.slots = [0] * SLOT_COUNT
        self.log: list[tuple[str, PollClass]] = []

    async def read(
        self, device: DeviceRef, wants: Sequence[tuple[str, int]], *, priority: PollClass
    ) -> dict[tuple[str, int], Value]:
        self.log.append(("read", priority))
        await asyncio.sleep(0.005)
        return {(p, i): self.slots[i] for p, i in wants}

    async def write(
        self,
        device: DeviceRef,
        point: str,
        value: Value,
        *,
        index: int,
        priority: PollClass,
        verify: bool = True,
    ) -> None:
        self.log.append(("write", priority))
        await asyncio.sleep(0.005)
        assert isinstance(value, int)
        self.slots[index] = value


@pytest.fixture
def floor(run_dir: Path) -> FloorState:
    ids = (f"a{i}" for i in itertools.count())
    # Every slot known empty (as read before); the state then learns nothing more here,
    # as when the keeper's own read-backs are still on their way through the inbox.
    known = {("1203/lock", f"slot[{i}]"): 0 for i in range(SLOT_COUNT)}
    state, _ = restore(
        demo_config(run_dir).layout(), Stored(known, [], [], {}), T0, new_id=lambda: next(ids)
    )
    state.points.online_changed(LOCK, online=True)
    return state


@pytest.fixture
async def keeper(floor: FloorState) -> AsyncIterator[tuple[LockKeeper, FakeBus, list[Input]]]:
    bus = FakeBus()
    submitted: list[Input] = []
    k = LockKeeper(
        floor,
        {"lan": bus.read},
        {"lan": bus.write},
        submitted.append,
        heads={},
        slot_verify_s=3600,
    )
    task = asyncio.create_task(k.reconciler())
    yield k, bus, submitted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def checked_in(floor: FloorState, stay: str, tokens: list[str]) -> None:
    out = floor.authz.checkin(
        ROOM, stay, T0 - timedelta(hours=1), T0 + timedelta(hours=3), tokens, now=T0
    )
    assert not hasattr(out, "code"), out
    floor.authz = out[0]  # type: ignore[index]


async def test_a_change_during_the_previous_one_is_planned_over_what_was_written(
    floor: FloorState, keeper: tuple[LockKeeper, FakeBus, list[Input]]
) -> None:
    k, bus, submitted = keeper
    checked_in(floor, "s1", [K1, K2])
    k.expect_change(ROOM)
    k.want(ROOM, "change", read_slots=False)
    await until(lambda: {int(K1, 16), int(K2, 16)} <= set(bus.slots), timeout=5)
    # Checked out before the floor state has learnt of the keeper's own writes.
    out = floor.authz.checkout(ROOM, "s1", T0)
    floor.authz = out[0]  # type: ignore[index]
    k.expect_change(ROOM)
    k.want(ROOM, "change", read_slots=False)
    await until(lambda: not any(bus.slots), timeout=5)
    await asyncio.sleep(0.05)
    assert not [i for i in submitted if isinstance(i, LockRepaired)]  # our own work
    assert ("read", PollClass.SLOW) not in bus.log  # no confirmation read was needed


async def test_a_key_written_behind_our_back_is_repaired_and_reported_once(
    floor: FloorState, keeper: tuple[LockKeeper, FakeBus, list[Input]]
) -> None:
    k, bus, submitted = keeper
    bus.slots[7] = 0x0BADC0DE0BADC0DE
    k.want(ROOM, "verify", read_slots=True)
    await until(lambda: not any(bus.slots), timeout=5)
    await until(lambda: any(isinstance(i, LockRepaired) for i in submitted), timeout=5)
    (repaired,) = [i for i in submitted if isinstance(i, LockRepaired)]
    assert (repaired.added, repaired.removed, repaired.drift) == (0, 1, True)


async def test_staff_keys_go_to_the_staff_slots_and_lockdown_clears_the_rest(
    floor: FloorState, keeper: tuple[LockKeeper, FakeBus, list[Input]]
) -> None:
    k, bus, _ = keeper
    sec = StaffKey("sec", "00000000000000c1", frozenset({"floor"}), None, True, "file", 0)
    eng = StaffKey("eng", "00000000000000c2", frozenset({"floor"}), None, False, "file", 1)
    rules = StaffRules(rooms=(ROOM,), staff_slots=8, file_keys=(sec, eng))
    floor.authz = floor.authz.with_staff(StaffAccess.restore(rules))
    checked_in(floor, "s1", [K1])
    k.want(ROOM, "change", read_slots=False)
    await until(lambda: bus.slots[0] == int(K1, 16), timeout=5)
    await until(lambda: {0xC1, 0xC2} <= set(bus.slots[24:]), timeout=5)
    lockdown = Lockdown(True, "sec-1", "drill", T0)
    floor.authz = floor.authz.with_staff(floor.authz.staff.with_lockdown(lockdown))
    k.want(ROOM, "change", read_slots=False)
    await until(lambda: {v for v in bus.slots if v} == {0xC1}, timeout=5)
    assert all(p == PollClass.LOCK for op, p in bus.log if op == "write")
