"""Serial lines on pseudo-terminals, and Modbus RTU paced as on a real RS-485 wire.

``PtyLink``: ``os.openpty()``, raw mode, and the configured ``port`` path made a symlink
to the slave tty, so the gateway opens the path of the floor file unchanged. We keep our
own slave fd open, so the master never sees EIO/hangup while the gateway has the port
closed (bytes sent meanwhile wait in the tty; the gateway discards them when it opens).

Port paths: a missing path is created; a symlink into ``/dev/pts/`` is taken for a link
left by a floorsim (stale after a crash) and replaced, with a warning; anything else (a
regular file, a device node, a symlink elsewhere) is refused with ``PortInUseError``. A
second floorsim on the same floor is refused earlier, by its live control socket.

Parity trap (measured: Linux 6.x, glibc 2.36): the pty driver drops PARENB, and glibc's
``tcsetattr`` reads the settings back and reports EINVAL when PARENB did not stick,
unless another setting changed in the same call. The kernel keeps PARODD, so we keep
PARODD opposite to what the bus's parity will ask for: a plain pyserial open (one
configure) then always changes something and succeeds. It is re-armed on every chunk
received and every PARITY_POLL_S. pymodbus's serial client configures the port twice
more right after opening (``timeout = 0``, ``write_timeout = 0``), so it cannot open a
pty with parity E/O at all: open it with parity N. A pty carries no parity anyway; the
simulator models a parity bus as 11 bits per character on the line.

RTU timing (``RtuLine``), one transaction at a time per line, in virtual line time:

    request  starts at max(arrival, line free + t3.5), lasts len x char_time
    device   has the frame t3.5 after its end, answers after the 5 ms turnaround
    response lasts len x char_time; written to the pty when its last byte would arrive
    line free at the response's end (or the request's, when nobody answers)

char_time = bits_per_char / baud (10 for 8N1, 11 with parity); t3.5 = 3.5 char times
(fixed 1.75 ms above 19200 baud, as the Modbus serial line spec says). Period of a
request of Q bytes answered with R bytes: (Q + R) x char_time + 2 x t3.5 + turnaround.
Nothing is ever delivered before its physical time, so a bus can reach but never exceed
the physical rate; scheduling jitter is absorbed by the next request's t3.5 wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
import tty
from pathlib import Path

import structlog

from drivers.lines import RtuBus
from floorsim.modbus import ModbusBus, crc16, request_length, rtu_frame

__all__ = ["TURNAROUND_S", "PortInUseError", "PtyLink", "RtuLine", "claim_port", "t35"]

log = structlog.get_logger("floorsim.wire")

# devices.md: "A device needs about 5 ms to start answering."
TURNAROUND_S = 0.005
PARITY_POLL_S = 0.02
_SPEEDS = {
    getattr(termios, f"B{b}"): b
    for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
    if hasattr(termios, f"B{b}")
}


class PortInUseError(Exception):
    """A configured port path exists and is not ours to replace."""


def t35(baud: int, bits_per_char: int) -> float:
    """The 3.5-character inter-frame silence, in seconds (1.75 ms above 19200 baud)."""
    return 3.5 * bits_per_char / baud if baud <= 19200 else 0.00175


def claim_port(path: Path) -> None:
    """Make ``path`` free for our symlink, or raise PortInUseError (see module doc)."""
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise PortInUseError(f"{path}: directory {path.parent} does not exist")
        return
    if path.is_symlink():
        target = os.readlink(path)
        if target.startswith("/dev/pts/"):
            log.warning("stale_port_link_replaced", port=str(path), target=target)
            path.unlink()
            return
        raise PortInUseError(
            f"{path} is a symlink to {target}, not a floorsim pty link: remove it or "
            "change the bus's port"
        )
    raise PortInUseError(
        f"{path} exists and is not a symlink (a real serial port or a file): floorsim "
        "will not replace it; remove it or change the bus's port"
    )


class PtyLink:
    """A pseudo-terminal whose slave is symlinked at ``path``; we read/write the master."""

    def __init__(self, path: Path, parity: str = "N") -> None:
        self.path = path
        self.parity = parity
        self.master = -1
        self._slave = -1
        self.tty_name = ""

    def open(self) -> None:
        """Create the pty and the symlink (PortInUseError if the path is not ours)."""
        claim_port(self.path)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.tty_name = os.ttyname(self._slave)
        self.keep_parity_openable()
        try:
            os.symlink(self.tty_name, self.path)
        except OSError:
            self.close()
            raise
        log.info("pty_linked", port=str(self.path), tty=self.tty_name)

    def close(self) -> None:
        """Remove our symlink (only if it is still ours) and close the pty."""
        with contextlib.suppress(OSError):
            if self.tty_name and os.readlink(self.path) == self.tty_name:
                self.path.unlink()
        for fd in (self.master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = -1

    def speed(self) -> int | None:
        """The baud rate the opener of the port set (None if not a known rate)."""
        return _SPEEDS.get(termios.tcgetattr(self._slave)[5])

    def keep_parity_openable(self) -> None:
        """Keep PARODD opposite to the bus's parity (see the kernel trap in the module doc)."""
        attrs = termios.tcgetattr(self._slave)
        want = termios.PARODD if self.parity == "E" else 0
        if attrs[2] & termios.PARODD != want:
            attrs[2] = (attrs[2] & ~termios.PARODD) | want
            termios.tcsetattr(self._slave, termios.TCSANOW, attrs)

    def write(self, data: bytes) -> int:
        """Write to the line; bytes the tty cannot take (nobody reading) are lost."""
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    def read(self) -> bytes:
        """What the gateway wrote (b"" when nothing is pending)."""
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


