"""The supervisor against a real NOTIFY_SOCKET, real signals and shrunken time constants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict

from gateway.adapters.sdnotify import Notifier
from gateway.supervisor import Supervisor
from tests.waiting import until

WATCHDOG_USEC = 40_000  # a ping every 20 ms
# Bound on waits that end in milliseconds (a stop, a datagram): only a hang exceeds it,
# a loaded machine does not (how fast a stop is: bench/, not here).
BOUND_S = 10.0


class Listener:
    """The systemd end of NOTIFY_SOCKET."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.seen: list[str] = []

    def drain(self) -> list[str]:
        """Every datagram queued right now (never waits)."""
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.seen += out
        return out

    async def wait_for(self, line: str) -> None:
        """Wait (2 s at most) for a new datagram holding ``line``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(BOUND_S):
            while True:
                message = (await loop.sock_recv(self.sock, 4096)).decode()
                self.seen.append(message)
                if line in message.splitlines():
                    return

    def lines(self) -> list[str]:
        self.drain()
        return [line for message in self.seen for line in message.splitlines()]


class FakeClock:
    """A monotonic clock the test moves by hand; counts its reads (one per watchdog tick)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks behind."""
    yield
    leftover = [t.get_name() for t in other_tasks()]
    assert not leftover, f"tasks left behind: {leftover}"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    sock = Listener(str(tmp_path / "notify"))
    yield sock
    sock.sock.close()


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def notifier_for(listener: Listener, *, watchdog: bool = False) -> Notifier:
    env = {"NOTIFY_SOCKET": listener.path}
    if watchdog:
        env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    return Notifier.from_env(env)


async def forever() -> None:
    await asyncio.Event().wait()


def stubborn(release: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    """A service that ignores cancellation until ``release`` is set (a bug, on purpose)."""

    async def service() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    return service


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


def task_names() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks()}


def other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def start(
    sup: Supervisor, listener: Listener, startup: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Task[int]:
    """Run the supervisor in a task of the test's loop; return once READY=1 arrived."""
    run = asyncio.create_task(sup.run(startup), name="test-run")
    await listener.wait_for("READY=1")
    return run


async def test_tasks_are_named_and_ready_follows_startup(listener: Listener) -> None:
    sup = Supervisor(notifier=notifier_for(listener, watchdog=True))
    sup.spawn("bus[rs485-a]", forever)
    sup.spawn("mqtt", forever)
    gate = asyncio.Event()
    finished: list[str] = []

    async def startup() -> None:
        await gate.wait()
        finished.append("startup")

    run = asyncio.create_task(sup.run(startup))
    await until(lambda: {"bus[rs485-a]", "mqtt", "watchdog", "startup"} <= task_names())
    assert "READY=1" not in listener.lines()
    gate.set()
    await listener.wait_for("READY=1")
    assert finished == ["startup"]
    assert sup.started_at.tzinfo is UTC

    sup.request_stop("test over")
    async with asyncio.timeout(BOUND_S):
        assert await run == 0
    assert "STOPPING=1" in listener.lines()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_cleanly_with_hooks_in_order(
    listener: Listener, logs: list[EventDict], sig: signal.Signals
) -> None:
    order: list[str] = []
    sup = Supervisor(notifier=notifier_for(listener))

    async def service() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            order.append("service cancelled")
            raise

    def hook(label: str) -> Callable[[], Awaitable[None]]:
        async def run_hook() -> None:
            order.append(label)

        return run_hook

    sup.spawn("bus[rs485-a]", service)
    sup.on_stopping(hook("stopping 1"))
    sup.on_stopping(hook("stopping 2"))
    sup.on_stopped(hook("stopped 1"))
    sup.on_stopped(hook("stopped 2"))
    run = await start(sup, listener)

    os.kill(os.getpid(), sig)
    async with asyncio.timeout(BOUND_S):
        assert await run == 0
    # Not by the shutdown bound: nothing was left running.
    assert not events(logs, "shutdown_timeout")
    assert sup.abandoned == ()
    assert order == ["stopping 1", "stopping 2", "service cancelled", "stopped 2", "stopped 1"]
    assert "STOPPING=1" in listener.lines()
    assert events(logs, "shutdown_requested")[0]["reason"] == sig.name
    assert not asyncio.get_running_loop().remove_signal_handler(sig)  # run() removed its handlers


