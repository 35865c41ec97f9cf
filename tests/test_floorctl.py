"""floorctl against a control server over the fake demo floor: every subcommand, both
renderings, exit codes, the floor map at 80 columns, streaming, help and completion.

floorctl is synchronous: it runs in a worker thread (asyncio.to_thread) while the server
runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console

from drivers.backoff import Backoff
from gateway.adapters.schema import StoredEvent
from gateway.cli import client as cli_client
from gateway.cli import discovery, render
from gateway.cli import events as events_cli
from gateway.cli.alarm_ids import pick, short_ids
from gateway.cli.client import Client
from gateway.cli.completion import completion_script
from gateway.cli.discovery import DEFAULT_SOCKET, SocketChoice, find_socket
from gateway.cli.exits import EX_ERROR, EX_OK, EX_UNAVAILABLE, EX_USAGE
from gateway.cli.main import build_parser, main
from gateway.cli.results import Notice
from gateway.model.views import (
    AlarmRow,
    AlarmTable,
    DeviceRow,
    EventRow,
    RoomRow,
    ScanProgress,
    Status,
)
from tests.conftest import demo_floor_dict
from tests.fake_floor import (
    BED_ALARM,
    CALL_ALARM,
    FakeFloor,
    Served,
    assert_json_shape,
    serving,
)
from tests.waiting import until

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A control server over the fake demo floor (short path: sun_path is 108 bytes).

    The server's logs are captured, so that stdout holds only what floorctl prints.
    """
    d = Path(tempfile.mkdtemp(prefix="fgctl-", dir="/tmp"))
    try:
        with structlog.testing.capture_logs():
            async with serving(d / "ctl.sock") as s:
                yield s
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def columns80(monkeypatch: pytest.MonkeyPatch) -> None:
    """floorctl's console is 80 columns wide (as on a small terminal)."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)


async def floorctl(served: Served, *argv: str) -> int:
    """Run floorctl against the served socket in a worker thread; its exit code."""
    return await asyncio.to_thread(main, ["--socket", str(served.path), *argv])


# -- every subcommand, both renderings ----------------------------------------------------

SUBCOMMANDS: list[tuple[list[str], list[str]]] = [
    (["status"], ["demo-12", "connected", "rs485-a", "1204/lock", "25.0%"]),
    (["floor"], ["1201", "1206", "call active", "device offline", "1 with stale values"]),
    (["rooms"], ["R-88231", "DND", "acknowledged", "lock"]),
    (["room", "1203"], ["R-88240", "1203/rio", "Details", "alarm.raised", "a1203bat "]),
    (["room", "1202"], ["(40s ago)", "STALE", "climate.temp_c (not current)"]),
    (
        ["lamps", "test", "1201"],
        ["Lamp test, room 1201", "dome_lamp", "reassure_lamp", "read back"],
    ),
    (["devices"], ["1204/lock", "OFFLINE", "14 timeout", "fg-floorpanel-1"]),
    (["alarms"], ["a1203bat ", "a1205bed ", "active", "ana"]),
    (["alarms", "ack", CALL_ALARM, "--by", "bo"], ["acknowledged by bo"]),
    (["alarms", "resolve", BED_ALARM, "--by", "cy"], ["resolved by cy"]),
    (["events"], ["Seq", "Details", "gateway.started", "call bath, level 1", "(alarm a1203bat)"]),
    (["outbox"], ["Waiting", "3", "Refused by the broker", "2"]),
    (["energy"], ["Savings ledger", "1203", "CCCCC", "AAAAA", "UUUUU", "65 %", "4.0"]),
    (["energy", "--room", "1203", "--days", "1"], ["1203", "2.0", "31.3", "3.2"]),
    (["scan", "rs485-a"], ["11 of 247 unit ids answered", "fg-floorpanel-1"]),
]


@pytest.mark.parametrize("case", SUBCOMMANDS, ids=[" ".join(c[0]) for c in SUBCOMMANDS])
async def test_subcommand_renders_as_json_and_for_people(
    served: Served,
    capsys: pytest.CaptureFixture[str],
    columns80: None,
    case: tuple[list[str], list[str]],
) -> None:
    argv, texts = case
    assert await floorctl(served, *argv, "--json") == EX_OK
    doc = json.loads(capsys.readouterr().out)
    assert_json_shape(argv[0] if argv[0] != "alarms" else " ".join(argv[:2]), doc)
    if argv == ["alarms"]:
        assert [a["alarm_id"] for a in doc["alarms"]] == [CALL_ALARM, BED_ALARM]
    served.floor.reset()  # alarms ack/resolve changed it
    assert await floorctl(served, *argv) == EX_OK
    text = capsys.readouterr().out
    for snippet in texts:
        assert snippet in text, (snippet, text)
    assert max(len(line) for line in text.splitlines()) <= 80


async def test_a_lamp_that_does_not_read_back_ends_with_1_and_says_which(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await floorctl(served, "lamps", "test", "1202") == EX_ERROR
    captured = capsys.readouterr()
    assert "NOT READ BACK" in captured.out
    assert "room 1202: reassure_lamp did not read back" in captured.err
    assert served.audits[-1][1] == "lamps.test"
    assert await floorctl(served, "lamps", "test", "1205") == EX_ERROR  # no room I/O


async def test_json_flag_before_the_subcommand(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["--json", "--socket", str(served.path), "status"]) == 0
    assert Status.from_json(json.loads(capsys.readouterr().out)) == served.floor.status()


async def test_events_since_seq_and_room(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    first = served.floor.events_log[0].seq
    argv = ["events", "--since-seq", str(first), "--room", "1203", "--limit", "1", "--json"]
    assert await floorctl(served, *argv) == EX_OK
    (event,) = json.loads(capsys.readouterr().out)["events"]
    assert (event["room"], event["type"]) == ("1203", "alarm.raised")


async def test_typed_client(served: Served) -> None:
    client = Client(served.path)
    assert await asyncio.to_thread(client.status) == served.floor.status()
    floor = await asyncio.to_thread(client.floor)
    assert floor.rooms == tuple(served.floor.floor_map())
    seen: list[ScanProgress] = []
    result = await asyncio.to_thread(client.scan, "lan", seen.append)
    configured = ["1203/tstat", "1203/lock", "1203/rio", "1204/tstat", "1204/rio"]
    assert [h.configured for h in result.hits] == configured
    assert [p.done for p in seen] == list(range(1, 248))


def test_results_parse_strictly_and_ignore_new_keys() -> None:
    floor = FakeFloor()
    status = floor.status().to_json()
    assert Status.from_json({**status, "added_in_v2": 1}) == floor.status()
    for broken, where in (
        ({**status, "open_alarms": True}, "Status.open_alarms"),
        ({**status, "uptime_s": "3h"}, "Status.uptime_s"),
        ({k: v for k, v in status.items() if k != "mqtt"}, "missing 'mqtt'"),
        ({**status, "buses": [{"name": "x"}]}, "BusHealth: missing 'kind'"),
        ({**status, "mqtt": None}, "MqttLink: expected an object"),
    ):
        with pytest.raises(ValueError, match=re.escape(where)):
            Status.from_json(broken)
    row = RoomRow.from_snapshot(floor.snapshots["1204"])
    assert (row.occupancy, row.door, row.offline, row.temp_c) == ("vacant", None, ("lock",), 23.4)
    stored = StoredEvent(7, "e7", "2026-11-23T06:00:00.000Z", "room.dnd", "1201", {"on": True})
    assert EventRow.from_stored(stored).to_json() == {
        "seq": 7, "id": "e7", "ts": "2026-11-23T06:00:00.000Z", "type": "room.dnd",
        "room": "1201", "data": {"on": True},
    }  # fmt: skip


# -- numbers and keys as the units and MQTT say ------------------------------------------


class _UnroundedFloor(FakeFloor):
    """Measurements as an engine computes them: every digit of a float."""

    def status(self) -> Status:
        s = super().status()
        bus = replace(s.buses[0], tx_per_s=38.54321, error_rate=0.0123456)
        return replace(s, uptime_s=11532.4567, buses=(bus, *s.buses[1:]))

    def devices(self) -> list[DeviceRow]:
        rows = super().devices()
        rows[0] = replace(
            rows[0], last_seen_s=7.237298104000047, latency_ms=11.26, success_rate=0.9983333
        )
        return rows

    def reset(self) -> None:
        super().reset()
        self.snapshots["1201"]["climate"]["temp_c"] = 23.4567
        self.append("device.online", "1201", {"device": "1201/tstat", "latency_ms": 11.2649})


async def test_measurements_are_rounded_by_their_unit_in_json_and_tables(
    capsys: pytest.CaptureFixture[str], columns80: None
) -> None:
    d = Path(tempfile.mkdtemp(prefix="fgctl-", dir="/tmp"))
    try:
        with structlog.testing.capture_logs():
            async with serving(d / "ctl.sock", _UnroundedFloor()) as s:
                assert await floorctl(s, "--json", "devices") == EX_OK
                device = json.loads(capsys.readouterr().out)["devices"][0]
                assert (device["last_seen_s"], device["latency_ms"]) == (7.2, 11.3)
                assert device["success_rate"] == 0.998
                assert await floorctl(s, "devices") == EX_OK
                assert "7.2s" in capsys.readouterr().out.splitlines()[3]
                assert await floorctl(s, "--json", "status") == EX_OK
                status = json.loads(capsys.readouterr().out)
                assert status["uptime_s"] == 11532.5
                assert (status["buses"][0]["tx_per_s"], status["buses"][0]["error_rate"]) == (
                    38.5,
                    0.012,
                )
                assert await floorctl(s, "--json", "rooms") == EX_OK
                assert json.loads(capsys.readouterr().out)["rooms"][0]["temp_c"] == 23.5
                assert await floorctl(s, "--json", "room", "1201") == EX_OK
                room = json.loads(capsys.readouterr().out)
                assert room["snapshot"]["climate"]["temp_c"] == 23.5
                assert room["devices"][0]["last_seen_s"] == 7.2
                # an event's data is printed as it was recorded
                assert room["events"][-1]["data"]["latency_ms"] == 11.2649
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_floor_events_have_no_room_key_as_on_mqtt(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    floor_alarm = AlarmRow("f00dcafe", None, "technical", "callpanel_offline", "active", 0, "t")
    served.floor.open_alarms[floor_alarm.alarm_id] = floor_alarm
    served.floor.append("alarm.raised", None, floor_alarm.to_json())
    assert await floorctl(served, "events", "--json") == EX_OK
    events = json.loads(capsys.readouterr().out)["events"]
    floor_events = [e for e in events if e["type"] in ("gateway.started", "alarm.raised")]
    assert [("room" in e) for e in floor_events] == [False, True, False]
    assert floor_events[-1]["data"]["room"] is None  # the alarm snapshot, as recorded
    assert await floorctl(served, "alarms", "--json") == EX_OK
    alarms = json.loads(capsys.readouterr().out)["alarms"]
    assert alarms[-1]["room"] is None  # an alarm keeps its null room, as its MQTT snapshot
    assert render.json_value(served.floor.events_log[0]) == {
        "seq": 1041, "id": "ev00000411", "ts": served.floor.events_log[0].ts,
        "type": "gateway.started", "data": {"version": served.floor.events_log[0].data["version"]},
    }  # fmt: skip


# -- alarm ids: unique prefixes in, short ids out -----------------------------------------


async def test_ack_by_a_unique_prefix_sends_the_full_id(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await floorctl(served, "alarms", "ack", "A1203B", "--by", "bo") == EX_OK  # any case
    assert (
        f"Alarm {CALL_ALARM} (room 1203, call bath) acknowledged by bo" in capsys.readouterr().out
    )
    assert [(action, alarm_id) for action, alarm_id, _ in served.floor.actors] == [
        ("ack", CALL_ALARM)
    ]
    assert served.audits[0][2]["args"] == {"alarm_id": CALL_ALARM, "by": "bo"}
    assert await floorctl(served, "alarms", "resolve", "a1205bed", "--by", "cy", "--json") == EX_OK
    assert json.loads(capsys.readouterr().out)["alarm"]["alarm_id"] == BED_ALARM


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("a120", ["alarm id 'a120' is ambiguous: 2 open alarms start with it:",
                  "  a1203bat  room 1203, call bath, active",
                  "  a1205bed  room 1205, call bed, acknowledged",
                  "type more of the id"]),
        ("ffff", ["no open alarm id starts with 'ffff' (floorctl alarms lists the open alarms)"]),
        ("a1", ["no open alarm has the id 'a1', and a shorter id needs at least 4 characters"]),
    ],
)  # fmt: skip
async def test_a_prefix_naming_no_alarm_or_several_exits_1(
    served: Served, capsys: pytest.CaptureFixture[str], typed: str, says: list[str]
) -> None:
    for action in ("ack", "resolve"):
        assert await floorctl(served, "alarms", action, typed, "--by", "bo") == EX_ERROR
        err = capsys.readouterr().err
        for line in says:
            assert line in err.splitlines() or f"floorctl: {line}" in err, (line, err)
    assert served.floor.actors == []
    assert served.audits == []  # nothing was asked of the daemon that changes anything


async def test_tables_show_short_ids_that_can_be_typed_back(
    served: Served, capsys: pytest.CaptureFixture[str], columns80: None
) -> None:
    assert await floorctl(served, "alarms") == EX_OK
    table = capsys.readouterr().out
    shown = [line.split()[0] for line in table.splitlines() if line.startswith("a120")]
    assert shown == ["a1203bat", "a1205bed"]
    assert CALL_ALARM not in table
    assert await floorctl(served, "alarms", "ack", shown[0], "--by", "bo") == EX_OK
    assert served.floor.actors[0][1] == CALL_ALARM


def test_short_ids_like_git() -> None:
    ids = ["5d0c7a1e9b3f4e2a", "5d0c7a1e9b00aaaa", "0b9e4d7c2a5f4e3d", "abc"]
    assert short_ids(ids) == {
        "5d0c7a1e9b3f4e2a": "5d0c7a1e9b3",  # one more than the 10 characters they share
        "5d0c7a1e9b00aaaa": "5d0c7a1e9b0",
        "0b9e4d7c2a5f4e3d": "0b9e4d7c",  # at least 8
        "abc": "abc",  # shorter than 8: whole
    }
    assert short_ids(["ABCDEF0123", "abcdef0199"]) == {
        "ABCDEF0123": "ABCDEF012",
        "abcdef0199": "abcdef019",
    }
    assert short_ids(["abcdefgh", "abcdefghij"]) == {
        "abcdefgh": "abcdefgh",
        "abcdefghij": "abcdefghi",
    }


def test_pick_prefers_an_exact_id() -> None:
    rows = [AlarmRow(i, None, "technical", "x", "active", 0, "t") for i in ("abcd", "abcdef")]
    assert pick("abcd", rows).alarm_id == "abcd"
    assert pick("abcde", rows).alarm_id == "abcdef"


# -- the floor map ------------------------------------------------------------------------


def _rendered(rows: list[RoomRow], *, color: bool, width: int = 80) -> list[str]:
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        force_terminal=color,
        color_system="truecolor" if color else None,
        markup=False,
    )
    console.print(render.floor_map(rows, width))
    return ANSI.sub("", buf.getvalue()).splitlines()


def test_floor_map_cells_and_legend_without_colour() -> None:
    lines = _rendered(FakeFloor().floor_map(), color=False)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("6 rooms · 3 occupied · 1 call active · 1 call acknowledged")
    top = next(i for i, line in enumerate(lines) if "1201" in line)
    ids, flags = lines[top], lines[top + 1]
    cells = dict(
        zip(ids.split(), [flags[i : i + 8].strip() for i in range(1, len(flags), 9)], strict=True)
    )
    assert cells == {
        "1201": "O D",  # occupied, DND
        "1202": ".  M s",  # vacant, make up room, a value not current
        "1203": "O   !",  # occupied, call active
        "1204": ".    X",  # vacant, lock offline
        "1205": "O/  a",  # occupied, door open, call acknowledged
        "1206": ".",
    }
    legend = " ".join(lines[top + 2 :])
    for letter, meaning, _ in render.LEGEND:
        assert f"{letter} {meaning}" in legend


@pytest.mark.parametrize("color", [False, True])
def test_floor_map_fits_80_columns_for_a_big_floor(color: bool) -> None:
    rows = [
        RoomRow(f"12{i:02d}-suite" if i % 7 == 0 else f"12{i:02d}", "occupied", None, "open",
                True, True, "active", ("lock",))
        for i in range(1, 41)
    ]  # fmt: skip
    lines = _rendered(rows, color=color)
    assert all(len(line) <= 80 for line in lines)
    assert sum(line.count("!") for line in lines) == 40 + 1  # every cell, and the legend


def test_floor_map_is_coloured_on_a_terminal() -> None:
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=True, color_system="standard").print(
        render.floor_map(FakeFloor().floor_map(), 80)
    )
    assert "\x1b[1;37;41m" in buf.getvalue()  # bold white on red: the active call


def test_scan_progress_bar_on_a_terminal() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    with render.scan_bar(console, "rs485-a") as update:
        update(ScanProgress(120, 247, 6))
        shown = buf.getvalue()
    assert "scanning rs485-a" in shown
    assert "120/247" in shown
    assert "6 answered" in shown


# -- streaming ----------------------------------------------------------------------------


class Floorctl:
    """floorctl run as a process (a real Ctrl-C ends it), its output gathered as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._gather(proc.stdout, self.out)),
            asyncio.ensure_future(self._gather(proc.stderr, self.err)),
        ]

    @staticmethod
    async def _gather(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))

    def printed(self, text: str) -> bool:
        """True once ``text`` is in a line floorctl printed on stdout."""
        return any(text in line for line in self.out)

    def said(self, text: str) -> bool:
        """True once ``text`` is in a line floorctl printed on stderr."""
        return any(text in line for line in self.err)

    async def interrupt(self) -> int:
        """Ctrl-C; the exit code once floorctl has ended and its output is all read."""
        self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def close(self) -> None:
        """Make sure nothing is left running."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def floorctl_process(*argv: str) -> AsyncIterator[Floorctl]:
    """``floorctl ARGV`` in its own process, 80 columns wide."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    running = Floorctl(proc)
    try:
        yield running
    finally:
        await running.close()


