"""Errors of the buses and the base of floorgate's exception tree (see gateway.model.errors).

The drivers raise these; they sit here so that ``drivers`` never imports ``gateway``.
"""

from __future__ import annotations


class FloorgateError(Exception):
    """Base of every error floorgate raises on purpose."""


class BusError(FloorgateError):
    """A bus transaction failed."""


class BusTimeoutError(BusError):
    """The device did not answer within the timeout."""


class ModbusExceptionError(BusError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"modbus exception {code}")


class FrameError(BusError):
    """A corrupted frame (bad CRC, bad length) was received."""


class BusGoneError(BusError):
    """The serial port or TCP connection is gone."""


class DeviceUnavailableError(BusError):
    """The device is offline: the request was refused without using the bus."""


class WriteFailedError(BusError):
    """A write failed or did not read back as written, after its bounded attempts.

    ``answered``: the device did answer — it refused the write, or read back another
    value — so the point itself is at fault, not the line (a silent device is not).
    """

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered
