"""Helpers shared by the floorsim tests (and unit tests of the journal, clock and faults)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from floorsim.callpanel import checksum
from floorsim.faults import FaultBook
from floorsim.journal import Journal, SimClock
from floorsim.sim import FloorSim
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor


def free_port() -> int:
    """A TCP port nobody listens on right now (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(path: Path) -> FloorConfig:
    """Load a floor file that must be valid."""
    config, _ = load_floor(path)
    return config


@contextlib.asynccontextmanager
async def running(config: FloorConfig, **kwargs: Any) -> AsyncIterator[FloorSim]:
    """A started FloorSim (TCP buses on free ports), stopped on exit."""
    kwargs.setdefault("tcp_ports", {b.name: 0 for b in config.buses if b.kind == "modbus-tcp"})
    async with FloorSim(config, **kwargs) as sim:
        yield sim


@contextlib.asynccontextmanager
async def rtu_client(
    port: Path, *, baud: int = 19200, parity: str = "N", timeout: float = 1.0
) -> AsyncIterator[AsyncModbusSerialClient]:
    """A connected pymodbus RTU client on a pty link: no retries, short timeout."""
    client = AsyncModbusSerialClient(
        str(port), baudrate=baud, parity=parity, timeout=timeout, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def tcp_client(
    address: tuple[str, int], *, timeout: float = 1.0
) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected pymodbus TCP client: no retries, short timeout."""
    client = AsyncModbusTcpClient(
        address[0], port=address[1], timeout=timeout, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


class LineReader:
    """A plain serial reader/writer on a pty link (the panel side of the gateway)."""

    def __init__(self, port: Path, baud: int = 9600) -> None:
        self.port = serial.Serial(str(port), baudrate=baud, timeout=0)
        self.port.reset_input_buffer()
        self.lines: list[tuple[float, bytes]] = []
        self._buf = b""
        asyncio.get_running_loop().add_reader(self.port.fileno(), self._readable)

    def _readable(self) -> None:
        self._buf += self.port.read(4096)
        while b"\n" in self._buf:
            line, _, self._buf = self._buf.partition(b"\n")
            self.lines.append((time.monotonic(), line + b"\n"))

    def bodies(self, prefix: str = "") -> list[str]:
        """Bodies of the valid frames received (checksum checked here, independently)."""
        out = []
        for _, line in self.lines:
            text = line.rstrip(b"\r\n")
            if text[:1] != b"$" or b"*" not in text:
                continue
            body, _, cs = text[1:].rpartition(b"*")
            if cs == checksum(body).encode() and body.decode("latin-1").startswith(prefix):
                out.append(body.decode())
        return out

    def send(self, body: str, cs: str | None = None) -> None:
        """Send ``$BODY*CS\\r\\n`` to the panel."""
        raw = body.encode()
        self.port.write(b"$" + raw + b"*" + (cs or checksum(raw)).encode() + b"\r\n")

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.port.fileno())
        self.port.close()


# -- unit tests of the small pieces ---------------------------------------------------------


def test_journal_query_filters_and_bounds() -> None:
    j = Journal(maxlen=3)
    for i in range(5):
        j.record("press" if i % 2 else "token", f"dev{i}", room=str(i))
    assert [e.seq for e in j.query()] == [3, 4, 5]
    assert [e.seq for e in j.query(kind="press")] == [4]
    assert [e.seq for e in j.query(since_seq=3, room="4")] == [5]
    assert j.last_seq == 5
    assert set(j.query()[0].as_dict()) == {
        "seq",
        "ts",
        "mono_ns",
        "kind",
        "target",
        "room",
        "detail",
    }


def test_sim_clock_scales_and_rescales() -> None:
    clock = SimClock(1000.0)
    # Device time read outside the real interval on both sides: a preemption between two
    # clock reads cannot make the measured interval the longer one.
    t0 = clock.now()
    r0 = time.monotonic()
    while time.monotonic() - r0 < 0.005:  # let some real time pass (measured, not slept)
        pass
    real = time.monotonic() - r0
    assert clock.now() - t0 >= 1000.0 * real * 0.99
    clock.time_scale = 1.0
    assert clock.now() >= t0 + 5.0
    assert clock.real_seconds(5.0) == 5.0
    with pytest.raises(ValueError):
        clock.time_scale = 0


def test_faults_combine_bus_and_device() -> None:
    book = FaultBook()
    book.set_modbus("a", None, "slow", 10)
    book.set_modbus("a", 3, "slow", 5)
    book.set_modbus("a", 3, "corrupt", 1)
    book.set_modbus("a", None, "corrupt", 1)
    first = book.answering("a", 3)
    assert (first.delay_s, first.corrupt) == (0.015, True)
    assert book.answering("a", 3).corrupt is True  # the bus's count, once the device's is used
    assert book.answering("a", 3).corrupt is False
    book.set_modbus("a", None, "exception", 6)
    book.set_modbus("a", 3, "exception", 4)
    assert book.answering("a", 3).exception == 4
    assert book.answering("a", 4).exception == 6
    book.set_modbus("a", None, "silent", True)
    assert book.answering("a", 4).silent
    book.clear_modbus("a", None)
    assert book.snapshot() == {"a:3": {"slow": 5, "exception": 4}}
    with pytest.raises(ValueError, match="unknown fault"):
        book.set_modbus("a", 1, "smoke", 1)
    with pytest.raises(ValueError, match="outside"):
        book.set_modbus("a", 1, "exception", 0)
