"""Modbus for the simulator: PDU handling (FC 1,2,3,4,5,6,15,16), RTU framing, TCP server.

Why our own framing and not pymodbus's server: the faults need byte-level control that
pymodbus's server keeps to itself. A device must be *silent* for unknown unit ids and
under the ``silent`` fault (pymodbus answers exception 04 with a traceback, and only a
``trace_packet`` hook can drop a reply), must send a *bad CRC* on demand, must be
*paced on the wire* by a relay that knows each frame's length (LIBRARY-NOTES: sleeping
inside a pymodbus device overshoots 2-3 ms per exchange), and must answer exactly
exception 02/03 from the profile's map. The protocol part is small (this module), and
the gateway's pymodbus *client* is what it is tested against, so interoperability is
proven by every test.

``ModbusBus`` is one bus's devices plus its faults: ``answer(unit, pdu)`` returns what
goes back (or None for no answer). ``wire.RtuLine`` carries it over a pty with RTU
frames and real timing; ``TcpServer`` over Modbus TCP (MBAP), unpaced.

Modbus TCP and unknown unit ids: the server answers exception 0x0B (gateway target
device failed to respond), as a TCP-to-RTU gateway does, so a scan is fast; a unit that
exists but is ``silent`` does not answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

import structlog

from drivers.profile import MAX_READ_BITS, MAX_READ_REGISTERS, Table
from floorsim.devices import SimDevice
from floorsim.faults import FaultBook
from floorsim.journal import Journal
from floorsim.regmap import (
    DEVICE_FAILURE,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    ModbusError,
)

__all__ = [
    "GATEWAY_TARGET_FAILED",
    "Answer",
    "ModbusBus",
    "TcpServer",
    "crc16",
    "handle_pdu",
    "request_length",
    "rtu_frame",
]

log = structlog.get_logger("floorsim.modbus")

GATEWAY_TARGET_FAILED = 0x0B
# Modbus application protocol: quantity limits of the write functions.
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968
_READ_TABLES = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes, *, corrupt: bool = False) -> bytes:
    """An RTU frame: unit, PDU, CRC (inverted when ``corrupt``)."""
    body = bytes([unit]) + pdu
    crc = crc16(body) ^ (0xFFFF if corrupt else 0)
    return body + struct.pack("<H", crc)


def request_length(buf: bytes | bytearray) -> int | None:
    """Total length of the RTU *request* starting buf, if its function code tells it.

    None when more bytes are needed to know, or for a function code whose request
    length we do not know (the frame then ends at the line's 3.5-character silence).
    """
    if len(buf) < 2:
        return None
    fc = buf[1]
    if 1 <= fc <= 6:
        return 8
    if fc in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else None
    return None


def handle_pdu(device: SimDevice, pdu: bytes) -> bytes:
    """The device's response PDU to a request PDU (an exception response if refused)."""
    fc = pdu[0] if pdu else 0
    try:
        return _dispatch(device, fc, pdu)
    except ModbusError as exc:
        log.debug("modbus_exception", device=device.name, fc=fc, code=exc.code, reason=str(exc))
        return bytes([fc | 0x80, exc.code])


@dataclass(frozen=True, slots=True)
class Answer:
    """What a bus sends back for one request."""

    pdu: bytes
    delay_s: float = 0.0
    corrupt: bool = False


@dataclass
class ModbusBus:
    """A bus's devices by unit id, with the faults that shape their answers."""

    name: str
    devices: dict[int, SimDevice]
    faults: FaultBook
    journal: Journal
    tcp: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def answer(self, unit: int, pdu: bytes) -> Answer | None:
        """Serve one request; None when nothing goes back on the line."""
        self._count("requests")
        if unit == 0:  # broadcast: every device acts on a write, none answers
            if pdu[:1] in (b"\x05", b"\x06", b"\x0f", b"\x10"):
                for unit_id, dev in self.devices.items():
                    if not self.faults.answering(self.name, unit_id).silent:
                        handle_pdu(dev, pdu)
            self._count("broadcasts")
            return None
        device = self.devices.get(unit)
        if device is None:
            self._count("unknown_unit")
            return (
                Answer(bytes([(pdu[:1] or b"\0")[0] | 0x80, GATEWAY_TARGET_FAILED]))
                if (self.tcp)
                else None
            )
        how = self.faults.answering(self.name, unit)
        if how.silent:
            self._count("silenced")
            return None
        own = self.faults.devices.get((self.name, unit))
        refuse, stuck = (None, None) if own is None else (own.refuse, own.stuck)
        if how.exception is not None or _covers(pdu, refuse, reads=True):
            code = how.exception if how.exception is not None else ILLEGAL_DATA_ADDRESS
            reply = bytes([(pdu[:1] or b"\0")[0] | 0x80, code])
        elif _covers(pdu, stuck, reads=False):
            reply = _stuck_write(device, pdu, stuck)
        else:
            try:
                reply = handle_pdu(device, pdu)
            except Exception:  # a simulator bug: answer as a failing device would, keep the bus
                log.exception("device_failed", bus=self.name, unit=unit, pdu=pdu.hex())
                reply = bytes([(pdu[:1] or b"\0")[0] | 0x80, DEVICE_FAILURE])
        if how.corrupt:
            self._count("corrupted")
        self._count("answered")
        return Answer(reply, delay_s=how.delay_s, corrupt=how.corrupt)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1


class TcpServer:
    """Modbus TCP (MBAP) for one bus; concurrent connections, requests in order per connection."""

    def __init__(self, bus: ModbusBus, host: str, port: int) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) (the real port when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> None:
        """Listen; OSError (e.g. address in use) propagates."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("tcp_listening", bus=self.bus.name, address=f"{self.address[0]}:{self.address[1]}")

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", header)
                if length < 2 or length > 254:
                    break  # not Modbus TCP: drop the connection
                pdu = await reader.readexactly(length - 1)
                if pid != 0:
                    continue
                answer = self.bus.answer(unit, pdu)
                if answer is None:
                    continue
                if answer.delay_s:
                    await asyncio.sleep(answer.delay_s)
                if answer.corrupt:
                    tid ^= 0x5A5A  # no CRC on TCP: a reply the master cannot match
                writer.write(struct.pack(">HHHB", tid, 0, len(answer.pdu) + 1, unit) + answer.pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


def _dispatch(device: SimDevice, fc: int, pdu: bytes) -> bytes:
    if fc in _READ_TABLES:
        address, count = _fields(pdu, 5)
        bits = fc in (1, 2)
        limit = MAX_READ_BITS if bits else MAX_READ_REGISTERS
        # devices.md: "Max 32 registers or 64 bits per read request."
        if not 1 <= count <= limit:
            raise ModbusError(ILLEGAL_DATA_VALUE, f"quantity {count} outside 1..{limit}")
        values = device.read(_READ_TABLES[fc], address, count)
        data = _pack_bits(values) if bits else b"".join(struct.pack(">H", v) for v in values)
        return bytes([fc, len(data)]) + data
    if fc == 5:
        address, value = _fields(pdu, 5)
        if value not in (0x0000, 0xFF00):
            raise ModbusError(ILLEGAL_DATA_VALUE, f"coil value {value:#06x}")
        device.write(Table.COIL, address, [1 if value else 0], multiple=False)
        return pdu[:5]
    if fc == 6:
        address, value = _fields(pdu, 5)
        device.write(Table.HOLDING, address, [value], multiple=False)
        return pdu[:5]
    if fc in (15, 16):
        if len(pdu) < 6:
            raise ModbusError(ILLEGAL_DATA_VALUE, "short request")
        address, count = struct.unpack(">HH", pdu[1:5])
        nbytes = pdu[5]
        limit, want = (
            (MAX_WRITE_BITS, (count + 7) // 8) if fc == 15 else (MAX_WRITE_REGISTERS, 2 * count)
        )
        if not 1 <= count <= limit or nbytes != want or len(pdu) != 6 + nbytes:
            raise ModbusError(ILLEGAL_DATA_VALUE, f"quantity {count} / byte count {nbytes}")
        data = pdu[6:]
        if fc == 15:
            device.write(Table.COIL, address, _unpack_bits(data, count), multiple=True)
        else:
            regs = list(struct.unpack(f">{count}H", data))
            device.write(Table.HOLDING, address, regs, multiple=True)
        return pdu[:5]
    raise ModbusError(ILLEGAL_FUNCTION, f"function code {fc}")


def _covers(pdu: bytes, address: int | None, *, reads: bool) -> bool:
    """Whether a read (``reads``) or a coil write request covers ``address``."""
    if address is None or len(pdu) < 5:
        return False
    fc = pdu[0]
    start, count = (int(v) for v in struct.unpack(">HH", pdu[1:5]))
    if reads and fc in _READ_TABLES:
        return start <= address < start + count
    if not reads and fc == 5:
        return start == address
    if not reads and fc == 15:
        return start <= address < start + count
    return False


def _stuck_write(device: SimDevice, pdu: bytes, address: int | None) -> bytes:
    """A coil write acknowledged, made except for the stuck coil (which keeps its value)."""
    if pdu[0] == 15 and address is not None:
        start, count = struct.unpack(">HH", pdu[1:5])
        values = _unpack_bits(pdu[6:], count)
        values[address - start] = device.read(Table.COIL, address, 1)[0]
        device.write(Table.COIL, start, values, multiple=True)
    return pdu[:5]


def _fields(pdu: bytes, length: int) -> tuple[int, int]:
    if len(pdu) != length:
        raise ModbusError(ILLEGAL_DATA_VALUE, f"request PDU of {len(pdu)} bytes")
    a, b = struct.unpack(">HH", pdu[1:5])
    return a, b


def _pack_bits(values: list[int]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
