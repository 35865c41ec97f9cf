"""floorctl against a control server over the fake demo floor: every subcommand, both
renderings, exit codes, the floor map at 80 columns, streaming, help and completion.

floorctl is synchronous: it runs in a worker thread (asyncio.to_thread) while the server
runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console

from gateway.adapters.schema import StoredEvent
from gateway.cli import main as cli
from gateway.cli import render
from gateway.cli.completion import completion_script
from gateway.cli.main import (
    DEFAULT_SOCKET,
    EX_ERROR,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    Client,
    build_parser,
    main,
    socket_path,
)
from gateway.model.views import EventRow, RoomRow, ScanProgress, Status
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
    (["floor"], ["1201", "1206", "call active", "device offline"]),
    (["rooms"], ["R-88231", "DND", "acknowledged", "lock"]),
    (["room", "1203"], ["R-88240", "1203/rio", "alarm.raised", CALL_ALARM]),
    (["devices"], ["1204/lock", "OFFLINE", "14 timeout", "fg-floorpanel-1"]),
    (["alarms"], [CALL_ALARM, BED_ALARM, "active", "ana"]),
    (["alarms", "ack", CALL_ALARM, "--by", "bo"], ["acknowledged by bo"]),
    (["alarms", "resolve", BED_ALARM, "--by", "cy"], ["resolved by cy"]),
    (["events"], ["gateway.started", "alarm.escalated", "call bath, level 1", "(alarm a1203bat…)"]),
    (["outbox"], ["Waiting", "3", "Refused by the broker", "2"]),
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
        "1202": ".  M",  # vacant, make up room
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


class _Output:
    """What floorctl printed so far, read without disturbing the thread printing it."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""
        self.err = ""

    def __call__(self) -> str:
        captured = self.capsys.readouterr()
        self.text += captured.out
        self.err += captured.err
        return self.text


async def test_events_follow_sees_new_events(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _Output(capsys)
    argv = ["--socket", str(served.path), "events", "--follow", "--room", "1203", "--json"]
    follower = asyncio.ensure_future(asyncio.to_thread(main, argv))
    await until(lambda: "alarm.escalated" in output())
    new = served.floor.append("room.dnd", "1203", {"on": True})
    served.floor.append("room.dnd", "1201", {"on": False})  # another room: not shown
    await until(lambda: f'"seq": {new.seq}' in output())
    served.task.cancel()  # the daemon stops: the stream ends
    assert await follower == EX_UNAVAILABLE
    lines = [json.loads(x) for x in output().splitlines()]
    assert [e["type"] for e in lines] == ["alarm.raised", "alarm.escalated", "room.dnd"]
    assert lines[-1] == new.to_json()
    output()
    assert "the event stream ended" in output.err


async def test_events_follow_for_people(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    output = _Output(capsys)
    argv = ["--socket", str(served.path), "events", "-f", "--limit", "1"]
    follower = asyncio.ensure_future(asyncio.to_thread(main, argv))
    await until(lambda: "door.opened" in output())
    served.floor.append("door.closed", "1205", {})
    await until(lambda: "door.closed" in output())
    served.task.cancel()
    assert await follower == EX_UNAVAILABLE
    (opened, closed) = output().splitlines()
    assert "1205" in opened
    assert closed.split()[0] == str(served.floor.events_log[-1].seq)


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

    monkeypatch.setattr(cli, "_connect", refuse)
    assert main(["--socket", str(tmp_path / "x.sock"), "status"]) == EX_ERROR
    err = capsys.readouterr().err
    assert "permission denied" in err
    assert "usermod -aG floorgate" in err


def test_socket_found_from_floor_file(write_floor: Callable[..., Path], run_dir: Path) -> None:
    assert socket_path(None, write_floor()) == run_dir / "floorctl.sock"
    assert socket_path(Path("/x.sock"), write_floor()) == Path("/x.sock")
    assert socket_path(None, None) == DEFAULT_SOCKET


def test_socket_found_without_reading_the_key(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    """A technician who may not read the command key still finds the socket, expanded."""
    path = write_floor()
    (run_dir / "command.key").unlink()
    assert socket_path(None, path) == run_dir / "floorctl.sock"


@pytest.fixture
def raw_daemon(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]], list[bytes]]]:
    """A one-shot socket server sending queued raw bytes; records the request."""
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(10)  # never leave the thread behind if the client does not connect
    requests: list[dict[str, Any]] = []
    replies: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return
        with conn:
            requests.append(json.loads(conn.makefile("rb").readline()))
            conn.sendall(replies.pop(0))

    t = threading.Thread(target=serve)
    t.start()
    yield path, requests, replies
    t.join(timeout=5)
    server.close()


def test_wire_format_of_a_request(
    raw_daemon: tuple[Path, list[dict[str, Any]], list[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, requests, replies = raw_daemon
    replies.append(b'{"v":1,"ok":false,"error":{"code":"forbidden","message":"not in [admin]"}}\n')
    code = main(["--socket", str(path), "alarms", "ack", "A1", "--by", "ana", "--json"])
    assert code == EX_ERROR
    assert requests == [{"v": 1, "cmd": "alarms.ack", "args": {"alarm_id": "A1", "by": "ana"}}]
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
                 "scan", "completion"):  # fmt: skip
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
        "status", "floor", "rooms", "room", "devices", "alarms", "events", "outbox", "scan",
        "completion", "--help", "--socket", "--config", "--json",
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
