"""``floorctl devices``: every device's health (online, success rate, latency, last answer)."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import DeviceTable

__all__ = ["add_to", "devices"]


def add_to(commands: Commands) -> None:
    """Add ``devices``."""
    command(
        commands, "devices", "device health: online, success rate, latency, last answer", devices
    )


def devices(ctx: Context, args: argparse.Namespace) -> DeviceTable:
    """Which device answers, and how well."""
    return ctx.client().devices()
