"""floorctl's client side: socket discovery and the exit codes of operations.md."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import DEFAULT_SOCKET, EX_ERROR, EX_UNAVAILABLE, EX_USAGE, main, socket_path


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == EX_USAGE
    assert main([]) == EX_USAGE
    assert main(["alarms", "ack", "A1"]) == EX_USAGE  # --by is required


def test_daemon_down_exits_69(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing.sock"
    assert main(["--socket", str(path), "status"]) == EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert f"cannot be reached at {path}" in err
    assert "is floorgated running?" in err


def test_socket_found_from_floor_file(write_floor: Callable[..., Path], run_dir: Path) -> None:
    assert socket_path(None, write_floor()) == run_dir / "floorctl.sock"
    assert socket_path(Path("/x.sock"), write_floor()) == Path("/x.sock")
    assert socket_path(None, None) == DEFAULT_SOCKET


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]], list[Any]]]:
    """A one-shot socket server answering with a queued reply; records requests."""
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(10)  # never leave the thread behind if the client does not connect
    requests: list[dict[str, Any]] = []
    replies: list[Any] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return
        with conn:
            requests.append(json.loads(conn.makefile("rb").readline()))
            conn.sendall(json.dumps(replies.pop(0)).encode() + b"\n")

    t = threading.Thread(target=serve)
    t.start()
    yield path, requests, replies
    t.join(timeout=5)
    server.close()


def test_request_and_error_reply(
    fake_daemon: tuple[Path, list[dict[str, Any]], list[Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, requests, replies = fake_daemon
    replies.append(
        {"ok": False, "error": {"code": "forbidden", "message": "not in floorgate-admin"}}
    )
    code = main(["--socket", str(path), "alarms", "ack", "A1", "--by", "ana", "--json"])
    assert code == EX_ERROR
    assert requests == [
        {"v": 1, "cmd": "alarms", "args": {"action": "ack", "alarm_id": "A1", "by": "ana"}}
    ]
    assert "not in floorgate-admin" in capsys.readouterr().err


def test_socket_found_without_reading_the_key(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    """A technician who may not read the command key still finds the socket, expanded."""
    path = write_floor()
    (run_dir / "command.key").unlink()
    assert socket_path(None, path) == run_dir / "floorctl.sock"
