"""The bus seam: "read/write these registers or bits of this unit on this bus".

Everything above this seam (planner, scheduler, device health) is written against the
``Transport`` protocol; ``drivers.modbus`` implements it with pymodbus for RTU and TCP,
and tests may implement it in memory. Failures are raised as the gateway.model.errors.BusError
family — a timeout, a Modbus exception code, a corrupted frame and a vanished bus are
different exceptions, never ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from drivers.profile import Table


class Transport(Protocol):
    """One bus, as the scheduler sees it."""

    @property
    def bus(self) -> str:
        """The bus's name (for logs and health)."""
        ...

    @property
    def max_in_flight(self) -> int:
        """How many transactions may be outstanding at once (1 on RTU)."""
        ...

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        """Read ``count`` registers (0..65535) or bits (0/1) starting at ``address``."""
        ...

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        """Write registers (FC6/FC16) or coils (FC5/FC15) starting at ``address``."""
        ...

    async def close(self) -> None:
        """Release the port or connections; idempotent."""
        ...