async def test_events_follow_sees_new_events(served: Served) -> None:
    argv = ["--socket", str(served.path), "events", "--follow", "--room", "1203", "--json"]
    async with floorctl_process(*argv) as follower:
        await until(lambda: follower.printed("alarm.escalated"), timeout=20)
        new = served.floor.append("room.dnd", "1203", {"on": True})
        served.floor.append("room.dnd", "1201", {"on": False})  # another room: not shown
        await until(lambda: follower.printed(f'"seq": {new.seq}'))
        assert await follower.interrupt() == EX_OK  # Ctrl-C is how one stops following
    lines = [json.loads(x) for x in follower.out]
    assert [e["type"] for e in lines] == ["alarm.raised", "alarm.escalated", "room.dnd"]
    assert lines[-1] == new.to_json()
    assert follower.err == []


async def test_events_follow_resumes_after_a_daemon_restart(served: Served) -> None:
    """The daemon stops and starts again: the follower says so, waits, then goes on after
    the last event it printed: the events of the restart are all shown, none twice."""
    floor = served.floor
    argv = ["--socket", str(served.path), "events", "-f", "--limit", "2", "--json"]
    async with floorctl_process(*argv) as follower:
        await until(lambda: follower.printed("door.opened"), timeout=20)
        served.task.cancel()  # the daemon stops
        await until(lambda: follower.said("the daemon went away"))
        # recorded by the daemon while it starts again, before the follower is back
        during = [floor.append("room.mur", "1202", {"on": i % 2 == 0}) for i in range(3)]
        async with serving(served.path, floor):
            await until(lambda: follower.said("the daemon is back"), timeout=10)
            await until(lambda: follower.printed(f'"seq": {during[-1].seq}'))
            after = floor.append("gateway.started", None, {"version": "x"})
            await until(lambda: follower.printed(f'"seq": {after.seq}'))
            assert await follower.interrupt() == EX_OK
    seqs = [json.loads(x)["seq"] for x in follower.out]
    assert seqs == [e.seq for e in floor.events_log[-6:]]  # the last 2, then 4 new: no gap
    assert len(set(seqs)) == len(seqs)  # and none twice
    assert "room" not in json.loads(follower.out[-1])  # a floor event, as on MQTT
    went, back = follower.err
    assert "the daemon went away" in went
    assert "Ctrl-C" in went
    assert f"following after seq {floor.events_log[-5].seq}" in back


