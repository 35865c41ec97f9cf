"""The FG-CALLPANEL-1 driver: one serial call panel line, on asyncio, without threads.

The protocol lives in ``drivers.panelproto`` (PanelSession); this module moves bytes.
pyserial opens the port for its settings only; the fd is then read and written through
``loop.add_reader``/``add_writer``, non-blocking. A frame is acted on in the reader
callback that completes it: its ACK is written there and then, and its event is handed to
``run()``, which calls ``on_event`` at once (so an exception from ``on_event`` ends run()).

A port that fails (read or write error, EOF, the EIO of a pty whose other end closed) is
unregistered at once, so a vanished port cannot spin, then closed and reopened with capped,
jittered exponential backoff. Supervision keeps running meanwhile: a port gone for 15 s
reports the panel offline. Lamp frames not yet written when the port fails are sent again
after the reopen; ACKs are not (the panel repeats what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import termios
from collections import deque
from collections.abc import Callable
from dataclasses import asdict

import serial
import structlog

from drivers.backoff import Backoff
from drivers.errors import BusGoneError
from drivers.lines import CallPanelBus
from drivers.panelproto import (
    DEDUP_WINDOW_S,
    OFFLINE_AFTER_S,
    Ack,
    CallCancelled,
    CallPlaced,
    Effect,
    Lamp,
    LampState,
    LineFault,
    PanelCounters,
    PanelEvent,
    PanelOffline,
    PanelOnline,
    PanelSession,
    PanelState,
    RejectReason,
    SendFrame,
)

__all__ = ["Beat", "CallPanelDriver", "DriverEvent", "EventSink"]

DriverEvent = PanelEvent | PanelOnline | PanelOffline
EventSink = Callable[[DriverEvent], None]
Beat = Callable[[], None] | None

REOPEN_MIN_S = 0.5
REOPEN_MAX_S = 10.0
BEAT_EVERY_S = 1.0  # run() turns (and beats) at least this often
MAX_BACKLOG = 64  # frames waiting for a line that does not drain; more are dropped
_READ_SIZE = 4096
_PORT_ERRORS = (OSError, serial.SerialException, termios.error)
_EVENT_LOG = {
    CallPlaced: (logging.INFO, "call_placed"),
    CallCancelled: (logging.INFO, "call_cancelled"),
    LineFault: (logging.WARNING, "line_fault"),
    PanelOnline: (logging.INFO, "panel_online"),
    PanelOffline: (logging.WARNING, "panel_offline"),  # "a technical alarm"
}


class CallPanelDriver:
    """Owns one call panel line: ACKs, once-per-seq events, supervision, lamps, reopen."""

    def __init__(
        self,
        bus: CallPanelBus,
        on_event: EventSink,
        *,
        beat: Beat = None,
        offline_after_s: float = OFFLINE_AFTER_S,
        dedup_window_s: float = DEDUP_WINDOW_S,
        reopen_min_s: float = REOPEN_MIN_S,
        reopen_max_s: float = REOPEN_MAX_S,
        beat_every_s: float = BEAT_EVERY_S,
        rng: random.Random | None = None,
    ) -> None:
        """Configure only: nothing is opened before run()."""
        self.bus = bus
        self._on_event = on_event
        self._beat = beat
        self._offline_after_s = offline_after_s
        self._dedup_window_s = dedup_window_s
        # Equal jitter from twice the minimum: never sooner than reopen_min_s (below the cap).
        self._reopen = Backoff(
            initial_s=min(2 * reopen_min_s, reopen_max_s),
            cap_s=reopen_max_s,
            jitter="equal",
            rng=rng or random.Random(),
        )
        self._beat_every_s = beat_every_s
        self._log: structlog.typing.FilteringBoundLogger = structlog.get_logger(bus=bus.name)
        self._session: PanelSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._port: serial.Serial | None = None
        self._fd: int | None = None
        self._failure: BaseException | None = None
        self._failing = False  # the port failed and has not reopened since
        self._events: deque[DriverEvent] = deque()
        self._out: deque[tuple[Ack | Lamp, bytes]] = deque()
        self._lamps: dict[str, Lamp] = {}
        self._warned_reject = False
        self.tx_dropped = 0

    @property
    def name(self) -> str:
        """The bus name, bound as ``bus`` in every log line."""
        return self.bus.name

    @property
    def is_open(self) -> bool:
        """True while the port is open and has not failed."""
        return self._fd is not None and self._failure is None

    @property
    def state(self) -> PanelState:
        """The panel link: UNKNOWN until the first frame or the first offline deadline."""
        return self._session.state if self._session else PanelState.UNKNOWN

    def counters(self) -> PanelCounters:
        """Frames accepted, duplicates, rejections by reason, bytes dropped."""
        if self._session is None:
            return PanelCounters(0, 0, dict.fromkeys(RejectReason, 0), 0)
        return self._session.counters()

    def send_lamp(self, room: str, state: LampState) -> None:
        """Send ``LAMP,<room>,<state>`` in order; while closed, a room's newest state waits."""
        self._send(Lamp(room, LampState(state)))

    async def run(self) -> None:
        """Serve the line until cancelled (the supervisor's named task)."""
        if self._loop is not None:
            raise RuntimeError(f"call panel {self.name} is already running")
        loop = self._loop = asyncio.get_running_loop()
        if self._session is None:
            self._session = PanelSession(
                self.name,
                loop.time(),
                offline_after_s=self._offline_after_s,
                dedup_window_s=self._dedup_window_s,
            )
        reopen_at = loop.time()
        try:
            while True:
                self._wake.clear()  # from here on, whatever sets it makes the wait below short
                if self._beat is not None:
                    self._beat()
                now = loop.time()
                if self._failure is not None:
                    self._problem("port_lost", self._failure)
                    self._failure = None
                    self._close()
                    reopen_at = now + self._backoff()
                if self._fd is None and now >= reopen_at and not self._open():
                    reopen_at = now + self._backoff()
                self._apply(self._session.tick(now))
                while self._events:
                    self._on_event(self._events.popleft())
                wake_at = min(
                    t
                    for t in (
                        self._session.next_deadline(),
                        None if self._fd is not None else reopen_at,
                        now + self._beat_every_s,
                    )
                    if t is not None
                )
                if wake_at <= loop.time():
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(wake_at):
                        await self._wake.wait()
        finally:
            self._close()
            self._loop = None

    # -- helpers ---------------------------------------------------------------------------

    def _open(self) -> bool:
        """Open, configure and register the port; False (logged) if it cannot be."""
        assert self._loop is not None
        try:
            # "default 9600 8N1": 8 data bits and 1 stop bit always; baud and parity from
            # the floor file. Every setting in one configure (see floorsim.wire on ptys).
            port = serial.Serial(
                str(self.bus.port),
                baudrate=self.bus.baud,
                bytesize=serial.EIGHTBITS,
                parity=self.bus.parity,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
                exclusive=True,
            )
        except _PORT_ERRORS as exc:
            self._problem("port_open_failed", exc)
            return False
        try:
            # "the gateway discards whatever is pending when it opens the port"
            port.reset_input_buffer()
            fd = int(port.fileno())
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_readable)
        except _PORT_ERRORS as exc:
            with contextlib.suppress(*_PORT_ERRORS):
                port.close()
            self._problem("port_open_failed", exc)
            return False
        self._port, self._fd, self._failure = port, fd, None
        self._warned_reject = False
        if self._failing:
            self._log.info("port_reopened", port=str(self.bus.port), attempts=self._reopen.failures)
            self._failing = False
        else:
            self._log.info("port_opened", port=str(self.bus.port), baud=self.bus.baud)
        lamps, self._lamps = list(self._lamps.values()), {}
        for lamp in lamps:
            self._send(lamp)
        return True

    def _close(self) -> None:
        """Unregister and close the port; unwritten lamps wait for the next open."""
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._port is not None:
            with contextlib.suppress(*_PORT_ERRORS):
                self._port.close()
        self._port = self._fd = None
        waiting = {f.room: f for f, _ in self._out if isinstance(f, Lamp)}
        for room, lamp in self._lamps.items():  # newer than anything in the backlog
            waiting.pop(room, None)
            waiting[room] = lamp
        self._lamps = waiting
        self._out.clear()

    def _fail(self, exc: BaseException) -> None:
        """Stop watching the fd now (no spin) and let run() close and reopen."""
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._failure is None:
            self._failure = exc
        self._wake.set()

    def _on_readable(self) -> None:
        assert self._fd is not None
        assert self._session is not None
        assert self._loop is not None
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._fail(BusGoneError("end of file on the port"))
            return
        self._reopen.reset()  # the port works: the next failure backs off from the minimum
        before = sum(self._session.counters().rejected.values())
        self._apply(self._session.feed(data, self._loop.time()))
        counters = self._session.counters()
        if sum(counters.rejected.values()) > before:
            level = logging.DEBUG if self._warned_reject else logging.WARNING
            self._warned_reject = True
            rejected = {str(k): v for k, v in counters.rejected.items() if v}
            self._log.log(level, "frames_rejected", rejected=rejected)
        if self._events:
            self._wake.set()

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendFrame):
                self._send(effect.frame)
                continue
            level, event = _EVENT_LOG[type(effect)]
            fields = {k: v for k, v in asdict(effect).items() if k != "bus"}
            self._log.log(level, event, **fields)
            self._events.append(effect)

    def _send(self, frame: Ack | Lamp) -> None:
        """Write ``frame`` after any backlog; a lamp waits if the port is not usable."""
        if not self.is_open:
            if isinstance(frame, Lamp):
                self._lamps.pop(frame.room, None)
                self._lamps[frame.room] = frame
            return
        data = frame.to_bytes()
        if not self._out:
            written = self._write(data)
            if written is None and isinstance(frame, Lamp):
                self._send(frame)  # the port just failed: the lamp waits for the reopen
            if written is None or written == len(data):
                return
            data = data[written:]
            assert self._loop is not None
            assert self._fd is not None
            self._loop.add_writer(self._fd, self._on_writable)
        elif len(self._out) >= MAX_BACKLOG:
            self.tx_dropped += 1
            level = logging.DEBUG if self.tx_dropped > 1 else logging.WARNING
            self._log.log(level, "frame_dropped", body=frame.body(), reason="backlog")
            return
        self._out.append((frame, data))

    def _on_writable(self) -> None:
        while self._out:
            frame, data = self._out[0]
            written = self._write(data)
            if written is None:
                return
            if written < len(data):
                self._out[0] = (frame, data[written:])
                return
            self._out.popleft()
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _write(self, data: bytes) -> int | None:
        """Bytes written (0 if the line is full), or None after a port failure."""
        assert self._fd is not None
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._fail(exc)
            return None

    def _backoff(self) -> float:
        """Capped exponential backoff, jittered so thirty floors do not reopen in lockstep."""
        return self._reopen.next_delay()

    def _problem(self, event: str, exc: BaseException) -> None:
        """First failure at warning, repeats at debug until the port works again."""
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        self._log.log(level, event, port=str(self.bus.port), error=repr(exc))
