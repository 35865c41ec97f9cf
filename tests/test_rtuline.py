"""The hand-driven RTU line on a bare pty pair, the test playing the devices at the far end.

What floorsim cannot be made to do on cue: another unit's answer before ours, our answer
with a bad CRC, a late answer landing between two exchanges, the port hanging up. Timing
is never asserted, except that a bad CRC fails long before a 10 s timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import pytest

from drivers.errors import BusGoneError, BusTimeoutError, FrameError
from drivers.lines import RtuBus
from drivers.modbus import ModbusTransport
from drivers.profile import Table
from drivers.rtuline import RtuLine, silence_s


def crc(frame: bytes) -> bytes:
    """Modbus CRC-16 of ``frame``, low byte first, as it goes on the wire."""
    value = 0xFFFF
    for byte in frame:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value.to_bytes(2, "little")


def framed(body: bytes) -> bytes:
    return body + crc(body)


def crc_ok(frame: bytes) -> bool:
    return crc(frame[:-2]) == frame[-2:]


class FarEnd:
    """The master side of a pty: what the devices hear and say."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.heard = bytearray()
        self._more = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def _on_readable(self) -> None:
        with contextlib.suppress(OSError):
            self.heard += os.read(self.master, 4096)
            self._more.set()

    async def request(self, size: int = 8) -> bytes:
        """The next request frame (``size`` bytes), within a bound."""
        async with asyncio.timeout(10):
            while len(self.heard) < size:
                self._more.clear()
                await self._more.wait()
        frame, self.heard = bytes(self.heard[:size]), self.heard[size:]
        return frame

    def say(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)


@pytest.fixture
async def pty() -> AsyncIterator[tuple[FarEnd, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    far = FarEnd(master)
    try:
        yield far, path
    finally:
        far.close()
        os.close(slave)
        with contextlib.suppress(OSError):
            os.close(master)


def line(path: str, timeout_s: float = 0.5) -> RtuLine:
    return RtuLine(
        path, baud=19200, parity="N", bits_per_char=10, answer_timeout_s=timeout_s, crc_ok=crc_ok
    )


READ_3 = framed(bytes([3, 4, 0, 0, 0, 3]))  # unit 3: input registers 0..2
ANSWER_3 = framed(bytes([3, 4, 6, 0, 1, 0, 2, 0, 3]))


async def test_an_answer_after_another_units_late_answer_is_ours(
    pty: tuple[FarEnd, str],
) -> None:
    far, path = pty
    rtu = line(path)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        assert await far.request() == READ_3
        far.say(framed(bytes([9, 3, 2, 0, 7])))  # unit 9, late with an old answer
        far.say(ANSWER_3)
        assert await exchange == ANSWER_3
    finally:
        rtu.close()


async def test_our_answer_with_a_bad_crc_fails_at_once(pty: tuple[FarEnd, str]) -> None:
    far, path = pty
    rtu = line(path, timeout_s=10.0)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        t0 = time.monotonic()
        far.say(ANSWER_3[:-1] + bytes([ANSWER_3[-1] ^ 0xFF]))
        with pytest.raises(FrameError):
            await exchange
        assert time.monotonic() - t0 < 5.0  # not the 10 s timeout
    finally:
        rtu.close()


async def test_an_exception_answer_is_five_bytes(pty: tuple[FarEnd, str]) -> None:
    far, path = pty
    rtu = line(path)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        far.say(framed(bytes([3, 0x84, 2])))
        assert await exchange == framed(bytes([3, 0x84, 2]))
    finally:
        rtu.close()


async def test_silence_times_out_and_a_late_answer_is_not_the_next_one(
    pty: tuple[FarEnd, str],
) -> None:
    far, path = pty
    rtu = line(path, timeout_s=0.05)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        with pytest.raises(BusTimeoutError):
            await exchange
        far.say(framed(bytes([3, 4, 6, 0, 9, 0, 9, 0, 9])))  # the late answer, between exchanges
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        assert await far.request() == READ_3
        far.say(ANSWER_3)
        assert await exchange == ANSWER_3
    finally:
        rtu.close()


async def test_a_unit_heard_answering_late_holds_the_line_on_its_next_timeout(
    pty: tuple[FarEnd, str],
) -> None:
    far, path = pty
    rtu = line(path, timeout_s=0.05)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        t0 = time.monotonic()
        with pytest.raises(BusTimeoutError):
            await exchange
        await asyncio.sleep(max(0.0, t0 + 0.3 - time.monotonic()))  # the device is that slow
        far.say(ANSWER_3)  # heard between exchanges: unit 3 answers about 0.3 s late
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        t1 = time.monotonic()
        with pytest.raises(BusTimeoutError):
            await exchange  # silent this time: the line was held for its late answer
        assert time.monotonic() - t1 >= 0.25  # not the 0.05 s timeout (a lower bound)
        # A unit never heard late costs only its timeout (not asserted: time only adds).
        exchange = asyncio.create_task(rtu.exchange(5, framed(bytes([5, 4, 0, 0, 0, 3])), 11))
        await far.request()
        with pytest.raises(BusTimeoutError):
            await exchange
    finally:
        rtu.close()


async def test_garbage_then_silence_is_a_frame_error(pty: tuple[FarEnd, str]) -> None:
    far, path = pty
    rtu = line(path, timeout_s=0.05)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        far.say(b"\x03\x04\x06\x00")  # an answer cut short
        with pytest.raises(FrameError):
            await exchange
    finally:
        rtu.close()


async def test_a_port_that_hangs_up_is_gone_then_reopens(pty: tuple[FarEnd, str]) -> None:
    far, path = pty
    rtu = line(path, timeout_s=5.0)
    try:
        exchange = asyncio.create_task(rtu.exchange(3, READ_3, len(ANSWER_3)))
        await far.request()
        far.close()
        os.close(far.master)  # the far end goes: the port reads EIO
        with pytest.raises(BusGoneError):
            await exchange
        assert not rtu.is_open
    finally:
        rtu.close()
    with pytest.raises(BusGoneError):
        await rtu.exchange(3, READ_3, len(ANSWER_3))  # closed for good


async def test_a_missing_port_is_gone(tmp_path: object) -> None:
    rtu = line("/nonexistent/tty-nothing")
    with pytest.raises(BusGoneError):
        await rtu.exchange(3, READ_3, len(ANSWER_3))
    rtu.close()


async def test_the_transport_reads_through_the_line(pty: tuple[FarEnd, str]) -> None:
    far, path = pty
    bus = RtuBus(name="line", kind="modbus-rtu", port=path, timeout_ms=500)
    t = ModbusTransport.rtu(bus)
    try:
        read = asyncio.create_task(t.read(3, Table.INPUT, 0, 3))
        assert await far.request() == READ_3  # pymodbus built the same frame
        far.say(ANSWER_3)
        assert await read == [1, 2, 3]
        write = asyncio.create_task(t.write(3, Table.COIL, 4, [1]))
        request = await far.request()
        assert request == framed(bytes([3, 5, 0, 4, 0xFF, 0]))
        far.say(request)  # FC5 echoes the request
        await write
    finally:
        await t.close()


def test_the_silence_is_fixed_above_19200_baud() -> None:
    assert silence_s(19200, 10) == pytest.approx(3.5 * 10 / 19200)
    assert silence_s(9600, 11) == pytest.approx(3.5 * 11 / 9600)
    assert silence_s(38400, 10) == silence_s(115200, 10) == pytest.approx(0.00175)
