"""The supervisor: one asyncio.TaskGroup that owns every long-lived task of the daemon.

Lifecycle of ``run()``: install SIGTERM/SIGINT handlers, start the registered services (and
the watchdog), await ``startup``, send READY=1; on the first stop request (signal, crashed
service, ``request_stop``) send STOPPING=1, run the ``on_stopping`` hooks, cancel every
task, then run the ``on_stopped`` hooks in reverse. The whole shutdown is bounded by
``shutdown_timeout_s``: what is still running then is abandoned (logged) and run() returns.
A second signal exits at once through ``force_exit``. ``WATCHDOG=1`` is sent from a task in
the event loop, and only while the floor's health (gateway.core.health, through the gate
given to ``watchdog_gate``) has no critical reason — before a gate is given, while every
registered ``Progress`` has beaten recently — so both a blocked loop and a stuck critical
loop let systemd's watchdog fire. ``request_restart`` stops the same way but says
RELOADING=1 instead of STOPPING=1: the daemon then starts again in the same process.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.adapters.sdnotify import Notifier

__all__ = ["Progress", "Supervisor"]

_log: structlog.typing.FilteringBoundLogger = structlog.get_logger()

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

ServiceFn = Callable[[], Coroutine[Any, Any, None]]
Hook = Callable[[], Awaitable[None]]
Gate = Callable[[], Sequence[str]]
"""The reasons to withhold WATCHDOG=1 now (empty: ping)."""


class Progress:
    """A critical loop's heartbeat: call ``beat()`` at least every ``max_silence_s``."""

    __slots__ = ("_clock", "last_beat", "max_silence_s", "name")

    def __init__(self, name: str, max_silence_s: float, clock: Callable[[], float]) -> None:
        """Start fresh: registration counts as the first beat."""
        self.name = name
        self.max_silence_s = max_silence_s
        self._clock = clock
        self.last_beat = clock()

    def beat(self) -> None:
        """Record that the loop made progress now."""
        self.last_beat = self._clock()

    def is_fresh(self, now: float) -> bool:
        """True if the last beat is at most ``max_silence_s`` before ``now``."""
        return now - self.last_beat <= self.max_silence_s


