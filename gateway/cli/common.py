"""What every floorctl command group shares: the context a subcommand runs in, and the
helpers that add a subcommand to the parser.

A group module (gateway.cli.status, rooms, ...) has ``add_to(commands)``, which adds its
subcommands with ``command(...)``; each one names its handler, a function
``(ctx, args) -> Output`` that asks the daemon through ``ctx.client()`` and returns a
typed result, never printing (gateway.cli.render prints it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

from rich.console import Console

from gateway.cli.client import Client
from gateway.cli.discovery import SocketChoice, find_socket
from gateway.cli.exits import EX_USAGE
from gateway.cli.results import Output

__all__ = [
    "Commands",
    "Context",
    "Handler",
    "Parser",
    "bounded_int",
    "command",
    "json_flag",
]

Commands: TypeAlias = "argparse._SubParsersAction[Any]"
"""The top parser's subcommands, which a group module adds to."""


@dataclass
class Context:
    """What a subcommand runs with: its parsed command line, consoles, and the daemon."""

    args: argparse.Namespace
    parser: argparse.ArgumentParser
    out: Console
    err: Console
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    socket: SocketChoice | None = None  # chosen at the first client() call
    _client: Client | None = None

    def client(self) -> Client:
        """The daemon's client; finds the socket (gateway.cli.discovery) on first use."""
        if self._client is None:
            self.socket = find_socket(self.args.socket, self.args.config, self.environ)
            self._client = Client(self.socket.path)
        return self._client


Handler = Callable[[Context, argparse.Namespace], Output]


class Parser(argparse.ArgumentParser):
    """Usage errors name the subcommand's help, for a newcomer to find the way."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and why, then exit 2."""
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def command(
    commands: Commands,
    name: str,
    help_text: str,
    handler: Handler,
    *,
    epilog: str | None = None,
    with_json: bool = True,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` run by ``handler``; its parser, for its own arguments."""
    p: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler)
    if with_json:
        json_flag(p)
    return p


def json_flag(p: argparse.ArgumentParser) -> None:
    """Accept ``--json`` after the subcommand too (operations.md: SUBCOMMAND [--json])."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def bounded_int(low: int, high: int | None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low} or more" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
        return value

    return parse
