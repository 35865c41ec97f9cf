"""floorctl's exit codes, and which failure ends with which: the one place that decides.

- 0 success (Ctrl-C ending ``events --follow`` included);
- 1 the daemon answered with an error, a refusal included (also when the socket's file
  mode refuses the user, when an alarm id prefix matches no open alarm or several, and
  when ``audit verify`` finds a row that does not match, and when a lamp of ``lamps test``
  did not read back);
- 2 usage error (also when the floor file of ``--config`` or ``FLOORGATE_CONFIG`` cannot
  be read);
- 69 the daemon cannot be reached (sysexits ``EX_UNAVAILABLE``);
- 130 interrupted (Ctrl-C).

``failure(exc, socket)`` gives the code and the lines to print for each failure a
subcommand may raise, ``of_output(output)`` the code of what a subcommand returned;
nothing else in gateway.cli maps an outcome to a code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cli.discovery import ENV_CONFIG, FloorFileError, SocketChoice
from gateway.cli.results import Output
from gateway.model.errors import DaemonUnreachableError, ViewRefused
from gateway.model.views import AuditCheck, HealthView, LampTest

__all__ = [
    "EX_ERROR",
    "EX_INTERRUPTED",
    "EX_OK",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "Failure",
    "failure",
    "of_output",
]

EX_OK = 0
EX_ERROR = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Failure:
    """How floorctl ends after a failure: its exit code and what it says on stderr."""

    code: int
    lines: Sequence[str]


def failure(
    exc: ViewRefused | DaemonUnreachableError | FloorFileError | KeyboardInterrupt,
    socket: SocketChoice | None,
) -> Failure:
    """The exit code and the stderr lines for ``exc`` (``socket``: where floorctl asked)."""
    match exc:
        case ViewRefused():
            return Failure(EX_ERROR, [exc.message])
        case DaemonUnreachableError():
            return Failure(EX_UNAVAILABLE, _unreachable(str(exc), socket))
        case FloorFileError():
            return Failure(EX_USAGE, [str(exc)])
        case KeyboardInterrupt():
            return Failure(EX_INTERRUPTED, [])


def of_output(output: Output) -> Failure:
    """How floorctl ends after printing ``output``: 0, or 1 for a floor not healthy, a
    broken audit chain or a lamp that did not read back."""
    if isinstance(output, HealthView) and output.level != "ok":
        return Failure(EX_ERROR, [])
    if isinstance(output, AuditCheck) and not output.ok:
        why = output.problem or "does not match"
        return Failure(EX_ERROR, [f"audit row {output.first_bad}: {why}"])
    if isinstance(output, LampTest) and not output.ok:
        failed = [lamp.point for lamp in output.lamps if not (lamp.lit and lamp.restored)]
        return Failure(EX_ERROR, [f"room {output.room}: {', '.join(failed)} did not read back"])
    return Failure(EX_OK, [])


def _unreachable(why: str, socket: SocketChoice | None) -> list[str]:
    if socket is None:  # pragma: no cover (a daemon is only asked once a socket is chosen)
        return [f"the daemon cannot be reached: {why}"]
    return [
        f"the daemon cannot be reached at {socket.path}: {why}",
        f"(that socket is {socket.how})",
        "is floorgated running? (systemctl status floorgate)",
        "If it runs with another floor file, name that file: floorctl --config FLOOR.toml ...,",
        f"or once for the shell: export {ENV_CONFIG}=FLOOR.toml (or give --socket PATH).",
    ]
