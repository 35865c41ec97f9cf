"""A sample of floorgate's metrics, without a floor: ``python -m gateway.metrics_sample``.

Every metric family the daemon exposes, rendered by the real collector over made-up
figures: CI pipes it into ``promtool check metrics``, and operators can read the names,
help texts and labels without running a floor.
"""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime, timedelta

from drivers.busview import BusStats, DeviceStats
from gateway import __version__
from gateway.adapters.metrics import FloorMetrics, MetricsSources
from gateway.adapters.mqtt import UplinkStats
from gateway.adapters.schema import StoredEvent
from gateway.core.figures import FloorFigures
from gateway.core.health import Health, Level, Reason
from gateway.model.time import format_ts

__all__ = ["main", "sample"]

NOW = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)


def sample() -> FloorMetrics:
    """The metrics of a made-up floor: two buses, a device offline, a call, a refusal."""
    devices = (
        DeviceStats("1201/tstat", "online", True, 1.0, 4.1, 9.0, 0.5, 0, 900, 300, None),
        DeviceStats("1201/lock", "offline", False, 0.0, None, None, 40.0, 3, 120, 60, "timeout"),
    )
    buses = {
        "rs485-a": BusStats("rs485-a", "modbus-rtu", 1020, 12.5, {"timeout": 3}, devices, 0.31),
        "lan": BusStats("lan", "modbus-tcp", 0, 0.0, {"bus gone": 4}, (), 0.0, gone=True),
    }
    link = UplinkStats(True, "connected", NOW, 2, 5, format_ts(NOW), 1, 0, None, 0)
    figures = FloorFigures({"call": 1, "technical": 1}, {"call": 35.0, "technical": 0.0},
                           {"unknown": 12}, (("call_point_unreachable", "1201"),))  # fmt: skip
    health = Health(
        Level.DEGRADED, (Reason("devices_offline", Level.DEGRADED, "1 of 2 devices offline"),)
    )
    metrics = FloorMetrics(
        MetricsSources(
            buses={name: functools.partial(_same, st) for name, st in buses.items()},
            link=lambda: link,
            floor=lambda: figures,
            commands=lambda: {("checkin", "ok"): 3, ("other", "unauthenticated"): 1},
            lock_slots_pending=lambda: 2,
            health=lambda: health,
            log_counts=lambda: {("warning", "device_offline"): 1},
            wall=lambda: NOW + timedelta(seconds=2),
        ),
        gateway="sample-12",
        version=__version__,
        process=False,
    )
    call: dict[str, object] = {"kind": "call", "point": "bath"}
    metrics.delivered(StoredEvent(7, "e7", format_ts(NOW), "alarm.raised", "1201", call))
    return metrics


def _same(stats: BusStats) -> BusStats:
    return stats


def main() -> int:
    """Print the sample exposition."""
    sys.stdout.write(sample().render().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
