"""What a floorctl subcommand returns: the daemon's typed results, or one of floorctl's own.

A subcommand never prints: it returns an ``Output`` and gateway.cli.render prints it,
as tables for people or as JSON for scripts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.model.views import EventRow, Result

__all__ = ["EventStream", "Notice", "Output", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    """Text printed exactly as it is (``completion``): no table, no JSON."""

    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """News for the person watching a stream (the daemon went away, came back): stderr."""

    text: str


@dataclass(frozen=True, slots=True)
class EventStream:
    """``events --follow``: events and notices, as they happen, until Ctrl-C."""

    items: Iterator[EventRow | Notice]


Output = Result | EventStream | Script
