"""FG-CALLPANEL-1 in the pure core: frames as values, a line splitter and the panel session.

No I/O, no asyncio, no clock reads: time is the ``now`` argument (monotonic seconds).
Frame: ``$`` BODY ``*`` CS ``\\r\\n`` (devices.md). Choices where the spec is silent:

- CS is written in uppercase hex; lowercase hex is accepted on input (same value).
- A line must end in ``\\r\\n``; a room matches the floor file's room id pattern; a seq
  is 1 to 4 decimal digits (leading zeros accepted).
- ACK and LAMP parse (the codec is symmetric), but a panel sending them is counted as
  ``unknown_type`` by the session: only CALL, CANCEL, FAULT and HB flow panel to gateway.
- Dedup: a seq stays "seen" for ``dedup_window_s`` after its latest sighting; the same
  seq with a different body (a panel that restarted its counter) is a new message.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar

from drivers.errors import FrameError

__all__ = [
    "DEDUP_WINDOW_S", "MAX_FRAME", "OFFLINE_AFTER_S", "SEQ_MODULO", "Ack", "Call",
    "CallCancelled", "CallPlaced", "Cancel", "Effect", "Fault", "FaultCode", "Frame",
    "FrameRejected", "Heartbeat", "Lamp", "LampState", "LineFault", "LineSplitter",
    "PanelCounters", "PanelEvent", "PanelFrame", "PanelOffline", "PanelOnline",
    "PanelSession", "PanelState", "Point", "RejectReason", "SendFrame", "checksum",
    "parse_frame",
]  # fmt: skip

MAX_FRAME = 80  # "The 80-byte limit counts the whole frame, from `$` to `\n`."
SEQ_MODULO = 10_000  # "seq runs 0..9999 and wraps"
# "A panel that has sent nothing (not even HB) for 15 s is to be treated as offline"
OFFLINE_AFTER_S = 15.0
# "must act on each seq once (remembering at least the last 60 s of seqs)"
DEDUP_WINDOW_S = 60.0


class Point(StrEnum):
    """A call point: "point is BATH, BED or OTHER"."""

    BATH = "BATH"
    BED = "BED"
    OTHER = "OTHER"


class FaultCode(StrEnum):
    """A call point line fault: "code: CUT, SHORT"."""

    CUT = "CUT"
    SHORT = "SHORT"


class LampState(StrEnum):
    """A corridor lamp state: "ON, FLASH or OFF"."""

    ON = "ON"
    FLASH = "FLASH"
    OFF = "OFF"


class RejectReason(StrEnum):
    """Why a line was discarded (each reason is counted)."""

    CHECKSUM = "checksum"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LONG = "too_long"
    MALFORMED = "malformed"


class PanelState(Enum):
    """The panel link as supervision sees it."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


class FrameRejected(FrameError):
    """A line is not an acceptable frame; ``reason`` says why."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else str(reason))


class _Frame:
    """Shared by every frame: validation on construction, and the wire form."""

    __slots__ = ()
    KIND: ClassVar[str]
    __match_args__: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        """ValueError unless every field is valid (room id, seq 0..9999, enum members)."""
        for name in self.__match_args__:
            _VALIDATE[name](getattr(self, name))

    def body(self) -> str:
        """The BODY: type then fields in wire order, comma-separated."""
        return ",".join([self.KIND, *(str(getattr(self, n)) for n in self.__match_args__)])

    def to_bytes(self) -> bytes:
        """The complete frame ``$BODY*CS\\r\\n``."""
        body = self.body().encode("ascii")
        return b"$" + body + b"*" + checksum(body).encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Call(_Frame):
    """``CALL,<room>,<point>,<seq>``: call placed."""

    KIND: ClassVar[str] = "CALL"
    room: str
    point: Point
    seq: int


@dataclass(frozen=True, slots=True)
class Cancel(_Frame):
    """``CANCEL,<room>,<point>,<seq>``: call cancelled at the room by staff presence."""

    KIND: ClassVar[str] = "CANCEL"
    room: str
    point: Point
    seq: int


@dataclass(frozen=True, slots=True)
class Fault(_Frame):
    """``FAULT,<room>,<point>,<code>,<seq>``: call point line fault."""

    KIND: ClassVar[str] = "FAULT"
    room: str
    point: Point
    code: FaultCode
    seq: int


@dataclass(frozen=True, slots=True)
class Heartbeat(_Frame):
    """``HB,<seq>``: heartbeat, every 5 s."""

    KIND: ClassVar[str] = "HB"
    seq: int


@dataclass(frozen=True, slots=True)
class Ack(_Frame):
    """``ACK,<seq>``: received the panel's message ``seq`` (gateway to panel)."""

    KIND: ClassVar[str] = "ACK"
    seq: int


@dataclass(frozen=True, slots=True)
class Lamp(_Frame):
    """``LAMP,<room>,<state>``: set the corridor lamp (gateway to panel)."""

    KIND: ClassVar[str] = "LAMP"
    room: str
    state: LampState