async def test_stubborn_task_does_not_hold_shutdown(
    listener: Listener, logs: list[EventDict]
) -> None:
    release = asyncio.Event()
    stopped_hooks: list[str] = []

    async def stopped() -> None:
        stopped_hooks.append("ran")

    sup = Supervisor(notifier=notifier_for(listener), shutdown_timeout_s=0.3)
    sup.spawn("stubborn", stubborn(release))
    sup.on_stopped(stopped)
    run = await start(sup, listener)

    loop = asyncio.get_running_loop()
    began = loop.time()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(BOUND_S):
        code = await run
    # It waited for the bound, and asyncio.timeout(BOUND_S) above: not forever.
    assert loop.time() - began >= 0.25
    assert code == 1  # not a clean stop: something had to be abandoned
    (timeout,) = events(logs, "shutdown_timeout")
    assert timeout["abandoned"] == ["stubborn"]
    assert stopped_hooks == []  # never close resources under a task that still runs
    assert sup.abandoned == ("stubborn",)

    release.set()
    await until(lambda: not other_tasks())  # the abandoned task winds down


async def test_crashing_service_stops_everything_with_exit_1(
    listener: Listener, logs: list[EventDict]
) -> None:
    cancelled: list[str] = []

    async def healthy() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            cancelled.append("mqtt")
            raise

    crash = asyncio.Event()

    async def crashing() -> None:
        await crash.wait()
        raise RuntimeError("boom")

    sup = Supervisor(notifier=notifier_for(listener))
    sup.spawn("mqtt", healthy)
    sup.spawn("bus[rs485-a]", crashing)
    run = await start(sup, listener)
    crash.set()
    async with asyncio.timeout(BOUND_S):
        assert await run == 1
    assert cancelled == ["mqtt"]
    (crashed,) = events(logs, "service_crashed")
    assert crashed["service"] == "bus[rs485-a]"
    assert crashed["exc_info"] is True
    assert "STOPPING=1" in listener.lines()


async def test_failed_startup_exits_1_without_ready(
    listener: Listener, logs: list[EventDict]
) -> None:
    async def startup() -> None:
        raise OSError("store unavailable")

    sup = Supervisor(notifier=notifier_for(listener))
    sup.spawn("mqtt", forever)
    async with asyncio.timeout(BOUND_S):
        assert await sup.run(startup) == 1
    assert "READY=1" not in listener.lines()
    assert "STOPPING=1" in listener.lines()
    assert len(events(logs, "startup_failed")) == 1


async def test_service_that_returns_is_not_restarted(
    listener: Listener, logs: list[EventDict]
) -> None:
    calls: list[str] = []

    async def one_shot() -> None:
        calls.append("ran")

    sup = Supervisor(notifier=notifier_for(listener))
    sup.spawn("one-shot", one_shot)
    sup.spawn("mqtt", forever)
    run = await start(sup, listener)
    await until(lambda: bool(events(logs, "service_exited")))
    assert "mqtt" in task_names()
    assert not run.done()
    sup.request_stop("test over")
    async with asyncio.timeout(BOUND_S):
        assert await run == 0
    assert calls == ["ran"]
    assert [e["service"] for e in events(logs, "service_exited")] == ["one-shot"]


