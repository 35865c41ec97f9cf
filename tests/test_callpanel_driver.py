"""The call panel driver on a real pseudo-terminal: the test plays the panel on the master.

Timing constants are shrunk (offline after 0.2 s, reopen backoff 10..50 ms); every wait is
bounded and on a condition, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from drivers.callpanel import CallPanelDriver, DriverEvent
from drivers.lines import CallPanelBus
from drivers.panelproto import (
    Ack,
    Call,
    CallPlaced,
    Frame,
    Heartbeat,
    Lamp,
    LampState,
    PanelOffline,
    PanelOnline,
    PanelState,
    Point,
    RejectReason,
    parse_frame,
)
from tests.waiting import until

BUS = "panel-a"
OFFLINE_S = 0.2


class PanelEnd:
    """The panel's side of a pty pair: writes bytes, collects the gateway's lines."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()  # we keep the slave open, as floorsim does
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.lines: list[tuple[float, bytes]] = []
        self._rx = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._on_readable)

    def send(self, data: bytes | Frame) -> float:
        """Write a frame (or raw bytes) as the panel; returns the loop time of the write."""
        raw = data if isinstance(data, bytes) else data.to_bytes()
        t = self._loop.time()
        assert os.write(self.master, raw) == len(raw)
        return t

    def frames(self) -> list[Frame]:
        """Every line the gateway wrote, parsed (a bad one fails the test)."""
        return [parse_frame(line) for _, line in self.lines]

    def pause(self) -> None:
        """Stop reading: the gateway's writes pile up in the pty until it is full."""
        self._loop.remove_reader(self.master)

    def resume(self) -> None:
        """Read again."""
        self._loop.add_reader(self.master, self._on_readable)

    def close(self) -> None:
        """Remove the pty: the gateway's end reads EIO and the tty node disappears."""
        if self.master >= 0:
            self._loop.remove_reader(self.master)
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1

    def _on_readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._rx += os.read(self.master, 4096)
        while b"\n" in self._rx:
            line, _, rest = self._rx.partition(b"\n")
            self.lines.append((self._loop.time(), bytes(line) + b"\n"))
            self._rx = bytearray(rest)


