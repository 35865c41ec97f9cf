"""Modbus RTU and TCP transports over pymodbus — the only module that imports pymodbus.

TCP uses pymodbus' client (LIBRARY-NOTES.md, and pymodbus 3.16's transaction.py):
- one client serves one request at a time (it holds a lock): a TCP endpoint gets a small
  pool of clients for bounded concurrency;
- defaults ``timeout=3, retries=3`` make a silent device cost 12 s: we use ``retries=0``,
  a short timeout, and own reconnects (``reconnect_delay=0``).

RTU keeps pymodbus for what it does well, building request PDUs and frames and decoding
answers, and drives the line itself (drivers.rtuline): pymodbus' serial client leaves no
3.5-character silence between frames, waits its whole timeout whatever the answer's
length and even when a complete answer has a bad CRC, and costs about half a millisecond
of CPU per read in its transaction machinery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from struct import error as struct_error
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from drivers.errors import BusError, BusGoneError, BusTimeoutError, FrameError, ModbusExceptionError
from drivers.lines import RtuBus, TcpBus
from drivers.profile import Table
from drivers.rtuline import RtuLine

# An RTU answer's frame around its data: unit, function code, byte count … CRC (2).
_READ_ANSWER_OVERHEAD = 5
_WRITE_ANSWER_BYTES = 8  # unit, function, address (2), value or quantity (2), CRC (2)


class _Client:
    """One pymodbus TCP client and what it received during the current transaction."""

    def __init__(self, factory: Callable[[Callable[[bool, bytes], bytes]], ModbusBaseClient]):
        self.received = 0
        self.client = factory(self._trace)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.received += len(data)
        return data


class _Requests(ModbusClientMixin[ModbusPDU]):
    """pymodbus' request builders, returning the request PDU instead of sending it."""

    def __init__(self) -> None:
        """No connection: only the builders."""
        super().__init__()  # type: ignore[no-untyped-call]

    def execute(self, no_response_expected: bool, request: ModbusPDU) -> ModbusPDU:
        """The request, built and checked by pymodbus."""
        return request


class ModbusTransport:
    """A Transport: Modbus RTU on a hand-driven line, or Modbus TCP over a client pool."""

    def __init__(self, bus: str, max_in_flight: int) -> None:
        """Prefer the ``rtu`` and ``tcp`` constructors."""
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report device health
        self._bus = bus
        self._max_in_flight = max_in_flight
        self._closed = False

    @classmethod
    def rtu(cls, bus: RtuBus) -> ModbusTransport:
        """A transport for a Modbus RTU line: one transaction at a time."""
        return _RtuTransport(bus)

    @classmethod
    def tcp(cls, bus: TcpBus) -> ModbusTransport:
        """A transport for a Modbus TCP endpoint with bounded concurrency."""
        return _TcpTransport(bus)

    @property
    def bus(self) -> str:
        """The bus's name."""
        return self._bus

    @property
    def max_in_flight(self) -> int:
        """Transactions that may be outstanding at once."""
        return self._max_in_flight

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        """Read registers or bits; raise a BusError subclass on failure."""
        pdu = await self._transact(lambda c: _read_call(c, unit, table, address, count))
        if table.is_bit:
            return [1 if b else 0 for b in pdu.bits[:count]]
        if len(pdu.registers) < count:
            raise FrameError(f"short answer: {len(pdu.registers)} of {count} registers")
        return list(pdu.registers[:count])

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        """Write coils or holding registers; raise a BusError subclass on failure."""
        if table not in (Table.COIL, Table.HOLDING):
            raise ValueError(f"table {table} is not writable")
        await self._transact(lambda c: _write_call(c, unit, table, address, values))

    async def close(self) -> None:
        """Release the port or connections; idempotent."""
        self._closed = True

    async def _transact(self, call: Callable[[Any], Any]) -> ModbusPDU:
        """Run one request built by ``call`` on a client (or request builder); check it."""
        if self._closed:
            raise BusGoneError(f"bus {self._bus} is closed")
        pdu = await self._exchange(call)
        if isinstance(pdu, ExceptionResponse) or pdu.isError():
            raise ModbusExceptionError(int(getattr(pdu, "exception_code", 0)))
        return pdu

    async def _exchange(self, call: Callable[[Any], Any]) -> ModbusPDU:
        raise NotImplementedError


