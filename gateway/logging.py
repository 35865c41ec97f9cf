"""Structured logging for floorgate: JSON lines for journald, console for a terminal.

Every event carries ``event``, ``level`` and an ISO-8601 UTC ``ts``, plus whatever context
is bound (``bus``, ``unit``, ``room``...). Secrets are redacted before rendering, at any
depth, so a token, key or signature never reaches the journal. Every line at warning or
above is also counted by (level, event) — ``warning_counts()``, the metric
``floorgate_log_messages_total`` — so each warning-level condition has a log line and a
metric; event names are literals in the code, so the counted set is bounded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "SECRET_KEY_SUFFIXES",
    "configure_logging",
    "count_warnings",
    "redact_secrets",
    "warning_counts",
]

REDACTED = "[redacted]"

# A key whose lower-cased name ends with one of these is a secret ("api_key", "roomToken",
# "hmac_sig", "command_key"). Suffix matching over-redacts ("monkey") rather than leak.
SECRET_KEY_SUFFIXES: tuple[str, ...] = (
    "token",
    "tokens",
    "key",
    "password",
    "secret",
    "sig",
    "command_key",
)

_LEVELS = ("debug", "info", "warning", "error", "critical")
_COUNTED = frozenset({"warning", "error", "critical"})
_MAX_COUNTED_EVENTS = 500  # a guard: event names are literals, but never let this grow
_warnings: dict[tuple[str, str], int] = {}


def warning_counts() -> dict[tuple[str, str], int]:
    """Lines logged at warning or above since the start, by (level, event)."""
    return dict(_warnings)


def count_warnings(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Count a line at warning or above by (level, event); pass every line on unchanged."""
    level = method_name if method_name != "exception" else "error"
    if level in _COUNTED:
        key = (level, str(event_dict.get("event", "")))
        if key in _warnings or len(_warnings) < _MAX_COUNTED_EVENTS:
            _warnings[key] = _warnings.get(key, 0) + 1
    return event_dict


def configure_logging(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog globally; safe to call again (the last call wins).

    Renders JSON lines unless ``json`` is False, or None and ``stream`` is a TTY.
    ``stream`` defaults to the current ``sys.stdout``. Raises ValueError on an unknown level.
    """
    name = level.lower()
    if name == "warn":
        name = "warning"
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    out = stream if stream is not None else sys.stdout
    as_json = not _isatty(out) if json is None else json

    processors: list[Processor] = [
        count_warnings,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        # A plain-text traceback, never dict_tracebacks: those carry frame locals, which
        # may hold tokens that redaction (on event keys) cannot see.
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=_isatty(out),
                timestamp_key="ts",
                # rich tracebacks show locals by default: same leak as above.
                exception_formatter=structlog.dev.plain_traceback,
            )
        )

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(name),
        context_class=dict,
        logger_factory=lambda *args: _LineLogger(out),
        # Caching would pin module-level loggers to the first configuration, which breaks
        # reconfiguration (tests, --log-level after import) and structlog.testing.
        cache_logger_on_first_use=False,
    )


class _LineLogger(structlog.PrintLogger):
    """A PrintLogger that drops a line it cannot write instead of raising.

    Logging must never stop the daemon: with the terminal it ran in closed (EIO) or its
    output gone (EPIPE), a raising logger would break whatever was logging, a signal
    handler's stop included.
    """

    def msg(self, message: str) -> None:
        """Print ``message``; an unwritable stream loses the line."""
        with contextlib.suppress(OSError, ValueError):  # ValueError: the file is closed
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every secret-named key, at any depth, with ``"[redacted]"``."""
    for key, value in event_dict.items():
        if key == "event":
            continue
        event_dict[key] = REDACTED if _is_secret(key) else _redact(value)
    return event_dict


def _is_secret(key: object) -> bool:
    return str(key).lower().endswith(SECRET_KEY_SUFFIXES)


def _redact(value: Any) -> Any:
    """Return ``value`` with secrets redacted; containers are copied, never mutated."""
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        value = value._asdict()  # a NamedTuple's field names are keys too
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v) for v in value)
    return value


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