@pytest.fixture(autouse=True)
def no_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) == before


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every log entry, debug included, whatever an earlier test configured."""
    old = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


@pytest.fixture
async def panel() -> AsyncIterator[PanelEnd]:
    end = PanelEnd()
    try:
        yield end
    finally:
        end.close()


class Recorder:
    """on_event sink that remembers each event with the loop time it arrived."""

    def __init__(self) -> None:
        self.timed: list[tuple[float, DriverEvent]] = []

    def __call__(self, event: DriverEvent) -> None:
        self.timed.append((asyncio.get_running_loop().time(), event))

    @property
    def events(self) -> list[DriverEvent]:
        return [e for _, e in self.timed]


@contextlib.asynccontextmanager
async def serving(
    port: str | Path, start: bool = True, **kwargs: Any
) -> AsyncIterator[tuple[CallPanelDriver, Recorder]]:
    """A driver on ``port`` with shrunk timings, its run() task cancelled on exit."""
    kwargs = {
        "offline_after_s": OFFLINE_S,
        "reopen_min_s": 0.01,
        "reopen_max_s": 0.05,
        "beat_every_s": 0.05,
        **kwargs,
    }
    recorder = Recorder()
    bus = CallPanelBus(kind="callpanel", name=BUS, port=Path(port))
    driver = CallPanelDriver(bus, recorder, **kwargs)
    task = asyncio.create_task(driver.run(), name=f"callpanel[{BUS}]")
    try:
        if start:
            await until(lambda: driver.is_open)
        yield driver, recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not driver.is_open
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left behind


def acks(panel: PanelEnd) -> list[int]:
    return [f.seq for f in panel.frames() if isinstance(f, Ack)]


async def test_call_is_reported_and_acked(panel: PanelEnd) -> None:
    async with serving(panel.path) as (driver, rec):
        panel.send(Call("1205", Point.BATH, 17))
        await until(lambda: acks(panel) == [17])
        await until(lambda: CallPlaced(BUS, "1205", Point.BATH, 17) in rec.events)
        assert rec.events == [PanelOnline(BUS), CallPlaced(BUS, "1205", Point.BATH, 17)]
        assert driver.state is PanelState.ONLINE


async def test_repeats_act_once_and_every_send_is_acked(panel: PanelEnd) -> None:
    async with serving(panel.path) as (driver, rec):
        for _ in range(3):
            panel.send(Call("1206", Point.BED, 5))
        await until(lambda: acks(panel) == [5, 5, 5])
        await until(lambda: len(rec.events) >= 2)
        assert rec.events == [PanelOnline(BUS), CallPlaced(BUS, "1206", Point.BED, 5)]
        assert driver.counters().duplicates == 2


async def test_heartbeat_is_acked_without_event(panel: PanelEnd) -> None:
    async with serving(panel.path) as (_, rec):
        panel.send(Heartbeat(3))
        await until(lambda: acks(panel) == [3])
        await until(lambda: rec.events)
        assert rec.events == [PanelOnline(BUS)]


async def test_garbage_and_bad_checksum_are_ignored_and_counted(
    panel: PanelEnd, logs: list[dict[str, Any]]
) -> None:
    async with serving(panel.path) as (driver, rec):
        panel.send(b"\x00\xff\x13\x37 noise\r\n")
        panel.send(b"$CALL,1205,BATH,1*00\r\n")  # wrong checksum
        panel.send(Lamp("1205", LampState.ON).to_bytes().replace(b"LAMP", b"LAMQ"))
        panel.send(b"$HB,1\r\n")  # no checksum
        panel.send(b"$CALL," + b"9" * 100 + b"\r\n")
        panel.send(Heartbeat(9))
        await until(lambda: acks(panel) == [9])
        await until(lambda: rec.events)
        assert rec.events == [PanelOnline(BUS)]
        assert len(panel.lines) == 1
        counters = driver.counters()
        assert counters.frames_ok == 1
        assert counters.rejected[RejectReason.CHECKSUM] == 2  # LAMQ keeps LAMP's checksum
        assert counters.rejected[RejectReason.MALFORMED] == 1
        assert counters.rejected[RejectReason.TOO_LONG] == 1
        assert counters.dropped_bytes > 0
        panel.send(b"$CALL,1205,BATH,1*00\r\n")
        panel.send(Heartbeat(10))
        await until(lambda: acks(panel) == [9, 10])
    rejected = [e["log_level"] for e in logs if e["event"] == "frames_rejected"]
    assert rejected[0] == "warning"
    assert set(rejected[1:]) == {"debug"}  # repeats at debug
    assert all(e["bus"] == BUS for e in logs)


# Timing bounds: never earlier than the deadline (2 ms for clock arithmetic), and late by
# no more than a loaded machine can delay a timer (how late it is on time: bench/).
EARLY_S = 0.002
LATE_S = 1.0


async def test_silent_panel_goes_offline_then_online_on_next_frame(panel: PanelEnd) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with serving(panel.path) as (driver, rec):
        await until(lambda: rec.events)
        assert rec.events == [PanelOffline(BUS)]  # nothing within OFFLINE_S of start
        assert OFFLINE_S - EARLY_S <= rec.timed[0][0] - started < OFFLINE_S + LATE_S
        assert driver.state is PanelState.OFFLINE
        sent = panel.send(Heartbeat(1))
        await until(lambda: len(rec.events) >= 2)
        assert rec.events[1] == PanelOnline(BUS)
        await until(lambda: len(rec.events) >= 3)
        assert rec.events[2] == PanelOffline(BUS)
        # The deadline counts from the last frame.
        assert OFFLINE_S - EARLY_S <= rec.timed[2][0] - sent < OFFLINE_S + LATE_S


async def test_the_driver_beats_while_the_panel_is_silent(panel: PanelEnd) -> None:
    beats: list[float] = []
    loop = asyncio.get_running_loop()
    # No frame and no deadline for a minute: only the driver's own beat wakes it.
    async with serving(panel.path, offline_after_s=60.0, beat=lambda: beats.append(loop.time())):
        n = len(beats)
        await until(lambda: len(beats) >= n + 10, timeout=30)  # every 0.05 s: about 0.5 s


async def test_bytes_pending_before_open_are_discarded(panel: PanelEnd) -> None:
    panel.send(Call("1205", Point.BATH, 1))  # sent while nobody has the port open
    async with serving(panel.path) as (_, rec):
        panel.send(Heartbeat(2))
        await until(lambda: acks(panel) == [2])
        await until(lambda: rec.events)
        assert rec.events == [PanelOnline(BUS)]


async def test_lamps_reach_the_panel_in_order(panel: PanelEnd) -> None:
    async with serving(panel.path, start=False) as (driver, _):
        driver.send_lamp("1205", LampState.ON)  # before the port is open: waits
        await until(lambda: driver.is_open)
        states = [LampState.FLASH, LampState.OFF, LampState.ON, LampState.OFF]
        for state in states:
            driver.send_lamp("1206", state)
        want = [Lamp("1205", LampState.ON), *(Lamp("1206", s) for s in states)]
        await until(lambda: panel.frames() == want)
        with pytest.raises(ValueError):
            driver.send_lamp("12,06", LampState.ON)


async def test_a_full_line_backs_writes_up_then_drains_in_order(panel: PanelEnd) -> None:
    async with serving(panel.path) as (driver, _):
        panel.pause()
        sent: list[Lamp] = []
        while driver.tx_dropped == 0:  # EAGAIN from the full pty, then a full backlog
            assert len(sent) < 100_000
            lamp = Lamp(str(len(sent)), list(LampState)[len(sent) % 3])
            driver.send_lamp(lamp.room, lamp.state)
            sent.append(lamp)
        panel.resume()
        await until(lambda: len(panel.lines) == len(sent) - 1)
        assert panel.frames() == sent[:-1]  # in order; only the one past the backlog dropped


async def test_vanished_port_is_reopened_with_backoff(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    link = tmp_path / "panel"  # the floor file's port: a link we can point at a new pty
    first = PanelEnd()
    link.symlink_to(first.path)
    second: PanelEnd | None = None
    try:
        async with serving(link, offline_after_s=5.0) as (driver, rec):
            first.send(Heartbeat(1))
            await until(lambda: acks(first) == [1])
            first.close()  # the port vanishes: EIO at the driver, then no tty node
            await until(lambda: not driver.is_open)
            await until(lambda: [e for e in logs if e["event"] == "port_open_failed"])
            driver.send_lamp("1205", LampState.FLASH)  # waits for the reopen
            second = PanelEnd()
            tmp = tmp_path / "panel.new"
            tmp.symlink_to(second.path)
            tmp.replace(link)
            await until(lambda: driver.is_open)
            second.send(Heartbeat(2))
            await until(lambda: acks(second) == [2])
            assert second.frames() == [Lamp("1205", LampState.FLASH), Ack(2)]
            assert rec.events == [PanelOnline(BUS)]  # back before the offline deadline
    finally:
        first.close()
        if second is not None:
            second.close()
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == ["port_lost"]  # the repeats of the failure are at debug
    assert all(e["bus"] == BUS for e in logs)
    assert [e["event"] for e in logs if e["event"].startswith("port_re")] == ["port_reopened"]
    failures = [e for e in logs if e["event"] == "port_open_failed"]
    assert {e["log_level"] for e in failures} == {"debug"}
    assert len(failures) < 100  # backed off, not spinning