class _RtuTransport(ModbusTransport):
    """Modbus RTU: pymodbus frames on a line that drivers.rtuline drives."""

    def __init__(self, bus: RtuBus) -> None:
        super().__init__(bus.name, 1)
        self._requests = _Requests()
        self._framer = FramerRTU(DecodePDU(is_server=False))
        self._decoder = DecodePDU(is_server=False)
        self._line = RtuLine(
            bus.port,
            baud=bus.baud,
            parity=bus.parity,
            bits_per_char=bus.bits_per_char,
            answer_timeout_s=bus.timeout_ms / 1000,
            crc_ok=lambda frame: FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big")),
        )

    async def close(self) -> None:
        """Close the port; idempotent."""
        await super().close()
        self._line.close()

    async def _exchange(self, call: Callable[[Any], Any]) -> ModbusPDU:
        request: ModbusPDU = call(self._requests)
        frame = self._framer.buildFrame(request)
        answer = await self._line.exchange(request.dev_id, frame, _answer_bytes(request))
        # pymodbus' response classes decode the PDU; DecodePDU.decode would also format
        # every answer for a debug log nobody reads.
        pdu: ModbusPDU
        if answer[1] & 0x80:
            pdu = ExceptionResponse(answer[1] & 0x7F)
        elif (response := self._decoder.lookupPduClass(answer)) is not None:
            pdu = response()
        else:
            raise FrameError(f"an answer with function code {answer[1]}")
        try:
            pdu.decode(answer[2:-2])
        except (ModbusException, ValueError, IndexError, struct_error) as exc:
            raise FrameError(f"undecodable answer: {exc}") from exc
        return pdu


class _TcpTransport(ModbusTransport):
    """Modbus TCP: a pool of pymodbus clients to one endpoint."""

    def __init__(self, bus: TcpBus) -> None:
        super().__init__(bus.name, bus.max_in_flight)

        def factory(trace: Callable[[bool, bytes], bytes]) -> ModbusBaseClient:
            return AsyncModbusTcpClient(
                bus.host,
                port=bus.port,
                timeout=bus.timeout_ms / 1000,
                retries=0,
                reconnect_delay=0,
                trace_packet=trace,
                name=bus.name,
            )

        self._clients = [_Client(factory) for _ in range(bus.max_in_flight)]
        self._idle: asyncio.Queue[_Client] = asyncio.Queue()
        for c in self._clients:
            self._idle.put_nowait(c)

    async def close(self) -> None:
        """Close every client; idempotent."""
        await super().close()
        for c in self._clients:
            c.client.close()

    async def _exchange(self, call: Callable[[Any], Any]) -> ModbusPDU:
        holder = await self._idle.get()
        try:
            client = holder.client
            if not client.connected and not await client.connect():
                raise BusGoneError(f"cannot open bus {self._bus}")
            holder.received = 0
            try:
                pdu: ModbusPDU = await call(client)
            except ModbusIOException as exc:
                if not client.connected:
                    raise BusGoneError(str(exc)) from exc
                if holder.received:
                    raise FrameError(f"{holder.received} bytes, no valid frame") from exc
                raise BusTimeoutError("no answer") from exc
            except ConnectionException as exc:
                raise BusGoneError(str(exc)) from exc
            except (ModbusException, OSError) as exc:
                raise BusError(str(exc)) from exc
            return pdu
        finally:
            self._idle.put_nowait(holder)


def _answer_bytes(request: ModbusPDU) -> int:
    """The length of the RTU frame that answers ``request`` normally."""
    count = int(getattr(request, "count", 0))
    if request.function_code in (1, 2):  # coils, discrete inputs: 8 bits a byte
        return _READ_ANSWER_OVERHEAD + (count + 7) // 8
    if request.function_code in (3, 4):  # registers: 2 bytes each
        return _READ_ANSWER_OVERHEAD + 2 * count
    return _WRITE_ANSWER_BYTES  # FC5, FC6, FC15, FC16 echo address and value or quantity


def _read_call(
    c: ModbusClientMixin[Any], unit: int, table: Table, address: int, count: int
) -> Awaitable[ModbusPDU] | ModbusPDU:
    readers = {
        Table.COIL: c.read_coils,
        Table.DISCRETE: c.read_discrete_inputs,
        Table.INPUT: c.read_input_registers,
        Table.HOLDING: c.read_holding_registers,
    }
    result: Awaitable[ModbusPDU] | ModbusPDU = readers[table](address, count=count, device_id=unit)
    return result


def _write_call(
    c: ModbusClientMixin[Any], unit: int, table: Table, address: int, values: Sequence[int]
) -> Awaitable[ModbusPDU] | ModbusPDU:
    result: Awaitable[ModbusPDU] | ModbusPDU
    if table is Table.COIL:
        if len(values) == 1:
            result = c.write_coil(address, bool(values[0]), device_id=unit)
        else:
            result = c.write_coils(address, [bool(v) for v in values], device_id=unit)
    elif len(values) == 1:
        result = c.write_register(address, values[0], device_id=unit)
    else:
        result = c.write_registers(address, list(values), device_id=unit)
    return result