async def test_events_follow_for_people(served: Served) -> None:
    argv = ["--socket", str(served.path), "events", "-f", "--limit", "1"]
    async with floorctl_process(*argv) as follower:
        await until(lambda: follower.printed("door.opened"), timeout=20)
        served.floor.append("door.closed", "1205", {})
        await until(lambda: follower.printed("door.closed"))
        assert await follower.interrupt() == EX_OK
    header, opened, closed = follower.out
    assert header.split() == ["Seq", "Time", "(UTC)", "Type", "Room", "Details"]
    assert "1205" in opened
    assert closed.split()[0] == str(served.floor.events_log[-1].seq)
    # the lines line up under the header
    assert header.index("Type") == opened.index("door.opened") == closed.index("door.closed")


async def test_follow_from_nothing_resumes_from_the_start_with_a_bounded_backoff(
    served: Served,
) -> None:
    """A follower that printed nothing yet (no event of its room) misses none of the
    events recorded while the daemon was away; its waits grow to the cap, and start
    over once the daemon is back."""
    floor = served.floor
    waits: list[float] = []
    down = threading.Event()  # set by the test once it saw the follower wait a while
    stop = threading.Event()
    seen: list[EventRow | Notice] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 5:
            down.set()
        if stop.wait(seconds):
            raise KeyboardInterrupt

    def consume() -> None:
        backoff = Backoff(initial_s=0.01, cap_s=0.04, jitter="none")
        stream = events_cli.follow(
            Client(served.path), None, "1206", 50, backoff=backoff, sleep=sleep
        )
        try:
            for item in stream:
                seen.append(item)
        except KeyboardInterrupt:
            return

    consumer = asyncio.ensure_future(asyncio.to_thread(consume))
    await until(lambda: served.server.connections)
    served.task.cancel()
    await until(down.is_set)
    first = floor.append("room.dnd", "1206", {"on": True})
    floor.append("room.dnd", "1205", {"on": True})
    async with serving(served.path, floor):
        second = floor.append("room.dnd", "1206", {"on": False})
        await until(lambda: [e for e in seen if isinstance(e, EventRow)] == [first, second])
        stop.set()  # the follower's next wait is its last
    await consumer
    assert waits[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert max(waits) == 0.04
    assert waits[-1] == 0.01  # back to the first wait once the daemon was back
    assert [type(i).__name__ for i in seen] == [
        "Notice",
        "Notice",
        "EventRow",
        "EventRow",
        "Notice",
    ]
    assert "following after the start" in str(seen[1])


def test_follow_with_no_daemon_exits_69(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", str(tmp_path / "x.sock"), "events", "-f"]) == EX_UNAVAILABLE
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the header
    assert "cannot be reached" in captured.err


# -- exit codes ---------------------------------------------------------------------------


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == EX_USAGE
    assert main([]) == EX_USAGE
    assert main(["alarms", "ack", "A1"]) == EX_USAGE  # --by is required
    assert main(["events", "--limit", "0"]) == EX_USAGE
    assert main(["events", "--since-seq", "x"]) == EX_USAGE
    assert "--help" in capsys.readouterr().err


def test_daemon_down_exits_69(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing.sock"
    assert main(["--socket", str(path), "status"]) == EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert f"cannot be reached at {path}" in err
    assert "is floorgated running?" in err


async def test_daemon_errors_exit_1(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert await floorctl(served, "room", "9999") == EX_ERROR
    assert "no room '9999' on this floor" in capsys.readouterr().err
    assert await floorctl(served, "alarms", "resolve", CALL_ALARM, "--by", "ana") == EX_ERROR
    assert "must be reset at the room" in capsys.readouterr().err
    assert await floorctl(served, "scan", "nope") == EX_ERROR
    assert "no bus 'nope'" in capsys.readouterr().err


def test_socket_file_mode_refusal_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(sock: socket.socket, path: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli_client, "_connect", refuse)
    assert main(["--socket", str(tmp_path / "x.sock"), "status"]) == EX_ERROR
    err = capsys.readouterr().err
    assert "permission denied" in err
    assert "usermod -aG floorgate" in err


def test_socket_found_from_floor_file(write_floor: Callable[..., Path], run_dir: Path) -> None:
    path = write_floor()
    env = {"FLOORGATE_RUN_DIR": str(run_dir)}
    assert find_socket(None, path, env) == SocketChoice(run_dir / "floorctl.sock", "--config", path)
    assert find_socket(Path("/x.sock"), path, env) == SocketChoice(Path("/x.sock"), "--socket")
    assert find_socket(None, None, {}) == SocketChoice(DEFAULT_SOCKET, "default")


def test_socket_found_without_reading_the_key(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    """A technician who may not read the command key still finds the socket, expanded."""
    path = write_floor()
    (run_dir / "command.key").unlink()
    assert find_socket(None, path).path == run_dir / "floorctl.sock"


def test_socket_found_from_the_environment(
    write_floor: Callable[..., Path], tmp_path: Path
) -> None:
    """FLOORGATE_CONFIG names a floor file when --config does not; its socket is expanded
    from the environment and taken from the file's directory, as the daemon does."""
    data = demo_floor_dict()
    data["gateway"]["socket"] = "${FG_TEST_SOCKET_DIR:-sockets}/ctl.sock"
    env_floor = write_floor(data, "env.toml")
    other = write_floor(name="other.toml")
    env = {"FLOORGATE_CONFIG": str(env_floor)}
    choice = find_socket(None, None, env)
    assert choice == SocketChoice(
        env_floor.parent / "sockets/ctl.sock", "FLOORGATE_CONFIG", env_floor
    )
    assert "(from FLOORGATE_CONFIG)" in choice.how
    assert find_socket(None, None, {**env, "FG_TEST_SOCKET_DIR": "/srv"}).path == Path(
        "/srv/ctl.sock"
    )
    assert find_socket(None, other, env).source == "--config"  # --config comes first
    assert find_socket(tmp_path / "s", None, env).source == "--socket"
    assert find_socket(None, None, {"FLOORGATE_CONFIG": ""}).source == "default"


def test_unreadable_floor_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("FLOORGATE_CONFIG", str(missing))
    assert main(["status"]) == EX_USAGE
    err = capsys.readouterr().err
    assert f"FLOORGATE_CONFIG={missing}" in err
    assert "cannot read" in err
    assert main(["--config", str(missing), "status"]) == EX_USAGE
    assert "the floor file of --config" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["default", "--config", "FLOORGATE_CONFIG", "--socket"])
def test_daemon_down_says_which_socket_and_why(
    source: str,
    write_floor: Callable[..., Path],
    run_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FLOORGATE_CONFIG", raising=False)
    floor = write_floor()
    socket_file = run_dir / "floorctl.sock"  # the demo floor's; nobody listens
    argv = ["status"]
    if source == "default":
        monkeypatch.setattr(discovery, "DEFAULT_SOCKET", socket_file)
    elif source == "--config":
        argv = ["--config", str(floor), *argv]
    elif source == "FLOORGATE_CONFIG":
        monkeypatch.setenv("FLOORGATE_CONFIG", str(floor))
    else:
        argv = ["--socket", str(socket_file), *argv]
    assert main(argv) == EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert f"cannot be reached at {socket_file}: No such file or directory" in err
    how = {
        "default": "the default: no --socket, no --config and FLOORGATE_CONFIG is not set",
        "--config": f"the [gateway] socket of {floor} (from --config)",
        "FLOORGATE_CONFIG": f"the [gateway] socket of {floor} (from FLOORGATE_CONFIG)",
        "--socket": "the one given with --socket",
    }[source]
    assert f"(that socket is {how})" in err
    assert "floorctl --config FLOOR.toml" in err
    assert "export FLOORGATE_CONFIG=FLOOR.toml" in err


@pytest.fixture
def raw_daemon(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]], list[bytes]]]:
    """A socket server sending the queued raw replies, one per connection; records requests."""
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(10)  # never leave the thread behind if the client does not connect
    requests: list[dict[str, Any]] = []
    replies: list[bytes] = []

    def serve() -> None:
        while True:  # one connection per queued reply
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            with conn:
                requests.append(json.loads(conn.makefile("rb").readline()))
                conn.sendall(replies.pop(0))
            if not replies:
                return

    t = threading.Thread(target=serve)
    t.start()
    yield path, requests, replies
    t.join(timeout=5)
    server.close()


def test_wire_format_of_a_request(
    raw_daemon: tuple[Path, list[dict[str, Any]], list[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``alarms ack`` lists the open alarms, then acknowledges the one the id names."""
    path, requests, replies = raw_daemon
    alarm = AlarmRow("A1", None, "technical", "callpanel_offline", "active", 0, "t")
    replies.append(
        json.dumps({"v": 1, "ok": True, "result": AlarmTable((alarm,)).to_json()}).encode() + b"\n"
    )
    replies.append(b'{"v":1,"ok":false,"error":{"code":"forbidden","message":"not in [admin]"}}\n')
    code = main(["--socket", str(path), "alarms", "ack", "A1", "--by", "ana", "--json"])
    assert code == EX_ERROR
    assert requests == [
        {"v": 1, "cmd": "alarms", "args": {}},
        {"v": 1, "cmd": "alarms.ack", "args": {"alarm_id": "A1", "by": "ana"}},
    ]
    assert "not in [admin]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (b"", EX_UNAVAILABLE, "closed the connection without answering"),
        (b"garbage\n", EX_ERROR, "not JSON"),
        (b'{"v":1,"ok":true,"result":{"gateway":"x"}}\n', EX_ERROR, "unreadable reply"),
    ],
)
def test_bad_replies(
    raw_daemon: tuple[Path, list[dict[str, Any]], list[bytes]],
    capsys: pytest.CaptureFixture[str],
    reply: bytes,
    code: int,
    message: str,
) -> None:
    path, _, replies = raw_daemon
    replies.append(reply)
    assert main(["--socket", str(path), "status"]) == code
    assert message in capsys.readouterr().err


# -- help and completion ------------------------------------------------------------------


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EX_OK
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "floorctl alarms ack" in text
    assert "exit codes:" in text
    for name in ("status", "floor", "rooms", "room", "devices", "alarms", "events", "outbox",
                 "energy", "locks", "audit", "scan", "completion"):  # fmt: skip
        assert main([name, "--help"]) == EX_OK
        assert name in capsys.readouterr().out
    assert main(["floor", "--help"]) == EX_OK
    assert "call acknowledged" in capsys.readouterr().out


def _complete(script: str, words: list[str], env: dict[str, str] | None = None) -> list[str]:
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        '_floorctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
        env=env,
    )
    return done.stdout.split()


@pytest.fixture
def bash_script() -> str:
    """floorctl's bash completion script."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    return completion_script("bash", build_parser())


def test_bash_completion_of_subcommands_and_options(
    bash_script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", "bash"]) == EX_OK
    assert capsys.readouterr().out == bash_script
    assert _complete(bash_script, ["floorctl", "''"]) == [
        "status", "health", "floor", "rooms", "room", "devices", "alarms", "events",
        "outbox", "energy", "locks", "lamps", "audit", "config", "scan", "completion", "--help",
        "--socket", "--config", "--json",
    ]  # fmt: skip
    assert _complete(bash_script, ["floorctl", "al"]) == ["alarms"]
    assert _complete(bash_script, ["floorctl", "alarms", "''"]) == [
        "ack",
        "resolve",
        "--help",
        "--json",
    ]
    assert _complete(bash_script, ["floorctl", "alarms", "ack", "A1", "--"]) == [
        "--by",
        "--help",
        "--json",
    ]
    assert _complete(bash_script, ["floorctl", "events", "--s"]) == ["--since-seq"]
    assert _complete(bash_script, ["floorctl", "completion", "b"]) == ["bash"]


async def test_bash_completion_asks_the_daemon_for_rooms_and_buses(
    served: Served, bash_script: str
) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    words = ["floorctl", "--socket", str(served.path), "room", "120"]
    rooms = await asyncio.to_thread(_complete, bash_script, words, env)
    assert rooms == ["1201", "1202", "1203", "1204", "1205", "1206"]
    words = ["floorctl", "--socket", str(served.path), "scan", "''"]
    assert await asyncio.to_thread(_complete, bash_script, words, env) == [
        "rs485-a",
        "lan",
        "panel",
    ]


def test_zsh_completion_wraps_the_bash_one() -> None:
    script = completion_script("zsh", build_parser())
    assert script.startswith("#compdef floorctl\n")
    assert "bashcompinit" in script
    assert "complete -F _floorctl floorctl" in script
