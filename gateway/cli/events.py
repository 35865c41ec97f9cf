"""``floorctl events``: recent events, or ``--follow`` new ones through daemon restarts.

A follower outlives the daemon: when the stream ends (the daemon stopped or restarted)
it says so, polls the socket with a bounded backoff, and when the daemon answers again
resumes after the last event it printed, so nothing is shown twice and nothing is
skipped. It ends only with Ctrl-C (exit 0), or when the first connection fails (exit
69: no daemon to follow) or the daemon refuses the request (exit 1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

from drivers.backoff import Backoff
from gateway.cli.client import Client, SocketRefused, StreamEnded
from gateway.cli.common import Commands, Context, bounded_int, command
from gateway.cli.results import EventStream, Notice
from gateway.model.errors import DaemonUnreachableError
from gateway.model.views import EventLog, EventRow

__all__ = ["RETRY_CAP_S", "RETRY_FIRST_S", "add_to", "events", "follow"]

RETRY_FIRST_S = 0.2  # the first wait before asking a daemon that went away again
RETRY_CAP_S = 5.0  # the longest wait between two attempts

_EPILOG = """\
examples:
  floorctl events                    the last 50 events
  floorctl events --since-seq 1040   events after seq 1040 (for scripts that poll)
  floorctl events --room 1203 -f     room 1203's events as they happen
  floorctl events -f --json          one JSON document per line

A follower keeps following when the daemon restarts: it says the daemon went
away, waits for it, then goes on after the last event it printed. Ctrl-C stops."""


def add_to(commands: Commands) -> None:
    """Add ``events`` with ``--since-seq``, ``--room``, ``--limit`` and ``--follow``."""
    p = command(commands, "events", "recent events, or follow new ones", events, epilog=_EPILOG)
    p.add_argument(
        "--since-seq", type=bounded_int(0, None), metavar="N", help="only events after seq N"
    )
    p.add_argument("--room", metavar="ROOM", help="only this room's events")
    p.add_argument(
        "--limit", type=bounded_int(1, 1000), default=50, metavar="N", help="at most N events (50)"
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")


def events(ctx: Context, args: argparse.Namespace) -> EventLog | EventStream:
    """The events asked for; with ``--follow``, a stream of them until Ctrl-C."""
    client = ctx.client()
    if args.follow:
        return EventStream(follow(client, args.since_seq, args.room, args.limit))
    return client.events(args.since_seq, args.room, args.limit)


def follow(
    client: Client,
    since_seq: int | None,
    room: str | None,
    limit: int,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[EventRow | Notice]:
    """The events ``events`` gives, then each new one, resuming across daemon restarts.

    The first connection is made before the first item is produced: DaemonUnreachableError
    if it fails. Later, a stream that ends yields a Notice, then the socket is polled
    (waits from ``backoff``, by ``sleep``) until the daemon answers, and another Notice.
    """
    backoff = backoff or Backoff(initial_s=RETRY_FIRST_S, cap_s=RETRY_CAP_S, jitter="equal")
    last = since_seq
    first = True
    while True:
        try:
            with client.event_stream(last, room, limit) as stream:
                if not first:
                    yield Notice(f"the daemon is back; following after {_after(last)}")
                first = False
                backoff.reset()
                for event in stream:
                    yield event
                    last = event.seq
        except StreamEnded as exc:
            yield Notice(f"the daemon went away ({exc}); waiting for it (Ctrl-C stops)")
            # Nothing printed yet: every matching event is new to us, so after seq 0.
            last = 0 if last is None else last
        except (DaemonUnreachableError, SocketRefused):
            # Not back yet: gone, or between binding its socket and opening it to the group.
            if first:
                raise
        sleep(backoff.next_delay())


def _after(seq: int | None) -> str:
    return "the start" if not seq else f"seq {seq}"
