"""The pure FG-CALLPANEL-1 core: frame codec, line splitter and panel session (no loop)."""

from __future__ import annotations

import functools
import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import FrameError
from drivers.panelproto import (
    MAX_FRAME,
    Ack,
    Call,
    CallCancelled,
    CallPlaced,
    Cancel,
    Fault,
    FaultCode,
    Frame,
    FrameRejected,
    Heartbeat,
    Lamp,
    LampState,
    LineFault,
    LineSplitter,
    PanelOffline,
    PanelOnline,
    PanelSession,
    PanelState,
    Point,
    RejectReason,
    SendFrame,
    checksum,
    parse_frame,
)

BUS = "panel-a"

rooms = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)
seqs = st.integers(0, 9999)
panel_frames = st.one_of(
    st.builds(Call, rooms, st.sampled_from(Point), seqs),
    st.builds(Cancel, rooms, st.sampled_from(Point), seqs),
    st.builds(Fault, rooms, st.sampled_from(Point), st.sampled_from(FaultCode), seqs),
    st.builds(Heartbeat, seqs),
)
frames = st.one_of(
    panel_frames, st.builds(Ack, seqs), st.builds(Lamp, rooms, st.sampled_from(LampState))
)


def wire(body: str, cs: str | None = None) -> bytes:
    """A frame built independently of the module under test."""
    raw = body.encode()
    value = functools.reduce(operator.xor, raw, 0)
    return b"$" + raw + b"*" + (cs or f"{value:02X}").encode() + b"\r\n"


# -- codec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "body"),
    [
        (Call("1205", Point.BATH, 17), "CALL,1205,BATH,17"),
        (Cancel("1205", Point.BED, 0), "CANCEL,1205,BED,0"),
        (Fault("1206", Point.OTHER, FaultCode.SHORT, 9999), "FAULT,1206,OTHER,SHORT,9999"),
        (Heartbeat(42), "HB,42"),
        (Ack(42), "ACK,42"),
        (Lamp("1205", LampState.FLASH), "LAMP,1205,FLASH"),
    ],
)
def test_round_trip_per_frame_type(frame: Frame, body: str) -> None:
    assert frame.to_bytes() == wire(body)
    assert parse_frame(wire(body)) == frame


@given(frames)
def test_any_frame_round_trips(frame: Frame) -> None:
    raw = frame.to_bytes()
    assert len(raw) <= MAX_FRAME
    assert parse_frame(raw) == frame


def test_checksum_is_uppercase_xor_and_lowercase_is_accepted() -> None:
    assert checksum(b"CALL,1205,BATH,17") == "31"
    assert checksum(b"HB,1") == f"{functools.reduce(operator.xor, b'HB,1'):02X}"
    assert checksum(b"") == "00"
    body = "CANCEL,1205,BED,3"  # checksum 5C: a hex letter to lower-case
    upper = checksum(body.encode())
    assert parse_frame(wire(body, upper.lower())) == Cancel("1205", Point.BED, 3)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (wire("CALL,1205,BATH,17", "00"), RejectReason.CHECKSUM),
        (wire("CALL,1205,BATH,17").replace(b"17*", b"18*"), RejectReason.CHECKSUM),
        (wire("HELLO,1"), RejectReason.UNKNOWN_TYPE),
        (wire("call,1205,BATH,17"), RejectReason.UNKNOWN_TYPE),
        (wire("X" * 75), RejectReason.TOO_LONG),  # 81 bytes from $ to \n
        (wire("CALL," + "9" * 70 + ",BATH,1"), RejectReason.TOO_LONG),
        (wire("HB,1")[1:], RejectReason.MALFORMED),  # no $
        (wire("HB,1")[:-2] + b"\n", RejectReason.MALFORMED),  # no CR
        (b"$HB,1\r\n", RejectReason.MALFORMED),  # no checksum
        (b"$HB,1*7\r\n", RejectReason.MALFORMED),
        (b"$HB,1*G0\r\n", RejectReason.MALFORMED),
        (wire("HB"), RejectReason.MALFORMED),
        (wire("HB,1,2"), RejectReason.MALFORMED),
        (wire("HB,10000"), RejectReason.MALFORMED),
        (wire("HB,-1"), RejectReason.MALFORMED),
        (wire("HB, 1"), RejectReason.MALFORMED),
        (wire("CALL,1205,SOFA,1"), RejectReason.MALFORMED),
        (wire("CALL,,BATH,1"), RejectReason.MALFORMED),
        (wire("FAULT,1205,BATH,OPEN,1"), RejectReason.MALFORMED),
        (wire("LAMP,1205,BLINK"), RejectReason.MALFORMED),
        (b"$HB,\xe9*" + checksum(b"HB,\xe9").encode() + b"\r\n", RejectReason.MALFORMED),
    ],
)
def test_rejected_with_reason(line: bytes, reason: RejectReason) -> None:
    with pytest.raises(FrameRejected) as info:
        parse_frame(line)
    assert info.value.reason is reason
    assert isinstance(info.value, FrameError)


