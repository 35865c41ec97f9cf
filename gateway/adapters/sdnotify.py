"""sd_notify(3) without libsystemd: datagrams to ``$NOTIFY_SOCKET``.

The protocol is one datagram of newline-separated ``KEY=VALUE`` assignments sent to an
AF_UNIX socket whose path is in ``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux
abstract namespace). The socket is non-blocking, so a notification never stalls the
event loop, and sending never raises: a lost notification is logged, not fatal.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

_log: structlog.typing.FilteringBoundLogger = structlog.get_logger()


class Notifier:
    """Sends READY/RELOADING/STOPPING/WATCHDOG/STATUS to systemd; a no-op without systemd."""

    def __init__(
        self, notify_socket: str | None = None, *, watchdog_usec: int | None = None
    ) -> None:
        """Use ``notify_socket`` (``$NOTIFY_SOCKET`` syntax); ``watchdog_usec`` enables pings."""
        self._address = _parse_address(notify_socket) if notify_socket else None
        self._label = notify_socket or ""
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._closed = False
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (default: os.environ)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere (NOTIFY_SOCKET was usable and not closed)."""
        return self._address is not None and not self._closed

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if no watchdog."""
        if self._watchdog_usec is None or self._address is None:
            return None
        return self._watchdog_usec / 2 / 1e6

    def notify(self, *lines: str) -> None:
        """Send ``lines`` as one datagram; never raises, never blocks."""
        if self._address is None or self._closed or not lines:
            return
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            log = _log.debug if self._failing else _log.warning
            log("sd_notify_failed", socket=self._label, error=repr(exc), lines=list(lines))
            self._failing = True
        else:
            self._failing = False

    def ready(self, status: str | None = None) -> None:
        """Send READY=1 (startup finished), with STATUS= when given."""
        self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> None:
        """Send STOPPING=1 (shutdown began), with STATUS= when given."""
        self.notify("STOPPING=1", *_status(status))

    def reloading(self, status: str | None = None) -> None:
        """Send RELOADING=1 (the service restarts itself in place; READY=1 follows)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def watchdog(self) -> None:
        """Send WATCHDOG=1; the supervisor calls it only when ``watchdog_interval`` is set."""
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Send STATUS=text (shown by systemctl status)."""
        self.notify(*_status(text))

    def close(self) -> None:
        """Close the socket; later notifications are dropped. Idempotent."""
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would start a new assignment in the datagram (e.g. a forged READY=1).
    return ("STATUS=" + " ".join(text.splitlines()),)


def _parse_address(value: str) -> str | None:
    """Map ``$NOTIFY_SOCKET`` to a socket address; None (logged) when unsupported."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd also knows vsock: addresses (VMs); floorgate runs on bare metal.
    _log.warning("sd_notify_unsupported_socket", socket=value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if it is meant for this process, else None."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    try:
        usec = int(raw)
        if pid and int(pid) != os.getpid():
            # The watchdog belongs to another process (e.g. we were forked by the service).
            return None
    except ValueError:
        _log.warning("sd_watchdog_env_invalid", watchdog_usec=raw, watchdog_pid=pid)
        return None
    return usec if usec > 0 else None
