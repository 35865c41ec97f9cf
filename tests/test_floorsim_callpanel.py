"""FG-CALLPANEL-1 on its pty, read and written by a plain serial port (demo rooms 1205-1206).

Time constants are shrunk with the time scale: at x20 the panel repeats every 50 ms and
sends a heartbeat every 250 ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from floorsim.callpanel import checksum, encode_frame, garbage_line, parse_frame
from floorsim.sim import FloorSim
from tests.test_floorsim_support import LineReader, load, running
from tests.waiting import until

SCALE = 20.0


@pytest.fixture
async def sim(write_floor: Callable[..., Path]) -> AsyncIterator[FloorSim]:
    async with running(load(write_floor()), time_scale=SCALE) as s:
        yield s


@pytest.fixture
async def line(sim: FloorSim) -> AsyncIterator[LineReader]:
    reader = LineReader(sim.port("panel"))
    try:
        yield reader
    finally:
        reader.close()


def hb_seqs(line: LineReader) -> list[int]:
    return [int(b.split(",")[1]) for b in line.bodies("HB,")]


def sent_ns(sim: FloorSim, prefix: str) -> list[int]:
    """When the panel put each frame whose body starts with ``prefix`` on the line
    (its journal: the reader's arrival times add the reader's own delays)."""
    return [
        e["mono_ns"] for e in sim.events(kind="panel_tx") if e["detail"]["body"].startswith(prefix)
    ]


def test_frame_codec_round_trip() -> None:
    frame = encode_frame("CALL,1205,BATH,17")
    body = b"CALL,1205,BATH,17"
    cs = 0
    for b in body:
        cs ^= b
    assert frame == b"$" + body + b"*" + f"{cs:02X}".encode() + b"\r\n"
    assert checksum(body) == f"{cs:02X}"
    assert parse_frame(frame) == ("CALL,1205,BATH,17", None)
    assert parse_frame(frame.replace(b"17*", b"18*")) == (None, "bad checksum")
    assert parse_frame(encode_frame("X" * 80)) == (None, "too long")
    assert parse_frame(b"CALL\r\n") == (None, "not a frame")
    panel_garbage = [garbage_line(i) for i in range(6)]
    for g in panel_garbage:  # each is discarded: bad framing, or a type nobody knows
        parsed, _ = parse_frame(g)
        assert parsed is None or parsed.startswith("HELLO")


async def test_call_is_checksummed_and_repeated_until_acked(
    sim: FloorSim, line: LineReader
) -> None:
    pressed = sim.press("1205", "bath")
    seq = pressed["seq"]
    body = f"CALL,1205,BATH,{seq}"
    [event] = sim.events(kind="press")
    assert (event["room"], event["detail"]["point"], event["mono_ns"]) == (
        "1205",
        "bath",
        pressed["mono_ns"],
    )
    await until(lambda: line.bodies(body)[1:])  # sent, and repeated once
    raw = next(r for _, r in line.lines if r.startswith(b"$" + body.encode()))
    assert raw == b"$" + body.encode() + b"*" + checksum(body.encode()).encode() + b"\r\n"
    line.send(f"ACK,{seq}")
    await until(lambda: not sim.panel_pending())
    sent = len(line.bodies(body))
    later = max(hb_seqs(line), default=seq)
    await until(lambda: max(hb_seqs(line), default=seq) > later)  # the line went on
    assert len(line.bodies(body)) <= sent + 1  # at most one already on its way
    assert len(line.bodies(body)) < 11


async def test_unacked_call_is_sent_eleven_times(sim: FloorSim, line: LineReader) -> None:
    pressed = sim.press("1206", "bed")
    seq = pressed["seq"]
    body = f"CALL,1206,BED,{seq}"

    def times() -> list[float]:
        return [t for t, raw in line.lines if raw.startswith(b"$" + body.encode())]

    await until(lambda: len(times()) >= 11, timeout=30)
    await until(lambda: sim.events(kind="panel_gave_up"))
    hbs = len(hb_seqs(line))
    await until(lambda: len(hb_seqs(line)) >= hbs + 2)  # a twelfth send would be in by now
    assert len(times()) == 11  # "10 times at most (11 sends in all)"
    # Every 1 s (scaled), never sooner: the last send is 10 periods after the press at
    # least (a send may leave late, never early; 2 ms for clock arithmetic).
    span_s = (sent_ns(sim, body)[-1] - pressed["mono_ns"]) / 1e9
    assert span_s >= 10 * (1.0 / SCALE) - 0.002


async def test_heartbeat_and_one_shared_seq(sim: FloorSim, line: LineReader) -> None:
    await until(lambda: len(hb_seqs(line)) >= 2)
    first, second = hb_seqs(line)[:2]
    assert second == first + 1
    # Every 5 s, scaled: over four periods, so that the first one leaving late (a loaded
    # machine) cannot make the interval look short.
    await until(lambda: len(sent_ns(sim, "HB,")) >= 5)
    hb = sent_ns(sim, "HB,")
    assert (hb[4] - hb[0]) / 1e9 >= 4 * 5.0 / SCALE * 0.9
    call_seq = sim.press("1205", "bed")["seq"]
    line.send(f"ACK,{call_seq}")
    await until(lambda: any(s > call_seq for s in hb_seqs(line)))
    assert min(s for s in hb_seqs(line) if s > call_seq) == call_seq + 1
    line.send(f"ACK,{second}")  # the gateway acks HB too; the panel never repeats HB
    assert all(hb_seqs(line).count(s) == 1 for s in hb_seqs(line))


async def test_seq_wraps_after_9999(sim: FloorSim, line: LineReader) -> None:
    sim.panels["panel"].set_next_seq(9999)
    assert sim.press("1205", "bath")["seq"] == 9999
    assert sim.press("1205", "bed")["seq"] == 0


async def test_silent_panel_sends_nothing_then_resumes(sim: FloorSim, line: LineReader) -> None:
    await until(lambda: hb_seqs(line))
    sim.set_fault("panel", "silent")
    heard = len(line.lines)
    muted = sim.panels["panel"].counters.get("muted", 0)
    seq = sim.press("1205", "bath")["seq"]
    # Two heartbeat periods' worth of frames go nowhere.
    await until(lambda: sim.panels["panel"].counters.get("muted", 0) >= muted + 8)
    assert len(line.lines) == heard
    sim.clear_fault("panel", "silent")
    await until(lambda: line.bodies(f"CALL,1205,BATH,{seq}"))  # a later repeat gets through


async def test_garbage_lines(sim: FloorSim, line: LineReader) -> None:
    sim.panel_garbage(6)
    await until(lambda: sum(parse_frame(r)[0] is None for _, r in line.lines) >= 4)
    await until(lambda: any(b"HELLO" in r for _, r in line.lines))
    await until(lambda: any(len(r) > 80 for _, r in line.lines))  # the over-long one
    bad = [r for _, r in line.lines if parse_frame(r)[0] is None]
    assert any(parse_frame(r)[1] == "bad checksum" for r in bad)
    before = len(line.lines)
    sim.set_fault("panel", "garbage", 30)  # a garbage line every 30 ms
    await until(lambda: len(line.lines) >= before + 3)
    sim.clear_fault("panel")


async def test_line_fault_sends_fault_and_deafens_the_point(
    sim: FloorSim, line: LineReader
) -> None:
    seq = sim.line_fault("1206", "bath", "CUT")["seq"]
    await until(lambda: line.bodies(f"FAULT,1206,BATH,CUT,{seq}"))
    assert sim.press("1206", "bath")["sent"] is None
    assert [e["kind"] for e in sim.events(kind="press_lost")] == ["press_lost"]
    sim.line_fault("1206", "bed", "SHORT")
    await until(lambda: line.bodies("FAULT,1206,BED,SHORT,"))
    sim.clear_line_fault("1206", "bath")
    seq = sim.press("1206", "bath")["seq"]
    await until(lambda: line.bodies(f"CALL,1206,BATH,{seq}"))


async def test_staff_presence_cancels_the_placed_calls(sim: FloorSim, line: LineReader) -> None:
    sim.press("1205", "bath")
    sim.press("1205", "bed")
    seqs = sim.staff("1205")["seqs"]
    assert len(seqs) == 2
    await until(lambda: line.bodies(f"CANCEL,1205,BATH,{seqs[0]}"))
    await until(lambda: line.bodies(f"CANCEL,1205,BED,{seqs[1]}"))
    assert sim.staff("1205")["seqs"] == []  # nothing placed any more


async def test_every_gateway_frame_is_recorded_and_lamps_follow(
    sim: FloorSim, line: LineReader
) -> None:
    seq = sim.press("1205", "bath")["seq"]
    line.send("LAMP,1205,ON")
    line.send("LAMP,1206,FLASH")
    line.send(f"ACK,{seq}", cs="00")  # a bad checksum: recorded, not acted on
    line.port.write(b"\x00\xffnoise\r\n")
    await until(lambda: len(sim.panel_frames()) >= 4)
    frames = sim.panel_frames()
    assert [f["body"] for f in frames[:4]] == ["LAMP,1205,ON", "LAMP,1206,FLASH", None, None]
    assert frames[2]["error"] == "bad checksum"
    assert all(f["ts"] > 0 and f["mono_ns"] > 0 for f in frames)
    assert sim.lamps() == {"1205": "ON", "1206": "FLASH"}
    assert [p["seq"] for p in sim.panel_pending()] == [seq]  # the bad ACK did not count
    line.send(f"ACK,{seq}")
    await until(lambda: not sim.panel_pending())
    assert sim.panel_frames(since_seq=frames[3]["seq"])[0]["body"] == f"ACK,{seq}"


async def test_arbitrary_panel_messages(sim: FloorSim, line: LineReader) -> None:
    sim.panel_send("CALL,1206,OTHER,42")
    sim.panel_send("CALL,1206,OTHER,43", cs="ZZ")
    sim.panel_raw(b"$HB,1*ZZ\r\n".hex())
    await until(lambda: any(r.startswith(b"$HB,1*ZZ") for _, r in line.lines))
    assert "CALL,1206,OTHER,42" in line.bodies()
    assert b"$CALL,1206,OTHER,43*ZZ\r\n" in [r for _, r in line.lines]
    seq = sim.panel_send("CANCEL,1206,OTHER", repeat=True)["seq"]
    await until(lambda: line.bodies(f"CANCEL,1206,OTHER,{seq}")[1:])  # repeated
