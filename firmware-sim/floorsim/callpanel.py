"""FG-CALLPANEL-1: the serial call panel (push protocol), on its own pty.

Frame: ``$`` BODY ``*`` CS ``\\r\\n``; CS is the XOR of every BODY byte as two uppercase
hex digits. The panel pushes CALL, CANCEL, FAULT and HB; it reads ACK and LAMP. Every
frame it receives is recorded with its timestamp, valid or not.

Timing (devices.md), scaled by the floor's time_scale: HB every 5 s; "The panel repeats
an unacknowledged CALL, CANCEL or FAULT every 1 s, 10 times at most (11 sends in all),
each message on its own timer; it does not repeat HB." Outgoing bytes occupy the line
for len x char_time (9600 8N1: ~1 ms per character), one frame after another.

Simulation choices: a call point with a line fault (CUT/SHORT) is deaf, so a press there
sends nothing (journaled as ``press_lost``); staff presence sends a CANCEL for each point
of the room whose call is placed (or for the given point). ``silent`` cuts the panel's
transmitter only: timers and reception keep running.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from drivers.lines import CallPanelBus
from drivers.panelproto import checksum  # the spec's XOR, shared with the gateway
from floorsim.faults import FaultBook
from floorsim.journal import Journal, SimClock, Stamp
from floorsim.wire import PARITY_POLL_S, PtyLink

__all__ = ["CallPanel", "RxFrame", "checksum", "encode_frame", "garbage_line", "parse_frame"]

log = structlog.get_logger("floorsim.callpanel")

HB_PERIOD_S = 5.0  # "HB,<seq> | heartbeat, every 5 s"
REPEAT_PERIOD_S = 1.0  # "repeats an unacknowledged CALL, CANCEL or FAULT every 1 s"
MAX_REPEATS = 10  # "10 times at most (11 sends in all)"
SEQ_MODULO = 10_000  # "seq runs 0..9999 and wraps"
MAX_FRAME = 80  # "The 80-byte limit counts the whole frame, from $ to \n."
POINTS = ("BATH", "BED", "OTHER")
LINE_FAULTS = ("CUT", "SHORT")
LAMP_STATES = ("ON", "FLASH", "OFF")
_GARBAGE = (
    b"$CALL,0000,BATH,1*FF\r\n",  # wrong checksum (the right one is 00)
    b"\x00\xff\x13\x37\xfe\r\n",  # line noise
    b"CALL,0000,BATH,1\r\n",  # no framing
    b"$HB,1\r\n",  # no checksum
)


def garbage_line(i: int) -> bytes:
    """The i-th garbage line, cycling through kinds the gateway must discard."""
    kinds = (
        *_GARBAGE,
        encode_frame("HELLO,1"),  # unknown type
        encode_frame("CALL," + "9" * 70 + ",BATH,1"),  # longer than 80 bytes
    )
    return kinds[i % len(kinds)]


def encode_frame(body: str, cs: str | None = None) -> bytes:
    """``$BODY*CS\\r\\n`` (with the right checksum unless ``cs`` is given)."""
    raw = body.encode("ascii")
    return b"$" + raw + b"*" + (cs or checksum(raw)).encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class RxFrame:
    """A line the panel received: raw bytes, and its body if it is a valid frame."""

    seq: int
    stamp: Stamp
    raw: bytes
    body: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            **self.stamp.as_dict(),
            "raw": self.raw.decode("latin-1"),
            "body": self.body,
            "error": self.error,
        }


def parse_frame(line: bytes) -> tuple[str | None, str | None]:
    """(body, None) for a valid frame line (with or without its CR LF), else (None, why)."""
    if len(line) > MAX_FRAME:
        return None, "too long"
    text = line.rstrip(b"\r\n")
    if not text.startswith(b"$") or b"*" not in text:
        return None, "not a frame"
    body, _, cs = text[1:].rpartition(b"*")
    if cs.upper() != checksum(body).encode() or len(cs) != 2:
        return None, "bad checksum"
    try:
        return body.decode("ascii"), None
    except UnicodeDecodeError:
        return None, "not ascii"


@dataclass
class _Pending:
    body: str
    seq: int
    first: Stamp
    sends: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class CallPanel:
    """One FG-CALLPANEL-1 on its pty, serving the rooms wired to it."""

    config: CallPanelBus
    rooms: tuple[str, ...]
    clock: SimClock
    journal: Journal
    faults: FaultBook
    lamps: dict[str, str] = field(default_factory=dict)
    received: list[RxFrame] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.link = PtyLink(Path(self.config.port), self.config.parity)
        self.char_s = self.config.bits_per_char / self.config.baud
        self._seq: Iterator[int] = itertools.cycle(range(SEQ_MODULO))
        self._pending: dict[int, _Pending] = {}
        self._active: dict[str, set[str]] = {r: set() for r in self.rooms}
        self._line_faults: dict[tuple[str, str], str] = {}
        self._out: asyncio.Queue[tuple[bytes, str, int | None]] = asyncio.Queue()
        self._rx = bytearray()
        self._rx_seq = itertools.count(1)

    # -- physical events -------------------------------------------------------------------

    def call(self, room: str, point: str) -> dict[str, Any]:
        """A call point pressed: CALL, repeated until ACKed (nothing if the line is faulty)."""
        point = self._point(room, point)
        if (room, point) in self._line_faults:
            ev = self.journal.record("press_lost", self.name, room=room, point=point)
            return {"sent": None, **ev.stamp.as_dict()}
        self._active[room].add(point)
        return self._message(room, f"CALL,{room},{point}", kind="press", point=point.lower())

    def cancel(self, room: str, point: str | None = None) -> dict[str, Any]:
        """Staff presence: CANCEL for ``point``, or for every placed call of the room."""
        points = [self._point(room, point)] if point else sorted(self._active[room])
        stamp = Stamp.now()
        sent = []
        for p in points:
            self._active[room].discard(p)
            sent.append(self._message(room, f"CANCEL,{room},{p}", stamp=stamp)["seq"])
        self.journal.record("staff", self.name, room=room, stamp=stamp, cancel_seqs=sent)
        return {"seqs": sent, **stamp.as_dict()}

    def line_fault(self, room: str, point: str, code: str) -> dict[str, Any]:
        """A call-point line fault: the point goes deaf and the panel sends FAULT."""
        point = self._point(room, point)
        if code not in LINE_FAULTS:
            raise ValueError(f"line fault {code!r} is not one of {', '.join(LINE_FAULTS)}")
        self._line_faults[(room, point)] = code
        return self._message(room, f"FAULT,{room},{point},{code}", kind="line_fault")

    def clear_line_fault(self, room: str, point: str) -> dict[str, Any]:
        """The line is repaired (the protocol has no message for it)."""
        point = self._point(room, point)
        self._line_faults.pop((room, point), None)
        ev = self.journal.record("line_fault_cleared", self.name, room=room, point=point)
        return ev.stamp.as_dict()

    def send(self, body: str, *, cs: str | None = None, repeat: bool = False) -> dict[str, Any]:
        """Send an arbitrary frame; ``repeat`` treats it as a message repeated until ACKed.

        With ``repeat``, ``,<seq>`` is appended from the panel's counter.
        """
        if repeat:
            return self._message(None, body)
        stamp = Stamp.now()
        self._enqueue(encode_frame(body, cs), body, None)
        self.journal.record("panel_send", self.name, stamp=stamp, body=body, cs=cs)
        return stamp.as_dict()

    def send_raw(self, data: bytes) -> dict[str, Any]:
        """Put raw bytes on the line (garbage of the caller's choosing)."""
        stamp = Stamp.now()
        self._enqueue(data, "<raw>", None)
        self.journal.record("panel_raw", self.name, stamp=stamp, size=len(data))
        return stamp.as_dict()

    def send_garbage(self, count: int = 1) -> dict[str, Any]:
        """Send ``count`` garbage lines (bad checksum, noise, unframed, too long...)."""
        stamp = Stamp.now()
        for i in range(count):
            self._enqueue(garbage_line(i), "<garbage>", None)
        self.journal.record("panel_garbage", self.name, stamp=stamp, count=count)
        return stamp.as_dict()

    # -- read back ---------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        """Messages not yet acknowledged, with how many times each was sent."""
        return [
            {"seq": p.seq, "body": p.body, "sends": p.sends, **p.first.as_dict()}
            for p in self._pending.values()
        ]

    def frames(self, since_seq: int = 0) -> list[RxFrame]:
        """Every line received from the gateway after ``since_seq``."""
        return [f for f in self.received if f.seq > since_seq]

    def set_next_seq(self, seq: int) -> None:
        """Make ``seq`` the next sequence number (to see the 9999 -> 0 wrap soon)."""
        if not 0 <= seq < SEQ_MODULO:
            raise ValueError(f"seq {seq} is outside 0..{SEQ_MODULO - 1}")
        self._seq = itertools.chain(range(seq, SEQ_MODULO), itertools.cycle(range(SEQ_MODULO)))

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the pty link and start reading."""
        self.link.open()
        asyncio.get_running_loop().add_reader(self.link.master, self._on_readable)

    def close(self) -> None:
        """Stop timers and reading, remove the pty link."""
        for p in self._pending.values():
            if p.timer is not None:
                p.timer.cancel()
        if self.link.master >= 0:
            asyncio.get_running_loop().remove_reader(self.link.master)
        self.link.close()

    async def run(self) -> None:
        """Transmit, heartbeat and emit garbage (when faulted) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._transmitter(), name=f"panel-tx[{self.name}]")
            tg.create_task(self._heartbeat(), name=f"panel-hb[{self.name}]")
            tg.create_task(self._garbage_fault(), name=f"panel-garbage[{self.name}]")
            tg.create_task(self._keep_parity(), name=f"panel-parity[{self.name}]")

    # -- internals ---------------------------------------------------------------------------

    def _point(self, room: str, point: str) -> str:
        if room not in self._active:
            raise ValueError(f"room {room} is not on call panel {self.name}")
        up = point.upper()
        if up not in POINTS:
            raise ValueError(f"call point {point!r} is not one of {', '.join(POINTS)}")
        return up

    def _message(
        self,
        room: str | None,
        body: str,
        stamp: Stamp | None = None,
        kind: str = "panel_message",
        **detail: Any,
    ) -> dict[str, Any]:
        """Allocate a seq, journal ``kind``, send and repeat until ACKed."""
        seq = next(self._seq)
        stamp = stamp or Stamp.now()
        msg = _Pending(f"{body},{seq}", seq, stamp)
        old = self._pending.pop(seq, None)  # 10 000 messages later, the seq is reused
        if old is not None and old.timer is not None:
            old.timer.cancel()
        self._pending[seq] = msg
        self.journal.record(kind, self.name, room=room, stamp=stamp, body=msg.body, **detail)
        self._send_pending(msg)
        return {"seq": seq, "body": msg.body, **stamp.as_dict()}

    def _send_pending(self, msg: _Pending) -> None:
        msg.sends += 1
        self._enqueue(encode_frame(msg.body), msg.body, msg.sends)
        if msg.sends <= MAX_REPEATS:
            msg.timer = asyncio.get_running_loop().call_later(
                self.clock.real_seconds(REPEAT_PERIOD_S), self._send_pending, msg
            )
        else:
            msg.timer = None
            self._pending.pop(msg.seq, None)
            self.journal.record("panel_gave_up", self.name, body=msg.body, sends=msg.sends)

    def _enqueue(self, data: bytes, what: str, send_no: int | None) -> None:
        self._out.put_nowait((data, what, send_no))

    async def _transmitter(self) -> None:
        loop = asyncio.get_running_loop()
        free_at = 0.0
        while True:
            data, what, send_no = await self._out.get()
            end = max(loop.time(), free_at) + len(data) * self.char_s
            delay = end - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            free_at = end
            if self.faults.panel(self.name).silent:
                self._count("muted")
                continue
            self.link.write(data)
            self._count("sent")
            if send_no is not None or what.startswith("HB"):
                self.journal.record("panel_tx", self.name, body=what, send=send_no)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.clock.real_seconds(HB_PERIOD_S))
            body = f"HB,{next(self._seq)}"
            self._enqueue(encode_frame(body), body, None)

    async def _garbage_fault(self) -> None:
        i = 0
        while True:
            period_ms = self.faults.panel(self.name).garbage
            if not period_ms:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(period_ms / 1e3)
            self._enqueue(garbage_line(i), "<garbage>", None)
            i += 1

    async def _keep_parity(self) -> None:
        while True:
            await asyncio.sleep(PARITY_POLL_S)
            self.link.keep_parity_openable()

    def _on_readable(self) -> None:
        data = self.link.read()
        if not data:
            return
        self.link.keep_parity_openable()  # see wire.PtyLink: a quick reopen must work
        self._rx += data
        while b"\n" in self._rx:
            line, _, rest = self._rx.partition(b"\n")
            self._rx = bytearray(rest)
            self._receive(bytes(line) + b"\n")
        if len(self._rx) > 4 * MAX_FRAME:  # no newline in sight: line noise
            self._receive(bytes(self._rx))
            self._rx.clear()

    def _receive(self, line: bytes) -> None:
        stamp = Stamp.now()
        body, error = parse_frame(line)
        frame = RxFrame(next(self._rx_seq), stamp, line, body, error)
        self.received.append(frame)
        if body is None:
            self._count("rx_invalid")
            self.journal.record("panel_rx", self.name, stamp=stamp, body=None, error=error)
            return
        self._count("rx")
        fields = body.split(",")
        room: str | None = None
        if fields[0] == "ACK" and len(fields) == 2 and fields[1].isdigit():
            msg = self._pending.pop(int(fields[1]), None)
            if msg is not None and msg.timer is not None:
                msg.timer.cancel()
        elif fields[0] == "LAMP" and len(fields) == 3 and fields[2] in LAMP_STATES:
            room = fields[1]
            self.lamps[room] = fields[2]
        else:
            self._count("rx_unknown")
        self.journal.record("panel_rx", self.name, room=room, stamp=stamp, body=body)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
