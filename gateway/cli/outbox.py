"""``floorctl outbox``: events waiting for the broker, and what the gateway keeps."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import OutboxInfo

__all__ = ["add_to", "outbox"]


def add_to(commands: Commands) -> None:
    """Add ``outbox``."""
    command(commands, "outbox", "events waiting for the broker, and what is kept", outbox)


def outbox(ctx: Context, args: argparse.Namespace) -> OutboxInfo:
    """The outbox's depth, the last delivered event, what is kept and shed."""
    return ctx.client().outbox()