async def test_second_signal_forces_exit(listener: Listener, logs: list[EventDict]) -> None:
    release = asyncio.Event()
    forced: list[int] = []

    sup = Supervisor(
        notifier=notifier_for(listener), shutdown_timeout_s=5.0, force_exit=forced.append
    )
    sup.spawn("stubborn", stubborn(release))
    run = await start(sup, listener)

    os.kill(os.getpid(), signal.SIGTERM)
    await listener.wait_for("STOPPING=1")
    os.kill(os.getpid(), signal.SIGTERM)
    await until(lambda: forced == [1])
    assert len(events(logs, "shutdown_forced")) == 1

    release.set()  # the injected force_exit returned; let the shutdown finish
    async with asyncio.timeout(BOUND_S):
        await run


async def test_external_cancellation_still_shuts_down(listener: Listener) -> None:
    order: list[str] = []

    async def stopping() -> None:
        order.append("stopping")

    async def stopped() -> None:
        order.append("stopped")

    sup = Supervisor(notifier=notifier_for(listener))
    sup.spawn("mqtt", forever)
    sup.on_stopping(stopping)
    sup.on_stopped(stopped)
    run = await start(sup, listener)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(BOUND_S):
            await run
    assert order == ["stopping", "stopped"]


async def test_watchdog_withheld_while_a_critical_loop_is_stale(
    listener: Listener, logs: list[EventDict]
) -> None:
    clock = FakeClock()
    sup = Supervisor(notifier=notifier_for(listener, watchdog=True), clock=clock)
    bus = sup.progress("bus[rs485-a]", max_silence_s=1.0)
    sup.progress("store", max_silence_s=60.0)
    run = await start(sup, listener)
    await listener.wait_for("WATCHDOG=1")  # all fresh: pings flow

    clock.now += 5.0  # the bus loop stops beating
    await until(lambda: bool(events(logs, "watchdog_withheld")))
    assert events(logs, "watchdog_withheld")[0]["stale"] == ["bus[rs485-a]"]
    listener.drain()
    reads = clock.reads
    await until(lambda: clock.reads >= reads + 3)  # three more watchdog ticks
    assert "WATCHDOG=1" not in [line for m in listener.drain() for line in m.splitlines()]
    assert len(events(logs, "watchdog_withheld")) == 1  # once per episode

    bus.beat()
    await listener.wait_for("WATCHDOG=1")
    assert len(events(logs, "watchdog_resumed")) == 1

    sup.request_stop("test over")
    async with asyncio.timeout(BOUND_S):
        assert await run == 0


async def test_blocked_loop_sends_no_pings(listener: Listener) -> None:
    interval = WATCHDOG_USEC / 2 / 1e6
    sup = Supervisor(notifier=notifier_for(listener, watchdog=True))
    run = await start(sup, listener)
    await listener.wait_for("WATCHDOG=1")

    during_block: list[str] = []
    blocked = asyncio.Event()

    async def blocker() -> None:
        listener.drain()
        time.sleep(10 * interval)  # blocks the whole event loop, on purpose
        during_block.extend(listener.drain())
        blocked.set()

    sup.spawn("blocker", blocker)  # spawned while running
    async with asyncio.timeout(BOUND_S):
        await blocked.wait()
    assert during_block == []
    await listener.wait_for("WATCHDOG=1")  # pings resume once the loop is free

    sup.request_stop("test over")
    async with asyncio.timeout(BOUND_S):
        assert await run == 0


async def test_registration_errors(listener: Listener) -> None:
    sup = Supervisor(notifier=notifier_for(listener))
    sup.spawn("mqtt", forever)
    with pytest.raises(ValueError, match="already registered"):
        sup.spawn("mqtt", forever)
    sup.progress("store", max_silence_s=1.0)
    with pytest.raises(ValueError, match="already registered"):
        sup.progress("store", max_silence_s=1.0)
    with pytest.raises(RuntimeError):
        _ = sup.started_at

    sup.request_stop("before run")  # a stop requested before run() ends it at once
    async with asyncio.timeout(BOUND_S):
        assert await sup.run() == 0
    assert "READY=1" not in listener.lines()
    with pytest.raises(RuntimeError, match="only be called once"):
        await sup.run()
