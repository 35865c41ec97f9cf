"""The exceptions of floorgate_central, split by what the caller does next.

``CommandRefused``: the gateway answered no; ``code`` says what to do (mqtt-api.md
"Checks and error codes"). ``CommandTimeout``: no reply after every attempt; the outcome
is unknown (the command may still run when the gateway returns), and sending it again
with the same ``command_id`` within 24 h is safe. ``NoKey``: this client holds no key for
the floor.
"""

from __future__ import annotations

__all__ = ["CentralError", "CommandError", "CommandRefused", "CommandTimeout", "NoKey"]


class CentralError(Exception):
    """Every error raised by floorgate_central."""


class NoKey(CentralError):
    """No command key is known for the gateway a command is for."""


class CommandError(CentralError):
    """A command did not succeed; ``command_id`` is its envelope id."""

    def __init__(self, command_id: str, text: str) -> None:
        super().__init__(text)
        self.command_id = command_id


class CommandRefused(CommandError):
    """The gateway refused the command (``ok: false``) with ``code`` and ``message``."""

    def __init__(self, command_id: str, code: str, message: str, *, duplicate: bool) -> None:
        again = " (the original reply to a duplicate)" if duplicate else ""
        super().__init__(command_id, f"{code}: {message}{again}")
        self.code = code
        self.message = message
        self.duplicate = duplicate


class CommandTimeout(CommandError):
    """No reply after ``attempts`` attempts of ``timeout_s`` each: the outcome is unknown."""

    def __init__(self, command_id: str, attempts: int, timeout_s: float) -> None:
        super().__init__(
            command_id,
            f"no reply to command {command_id} after {attempts} attempts of {timeout_s:g} s; "
            "it may still run when the gateway is back (the same id may be sent again)",
        )
        self.attempts = attempts
        self.timeout_s = timeout_s
