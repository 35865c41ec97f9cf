"""``floorctl health``: ok, degraded or failed, with every reason (exit 0 ok, else 1)."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import HealthView

__all__ = ["add_to", "health"]

_EPILOG = """\
exit codes: 0 ok, 1 degraded or failed (or the daemon answered with an error),
69 the daemon cannot be reached. A reason marked 'watchdog' withholds systemd's
watchdog: systemd restarts the daemon if it stays."""


def add_to(commands: Commands) -> None:
    """Add ``health``."""
    command(commands, "health", "ok, degraded or failed, and why", health, epilog=_EPILOG)


def health(ctx: Context, args: argparse.Namespace) -> HealthView:
    """The floor's health now."""
    return ctx.client().health()
