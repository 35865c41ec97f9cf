"""``floorctl status``: the gateway at a glance (uptime, MQTT link, outbox, buses, alarms)."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import Status

__all__ = ["add_to", "status"]


def add_to(commands: Commands) -> None:
    """Add ``status``."""
    command(commands, "status", "uptime, MQTT link, outbox, buses and open alarms", status)


def status(ctx: Context, args: argparse.Namespace) -> Status:
    """Is the gateway healthy?"""
    return ctx.client().status()
