"""``floorctl audit``: who did what; ``audit verify`` checks the whole hash chain.

``verify`` ends with exit 1 when a row does not match, naming the first such row by its
sequence number (an altered, deleted or reordered row breaks the chain there).
"""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, Parser, bounded_int, command, json_flag
from gateway.model.views import AuditCheck, AuditLog

__all__ = ["add_to", "audit", "verify"]

_EPILOG = """\
examples:
  floorctl audit                               the last 50 rows
  floorctl audit --since 2026-11-23T00:00:00Z  rows from that time on
  floorctl audit verify                        check the hash chain (exit 1 if broken)"""


def add_to(commands: Commands) -> None:
    """Add ``audit`` with ``--since``, ``--limit`` and its action ``verify``."""
    p = command(commands, "audit", "who did what; 'verify' checks the chain", audit, epilog=_EPILOG)
    p.add_argument("--since", metavar="TIME", help="rows at or after TIME (RFC 3339, UTC, Z)")
    p.add_argument(
        "--limit", type=bounded_int(1, 1000), default=50, metavar="N", help="at most N rows (50)"
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    text = "check the audit log's hash chain; exit 1 naming the first row that does not match"
    v = actions.add_parser("verify", help=text, description=text[0].upper() + text[1:] + ".")
    v.set_defaults(handler=verify)
    json_flag(v)


def audit(ctx: Context, args: argparse.Namespace) -> AuditLog:
    """The last audit rows."""
    return ctx.client().audit(args.since, args.limit)


def verify(ctx: Context, args: argparse.Namespace) -> AuditCheck:
    """The whole chain, checked by the daemon."""
    return ctx.client().audit_verify()
