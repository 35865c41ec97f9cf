"""The bus scheduler: the one owner of a bus, turning profiles into typed observations.

``BusScheduler.run()`` is the bus's task. It polls every device's points by class
(emergency > lock > room > slow, drivers.schedule decides what runs next), one
transaction at a time on RTU and up to ``transport.max_in_flight`` on TCP; it serves
writes (verified by reading back), on-demand reads and floorctl scans queued at their
priority; and it keeps each device's health (drivers.health): offline after
``offline_after`` failed transactions in a row, then probed on a capped, jittered backoff.

Only observations leave it (drivers.observations): ``PointObserved`` on change (every
polled point again after a device comes back online), ``PointsRead`` (the roles read,
coalesced per device), ``DeviceOnline``, ``DeviceOffline``, ``DeviceFault``. A point is
known by its profile ``role``; a bit field's named bits that are roles of the device are
observed one by one. Points without a role, or of class ``never``, are not polled
(``never`` points can be read on demand).

Nothing a device does ends ``run()``: timeouts, CRC garbage, exception codes and values
the codec refuses are counted against the device; a vanished port pauses the whole bus on
a backoff (the transport reconnects on the next transaction) and counts against every
device, which come back through their probes once the port answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from drivers.backoff import Backoff
from drivers.busview import (
    SCAN_TABLES,
    BusStats,
    BusSummary,
    DeviceStats,
    ScanHit,
    TxCounter,
    failure_reason,
    profile_fits,
)
from drivers.codec import Value, decode, element_address, encode
from drivers.errors import (
    BusError,
    BusGoneError,
    BusTimeoutError,
    DeviceUnavailableError,
    FrameError,
    ModbusExceptionError,
    WriteFailedError,
)
from drivers.health import DeviceHealth, HealthState, Transition
from drivers.ids import DeviceRef
from drivers.lines import DeviceSpec
from drivers.observations import (
    READ_REPORT_S,
    DeviceFault,
    DeviceOffline,
    DeviceOnline,
    DriverObservation,
    PointObserved,
    PointsRead,
)
from drivers.planner import ReadRequest, Want
from drivers.points import KIND_INTERVAL_CAPS_MS, PolledDevice
from drivers.profile import Point, PollClass, Profile, Table
from drivers.schedule import Kind, Schedule, stagger
from drivers.transport import Transport

__all__ = ["BusScheduler", "BusStats", "DeviceStats", "ScanHit", "failure_reason"]

T = TypeVar("T")

BEAT_EVERY_S = 1.0  # the owner loop turns (and beats) at least this often
BUS_REOPEN_MIN_S = 0.2
BUS_REOPEN_MAX_S = 10.0
# Exception codes that say the request itself is wrong: retrying a write cannot help.
_REFUSALS = frozenset({1, 2, 3})
# A Modbus TCP gateway answers these for a unit id behind it that does not answer.
_GATEWAY_NO_TARGET = frozenset({10, 11})


class BusScheduler:
    """The one owner task of a Modbus bus (see the module doc)."""

    def __init__(
        self,
        transport: Transport,
        devices: Sequence[DeviceSpec],
        *,
        on_observation: Callable[[DriverObservation], None],
        intervals_ms: Mapping[PollClass, int] | None = None,
        offline_after: int = 3,
        probe_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        beat: Callable[[], None] | None = None,
        kind: str | None = None,
    ) -> None:
        """Configure only; nothing touches the bus before run()."""
        self._transport = transport
        self._emit = on_observation
        self._clock = clock
        self._rng = rng or random.Random()
        self._beat = beat
        self.bus = transport.bus
        self.kind = kind or ("modbus-rtu" if transport.max_in_flight == 1 else "modbus-tcp")
        self._log: structlog.typing.FilteringBoundLogger = structlog.get_logger(bus=self.bus)
        overrides = dict(intervals_ms or {})
        caps = KIND_INTERVAL_CAPS_MS.get(self.kind, {})
        self._devices: dict[str, PolledDevice] = {}
        for spec in devices:
            if spec.name in self._devices:
                raise ValueError(f"device {spec.name} appears twice on bus {self.bus}")
            health = DeviceHealth(offline_after, probe_max_s, rng=self._rng)
            self._devices[spec.name] = PolledDevice(spec, health, overrides, caps)
        self._schedule: Schedule[str] = Schedule()
        self._requests: dict[str, _Request] = {}
        self._watch: set[PolledDevice] = set()  # offline or suspended: schedule to update
        self._request_ids = iter(range(1, 1 << 62))
        self._wake = asyncio.Event()
        self._started = False
        self._paused_until = 0.0
        self._bus_gone = False
        self._bus_backoff = Backoff(
            BUS_REOPEN_MIN_S, max(BUS_REOPEN_MIN_S, min(BUS_REOPEN_MAX_S, probe_max_s)),
            jitter="equal", rng=self._rng,
        )  # fmt: skip
        self._tx = TxCounter()
        # Which roles each device answered since its last PointsRead, when that went, and
        # when the bus last sent its reports.
        self._unreported: dict[str, set[str]] = {}
        self._reported_at: dict[str, float] = {}
        self._flushed_at: float | None = None

    # -- the owner task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Own the bus until cancelled; the transport is closed on the way out."""
        if self._started:
            raise RuntimeError(f"bus {self.bus}: run() is one-shot")
        self._started = True
        self._plan_polls(self._clock())
        self._log.info("bus_started", devices=len(self._devices), kind=self.kind)
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(max(1, self._transport.max_in_flight)):
                    tg.create_task(self._worker(), name=f"bus[{self.bus}]#{i}")
        finally:
            for key, req in list(self._requests.items()):
                self._schedule.discard(key)
                if not req.future.done():
                    req.future.set_exception(BusGoneError(f"bus {self.bus} stopped"))
            self._requests.clear()
            await self._transport.close()

    # -- what the floor engine calls --------------------------------------------------------

    async def write(
        self,
        device: DeviceRef,
        point: str,
        value: Value,
        *,
        index: int = 0,
        priority: PollClass = PollClass.LOCK,
        verify: bool = True,
        attempts: int = 3,
    ) -> None:
        """Write ``point[index]`` (a role) and read it back; see the module doc.

        DeviceUnavailableError at once if the device is offline; WriteFailedError when no
        attempt was confirmed; ValueError for a value the point cannot take.
        """
        dev = self._device(device)
        p = dev.writable(point)
        words = encode(p, value, index)
        expected = decode(p, words, index)
        if attempts < 1:
            raise ValueError(f"attempts {attempts} < 1")
        self._available(dev)
        check = verify and "r" in p.access

        async def action() -> None:
            await self._write(
                dev, p, index, words, expected=expected, verify=check, attempts=attempts
            )

        await self._submit(priority, dev, action)

    async def read(
        self,
        device: DeviceRef,
        wants: Sequence[tuple[str, int]],
        *,
        priority: PollClass = PollClass.LOCK,
    ) -> dict[tuple[str, int], Value]:
        """Read ``(role, index)`` elements now, in the fewest requests; emit changes too."""
        dev = self._device(device)
        resolved = {(role, index): dev.want(role, index) for role, index in wants}
        self._available(dev)

        async def action() -> dict[tuple[str, int], Value]:
            self._available(dev)
            unique = {(w.point.name, w.index): w for w in resolved.values()}
            got = await self._read_wants(dev, list(unique.values()))
            missing = sorted(f"{role}[{i}]" for role, i in resolved if (role, i) not in got)
            if missing:
                raise ValueError(f"{dev.name}: {', '.join(missing)} did not decode")
            return {k: got[k] for k in resolved}

        return await self._submit(priority, dev, action)

    def online(self, device: DeviceRef) -> bool:
        """True if the device answered last (not unknown, not offline)."""
        return self._device(device).health.online

    def summary(self) -> BusSummary:
        """Lost or not, the devices, which are offline: what the health verdict needs."""
        offline = tuple(
            d.name for d in self._devices.values() if d.health.state is HealthState.OFFLINE
        )
        return BusSummary(self.bus, self._bus_gone, len(self._devices), offline)

    def stats(self) -> BusStats:
        """Traffic, errors and every device's health, now."""
        now = self._clock()
        devices = []
        for dev in self._devices.values():
            h = dev.health
            p50, p99 = h.latency_s(0.5), h.latency_s(0.99)
            devices.append(
                DeviceStats(
                    name=dev.name,
                    state=str(h.state),
                    online=h.online,
                    success_rate=h.success_rate,
                    latency_ms_p50=None if p50 is None else p50 * 1e3,
                    latency_ms_p99=None if p99 is None else p99 * 1e3,
                    last_seen_s=None if h.last_seen is None else max(0.0, now - h.last_seen),
                    consecutive_failures=h.consecutive_failures,
                    transactions=h.transactions,
                    polls=dev.polls,
                    reason=h.reason,
                )
            )
        return BusStats(
            bus=self.bus,
            kind=self.kind,
            transactions=self._tx.total,
            tx_per_s=self._tx.rate(now),
            errors=dict(self._tx.errors),
            devices=tuple(devices),
            utilisation=self._tx.utilisation(now, max(1, self._transport.max_in_flight)),
            gone=self._bus_gone,
        )

    async def scan(
        self,
        units: Iterable[int],
        progress: Callable[[int, int, int], None] | None = None,
        *,
        profiles: Iterable[Profile] | None = None,
    ) -> list[ScanHit]:
        """Probe unit ids at the lowest priority, one short read per table (floorctl scan).

        ``profiles`` are the candidates to match (default: those of this bus's devices);
        ``progress(done, total, found)`` is called after each unit.
        """
        todo = list(units)
        known = {p.name: p for p in profiles} if profiles is not None else None
        if known is None:
            known = {d.spec.profile.name: d.spec.profile for d in self._devices.values()}
        candidates = list(known.values())
        hits: list[ScanHit] = []
        for i, unit in enumerate(todo):
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} outside 1..247")

            async def step(unit: int = unit) -> ScanHit | None:
                return await self._scan_unit(unit, candidates)

            hit = await self._submit(PollClass.SLOW, None, step, kind=Kind.SCAN)
            if hit is not None:
                hits.append(hit)
            if progress is not None:
                progress(i + 1, len(todo), len(hits))
        return hits

    # -- the loop ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            _raise_lost_cancel()
            if self._beat is not None:
                self._beat()
            self._wake.clear()  # whatever sets it from here on cuts the wait below short
            now = self._clock()
            paused = now < self._paused_until
            key, due = (None, None) if paused else self._schedule.pick_or_wait(now)
            if key is None:
                await self._idle(now, due)
                continue
            await self._run(key)

    async def _run(self, key: str) -> None:
        if self._beat is not None:
            self._beat()
        try:
            await self._run_entry(key)
        finally:
            self._schedule.done(key)
            self._sync_schedule()
            self._wake.set()

    async def _let_urgent_in(self, key: str) -> None:
        """Between the transactions of a long job: run what outranks it, if due."""
        level = self._schedule.level(key)
        while (urgent := self._schedule.pick(self._clock(), above=level)) is not None:
            await self._run(urgent)

    async def _idle(self, now: float, due: float | None) -> None:
        """Until ``due`` (the schedule's next due entry), a beat, the end of a pause or a
        wake, whichever comes first."""
        wake_at = now + BEAT_EVERY_S
        if now < self._paused_until:
            wake_at = min(wake_at, self._paused_until)
        elif due is not None:
            wake_at = min(wake_at, due)
        if wake_at <= now:
            await asyncio.sleep(0)
            return
        # A timer that sets the wake event: cheaper than asyncio.timeout, and the bus idles
        # between almost every two transactions. _worker clears the event before it looks.
        timer = asyncio.get_running_loop().call_later(wake_at - now, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def _run_entry(self, key: str) -> None:
        kind, _, rest = key.partition(":")
        if kind == "poll":
            name, group = rest.split("|", 1)
            dev = self._devices[name]
            dev.polls += 1
            with contextlib.suppress(BusError):  # counted against the device already
                await self._read_wants(dev, dev.groups[group], group=group, key=key)
        elif kind == "probe":
            dev = self._devices[rest]
            dev.polls += 1
            with contextlib.suppress(BusError):
                await self._read_wants(dev, [dev.probe])
        else:
            req = self._requests[key]
            if req.future.done():  # the caller gave up while it waited
                # Forget it here: done() is about to drop its entry, and the caller's
                # _submit (yet to resume) must not look that entry up.
                del self._requests[key]
                return
            try:
                result = await req.action()
            except (BusError, ValueError) as exc:  # the caller's to handle
                if not req.future.done():
                    req.future.set_exception(exc)
            except asyncio.CancelledError:
                if not req.future.done():  # run() is ending: do not leave the caller hanging
                    req.future.set_exception(BusGoneError(f"bus {self.bus} stopped"))
                raise
            else:
                if not req.future.done():
                    req.future.set_result(result)
            finally:
                del self._requests[key]

    async def _submit(
        self,
        priority: PollClass,
        dev: PolledDevice | None,
        action: Callable[[], Awaitable[T]],
        *,
        kind: Kind = Kind.REQUEST,
    ) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        key = f"{kind}:{next(self._request_ids)}"
        self._requests[key] = _Request(action, future)
        device = None if dev is None else dev.name
        self._schedule.add_request(key, priority, self._clock(), device=device, kind=kind)
        self._wake.set()
        try:
            return await future
        finally:
            if key in self._requests and not self._schedule.entry(key).in_flight:
                del self._requests[key]  # cancelled before it started
                self._schedule.discard(key)

    # -- transactions ---------------------------------------------------------------------------

    async def _read_wants(
        self,
        dev: PolledDevice,
        wants: Sequence[Want],
        *,
        group: str | None = None,
        key: str | None = None,
    ) -> dict[tuple[str, int], Value]:
        """Read and decode wants in planned requests; emit observations; BusError on failure.

        ``key``: the poll being run, which lets more urgent work in between its requests.
        """
        todo = deque(dev.plan(wants, group))
        values: dict[tuple[str, int], Value] = {}
        first = True
        while todo:
            request = todo.popleft()
            if key is not None and not first:
                await self._let_urgent_in(key)
            first = False

            def call(r: ReadRequest = request) -> Awaitable[list[int]]:
                return self._transport.read(dev.unit, r.table, r.address, r.count)

            alone = request.items[0] if len(request.items) == 1 else None
            optional = alone is not None and alone.point.optional
            try:
                raw = await self._transact(dev, call, merged=len(request.items) > 1 or optional)
            except ModbusExceptionError as exc:
                if exc.code == 2 and alone is not None and optional:
                    # An older firmware without this point (devices.md v1.1): absent, not a
                    # failing device.
                    self._log.warning("point_absent", device=dev.name, point=alone.point.name)
                    dev.planner.lacks(alone)
                    continue
                if exc.code == 2 and len(request.items) > 1:
                    # devices.md: an unmapped address answers 02. Split, remember, go on.
                    self._log.info(
                        "read_split", device=dev.name, table=str(request.table),
                        address=request.address, count=request.count,
                    )  # fmt: skip
                    dev.planner.refused(request)
                    todo.extendleft(reversed(dev.planner.plan(request.items)))
                    continue
                if key is not None and exc.code in _REFUSALS:
                    # A poll goes on past a point the device refuses: that point is not
                    # reported read (its value goes stale), the others stay current.
                    self._log.debug(
                        "point_refused", device=dev.name, table=str(request.table),
                        address=request.address, code=exc.code,
                    )  # fmt: skip
                    continue
                raise
            values.update(self._observe(dev, request, raw))
        return values

    async def _write(
        self,
        dev: PolledDevice,
        point: Point,
        index: int,
        words: list[int],
        *,
        expected: Value,
        verify: bool,
        attempts: int,
    ) -> None:
        address = element_address(point, index)
        problem = "no attempt made"
        answered = False  # the last attempt's answer was the device's own (not silence)
        for attempt in range(1, attempts + 1):
            self._available(dev)
            try:
                await self._transact(
                    dev, lambda: self._transport.write(dev.unit, point.table, address, words)
                )
                if not verify:
                    return
                got = await self._read_wants(dev, [Want(point, index)])
            except ModbusExceptionError as exc:
                if exc.code in _REFUSALS:
                    raise WriteFailedError(
                        f"{dev.name} {point.role}[{index}]: refused ({failure_reason(exc)})",
                        answered=True,
                    ) from exc
                problem, answered = failure_reason(exc), True
            except BusGoneError as exc:
                raise WriteFailedError(f"{dev.name} {point.role}[{index}]: bus gone") from exc
            except BusError as exc:
                problem, answered = failure_reason(exc), False
            else:
                value = got.get((str(point.role), index))
                if value == expected:
                    return
                problem, answered = f"read back {value!r}", True
            self._log.debug(
                "write_retry", device=dev.name, point=point.role, index=index,
                attempt=attempt, problem=problem,
            )  # fmt: skip
        why = f"not confirmed after {attempts} attempts ({problem})"
        raise WriteFailedError(f"{dev.name} {point.role}[{index}]: {why}", answered=answered)

    async def _transact(
        self, dev: PolledDevice, call: Callable[[], Awaitable[T]], *, merged: bool = False
    ) -> T:
        """One transaction, counted for the bus and the device's health."""
        start = self._clock()
        try:
            result = await call()
        except BusError as exc:
            now = self._clock()
            self._tx.count(now, failure_reason(exc), now - start)
            if isinstance(exc, BusGoneError):
                self._bus_lost(now, exc)
            elif isinstance(exc, ModbusExceptionError) and exc.code in _REFUSALS:
                # The device answered (it refuses this request: an address it does not map,
                # a value it will not take): it is alive, and online (mqtt.md: a device
                # that answers some reads with an exception is online).
                self._alive(dev, now, start)
            else:
                self._device_failed(dev, now, failure_reason(exc), exc)
            raise
        now = self._clock()
        self._tx.count(now, busy_s=now - start)
        self._alive(dev, now, start)
        dev.fault = None
        return result

    def _alive(self, dev: PolledDevice, now: float, start: float) -> None:
        """The device answered: the bus works, and the device is (again) online."""
        self._bus_answered(now)
        if dev.health.success(now, now - start) is Transition.ONLINE:
            self._watch.add(dev)
            dev.forget()  # re-observe every point after (re)appearing
            self._log.info("device_online", device=dev.name, unit=dev.unit)
            self._reported_at.pop(dev.name, None)  # its first reads are reported at once
            self._emit(DeviceOnline(dev.ref, now))

    async def _scan_unit(self, unit: int, candidates: Sequence[Profile]) -> ScanHit | None:
        data: list[Table] = []
        refused: list[Table] = []
        for table in SCAN_TABLES:
            try:
                await self._transport.read(unit, table, 0, 1)
            except ModbusExceptionError as exc:
                self._tx.count(self._clock())
                if exc.code not in _GATEWAY_NO_TARGET:
                    refused.append(table)
                    continue
            except (BusTimeoutError, FrameError) as exc:
                self._tx.count(self._clock(), failure_reason(exc))
            else:
                self._tx.count(self._clock())
                data.append(table)
                continue
            if not data and not refused:
                return None  # nobody at this unit id: do not wait out three more timeouts
        fits = tuple(p.name for p in candidates if profile_fits(p, data, refused))
        return ScanHit(unit, tuple(data), tuple(refused), fits)

    # -- health and observations -------------------------------------------------------------

    def _device_failed(
        self, dev: PolledDevice, now: float, reason: str, exc: BusError, *, quiet: bool = False
    ) -> None:
        if isinstance(exc, ModbusExceptionError) and exc.code == 4 and dev.fault != reason:
            dev.fault = reason
            self._log.warning("device_fault", device=dev.name, unit=dev.unit, code=reason)
            self._emit(DeviceFault(dev.ref, reason, now))
        first = dev.health.consecutive_failures == 0
        if dev.health.state is HealthState.OFFLINE:
            self._watch.add(dev)  # a failed probe: the next one later
        if dev.health.failure(now, reason) is Transition.OFFLINE:
            self._watch.add(dev)
            dev.forget()
            self._log.warning("device_offline", device=dev.name, unit=dev.unit, reason=reason)
            self._emit(DeviceOffline(dev.ref, reason, now))
        elif first and not quiet and dev.health.state is not HealthState.OFFLINE:
            self._log.info("device_no_answer", device=dev.name, unit=dev.unit, reason=reason)
        else:
            self._log.debug("device_failure", device=dev.name, unit=dev.unit, reason=reason)

    def _observe(
        self, dev: PolledDevice, request: ReadRequest, raw: Sequence[int]
    ) -> dict[tuple[str, int], Value]:
        now = self._clock()
        out: dict[tuple[str, int], Value] = {}
        for want in request.items:
            p = want.point
            words = tuple(request.slice_for(want, raw))
            cached = dev.decoded.get((p.name, want.index))
            if cached is not None and cached[0] == words:  # unchanged: nothing to decode
                for role, v in cached[1]:
                    out[(role, want.index)] = v
                continue
            try:
                value = decode(p, words, want.index)
            except ValueError as exc:
                self._bad_value(dev, p, want.index, exc, now)
                continue
            dev.bad.discard((p.name, want.index))
            pairs = dev.observables(p, value)
            dev.decoded[(p.name, want.index)] = (words, pairs)
            for role, v in pairs:
                out[(role, want.index)] = v
                if dev.values.get((role, want.index), _MISSING) != v:
                    dev.values[(role, want.index)] = v
                    self._emit(PointObserved(dev.ref, role, want.index, v, now))
        self._answered(dev, {role for role, _ in out}, now)
        return out

    def _answered(self, dev: PolledDevice, roles: set[str], now: float) -> None:
        """Report the roles read, coalesced per bus: every READ_REPORT_S the bus sends one
        PointsRead per device back to back, so the committer takes them as one batch rather
        than one a device; a device's first reads after it (re)appeared go at once. No device
        is reported more often than every READ_REPORT_S."""
        if roles:
            self._unreported.setdefault(dev.name, set()).update(roles)
        if dev.name not in self._reported_at and dev.name in self._unreported:
            self._report(dev.name, now)
        if self._flushed_at is not None and now - self._flushed_at < READ_REPORT_S:
            return
        self._flushed_at = now
        for name in list(self._unreported):
            last = self._reported_at.get(name)
            if last is None or now - last >= READ_REPORT_S:
                self._report(name, now)

    def _report(self, name: str, now: float) -> None:
        roles = self._unreported.pop(name)
        self._reported_at[name] = now
        self._emit(PointsRead(self._devices[name].ref, tuple(sorted(roles)), now))

    def _bad_value(
        self, dev: PolledDevice, p: Point, index: int, exc: ValueError, now: float
    ) -> None:
        if (p.name, index) in dev.bad:
            return
        dev.bad.add((p.name, index))
        code = f"bad value {p.role or p.name}"
        self._log.warning("point_decode_failed", device=dev.name, point=p.name, error=str(exc))
        self._emit(DeviceFault(dev.ref, code, now))

    def _bus_lost(self, now: float, exc: BusError) -> None:
        delay = self._bus_backoff.next_delay()
        self._paused_until = now + delay
        level = logging.DEBUG if self._bus_gone else logging.WARNING
        self._bus_gone = True
        self._log.log(level, "bus_gone", error=str(exc), retry_in_s=round(delay, 3))
        for dev in self._devices.values():  # the bus is gone for every device on it
            self._device_failed(dev, now, "bus gone", exc, quiet=True)

    def _bus_answered(self, now: float) -> None:
        if not self._bus_gone:
            return
        self._bus_gone = False
        self._bus_backoff.reset()
        self._log.info("bus_back")
        for dev in self._devices.values():
            if dev.health.reason == "bus gone":
                dev.health.probe_now(now)
                self._watch.add(dev)

    def _sync_schedule(self) -> None:
        """Suspend the polls of OFFLINE devices (probe when due); resume the others."""
        if not self._watch:
            return
        now = self._clock()
        for dev in list(self._watch):
            h = dev.health
            if h.state is HealthState.OFFLINE and h.probe_at is not None:
                entry = dev.probe_key
                if entry not in self._schedule or self._schedule.entry(entry).due_at != h.probe_at:
                    self._schedule.suspend(dev.name, entry, h.probe_at, h.probe_at - now)
            elif self._schedule.suspended(dev.name):
                self._schedule.resume(dev.name, dev.probe_key, now)
                self._watch.discard(dev)
            else:
                self._watch.discard(dev)

    # -- helpers ---------------------------------------------------------------------------------

    def _plan_polls(self, now: float) -> None:
        by_interval: dict[tuple[PollClass, int], list[tuple[str, PolledDevice]]] = {}
        for dev in self._devices.values():
            for group, (cls, interval_ms) in dev.group_class.items():
                by_interval.setdefault((cls, interval_ms), []).append((group, dev))
        for (cls, interval_ms), members in by_interval.items():
            starts = stagger(len(members), interval_ms / 1e3, now)
            for (group, dev), first in zip(members, starts, strict=True):
                key = f"poll:{dev.name}|{group}"
                self._schedule.add_poll(key, dev.name, cls, interval_ms / 1e3, first)

    def _device(self, ref: DeviceRef) -> PolledDevice:
        try:
            return self._devices[str(ref)]
        except KeyError:
            raise KeyError(f"no device {ref} on bus {self.bus}") from None

    def _available(self, dev: PolledDevice) -> None:
        if dev.health.state is HealthState.OFFLINE:
            raise DeviceUnavailableError(f"{dev.name} is offline ({dev.health.reason})")


_MISSING = object()


def _raise_lost_cancel() -> None:
    """Raise CancelledError if this task was cancelled but an await swallowed it.

    On Python 3.11, ``asyncio.wait_for`` (pymodbus' TCP client waits for every answer with
    it) returns the answer instead of raising when the cancel lands in the loop iteration in
    which the answer arrives (CPython gh-86296, fixed in 3.12). The request is still counted by
    ``Task.cancelling()``; without this check the worker would poll on past a stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(slots=True)
class _Request:
    """A caller's queued work and the future it awaits."""

    action: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]
