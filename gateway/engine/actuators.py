"""Device writes, one queue and one task per bus; a write an offline device missed waits.

Each bus has two lanes, each made by its own task: emergency writes (the lamps and the
sounder) and the rest, ordered by priority then arrival. A call's lamp never waits behind a
room's routine writes — neither those queued (a floor brought to its energy mode queues
hundreds) nor the one under way, which on a busy line may wait long for its turn at
routine priority; the bus owner orders the two lanes' transactions by their priority.

A write that cannot be made because its device is offline stays pending and is made as
soon as the device answers again (``resend``): "a device that is offline is brought in
line as soon as it answers again". A newer write of the same point supersedes an older
one still queued.

A room lamp write (dome or reassure) is supervised: whether it read back is reported as a
``LampChecked`` input (``report``), from which the core raises or resolves ``lamp_fault``.
Only a device that answered (refused the write, or read back another value) makes a lamp
fault: a silent or offline device is its own alarm (``call_point_unreachable``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping

import structlog

from drivers.errors import BusError, DeviceUnavailableError, WriteFailedError
from drivers.ids import DeviceRef
from drivers.profile import PollClass
from gateway.core.annunciation import ROOM_LAMPS
from gateway.core.effects import WritePoint
from gateway.core.inputs import Input, LampChecked

__all__ = ["Actuators", "WriteFn"]

log = structlog.get_logger("gateway.actuators")


_RANKS = {cls: rank for rank, cls in enumerate(PollClass)}  # emergency first

WriteFn = Callable[..., Awaitable[None]]
"""A bus owner's write: ``(device, point, value, *, index, priority, verify)``."""


class Actuators:
    """The write queues of every bus."""

    def __init__(
        self,
        writers: Mapping[str, WriteFn],
        device_bus: Mapping[DeviceRef, str],
        report: Callable[[Input], None] = lambda _: None,
    ) -> None:
        """``writers``: each bus's write function; ``device_bus``: every device's bus;
        ``report``: where a room lamp write's read-back is told (the engine's inbox)."""
        self._report = report
        self._writers = dict(writers)
        self._device_bus = dict(device_bus)
        self._queues: dict[tuple[str, bool], asyncio.PriorityQueue[tuple[int, int, WritePoint]]]
        self._queues = {
            (bus, lane): asyncio.PriorityQueue() for bus in self._writers for lane in (True, False)
        }
        self._order = itertools.count()
        self._pending: dict[tuple[DeviceRef, str, int], WritePoint] = {}

    @property
    def buses(self) -> list[str]:
        """The buses with a write queue (one ``run`` task each)."""
        return list(self._writers)

    def enqueue(self, write: WritePoint) -> None:
        """Queue a write on its device's bus (pending until it is made)."""
        bus = self._device_bus.get(write.device)
        if bus is None or bus not in self._writers:
            return
        self._pending[(write.device, write.point, write.index)] = write
        lane = write.priority is PollClass.EMERGENCY
        rank = _RANKS[write.priority]
        self._queues[(bus, lane)].put_nowait((rank, next(self._order), write))

    def resend(self, device: DeviceRef) -> None:
        """The device answers again: queue the writes it missed."""
        for key, write in list(self._pending.items()):
            if key[0] == device:
                self.enqueue(write)

    async def run(self, bus: str) -> None:
        """Make the queued writes of one bus, verified, in its two lanes; keep the failed
        ones pending."""
        async with asyncio.TaskGroup() as lanes:
            lanes.create_task(self._drain(bus, emergency=True), name=f"writes[{bus}]:emergency")
            lanes.create_task(self._drain(bus, emergency=False), name=f"writes[{bus}]")

    async def _drain(self, bus: str, *, emergency: bool) -> None:
        queue = self._queues[(bus, emergency)]
        write_fn = self._writers[bus]
        while True:
            _, _, write = await queue.get()
            key = (write.device, write.point, write.index)
            if self._pending.get(key) is not write:
                continue  # superseded by a newer write of the same point
            try:
                await write_fn(
                    write.device,
                    write.point,
                    write.value,
                    index=write.index,
                    priority=write.priority,
                    verify=write.verify,
                )
            except DeviceUnavailableError:
                log.debug("write_pending", device=str(write.device), point=write.point)
                continue
            except WriteFailedError as exc:
                log.warning(
                    "write_failed", device=str(write.device), point=write.point, error=str(exc)
                )
                if exc.answered:  # a silent device is its own alarm, not a lamp's
                    self._checked(write, ok=False)
                continue
            except (BusError, ValueError) as exc:
                log.warning(
                    "write_failed", device=str(write.device), point=write.point, error=str(exc)
                )
                continue
            if self._pending.get(key) is write:
                del self._pending[key]
            self._checked(write, ok=True)

    async def write_now(self, write: WritePoint) -> bool:
        """Make one write at once (a lamp test), supervised like a queued one; whether it
        read back (False also when the device is offline or the bus failed)."""
        bus = self._device_bus.get(write.device)
        if bus is None or bus not in self._writers:
            return False
        try:
            await self._writers[bus](
                write.device,
                write.point,
                write.value,
                index=write.index,
                priority=write.priority,
                verify=True,
            )
        except WriteFailedError as exc:
            if exc.answered:
                self._checked(write, ok=False)
            return False
        except (BusError, ValueError):
            return False
        self._checked(write, ok=True)
        return True

    def _checked(self, write: WritePoint, *, ok: bool) -> None:
        if write.device.role == "rio" and write.point in ROOM_LAMPS and write.verify:
            self._report(LampChecked(write.device, write.point, ok))