PanelFrame = Call | Cancel | Fault | Heartbeat
Frame = PanelFrame | Ack | Lamp


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Effect: write ``frame`` to the panel now."""

    frame: Ack | Lamp


@dataclass(frozen=True, slots=True)
class CallPlaced:
    """A call was placed at ``room``/``point`` (once per panel message)."""

    bus: str
    room: str
    point: Point
    seq: int


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """A call at ``room``/``point`` was cancelled by staff presence (once per message)."""

    bus: str
    room: str
    point: Point
    seq: int


@dataclass(frozen=True, slots=True)
class LineFault:
    """The line of call point ``room``/``point`` is faulty (once per message)."""

    bus: str
    room: str
    point: Point
    code: FaultCode
    seq: int


@dataclass(frozen=True, slots=True)
class PanelOnline:
    """The panel is heard again (first valid frame since start or since offline)."""

    bus: str


@dataclass(frozen=True, slots=True)
class PanelOffline:
    """The panel sent no valid frame for ``offline_after_s``: its calls cannot be heard."""

    bus: str


PanelEvent = CallPlaced | CallCancelled | LineFault
Effect = SendFrame | PanelEvent | PanelOnline | PanelOffline


@dataclass(frozen=True, slots=True)
class PanelCounters:
    """Totals since the session started; ``dropped_bytes`` were outside any candidate line."""

    frames_ok: int
    duplicates: int
    rejected: dict[RejectReason, int]
    dropped_bytes: int


def checksum(body: bytes) -> str:
    """The checksum: "the XOR of every byte of BODY, as two uppercase hex digits"."""
    cs = 0
    for b in body:
        cs ^= b
    return f"{cs:02X}"


def parse_frame(line: bytes) -> Frame:
    """The frame in ``line`` (``$`` to ``\\n`` inclusive); FrameRejected if not acceptable."""
    if len(line) > MAX_FRAME:
        raise FrameRejected(RejectReason.TOO_LONG, f"{len(line)} bytes")
    if not (line.startswith(b"$") and line.endswith(b"\r\n")):
        raise FrameRejected(RejectReason.MALFORMED, "not framed by $ and CR LF")
    body, star, cs = line[1:-2].rpartition(b"*")
    if not star or not _HEX2.fullmatch(cs):
        raise FrameRejected(RejectReason.MALFORMED, "no two-digit checksum")
    if cs.upper().decode("ascii") != checksum(body):
        raise FrameRejected(RejectReason.CHECKSUM)
    try:
        kind, *fields = body.decode("ascii").split(",")
        frame = _decode(kind, fields)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameRejected(RejectReason.MALFORMED, str(exc)) from None
    if frame is None:
        raise FrameRejected(RejectReason.UNKNOWN_TYPE, kind)
    return frame


class LineSplitter:
    """Cuts a byte stream into candidate lines ``$...\\n`` of at most ``max_line`` bytes.

    A ``$`` always starts a new candidate (it never occurs inside a frame); bytes outside
    candidates, interrupted candidates and over-long runs are dropped and counted, so
    memory stays below ``max_line`` bytes whatever arrives.
    """

    def __init__(self, max_line: int = MAX_FRAME) -> None:
        """Start hunting for ``$``."""
        self.max_line = max_line
        self.dropped_bytes = 0
        self.overlong = 0
        self._buf = bytearray()
        self._skipping = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete candidate (always fewer than ``max_line``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Complete candidate lines in ``data`` (plus what earlier chunks left pending)."""
        lines: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if not self._buf and not self._skipping:
                start = data.find(b"$", i)
                self.dropped_bytes += (n if start < 0 else start) - i
                if start < 0:
                    break
                self._buf += b"$"
                i = start + 1
                continue
            end = _first_of(data, i, b"\n", b"$")
            if self._skipping:
                self.dropped_bytes += end - i
            else:
                self._buf += data[i:end]
                if len(self._buf) >= self.max_line:  # no room left for the "\n"
                    self.dropped_bytes += len(self._buf)
                    self.overlong += 1
                    self._buf.clear()
                    self._skipping = True
            if end == n:
                break
            if data[end] == ord("\n"):
                if self._buf:
                    lines.append(bytes(self._buf) + b"\n")
                else:
                    self.dropped_bytes += 1  # the end of an over-long run
            else:  # a "$": whatever was pending was no frame
                self.dropped_bytes += len(self._buf)
            self._buf.clear()
            self._skipping = False
            i = end + 1 if data[end] == ord("\n") else end
        return lines


