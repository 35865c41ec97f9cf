"""Wall times as the contract writes them: RFC 3339 in UTC, to the millisecond, with ``Z``.

The one place that formats, parses and rounds wall times: events, states, alarms, stays
and the store all use these, so a time written anywhere reads back equal everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["TS_RE", "format_ts", "parse_ts", "require_aware", "to_ms"]

TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


def require_aware(dt: datetime) -> None:
    """ValueError for a naive datetime: every wall time here carries its zone."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: a timezone is required")


def to_ms(dt: datetime) -> datetime:
    """The same instant in UTC, truncated to the millisecond (as stored and sent)."""
    if dt.tzinfo is UTC and not dt.microsecond % 1000:
        return dt  # already so: the hot path (deadline scans compare stored instants)
    require_aware(dt)
    u = dt.astimezone(UTC)
    return u.replace(microsecond=u.microsecond - u.microsecond % 1000)


def format_ts(dt: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``, e.g. ``2026-11-23T06:03:22.123Z``."""
    u = to_ms(dt)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T"
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"
    )


def parse_ts(value: object) -> datetime:
    """Parse RFC 3339 UTC text ending in ``Z`` (or pass an aware datetime); ValueError otherwise."""
    if isinstance(value, datetime):
        require_aware(value)
        return value.astimezone(UTC)
    if not isinstance(value, str) or not TS_RE.fullmatch(value):
        raise ValueError("must be an RFC 3339 UTC time ending in Z, e.g. 2026-11-23T06:00:00Z")
    head, _, frac = value[:-1].partition(".")
    try:
        parsed = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid time: {exc}") from None
    return parsed.replace(microsecond=int((frac + "000000")[:6])) if frac else parsed
