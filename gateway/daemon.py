"""floorgated: the per-floor gateway daemon (``floorgated --config FLOOR.toml [--check]``).

Exit codes: 0 clean stop or valid floor; 78 (EX_CONFIG) invalid floor file or profile;
1 a service crashed or the store could not be opened (systemd restarts us, except on 78).

A restart asked by the floor itself (a floor file applied remotely, or rolled back) stops
cleanly and executes the same command line again in the same process (same PID, so
systemd keeps following it; RELOADING=1, then READY=1): it needs no service manager. If
the exec itself fails, the daemon exits 75 (EX_TEMPFAIL) and systemd starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from drivers.errors import FloorgateError
from gateway import __version__
from gateway.adapters.sdnotify import Notifier
from gateway.adapters.store import Store
from gateway.app import build
from gateway.config.floor import FloorConfig
from gateway.config.load import format_report, load_floor
from gateway.core.inputs import Lifecycle
from gateway.engine.configs import ConfigKeeper
from gateway.logging import configure_logging
from gateway.model.errors import ConfigError, StoreError
from gateway.supervisor import Supervisor

EX_OK = 0
EX_FAILURE = 1
EX_TEMPFAIL = 75  # sysexits.h: a restart onto another floor file failed to exec
EX_CONFIG = 78  # sysexits.h EX_CONFIG; systemd's RestartPreventExitStatus=78

# How often the store liveness loop round-trips through the writer thread, and how long
# it may stay silent before the watchdog is withheld (the writer is a critical loop).
STORE_PING_S = 1.0
STORE_MAX_SILENCE_S = 10.0

log = structlog.get_logger("gateway.daemon")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = _parser().parse_args(argv)
    if args.check:
        return check(args.config)
    configure_logging(level=args.log_level, json=_json_choice(args.log_format))
    try:
        config, warnings = load_floor(args.config)
    except ConfigError as exc:
        problems = exc.problems
    else:
        for warning in warnings:
            log.warning("config_warning", detail=warning)
        code = asyncio.run(run(config))
        if code == EX_TEMPFAIL:
            _exec_again()
        return code
    print(format_report(problems, args.config), file=sys.stderr)
    log.error("config_invalid", path=str(args.config), problems=len(problems))
    return EX_CONFIG


def check(path: Path) -> int:
    """Validate a floor file: print every problem (exit 78) or a one-line summary (exit 0)."""
    try:
        config, warnings = load_floor(path)
    except ConfigError as exc:
        print(format_report(exc.problems, path))
        return EX_CONFIG
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"ok: {config.summary()}")
    return EX_OK


async def run(config: FloorConfig, *, notifier: Notifier | None = None) -> int:
    """Run the gateway for a validated floor until a signal stops it; return the exit code.

    ``config`` is the local floor file; the floor may run another one applied remotely
    (gateway.engine.configs). EX_TEMPFAIL: the floor asked to be started again.
    """
    notifier = notifier or Notifier.from_env()
    supervisor = Supervisor(notifier=notifier)
    structlog.contextvars.bind_contextvars(gateway=config.gateway.id)
    try:
        store = await Store.open(config.database_path)
    except StoreError as exc:
        error = str(exc)
    else:
        return await _serve(config, supervisor, store)
    log.error("store_open_failed", path=str(config.database_path), error=error)
    return EX_FAILURE


async def _serve(local: FloorConfig, supervisor: Supervisor, store: Store) -> int:
    """Run the services on an open store until stopped."""
    supervisor.on_stopped(store.close)
    try:
        configs = await ConfigKeeper.start(local, store)
    except (OSError, StoreError) as exc:
        failure = str(exc)
    else:
        failure = ""
    if failure:
        log.error("start_failed", error=failure)
        await store.close()
        return EX_FAILURE
    config = configs.config

    progress = supervisor.progress("store", max_silence_s=STORE_MAX_SILENCE_S)

    async def store_liveness() -> None:
        while True:
            try:
                await store.ping()
            except StoreError as exc:
                # It answered, with an error (a full disk, an I/O error): the committer
                # holds its decisions and raises ``storage``; only a silent store is stuck.
                log.warning("store_ping_failed", error=str(exc))
            progress.beat()
            await asyncio.sleep(STORE_PING_S)

    supervisor.spawn("store-liveness", store_liveness)
    try:
        inbox = await build(configs, store, supervisor)
    except (FloorgateError, OSError) as exc:
        failure = str(exc)
    else:
        failure = ""
    if failure:
        log.error("start_failed", error=failure)
        # A floor file on trial that cannot even start: the next start rolls it back.
        again = await configs.start_failed(store, failure)
        await store.close()
        return EX_TEMPFAIL if again else EX_FAILURE

    async def startup() -> None:
        await inbox.submit(Lifecycle("gateway.started", {"version": __version__}))
        log.info("gateway_started", version=__version__, floor=config.summary())

    async def stopping() -> None:
        await inbox.submit(Lifecycle("gateway.stopping"))

    supervisor.on_stopping(stopping)
    code = await supervisor.run(startup)
    if supervisor.restart_requested is not None and code == EX_OK:
        code = EX_TEMPFAIL
    if supervisor.abandoned:
        # A task ignored cancellation past the shutdown bound; asyncio.run() would wait
        # for it without limit. Leave now so a stop never outlasts the bound.
        sys.stdout.flush()
        if code == EX_TEMPFAIL:
            _exec_again()
        os._exit(code)
    return code


def _exec_again() -> None:
    """Replace this process with the same command line (returns only if exec fails)."""
    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("restarting", argv=argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 -- our own interpreter and command line
    except OSError:
        log.exception("restart_failed")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="floorgated",
        description="floorgate: the per-floor hotel gateway daemon (runs in the foreground).",
    )
    p.add_argument("--config", type=Path, required=True, metavar="FLOOR.toml", help="floor file")
    p.add_argument(
        "--check", action="store_true", help="validate the floor file and exit (0 valid, 78 not)"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="JSON lines (default when stdout is not a terminal) or console rendering",
    )
    p.add_argument("--version", action="version", version=f"floorgated {__version__}")
    return p


def _json_choice(fmt: str) -> bool | None:
    return {"json": True, "console": False}.get(fmt)


if __name__ == "__main__":
    sys.exit(main())