def test_limit_counts_the_whole_frame() -> None:
    assert len(wire("X" * 74)) == 80
    with pytest.raises(FrameRejected) as info:
        parse_frame(wire("X" * 74))
    assert info.value.reason is RejectReason.UNKNOWN_TYPE  # 80 bytes: not too long


@pytest.mark.parametrize(
    "make",
    [
        lambda: Call("12,05", Point.BATH, 1),
        lambda: Call("", Point.BATH, 1),
        lambda: Call("1205", "SOFA", 1),
        lambda: Heartbeat(10_000),
        lambda: Ack(-1),
        lambda: Fault("1205", Point.BED, "OPEN", 1),
        lambda: Lamp("1205", "BLINK"),
    ],
)
def test_invalid_frames_cannot_be_built(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


# -- splitter ---------------------------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(frames, min_size=1, max_size=20), st.lists(st.integers(0, 10_000)))
def test_any_chunking_yields_the_same_frames(items: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(f.to_bytes() for f in items)
    splitter = LineSplitter()
    lines = [line for chunk in chunked(stream, cuts) for line in splitter.feed(chunk)]
    assert [parse_frame(line) for line in lines] == items
    assert splitter.dropped_bytes == 0
    assert splitter.buffered == 0


garbage = st.binary(max_size=200).map(lambda b: b.replace(b"*", b""))


@given(
    st.lists(st.tuples(garbage, frames), min_size=1, max_size=12),
    st.lists(st.integers(0, 10_000)),
)
def test_garbage_between_frames_is_dropped_and_counted(
    items: list[tuple[bytes, Frame]], cuts: list[int]
) -> None:
    stream = b"".join(g + f.to_bytes() for g, f in items)
    splitter = LineSplitter()
    good: list[Frame] = []
    rejected_bytes = 0
    for chunk in chunked(stream, cuts):
        for line in splitter.feed(chunk):
            assert line.startswith(b"$")
            assert line.endswith(b"\n")
            assert len(line) <= MAX_FRAME
            try:
                good.append(parse_frame(line))
            except FrameRejected:
                rejected_bytes += len(line)
    assert good == [f for _, f in items]  # garbage holds no "*": it never forms a frame
    assert splitter.dropped_bytes + rejected_bytes == sum(len(g) for g, _ in items)
    assert splitter.buffered == 0


def test_splitter_resyncs_on_dollar_and_drops_overlong_runs() -> None:
    splitter = LineSplitter()
    hb = Heartbeat(1).to_bytes()
    assert splitter.feed(b"noise\r\n$CALL,12" + hb) == [hb]  # truncated frame: dropped
    assert splitter.dropped_bytes == len(b"noise\r\n$CALL,12")
    assert splitter.feed(b"$" + b"A" * 100_000 + b"\r\n" + hb) == [hb]
    assert splitter.overlong == 1
    assert splitter.feed(b"$" + b"B" * 1_000_000) == []
    assert splitter.buffered == 0  # bounded memory: nothing kept of an over-long run
    assert splitter.feed(b"\n" + hb) == [hb]
    assert splitter.overlong == 2


def test_splitter_byte_by_byte_keeps_a_partial_frame() -> None:
    splitter = LineSplitter()
    raw = Call("1205", Point.BED, 9).to_bytes()
    out = [line for b in raw for line in splitter.feed(bytes([b]))]
    assert out == [raw]
    assert splitter.feed(raw[:10]) == []
    assert splitter.buffered == 10


# -- session ----------------------------------------------------------------------------


def test_first_frame_is_acked_goes_online_and_emits() -> None:
    s = PanelSession(BUS, 0.0)
    assert s.state is PanelState.UNKNOWN
    assert s.receive(Call("1205", Point.BATH, 17), 1.0) == [
        SendFrame(Ack(17)),
        PanelOnline(BUS),
        CallPlaced(BUS, "1205", Point.BATH, 17),
    ]
    assert s.state is PanelState.ONLINE
    assert s.receive(Cancel("1205", Point.BATH, 18), 2.0) == [
        SendFrame(Ack(18)),
        CallCancelled(BUS, "1205", Point.BATH, 18),
    ]
    assert s.receive(Fault("1206", Point.BED, FaultCode.CUT, 19), 3.0) == [
        SendFrame(Ack(19)),
        LineFault(BUS, "1206", Point.BED, FaultCode.CUT, 19),
    ]
    assert s.receive(Heartbeat(20), 4.0) == [SendFrame(Ack(20))]


def test_eleven_repeats_are_all_acked_and_act_once() -> None:
    s = PanelSession(BUS, 0.0)
    s.receive(Heartbeat(4), 0.5)
    call = Call("1205", Point.BED, 5)
    effects = [s.receive(call, 1.0 + i) for i in range(11)]  # "11 sends in all"
    assert all(e[0] == SendFrame(Ack(5)) for e in effects)
    assert effects[0][1:] == [CallPlaced(BUS, "1205", Point.BED, 5)]
    assert all(len(e) == 1 for e in effects[1:])
    counters = s.counters()
    assert (counters.frames_ok, counters.duplicates) == (12, 10)


def test_seq_wraps() -> None:
    s = PanelSession(BUS, 0.0)
    events = []
    for i, seq in enumerate((9998, 9999, 0, 1)):
        events += [
            e for e in s.receive(Call("1205", Point.BATH, seq), float(i)) if e != PanelOnline(BUS)
        ]
    assert [e.seq for e in events if isinstance(e, CallPlaced)] == [9998, 9999, 0, 1]
    assert [e.frame.seq for e in events if isinstance(e, SendFrame)] == [9998, 9999, 0, 1]


def test_dedup_window_is_sixty_seconds_from_the_latest_sighting() -> None:
    call = Call("1205", Point.BATH, 7)
    s = PanelSession(BUS, 0.0, offline_after_s=1e9)
    assert CallPlaced(BUS, "1205", Point.BATH, 7) in s.receive(call, 0.0)
    assert s.receive(call, 60.0) == [SendFrame(Ack(7))]  # 60 s: still remembered
    assert s.receive(call, 120.0) == [SendFrame(Ack(7))]  # refreshed at 60 s
    assert CallPlaced(BUS, "1205", Point.BATH, 7) in s.receive(call, 180.001)  # > 60 s: new


def test_seq_seen_more_than_sixty_seconds_ago_is_new() -> None:
    s = PanelSession(BUS, 0.0, offline_after_s=1e9)
    s.receive(Call("1205", Point.BATH, 7), 0.0)
    for t in range(1, 61):
        s.receive(Heartbeat(7 + t), float(t))  # other traffic meanwhile
    assert s.receive(Call("1205", Point.BATH, 7), 60.5) == [
        SendFrame(Ack(7)),
        CallPlaced(BUS, "1205", Point.BATH, 7),
    ]


def test_same_seq_with_another_body_is_a_new_message() -> None:
    s = PanelSession(BUS, 0.0)
    s.receive(Heartbeat(0), 1.0)
    assert s.receive(Call("1205", Point.BATH, 0), 2.0)[-1] == CallPlaced(BUS, "1205", Point.BATH, 0)


def test_offline_after_fifteen_silent_seconds_and_online_on_next_frame() -> None:
    s = PanelSession(BUS, 100.0)
    assert s.next_deadline() == 115.0  # no frame since start
    assert s.tick(114.999) == []
    assert s.tick(115.0) == [PanelOffline(BUS)]
    assert s.state is PanelState.OFFLINE
    assert s.next_deadline() is None
    assert s.tick(500.0) == []  # once
    assert s.receive(Heartbeat(1), 600.0) == [SendFrame(Ack(1)), PanelOnline(BUS)]
    assert s.next_deadline() == 615.0
    s.receive(Heartbeat(2), 605.0)
    assert s.next_deadline() == 620.0
    assert s.tick(619.9) == []
    assert s.tick(620.0) == [PanelOffline(BUS)]


def test_feed_splits_parses_and_counts_every_rejection() -> None:
    s = PanelSession(BUS, 0.0)
    stream = b"".join(
        [
            b"\x00\xff noise\r\n",
            wire("CALL,1205,BATH,1", "00"),
            wire("HELLO,1"),
            wire("ACK,3"),  # the gateway's own type, coming from the panel
            wire("HB,1,2"),
            b"$" + b"Z" * 200 + b"\r\n",
            Call("1205", Point.BATH, 2).to_bytes(),
        ]
    )
    effects = [e for i in range(0, len(stream), 7) for e in s.feed(stream[i : i + 7], 1.0)]
    assert effects == [
        SendFrame(Ack(2)),
        PanelOnline(BUS),
        CallPlaced(BUS, "1205", Point.BATH, 2),
    ]
    c = s.counters()
    assert c.frames_ok == 1
    assert c.rejected == {
        RejectReason.CHECKSUM: 1,
        RejectReason.UNKNOWN_TYPE: 2,
        RejectReason.TOO_LONG: 1,
        RejectReason.MALFORMED: 1,
    }
    assert c.dropped_bytes == len(b"\x00\xff noise\r\n") + 203