class Supervisor:
    """Owns the daemon's tasks, signals, sd_notify, watchdog and bounded shutdown."""

    def __init__(
        self,
        *,
        notifier: Notifier,
        shutdown_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        force_exit: Callable[[int], None] = os._exit,
    ) -> None:
        """``clock`` times Progress beats; ``force_exit`` ends the process on a second signal."""
        self._notifier = notifier
        self._shutdown_timeout_s = shutdown_timeout_s
        self._clock = clock
        self._force_exit = force_exit
        self._queued: list[tuple[str, ServiceFn]] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Progress] = {}
        self._stopping_hooks: list[Hook] = []
        self._stopped_hooks: list[Hook] = []
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._stop_at = 0.0
        self._exit_code = 0
        self._signals_seen = 0
        self._phase = "running"
        self._started_at: datetime | None = None
        self._abandoned: asyncio.Task[None] | None = None
        self._abandoned_names: tuple[str, ...] = ()
        self._gate: Gate | None = None
        self._restart: str | None = None

    @property
    def started_at(self) -> datetime:
        """When run() started (UTC); RuntimeError before that."""
        if self._started_at is None:
            raise RuntimeError("the supervisor has not been started")
        return self._started_at

    @property
    def restart_requested(self) -> str | None:
        """Why a restart was asked (request_restart), or None for a plain stop."""
        return self._restart

    @property
    def abandoned(self) -> tuple[str, ...]:
        """Names of tasks left running when the shutdown bound expired; empty if none."""
        return self._abandoned_names

    def spawn(self, name: str, fn: ServiceFn) -> None:
        """Run ``fn()`` as a task named ``name``: at run(), or now if already running.

        Returning ends the service (logged, not restarted); raising stops the daemon with
        exit code 1. After a stop was requested the service is not started (logged).
        ValueError if a live or queued service already has this name.
        """
        if name in self._tasks or any(queued == name for queued, _ in self._queued):
            raise ValueError(f"a service named {name!r} is already registered")
        if self._stop.is_set():
            _log.warning("spawn_refused", service=name, reason="stopping")
        elif self._tg is None:
            self._queued.append((name, fn))
        else:
            self._start(name, self._guard(name, fn))

    def progress(self, name: str, *, max_silence_s: float) -> Progress:
        """Register a critical loop; WATCHDOG=1 is withheld while its beat is stale."""
        if name in self._progress:
            raise ValueError(f"a progress handle named {name!r} is already registered")
        handle = Progress(name, max_silence_s, self._clock)
        self._progress[name] = handle
        return handle

    def loops(self) -> list[tuple[str, float, float]]:
        """Every registered critical loop: (name, seconds since its beat, its limit)."""
        now = self._clock()
        return [(p.name, now - p.last_beat, p.max_silence_s) for p in self._progress.values()]

    def watchdog_gate(self, gate: Gate) -> None:
        """From now on WATCHDOG=1 is withheld while ``gate()`` names a reason (once only)."""
        if self._gate is not None:
            raise ValueError("a watchdog gate is already registered")
        self._gate = gate

    def on_stopping(self, fn: Hook) -> None:
        """Run ``fn`` after a stop is requested, before tasks are cancelled (in order)."""
        self._stopping_hooks.append(fn)

    def on_stopped(self, fn: Hook) -> None:
        """Run ``fn`` after every task ended (in reverse registration order)."""
        self._stopped_hooks.append(fn)

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Begin shutdown (first call sends STOPPING=1); the exit code only ever rises."""
        self._exit_code = max(self._exit_code, exit_code)
        if self._stop.is_set():
            return
        self._stop_at = time.monotonic()
        self._stop.set()  # before anything that could fail: the stop must happen
        if self._restart is not None:
            self._notifier.reloading(status=f"restarting: {reason}")
        else:
            self._notifier.stopping(status=f"stopping: {reason}")
        _log.info("shutdown_requested", reason=reason, exit_code=exit_code)

    def request_restart(self, reason: str) -> None:
        """Stop cleanly so that the daemon starts again (``restart_requested`` tells why).

        Ignored once a stop is under way: a stop asked for by a signal or a crash wins.
        """
        if self._stop.is_set():
            _log.info("restart_ignored", reason=reason, already_stopping=True)
            return
        self._restart = reason
        self.request_stop(reason)

    async def run(self, startup: Callable[[], Awaitable[None]] | None = None) -> int:
        """Run until stopped and return the exit code; may be called once."""
        if self._started_at is not None:
            raise RuntimeError("Supervisor.run() may only be called once")
        self._started_at = datetime.now(UTC)
        if self._stop.is_set():
            self._stop_at = time.monotonic()  # stopped before run(): the bound starts now
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            group = loop.create_task(self._supervise(startup), name="supervisor")
            group.add_done_callback(self._on_group_done)
            try:
                await self._stop.wait()
            except asyncio.CancelledError:
                # Our caller cancelled run(): shut down the same bounded way, then propagate.
                self.request_stop("run() was cancelled", exit_code=1)
                await self._finish(group)
                raise
            return await self._finish(group)
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    # -- helpers -------------------------------------------------------------------------

    async def _supervise(self, startup: Callable[[], Awaitable[None]] | None) -> None:
        """Body of the "supervisor" task: the TaskGroup, then the on_stopped hooks."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if not self._stop.is_set():
                    for name, fn in self._queued:
                        self._start(name, self._guard(name, fn))
                    if (interval := self._notifier.watchdog_interval) is not None:
                        pinger = functools.partial(self._pinger, interval)
                        self._start("watchdog", self._guard("watchdog", pinger))
                    self._start("startup", self._startup(startup))
                self._queued.clear()
                await self._stop.wait()
                await self._run_hooks("on_stopping", self._stopping_hooks)
                self._phase = "cancelling tasks"
                for task in self._tasks.values():
                    task.cancel()
            await self._run_hooks("on_stopped", reversed(self._stopped_hooks))
            self._phase = "stopped"
        finally:
            self._tg = None

    async def _finish(self, group: asyncio.Task[None]) -> int:
        """Wait for ``group`` until the shutdown deadline; abandon it after that."""
        try:
            remaining = self._stop_at + self._shutdown_timeout_s - time.monotonic()
            done, _ = await asyncio.wait({group}, timeout=max(remaining, 0.0))
        except BaseException:
            group.cancel()
            raise
        if not done:
            stuck = sorted(name for name, task in self._tasks.items() if not task.done())
            # No stuck service means a hook is what hangs, inside the "supervisor" task.
            self._abandoned_names = tuple(stuck) or ("supervisor",)
            _log.error(
                "shutdown_timeout",
                timeout_s=self._shutdown_timeout_s,
                phase=self._phase,
                abandoned=list(self._abandoned_names),
            )
            group.cancel()  # a second cancel for every task; nobody waits for it any more
            self._abandoned = group  # keep a reference while it winds down
            self._exit_code = max(self._exit_code, 1)
        elif not group.cancelled() and (exc := group.exception()) is not None:
            _log.error("supervisor_failed", exc_info=exc)
            self._exit_code = max(self._exit_code, 1)
        _log.info("stopped", exit_code=self._exit_code)
        return self._exit_code

    def _start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        name = task.get_name()
        if self._tasks.get(name) is task:
            del self._tasks[name]

    async def _guard(self, name: str, fn: ServiceFn) -> None:
        """Run one service; a crash is logged with its stack and stops the daemon."""
        try:
            await fn()
        except Exception:  # noqa: BLE001 -- the supervisor edge; logged with the stack
            _log.exception("service_crashed", service=name)
            self.request_stop(f"{name} crashed", exit_code=1)
        else:
            _log.info("service_exited", service=name)

    async def _startup(self, startup: Callable[[], Awaitable[None]] | None) -> None:
        try:
            if startup is not None:
                await startup()
        except Exception:  # noqa: BLE001 -- the supervisor edge; logged with the stack
            _log.exception("startup_failed")
            self.request_stop("startup failed", exit_code=1)
            return
        if self._stop.is_set():
            return  # never READY=1 after STOPPING=1
        self._notifier.ready(status="running")
        _log.info("ready", services=sorted(self._tasks.keys() - {"startup"}))

    async def _pinger(self, interval: float) -> None:
        """Send WATCHDOG=1 every ``interval`` while the gate (or every Progress) allows."""
        withheld = False
        while True:
            stale = self._withhold()
            if not stale:
                if withheld:
                    _log.info("watchdog_resumed")
                    withheld = False
                self._notifier.watchdog()
            elif not withheld:
                _log.warning("watchdog_withheld", stale=stale)
                withheld = True
            await asyncio.sleep(interval)

    def _withhold(self) -> list[str]:
        """Why WATCHDOG=1 is withheld now: the gate's reasons, else the stale Progress names."""
        if self._gate is not None:
            try:
                return list(self._gate())
            except Exception:  # noqa: BLE001 -- a failing gate must not stop the pings
                _log.exception("watchdog_gate_failed")
        now = self._clock()
        return sorted(p.name for p in self._progress.values() if not p.is_fresh(now))

    async def _run_hooks(self, kind: str, hooks: Iterable[Hook]) -> None:
        for hook in list(hooks):
            name = getattr(hook, "__qualname__", repr(hook))
            self._phase = f"{kind} {name}"
            try:
                await hook()
            except Exception:  # noqa: BLE001 -- the supervisor edge; logged with the stack
                _log.exception("hook_failed", kind=kind, hook=name)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            if self._stop.is_set():
                _log.info("shutdown_requested", reason=sig.name, already_stopping=True)
            self.request_stop(sig.name)
            return
        try:
            _log.error("shutdown_forced", signal=sig.name, phase=self._phase)
        finally:
            self._force_exit(1)

    def _on_group_done(self, group: asyncio.Task[None]) -> None:
        if not self._stop.is_set():
            # Only reachable through a supervisor bug: never leave run() waiting forever.
            self.request_stop("supervisor task ended", exit_code=1)
