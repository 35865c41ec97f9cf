"""An energy meter (any Modbus meter with a profile, e.g. the Eastron SDM120).

Its cumulative active energy (``energy_kwh``, monotonic) and, if the profile maps it,
its power now (``power_w``) show in the room state under ``meter``; a room without a
meter has no ``meter`` field at all (the v1 room state keeps its shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gateway.core.kinds.base import DeviceKind, RoleSpec, ValueKind, Values


class Meter(DeviceKind):
    """The room's energy use."""

    role = "meter"
    order = 3
    fields_order = 3
    points: ClassVar[Mapping[str, RoleSpec]] = {
        "energy_kwh": RoleSpec(ValueKind.NUMBER),
        "power_w": RoleSpec(ValueKind.NUMBER),
    }
    required = (("energy_kwh",),)
    fields: ClassVar[Mapping[str, str]] = {
        "energy_kwh": "meter.energy_kwh",
        "power_w": "meter.power_w",
    }

    def room_fields(self, values: Values | None) -> dict[str, object]:
        """``meter``: the energy total and the power now, for a room with a meter."""
        if values is None:
            return {}
        return {"meter": {"energy_kwh": values("energy_kwh"), "power_w": values("power_w")}}


KIND = Meter()