class RtuLine:
    """One Modbus RTU line: frames from the pty, answered one at a time, paced by baud."""

    def __init__(
        self,
        bus: RtuBus,
        modbus: ModbusBus,
        *,
        turnaround_s: float = TURNAROUND_S,
        check_speed: bool = True,
    ) -> None:
        self.config = bus
        self.modbus = modbus
        self.link = PtyLink(Path(bus.port), bus.parity)
        self.char_s = bus.bits_per_char / bus.baud
        self.gap_s = t35(bus.baud, bus.bits_per_char)
        self.turnaround_s = turnaround_s
        self.check_speed = check_speed
        self.counters: dict[str, int] = {}
        self._queue: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._buf = bytearray()
        self._buf_t0 = 0.0
        self._silence: asyncio.TimerHandle | None = None
        self._free_at = float("-inf")
        self._replied_at = float("-inf")  # when the last answer was written
        self._warned_speed: int | None = None

    def period(self, request_bytes: int, response_bytes: int) -> float:
        """Physical duration of one transaction on this line, in seconds (module doc)."""
        chars = request_bytes + response_bytes
        return chars * self.char_s + 2 * self.gap_s + self.turnaround_s

    def open(self) -> None:
        """Create the pty link and start reading the gateway's bytes."""
        self.link.open()
        asyncio.get_running_loop().add_reader(self.link.master, self._on_readable)

    def close(self) -> None:
        """Stop reading and remove the pty link."""
        if self.link.master >= 0:
            asyncio.get_running_loop().remove_reader(self.link.master)
        if self._silence is not None:
            self._silence.cancel()
        self.link.close()

    async def run(self) -> None:
        """Serve transactions until cancelled."""
        keeper = asyncio.create_task(self._keep_parity(), name=f"parity[{self.config.name}]")
        try:
            while True:
                frame, arrival = await self._queue.get()
                await self._transact(frame, arrival)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _transact(self, frame: bytes, arrival: float) -> None:
        loop = asyncio.get_running_loop()
        # A master must leave 3.5 characters of silence after the last frame on the line:
        # count the requests that began inside it, and those that began before an answer
        # written after them (a late answer to a request the master gave up on). The line
        # then serves them once the silence is over, as a forgiving real one might.
        if self._replied_at <= arrival < max(self._free_at, self._replied_at) + self.gap_s:
            self._count("request_inside_silence")
        elif arrival < self._replied_at:
            self._count("request_before_late_answer")
        start = max(arrival, self._free_at + self.gap_s)
        req_end = start + len(frame) * self.char_s
        self._free_at = req_end
        if self.check_speed and not self._speed_ok():
            return
        await _sleep_until(loop, req_end + self.gap_s)
        answer = self.modbus.answer(frame[0], frame[1:-2])
        if answer is None:
            self._count("no_reply")
            return
        reply = rtu_frame(frame[0], answer.pdu, corrupt=answer.corrupt)
        reply_end = (
            req_end + self.gap_s + self.turnaround_s + answer.delay_s + len(reply) * self.char_s
        )
        await _sleep_until(loop, reply_end)
        self._replied_at = loop.time()  # before the write: never later than the master hears it
        self.link.write(reply)
        self._free_at = reply_end
        self._count("replies_sent")

    def _speed_ok(self) -> bool:
        speed = self.link.speed()
        if speed == self.config.baud:
            self._warned_speed = None
            return True
        self._count("speed_mismatch")
        if self._warned_speed != speed:
            self._warned_speed = speed
            log.warning(
                "line_speed_mismatch",
                bus=self.config.name,
                port_baud=speed,
                bus_baud=self.config.baud,
            )
        return False

    def _on_readable(self) -> None:
        data = self.link.read()
        if not data:
            return
        # The opener has configured the port by now: re-arm at once, so a close and a
        # quick reopen (faster than PARITY_POLL_S) still finds a port that opens.
        self.link.keep_parity_openable()
        loop = asyncio.get_running_loop()
        if not self._buf:
            self._buf_t0 = loop.time()
        self._buf += data
        self._extract(loop)

    def _extract(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._buf:
            n = request_length(self._buf)
            if n is None or len(self._buf) < n or not _crc_ok(self._buf[:n]):
                break
            self._queue.put_nowait((bytes(self._buf[:n]), self._buf_t0))
            del self._buf[:n]
            self._buf_t0 = loop.time()
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._buf:
            self._silence = loop.call_later(max(self.gap_s, 0.002), self._on_silence)

    def _on_silence(self) -> None:
        """3.5 characters of silence end a frame whose length the function code did not tell."""
        self._silence = None
        frame, self._buf = bytes(self._buf), bytearray()
        if len(frame) >= 4 and _crc_ok(frame):
            self._queue.put_nowait((frame, self._buf_t0))
        else:
            self._count("noise")
            log.debug("rtu_noise_discarded", bus=self.config.name, size=len(frame))

    async def _keep_parity(self) -> None:
        while True:
            await asyncio.sleep(PARITY_POLL_S)
            self.link.keep_parity_openable()

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1


def _crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(bytes(frame[:-2])) == int.from_bytes(frame[-2:], "little")


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
