"""The floor's service-station annunciator (FG-FLOORPANEL-1): the call lamp and the sounder.

It belongs to the floor, not to a room; the alarm core decides its outputs
(gateway.core.annunciation) and the engine writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gateway.core.kinds.base import DeviceKind, RoleSpec, ValueKind

_BW = RoleSpec(ValueKind.BOOL, writable=True)


class FloorPanel(DeviceKind):
    """The floor's annunciator."""

    role = "floorpanel"
    room_level = False
    order = 90
    points: ClassVar[Mapping[str, RoleSpec]] = {
        "floor_sounder": _BW,
        "floor_call_lamp": _BW,
        # v1.1 trouble indication (a profile may map them; a v1 panel has neither)
        "trouble_lamp": _BW,
        "trouble_buzzer": _BW,
    }
    required = (("floor_call_lamp",), ("floor_sounder",))


KIND = FloorPanel()
