"""The floor's inventory (mqtt.md v2 "Inventory and replay"), built from the floor file.

What a central system needs to discover what a floor is made of without reading its
floor file: rooms, each device's role and profile, the call panel serving a room, the
escalation levels, and the SHA-256 of the floor file as loaded. Never a bus port, host,
unit, key, token or password.
"""

from __future__ import annotations

from gateway.config.floor import FloorConfig
from gateway.model.messages import Inventory

__all__ = ["inventory"]


def inventory(config: FloorConfig, version: str) -> dict[str, object]:
    """The retained ``{root}/inventory`` payload of this floor."""
    doc = Inventory.model_validate(
        {
            "gateway": config.gateway.id,
            "version": version,
            "config_sha256": config.sha256,
            "timezone": config.gateway.timezone,
            "rooms": [
                {
                    "room": r.id,
                    "devices": [{"role": d.role, "profile": d.profile} for d in r.devices],
                    "callpanel": r.callpanel,
                }
                for r in config.rooms
            ],
            "escalation": [
                {"after_s": lv.after_s, "notify": lv.notify} for lv in config.escalation
            ],
        }
    )
    return doc.to_dict()
