"""floorctl: the technician's CLI, a thin client of the daemon's control socket.

The parser is built from the command groups (one module each, as python-kasa's
``kasa/cli``): each subcommand returns a typed result (gateway.cli.results), which
gateway.cli.render prints as tables or, with ``--json``, as JSON. The socket is found as
gateway.cli.discovery says; exit codes are gateway.cli.exits's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from gateway.cli import (
    alarms,
    audit,
    completion,
    config,
    devices,
    energy,
    events,
    exits,
    health,
    lamps,
    locks,
    outbox,
    render,
    rooms,
    scan,
    status,
)
from gateway.cli.common import Context, Parser
from gateway.cli.discovery import ENV_CONFIG, FloorFileError
from gateway.cli.exits import EX_USAGE
from gateway.model.errors import DaemonUnreachableError, ViewRefused

__all__ = ["GROUPS", "build_parser", "main"]

# In the order `floorctl --help` lists them.
GROUPS = (
    status, health, rooms, devices, alarms, events, outbox, energy, locks, lamps, audit, config,
    scan, completion,
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run one subcommand and return floorctl's exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("floorctl: a subcommand is needed (floorctl --help lists them)", file=sys.stderr)
        return EX_USAGE
    ctx = Context(
        args,
        parser,
        out=Console(markup=False, highlight=False, emoji=False),
        err=Console(stderr=True, markup=False, highlight=False, emoji=False),
    )
    try:
        output = args.handler(ctx, args)
        render.show(output, as_json=args.json, out=ctx.out, err=ctx.err)
    except (ViewRefused, DaemonUnreachableError, FloorFileError, KeyboardInterrupt) as exc:
        end = exits.failure(exc, ctx.socket)
    else:
        end = exits.of_output(output)
    for line in end.lines:
        print(f"floorctl: {line}", file=sys.stderr)
    return end.code


def build_parser() -> argparse.ArgumentParser:
    """floorctl's argument parser (also walked to write the shell completion)."""
    p = Parser(
        prog="floorctl",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's control socket")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FLOOR.toml",
        help=f"floor file: use its [gateway] socket (default: ${ENV_CONFIG})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    commands = p.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=Parser)
    for group in GROUPS:
        group.add_to(commands)
    return p


_DESCRIPTION = """\
Query and operate the floor's gateway (floorgated) from the floor.

Reading needs membership of the 'floorgate' group; acknowledging or resolving alarms and
scanning a bus need 'floorgate-admin' (or root). Changes are audited with your user name."""

_EPILOG = f"""\
examples:
  floorctl status                     the gateway at a glance: MQTT, outbox, buses
  floorctl health                     ok, degraded or failed, and why (exit 1 unless ok)
  floorctl floor                      every room at a glance (see its legend)
  floorctl room 1203                  everything about room 1203
  floorctl alarms                     open alarms, oldest first
  floorctl alarms ack 5d0c --by ana   acknowledge the alarm whose id starts 5d0c
  floorctl events --room 1203 -f      follow room 1203's events (Ctrl-C stops)
  floorctl locks                      every lock's slots, staff keys, battery
  floorctl lamps test ROOM            light a room's call lamps and check they read back
  floorctl audit verify               check the audit log's hash chain
  floorctl scan rs485-a               which unit ids answer on bus rs485-a
  floorctl config history             remote configuration: applied, rolled back, refused
  floorctl --json devices | jq .      any subcommand, as JSON for scripts
  floorctl completion bash > /etc/bash_completion.d/floorctl

exit codes: 0 success, 1 the daemon answered with an error (a refusal included),
2 usage error, 69 the daemon cannot be reached, 130 interrupted.

The socket is --socket PATH, else the [gateway] socket of the floor file given with
--config FLOOR.toml, else of the floor file ${ENV_CONFIG} names, else
/run/floorgate/floorctl.sock."""


if __name__ == "__main__":
    sys.exit(main())