class PanelSession:
    """The gateway's side of one panel link: ACKs, once-per-seq events, supervision."""

    def __init__(
        self,
        bus: str,
        start: float,
        *,
        offline_after_s: float = OFFLINE_AFTER_S,
        dedup_window_s: float = DEDUP_WINDOW_S,
    ) -> None:
        """A session started at ``start``: UNKNOWN until the first frame or the deadline."""
        self.bus = bus
        self.state = PanelState.UNKNOWN
        self.offline_after_s = offline_after_s
        self.dedup_window_s = dedup_window_s
        self._last_heard = start
        self._seen: OrderedDict[int, tuple[PanelFrame, float]] = OrderedDict()
        self._splitter = LineSplitter()
        self._ok = self._duplicates = 0
        self._rejected = dict.fromkeys(RejectReason, 0)

    def feed(self, data: bytes, now: float) -> list[Effect]:
        """Split, parse and receive a chunk read at ``now``; every rejection is counted."""
        effects: list[Effect] = []
        for line in self._splitter.feed(data):
            try:
                frame = parse_frame(line)
            except FrameRejected as exc:
                self._rejected[exc.reason] += 1
                continue
            if isinstance(frame, Ack | Lamp):  # the gateway's own frame types
                self._rejected[RejectReason.UNKNOWN_TYPE] += 1
                continue
            effects += self.receive(frame, now)
        return effects

    def receive(self, frame: PanelFrame, now: float) -> list[Effect]:
        """ACK every frame; PanelOnline if not online; its event if the seq is new."""
        self._ok += 1
        self._last_heard = now
        effects: list[Effect] = [SendFrame(Ack(frame.seq))]
        if self.state is not PanelState.ONLINE:
            self.state = PanelState.ONLINE
            effects.append(PanelOnline(self.bus))
        self._forget(now)
        seen = self._seen.pop(frame.seq, None)
        self._seen[frame.seq] = (frame, now)  # to the end: the order is by latest sighting
        if seen is not None and seen[0] == frame:
            self._duplicates += 1
        elif (event := _event(self.bus, frame)) is not None:
            effects.append(event)
        return effects

    def tick(self, now: float) -> list[Effect]:
        """PanelOffline once when ``next_deadline()`` has passed; else nothing."""
        self._forget(now)
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        self.state = PanelState.OFFLINE
        return [PanelOffline(self.bus)]

    def next_deadline(self) -> float | None:
        """When tick() must run next; None while offline (only a frame changes that)."""
        if self.state is PanelState.OFFLINE:
            return None
        return self._last_heard + self.offline_after_s

    def counters(self) -> PanelCounters:
        """A snapshot of the counters (over-long runs cut by the splitter are too_long)."""
        rejected = dict(self._rejected)
        rejected[RejectReason.TOO_LONG] += self._splitter.overlong
        return PanelCounters(self._ok, self._duplicates, rejected, self._splitter.dropped_bytes)

    def _forget(self, now: float) -> None:
        while self._seen:
            _, (_, when) = next(iter(self._seen.items()))
            if now - when <= self.dedup_window_s:
                break
            self._seen.popitem(last=False)


# -- helpers ----------------------------------------------------------------------------

# Same pattern as the floor file's room ids (gateway.config.floor.ROOM_ID_RE).
_ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_SEQ = re.compile(r"[0-9]{1,4}")
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")


def _room(room: object) -> None:
    if not (isinstance(room, str) and _ROOM.fullmatch(room)):
        raise ValueError(f"room {room!r} is not a valid room id")


def _seq_in_range(seq: object) -> None:
    if not (isinstance(seq, int) and 0 <= seq < SEQ_MODULO):
        raise ValueError(f"seq {seq!r} is outside 0..{SEQ_MODULO - 1}")


def _seq(text: str) -> int:
    if not _SEQ.fullmatch(text):
        raise ValueError(f"seq {text!r} is not 1 to 4 digits")
    return int(text)


_VALIDATE: dict[str, Callable[[Any], object]] = {
    "room": _room, "point": Point, "code": FaultCode, "state": LampState, "seq": _seq_in_range,
}  # fmt: skip
_PARSE: dict[str, Callable[[str], object]] = {
    "room": str, "point": Point, "code": FaultCode, "state": LampState, "seq": _seq,
}  # fmt: skip
_KINDS: dict[str, tuple[Callable[..., Frame], tuple[str, ...]]] = {
    c.KIND: (c, c.__match_args__) for c in (Call, Cancel, Fault, Heartbeat, Ack, Lamp)
}


def _decode(kind: str, fields: list[str]) -> Frame | None:
    """The frame of type ``kind`` with ``fields``; None for an unknown type."""
    if kind not in _KINDS:
        return None
    make, names = _KINDS[kind]
    if len(fields) != len(names):
        raise ValueError(f"{kind} with {len(fields)} fields")
    return make(*(_PARSE[n](v) for n, v in zip(names, fields, strict=True)))


def _event(bus: str, frame: PanelFrame) -> PanelEvent | None:
    match frame:
        case Call(room, point, seq):
            return CallPlaced(bus, room, point, seq)
        case Cancel(room, point, seq):
            return CallCancelled(bus, room, point, seq)
        case Fault(room, point, code, seq):
            return LineFault(bus, room, point, code, seq)
    return None


def _first_of(data: bytes, start: int, *needles: bytes) -> int:
    """Index of the first of ``needles`` in ``data[start:]``, or ``len(data)``."""
    found = [j for j in (data.find(x, start) for x in needles) if j >= 0]
    return min(found, default=len(data))
