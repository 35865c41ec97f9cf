"""The buses as the drivers see them: line settings, and the devices polled on a line.

The floor file's ``[[bus]]`` tables validate into these models (gateway.config embeds them),
so the drivers take their settings without importing ``gateway``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.ids import DeviceRef
from drivers.profile import STANDARD_BAUDS, PollClass, Profile

BUS_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
TcpPort = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Bus(_Section):
    """Settings every bus has: its name and the answer timeout."""

    name: Annotated[str, Field(pattern=BUS_NAME_RE)]
    # TCP: how long to wait for an answer. RTU: how long a device may take to start
    # answering once the request is on the wire; each request adds its answer's wire time.
    timeout_ms: Annotated[int, Field(ge=10, le=10000)] = 150


class _SerialBus(_Bus):
    port: Path
    parity: Literal["N", "E", "O"] = "N"

    @model_validator(mode="after")
    def _standard_baud(self) -> Self:
        baud: int = getattr(self, "baud")  # noqa: B009 (declared on subclasses with their default)
        if baud not in STANDARD_BAUDS:
            rates = ", ".join(str(b) for b in STANDARD_BAUDS)
            raise ValueError(f"baud {baud} is not a standard rate ({rates})")
        return self

    @property
    def bits_per_char(self) -> int:
        """Bits on the wire per character: start + 8 data + parity + stop."""
        return 10 if self.parity == "N" else 11


class RtuBus(_SerialBus):
    """A Modbus RTU line (RS-485)."""

    kind: Literal["modbus-rtu"]
    baud: int = 19200
    # Per-bus override of the poll classes' target intervals (over [poll] and the profiles).
    intervals_ms: dict[PollClass, Annotated[int, Field(ge=20)]] = Field(default_factory=dict)


class TcpBus(_Bus):
    """A Modbus TCP endpoint serving several unit ids."""

    kind: Literal["modbus-tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: TcpPort = 502
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 4
    # Per-bus override of the poll classes' target intervals (over [poll] and the profiles):
    # a TCP endpoint has no line physics, so it may sample far more often than RS-485.
    intervals_ms: dict[PollClass, Annotated[int, Field(ge=20)]] = Field(default_factory=dict)


class CallPanelBus(_SerialBus):
    """A serial call panel line (FG-CALLPANEL-1 push protocol)."""

    kind: Literal["callpanel"]
    baud: int = 9600


Bus = RtuBus | TcpBus | CallPanelBus
BUS_KINDS: dict[str, type[RtuBus] | type[TcpBus] | type[CallPanelBus]] = {
    "modbus-rtu": RtuBus,
    "modbus-tcp": TcpBus,
    "callpanel": CallPanelBus,
}


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One Modbus device of the floor, flattened: what a bus scheduler polls."""

    room: str | None  # None for the floor panel
    role: str  # the device kind's role: "tstat", "lock", "rio", "floorpanel"…
    bus: str
    unit: int
    profile: Profile
    # The roles the gateway reads of this kind of device: the points (and named bits of a
    # bit field) playing one of them are polled; the others are left alone.
    roles: frozenset[str]

    @property
    def ref(self) -> DeviceRef:
        """The device as a value: its room and role."""
        return DeviceRef.of(self.room, self.role)

    @property
    def name(self) -> str:
        """The device's name in events and the CLI: ``1203/lock`` or ``floorpanel``."""
        return str(self.ref)
