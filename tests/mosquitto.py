"""A real Mosquitto for tests, and a subscriber that records what the broker delivers.

``mosquitto`` (fixture) starts mosquitto on three free loopback ports: anonymous
(``port``), username + password (``auth_port``) and TLS with a client certificate and
password (``tls_port``). Certificates (an EC CA, a server certificate for 127.0.0.1 and a
client certificate) are made once per session with the ``openssl`` CLI. Persistence is
on, so ``stop()``/``start()`` keeps sessions and retained messages like a real restart.

LIBRARY-NOTES.md traps: started as root, mosquitto switches to its own user and cannot
read root-only files, hence ``user root``; a missing client certificate shows up only as
a timeout. ``set_tcp_nodelay true``, as a deployment should set it: with Nagle on, a
command's round trip took 44 ms instead of 2-3 ms here (bench/mqtt.py).

Options for the MQTT 5 tests: ``acl`` (an ACL file for the password listener, reloaded by
``reload()`` = SIGHUP), ``persistence`` off (a restart loses sessions and retained
messages), ``max_inflight`` (Mosquitto's ``max_inflight_messages``: the Receive Maximum it
announces in CONNACK). ``pause()``/``resume()`` send SIGSTOP/SIGCONT to this broker's own
process only (a hung broker: TCP open, nothing answered).

``Collector`` subscribes (persistent session, reconnecting) and keeps every message;
``Collector.unique`` counts each event once, as the central system must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """Generate the certificates with the openssl CLI (EC P-256: quick)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=floorgate test CA")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=floorgate test {name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext)  # fmt: skip
    d = directory
    return Certs(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on the loopback interface right now.

    Bound all at once: one at a time, the kernel may hand out the same port again.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class Mosquitto:
    """One mosquitto process with its listeners; start/stop/kill it by its own PID."""

    directory: Path
    certs: Certs
    port: int = 0  # 0: three distinct free ports are picked
    auth_port: int = 0
    tls_port: int = 0
    username: str = "floor"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    host: str = HOST
    acl: str | None = None
    persistence: bool = True
    max_inflight: int | None = None
    process: subprocess.Popen[bytes] | None = None
    _started: bool = False

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.port and self.auth_port and self.tls_port):
            self.port, self.auth_port, self.tls_port = free_ports(3)
        passwd = self.directory / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )
        self.password_file.write_text(self.password + "\n")
        self._write_config()

    def _write_config(self) -> None:
        passwd = self.directory / "passwd"
        acl_line = ""
        if self.acl is not None:
            self.set_acl(self.acl)
            acl_line = f"acl_file {self.acl_file}\n"
        inflight = (
            "" if self.max_inflight is None else f"max_inflight_messages {self.max_inflight}\n"
        )
        c = self.certs
        self.config.write_text(
            f"""per_listener_settings true
user root
{inflight}persistence {"true" if self.persistence else "false"}
persistence_location {self.directory}/
autosave_interval 3600
max_queued_messages 100000
set_tcp_nodelay true
log_dest file {self.log}
log_type error
log_type warning
log_type notice
log_type information
listener {self.port} {HOST}
allow_anonymous true
listener {self.auth_port} {HOST}
allow_anonymous false
password_file {passwd}
{acl_line}listener {self.tls_port} {HOST}
allow_anonymous false
password_file {passwd}
cafile {c.ca}
certfile {c.server_cert}
keyfile {c.server_key}
require_certificate true
"""
        )

    @property
    def config(self) -> Path:
        """The mosquitto.conf written for it."""
        return self.directory / "mosquitto.conf"

    @property
    def acl_file(self) -> Path:
        """The ACL file of the password listener (when ``acl`` was given)."""
        return self.directory / "acl"

    def set_acl(self, text: str) -> None:
        """Write the ACL file (``reload()`` makes a running broker read it)."""
        self.acl_file.write_text(text)

    def reload(self) -> None:
        """SIGHUP: the broker reads its ACL and password files again."""
        self._signal(signal.SIGHUP)

    def pause(self) -> None:
        """SIGSTOP: the process stops; its TCP connections stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None, "not started"
        assert self.running, "not running"
        os.kill(self.process.pid, sig)

    @property
    def log(self) -> Path:
        """Mosquitto's log file."""
        return self.directory / "mosquitto.log"

    @property
    def password_file(self) -> Path:
        """The client-side password file (the password as text), for [mqtt] password_file."""
        return self.directory / "client.password"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start mosquitto and return once all three listeners accept connections.

        The first start moves to other free ports if one was taken meanwhile (by another
        process, between free_ports() and the bind); a restart keeps its ports.
        """
        assert not self.running, "already running"
        first = not self._started
        self._started = True
        for attempt in range(3):
            try:
                self._start()
                return
            except RuntimeError as exc:
                if not first or "Address already in use" not in str(exc) or attempt == 2:
                    raise
            self._close()
            self.port, self.auth_port, self.tls_port = free_ports(3)
            self._write_config()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in (self.port, self.auth_port, self.tls_port):
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"mosquitto exited: {err}\n{self._log_tail()}")
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(f"mosquitto not listening on {port}") from None
                    time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait for the exit."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL, no saving (a paused broker is killed too)."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def mqtt_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Certificates for the TLS listener, made once per test session."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(
    tmp_path: Path, mqtt_certs: Certs, request: pytest.FixtureRequest
) -> Iterator[Mosquitto]:
    """A running Mosquitto of this test's own; killed (by PID) at the end. Options (acl,
    persistence, max_inflight) by ``@pytest.mark.parametrize("mosquitto", [{...}],
    indirect=True)``."""
    options: dict[str, Any] = getattr(request, "param", {})
    broker = Mosquitto(tmp_path / "mosquitto", mqtt_certs, **options)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class Collector:
    """Subscribes to ``topic`` with a persistent session and records every message.

    Reconnects while the broker is away, so messages queued for its session meanwhile
    arrive when both are back.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topic: str,
        *,
        identifier: str = "test-collector",
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
    ):
        self.broker = broker
        self.topic = topic
        self.identifier = identifier
        self.protocol = protocol
        self.messages: list[aiomqtt.Message] = []
        self.connected = asyncio.Event()
        self.connects = 0

    def payloads(self, topic: str) -> list[bytes]:
        """Payloads received on exactly ``topic``, in arrival order."""
        return [bytes(m.payload) for m in self.messages if m.topic.value == topic]  # type: ignore[arg-type]

    def unique(self, topic: str) -> list[dict[str, Any]]:
        """JSON documents received on ``topic``, each ``id`` once, in order of first arrival.

        Events are delivered at least once (mqtt-api.md): after a broken link, a restart or
        a kill -9, one may arrive again with the same ``id`` and ``seq``, and the central
        system drops the repeat by ``id``. Count events with this, never by arrival.
        """
        seen: dict[str, dict[str, Any]] = {}
        for payload in self.payloads(topic):
            doc = json.loads(payload)
            seen.setdefault(doc["id"], doc)
        return list(seen.values())

    async def run(self) -> None:
        """Collect until cancelled."""
        while True:
            try:
                v5 = self.protocol == aiomqtt.ProtocolVersion.V5
                async with aiomqtt.Client(
                    HOST,
                    self.broker.port,
                    identifier=self.identifier,
                    protocol=self.protocol,
                    clean_session=None if v5 else False,
                    clean_start=False if v5 else 3,  # 3: MQTT_CLEAN_START_FIRST_ONLY
                    properties=_session_expiry() if v5 else None,
                    timeout=2,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connects += 1
                    self.connected.set()
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.02)


def _session_expiry() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


@contextlib.asynccontextmanager
async def collecting(
    broker: Mosquitto,
    topic: str,
    *,
    identifier: str = "test-collector",
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
) -> AsyncIterator[Collector]:
    """Run a Collector on ``topic`` for the duration of the block (connected on entry)."""
    collector = Collector(broker, topic, identifier=identifier, protocol=protocol)
    task = asyncio.create_task(collector.run(), name=f"collector[{identifier}]")
    try:
        async with asyncio.timeout(20):
            await collector.connected.wait()
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_retained(broker: Mosquitto, topic: str) -> bytes | None:
    """The retained payload on ``topic`` now (None if none), without waiting on a clock.

    The broker sends retained messages right after a subscription, so a marker published
    after subscribing arrives behind them: everything before the marker is the answer.
    """
    marker = f"test-marker/{secrets.token_hex(4)}"
    found: bytes | None = None
    async with aiomqtt.Client(HOST, broker.port, timeout=5) as client:
        await client.subscribe([(topic, 1), (marker, 1)])
        await client.publish(marker, b"end", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                if message.topic.value == marker:
                    return found
                if message.retain:
                    found = bytes(message.payload)  # type: ignore[arg-type]
    return found
