"""Modbus RTU and TCP transports over pymodbus — the only module that imports pymodbus.

pymodbus facts this module is built around (LIBRARY-NOTES.md, and pymodbus 3.16's
transaction.py):
- one client serves one request at a time (it holds a lock): RTU uses one client; a TCP
  endpoint gets a small pool of clients for bounded concurrency;
- the client leaves no 3.5-character silence between RTU frames: we leave it;
- a response with a bad CRC is dropped by the framer and looks like "no response": we
  watch the received bytes (``trace_packet``) to tell a corrupted frame from silence;
- defaults ``timeout=3, retries=3`` make a silent device cost 12 s of bus time: we use
  ``retries=0``, a short timeout, and own reconnects (``reconnect_delay=0``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.errors import BusError, BusGoneError, BusTimeoutError, FrameError, ModbusExceptionError
from drivers.lines import RtuBus, TcpBus
from drivers.profile import Table

# Modbus over serial line, §2.5.1.1: frames are separated by a silent interval of at
# least 3.5 character times.
SILENT_CHARS = 3.5


class _Client:
    """One pymodbus client and what it received during the current transaction."""

    def __init__(self, factory: Callable[[Callable[[bool, bytes], bytes]], ModbusBaseClient]):
        self.received = 0
        self.client = factory(self._trace)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.received += len(data)
        return data


class ModbusTransport:
    """A Transport over pymodbus: RTU (one in flight, inter-frame silence) or TCP (a pool)."""

    def __init__(
        self,
        bus: str,
        factory: Callable[[Callable[[bool, bytes], bytes]], ModbusBaseClient],
        *,
        max_in_flight: int = 1,
        silence_s: float = 0.0,
    ) -> None:
        """Prefer the ``rtu`` and ``tcp`` constructors."""
        _quiet_pymodbus()
        self._bus = bus
        self._max_in_flight = max_in_flight
        self._silence_s = silence_s
        self._clients = [_Client(factory) for _ in range(max_in_flight)]
        self._idle: asyncio.Queue[_Client] = asyncio.Queue()
        for c in self._clients:
            self._idle.put_nowait(c)
        self._line_free_at = 0.0
        self._closed = False

    @classmethod
    def rtu(cls, bus: RtuBus) -> ModbusTransport:
        """A transport for a Modbus RTU line: one transaction at a time."""
        char_s = bus.bits_per_char / bus.baud

        def factory(trace: Callable[[bool, bytes], bytes]) -> ModbusBaseClient:
            return AsyncModbusSerialClient(
                str(bus.port),
                baudrate=bus.baud,
                parity=bus.parity,
                bytesize=8,
                stopbits=1,
                timeout=bus.timeout_ms / 1000,
                retries=0,
                reconnect_delay=0,
                trace_packet=trace,
                name=bus.name,
            )

        return cls(bus.name, factory, max_in_flight=1, silence_s=SILENT_CHARS * char_s)

    @classmethod
    def tcp(cls, bus: TcpBus) -> ModbusTransport:
        """A transport for a Modbus TCP endpoint with bounded concurrency."""

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

        return cls(bus.name, factory, max_in_flight=bus.max_in_flight)

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
        """Close every client; idempotent."""
        self._closed = True
        for c in self._clients:
            c.client.close()

    async def _transact(
        self, call: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        if self._closed:
            raise BusGoneError(f"bus {self._bus} is closed")
        holder = await self._idle.get()
        try:
            client = holder.client
            if not client.connected and not await client.connect():
                raise BusGoneError(f"cannot open bus {self._bus}")
            await self._wait_silence()
            holder.received = 0
            try:
                pdu = await call(client)
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
            finally:
                self._line_free_at = time.monotonic() + self._silence_s
            if isinstance(pdu, ExceptionResponse) or pdu.isError():
                raise ModbusExceptionError(int(getattr(pdu, "exception_code", 0)))
            return pdu
        finally:
            self._idle.put_nowait(holder)

    async def _wait_silence(self) -> None:
        delay = self._line_free_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _read_call(
    c: ModbusBaseClient, unit: int, table: Table, address: int, count: int
) -> Awaitable[ModbusPDU]:
    readers = {
        Table.COIL: c.read_coils,
        Table.DISCRETE: c.read_discrete_inputs,
        Table.INPUT: c.read_input_registers,
        Table.HOLDING: c.read_holding_registers,
    }
    return readers[table](address, count=count, device_id=unit)


def _write_call(
    c: ModbusBaseClient, unit: int, table: Table, address: int, values: Sequence[int]
) -> Awaitable[ModbusPDU]:
    if table is Table.COIL:
        if len(values) == 1:
            return c.write_coil(address, bool(values[0]), device_id=unit)
        return c.write_coils(address, [bool(v) for v in values], device_id=unit)
    if len(values) == 1:
        return c.write_register(address, values[0], device_id=unit)
    return c.write_registers(address, list(values), device_id=unit)


def _quiet_pymodbus() -> None:
    # pymodbus logs every timeout at error level; our scheduler reports device health.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
