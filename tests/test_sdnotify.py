"""sd_notify over a real datagram socket bound by the test (no systemd needed)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.adapters.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound SOCK_DGRAM socket and its NOTIFY_SOCKET value; recv waits at most 2 s."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


@pytest.fixture
def path_env(tmp_path: Path) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(tmp_path / "notify")}


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_stopping_watchdog_and_status_arrive(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert notifier.enabled

    notifier.ready()
    assert recv(sock) == "READY=1"
    notifier.ready(status="polling 3 buses")
    assert recv(sock) == "READY=1\nSTATUS=polling 3 buses"
    notifier.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    notifier.status("degraded")
    assert recv(sock) == "STATUS=degraded"
    notifier.stopping(status="SIGTERM")
    assert recv(sock) == "STOPPING=1\nSTATUS=SIGTERM"
    notifier.notify("A=1", "B=2")
    assert recv(sock) == "A=1\nB=2"
    notifier.close()
    notifier.close()
    assert not notifier.enabled


def test_status_newlines_cannot_forge_assignments(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier(path).status("broken\nREADY=1")
    assert recv(sock) == "STATUS=broken READY=1"


def test_abstract_namespace_socket() -> None:
    name = f"floorgate-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert recv(sock) == "READY=1"
        notifier.close()


def test_socket_is_nonblocking_and_cloexec(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    notifier = Notifier(path)
    notifier.watchdog()
    assert notifier._sock is not None
    assert notifier._sock.getblocking() is False
    assert notifier._sock.get_inheritable() is False
    notifier.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(
    path_env: dict[str, str], env: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier.from_env(path_env | env)
    assert notifier.watchdog_interval == interval


def test_unset_notify_socket_is_a_noop() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()


def test_unsupported_socket_address_disables() -> None:
    with structlog.testing.capture_logs() as logs:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [e["event"] for e in logs] == ["sd_notify_unsupported_socket"]


def test_send_failure_never_raises_and_logs_first_at_warning(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
        notifier.watchdog()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("sd_notify_failed", "warning"),
        ("sd_notify_failed", "debug"),
        ("sd_notify_failed", "debug"),
    ]
    notifier.close()


def test_failure_episode_resets_after_success(tmp_path: Path) -> None:
    path = str(tmp_path / "later")
    notifier = Notifier(path)
    with structlog.testing.capture_logs() as logs:
        notifier.watchdog()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(2)
            notifier.watchdog()
            assert recv(sock) == "WATCHDOG=1"
        os.unlink(path)
        notifier.watchdog()
    assert [e["log_level"] for e in logs] == ["warning", "warning"]
    notifier.close()
