"""A Modbus RTU line driven by hand: one exchange at a time, its timing kept from the wire.

drivers.modbus builds the request frames and decodes the answers with pymodbus; this
module owns the serial port and the line's timing, which pymodbus' client does not keep:

- the 3.5-character silence before a request is counted from the last byte heard on the
  line (an answer, a late answer, noise) or the end of our last request, whichever is
  later: the caller's processing of an answer overlaps it, and no request ever starts
  inside it;
- a request waits for its answer as long as that answer takes on the wire plus the bus's
  answer timeout (the time a device may take to start answering), not as long as the
  longest answer of the line: a silent device costs little line time;
- an answer is complete when its length, known from the request (or 5 bytes for an
  exception), has arrived: a bad CRC fails at once instead of at the timeout;
- bytes that are not the answer (another unit's late answer, noise) are dropped and restart
  the wait, and a unit that timed out is not asked again until its late answer, if any,
  would be over;
- a unit heard answering after its timeout is remembered: its next timeout holds the line
  until its late answer is over, so that it never runs into the next request (a unit that
  stays silent costs only its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import serial

from drivers.errors import BusGoneError, BusTimeoutError, FrameError

__all__ = ["RtuLine", "silence_s"]

EXCEPTION_BIT = 0x80  # set in the function code of an exception answer
EXCEPTION_ANSWER_BYTES = 5  # unit, function | 0x80, exception code, CRC (2)
# Stray bytes restart the wait for an answer, but never past this many times the first wait:
# a line full of noise still ends each exchange in bounded time.
MAX_WAIT_FACTOR = 4.0
HUNG_UP_AFTER = 3  # empty reads of a readable port in a row that mean it hung up
MAX_LATE_S = 0.5  # answers later than this are not waited for: the unit is just silent


def silence_s(baud: int, bits_per_char: int) -> float:
    """The inter-frame silence: 3.5 character times, a fixed 1.75 ms above 19200 baud.

    Modbus over serial line, §2.5.1.1: above 19200 baud the spec fixes t3.5 at 1.75 ms.
    """
    return 3.5 * bits_per_char / baud if baud <= 19200 else 0.00175


class RtuLine:
    """One serial port carrying Modbus RTU frames, one exchange at a time (see the module doc)."""

    def __init__(
        self,
        port: Path | str,
        *,
        baud: int,
        parity: str,
        bits_per_char: int,
        answer_timeout_s: float,
        crc_ok: Callable[[bytes], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure only: the port opens on the first exchange (and again after a loss)."""
        self.port = str(port)
        self.char_s = bits_per_char / baud
        self.silence_s = silence_s(baud, bits_per_char)
        self._baud = baud
        self._parity = parity
        self._answer_timeout_s = answer_timeout_s
        self._crc_ok = crc_ok
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._lock = asyncio.Lock()
        self._last_rx = -math.inf  # when the last byte was heard on the line
        self._tx_end = -math.inf  # when our last request left the wire
        self._not_before: dict[int, float] = {}  # unit -> when its late answer would be over
        # Units heard answering after their timeout: how long after their request's end
        # their answer was over. Their next timeout holds the line that long (a late answer
        # must not run into the next request), a silent unit's costs nothing more.
        self._late_s: dict[int, float] = {}
        self._expired: tuple[int, float, int] | None = None  # unit, request end, answer bytes
        # The exchange in progress: its answer's bytes and the future its completion sets.
        self._rx = bytearray()
        self._heard = 0  # bytes heard during it, the answer's or not
        self._waiting: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None
        self._empty_reads = 0  # readable with nothing to read, in a row
        self._closed = False

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    async def exchange(self, unit: int, request: bytes, answer_bytes: int) -> bytes:
        """Send one request frame to ``unit``; return its answer's whole frame (CRC checked).

        ``answer_bytes``: the length of the normal answer's frame (an exception answer is
        5 bytes). BusGoneError if the port cannot be opened or is lost, BusTimeoutError if
        nothing came back, FrameError if bytes came but no valid answer.
        """
        async with self._lock:
            if self._closed:
                raise BusGoneError(f"{self.port} is closed")
            self._open()
            await self._wait_line_free(unit)
            self._rx.clear()
            self._heard = 0
            loop = asyncio.get_running_loop()
            self._waiting = done = loop.create_future()
            self._lost = None
            try:
                await self._send(request)
                return await self._answer(unit, request[1], answer_bytes, done)
            finally:
                self._waiting = None
                self._rx.clear()

    def close(self) -> None:
        """Close the port; idempotent. An exchange in progress fails with BusGoneError."""
        self._closed = True
        self._drop(BusGoneError(f"{self.port} closed"))

    # -- the exchange's steps -----------------------------------------------------------------

    def _open(self) -> None:
        if self._serial is not None:
            return
        try:
            port = serial.Serial(
                self.port,
                baudrate=self._baud,
                bytesize=serial.EIGHTBITS,
                parity=self._parity,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BusGoneError(f"cannot open {self.port}: {exc}") from exc
        self._serial = port
        self._empty_reads = 0
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    async def _wait_line_free(self, unit: int) -> None:
        """Until the line has been silent for t3.5 (and ``unit``'s late answer is over)."""
        while True:
            free_at = max(self._last_rx, self._tx_end) + self.silence_s
            free_at = max(free_at, self._not_before.get(unit, -math.inf))
            delay = free_at - self._clock()
            if delay <= 0 and not self._drain():
                self._not_before.pop(unit, None)
                return
            if delay <= 0:
                continue  # bytes were waiting unread: the line was not silent
            await asyncio.sleep(delay)
            if self._serial is None:
                raise BusGoneError(f"{self.port} lost")

    async def _send(self, frame: bytes) -> None:
        assert self._serial is not None
        fd = self._serial.fileno()
        view = memoryview(frame)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._drop(exc)
                raise BusGoneError(f"{self.port}: {exc}") from exc
            if n == len(view):
                break
            view = view[n:]
            await self._writable(fd)
        # The answer cannot start before the request has left the wire.
        self._tx_end = self._clock() + len(frame) * self.char_s

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, on_writable)
        try:
            await ready
        finally:
            loop.remove_writer(fd)

    async def _answer(
        self, unit: int, function: int, answer_bytes: int, done: asyncio.Future[None]
    ) -> bytes:
        loop = asyncio.get_running_loop()
        wait = self._answer_timeout_s + answer_bytes * self.char_s
        first_deadline = deadline = self._tx_end + wait
        holding = False  # past the timeout, letting a known late answer pass
        late_answer = False
        while True:
            remaining = deadline - self._clock()
            if remaining > 0 and not done.done():
                # One timer that wakes the same future the reader wakes: cheaper per answer
                # than asyncio.timeout() around a shielded wait.
                timer = loop.call_later(remaining, _wake, done)
                try:
                    await done
                finally:
                    timer.cancel()
            if self._lost is not None:
                raise BusGoneError(f"{self.port}: {self._lost}") from self._lost
            frame, stray = self._take(unit, function, answer_bytes)
            if frame is not None:
                if holding:
                    late_answer = True  # it passed: still a timeout
                    break
                return frame
            if stray:  # someone else's bytes: our answer may come after them
                deadline = min(
                    max(deadline, self._last_rx + wait), first_deadline + wait * MAX_WAIT_FACTOR
                )
            if self._clock() >= deadline:
                hold = self._hold_until(unit, first_deadline)
                if holding or self._heard or hold <= deadline:
                    break
                # A unit known to answer late: its answer is on its way, let it pass.
                holding, deadline = True, hold
            if done.done():
                self._waiting = done = loop.create_future()
        # Our unit may still answer late: keep it waiting for as long again.
        self._not_before[unit] = self._clock() + wait
        if late_answer:
            raise BusTimeoutError("answered after the timeout")
        self._expired = (unit, self._tx_end, answer_bytes)
        if self._heard:
            raise FrameError(f"{self._heard} bytes, no valid frame")
        raise BusTimeoutError("no answer")

    def _hold_until(self, unit: int, deadline: float) -> float:
        late = self._late_s.get(unit)
        return deadline if late is None else max(deadline, self._tx_end + late)

    def _note_late(self, first_byte: int, now: float) -> None:
        """Bytes heard outside an answer: if from the unit that last timed out, how late it is."""
        if self._expired is None:
            return
        unit, request_end, answer_bytes = self._expired
        self._expired = None
        if first_byte != unit or now - request_end > MAX_LATE_S:
            return
        late = now - request_end + answer_bytes * self.char_s + self.silence_s
        self._late_s[unit] = min(max(late, self._late_s.get(unit, 0.0)), MAX_LATE_S)

    def _take(self, unit: int, function: int, answer_bytes: int) -> tuple[bytes | None, bool]:
        """The answer if the buffer holds it whole; and whether stray bytes were dropped.

        FrameError for a whole answer of ours whose CRC is wrong (no stray bytes before it).
        """
        buf = self._rx
        stray = False
        while len(buf) >= 2:
            if buf[0] != unit or buf[1] not in (function, function | EXCEPTION_BIT):
                if not stray:
                    self._note_late(buf[0], self._last_rx)
                start = _find(buf, unit, function)
                stray = True
                if start < 0:
                    del buf[: max(0, len(buf) - 1)]  # keep a last byte: a unit id may follow
                    return None, stray
                del buf[:start]
                continue
            n = EXCEPTION_ANSWER_BYTES if buf[1] & EXCEPTION_BIT else answer_bytes
            if len(buf) < n:
                return None, stray
            frame = bytes(buf[:n])
            if self._crc_ok(frame):
                return frame, stray
            if not stray:
                raise FrameError(f"{n} bytes with a bad CRC")
            del buf[:1]  # a false start inside stray bytes: hunt on
        return None, stray

    # -- the port ------------------------------------------------------------------------------

    def _drain(self) -> bool:
        """Read what the port holds unread (the reader may not have run yet); True if any."""
        port = self._serial
        if port is None:
            raise BusGoneError(f"{self.port} lost")
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._drop(exc)
            raise BusGoneError(f"{self.port}: {exc}") from exc
        if not data:  # a raw tty with nothing to read (a hang-up shows as readable, or EIO)
            return False
        self._empty_reads = 0
        self._last_rx = self._clock()
        self._note_late(data[0], self._last_rx)
        return True

    def _on_readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(exc)
            return
        if not data:
            # Readable with nothing to read: once after _drain took the bytes; again and
            # again on a port that hung up (a USB adapter pulled), which must not spin.
            self._empty_reads += 1
            if self._empty_reads >= HUNG_UP_AFTER:
                self._drop(OSError("the port hung up"))
            return
        self._empty_reads = 0
        self._last_rx = self._clock()
        if self._waiting is None:  # between exchanges: noise or a late answer
            self._note_late(data[0], self._last_rx)
            return
        self._rx += data
        self._heard += len(data)
        if not self._waiting.done():
            self._waiting.set_result(None)

    def _drop(self, exc: BaseException) -> None:
        """Close the port after a loss (the next exchange reopens it); wake the waiter."""
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            with contextlib.suppress(Exception):
                port.close()
        if self._waiting is not None:
            self._lost = exc
            if not self._waiting.done():
                self._waiting.set_result(None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _find(buf: bytearray, unit: int, function: int) -> int:
    """Where an answer of ``unit`` to ``function`` may start in ``buf`` after its first byte."""
    i = 1
    while (i := buf.find(unit, i)) >= 0:
        if i + 1 >= len(buf) or buf[i + 1] in (function, function | EXCEPTION_BIT):
            return i
        i += 1
    return -1
