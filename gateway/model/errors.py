"""The floorgate exception tree, split by what the caller does next.

FloorgateError
├── ConfigError            refuse to start: the floor file or a profile is invalid (exit 78)
├── StoreError             the local database
│   ├── StoreCorruptError  refuse to start: integrity_check failed
│   └── StoreClosedError   programming/shutdown order error: the store is closed
├── BusError               a bus transaction failed (drivers.errors; retry with backoff)
│   ├── BusTimeoutError    no answer in time (device silent or absent)
│   ├── ModbusExceptionError  the device answered with a Modbus exception code
│   ├── FrameError         CRC/framing error on the line
│   ├── BusGoneError       the port or connection is gone; reopen with backoff
│   ├── DeviceUnavailableError  the device is offline: not tried (retry when online)
│   └── WriteFailedError   a write was not confirmed after its bounded attempts
├── LinkError              the MQTT link failed (refused, lost, hung broker): reconnect with backoff
└── ControlError           the control socket (floorctl ⇄ floorgated)
    ├── ControlSocketError refuse to start: the socket path is in use or unusable
    ├── ViewRefused        a request refused with a code: an error reply, floorctl exit 1
    └── DaemonUnreachableError  floorctl: no daemon answers on the socket (exit 69)

Nothing here is ever turned into ``None``: callers catch what they can act on.
"""

from __future__ import annotations

from drivers.errors import FloorgateError

__all__ = [
    "ConfigError",
    "ControlError",
    "ControlSocketError",
    "DaemonUnreachableError",
    "FloorgateError",
    "LinkError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "ViewRefused",
]


class ConfigError(FloorgateError):
    """The configuration is invalid; ``problems`` holds every located problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(FloorgateError):
    """The local SQLite store failed."""


class StoreCorruptError(StoreError):
    """``PRAGMA integrity_check`` did not answer ``ok``."""


class StoreClosedError(StoreError):
    """The store was used after close()."""


class LinkError(FloorgateError):
    """The MQTT link failed or ended: the session is over, the uplink reconnects."""


class ControlError(FloorgateError):
    """The control socket between floorctl and the daemon."""


class ControlSocketError(ControlError):
    """The control socket cannot be created: a daemon listens there, or the path is unusable."""


class ViewRefused(ControlError):
    """A control request refused, with a machine-readable ``code`` and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class DaemonUnreachableError(ControlError):
    """floorctl: no daemon answers on the control socket."""
