"""Fleet benchmark: the cost of metrics, and remote configuration's switch and rollback times.

    .venv/bin/python bench/fleetops.py [--seconds 40] [--warmup 8] [--rounds 2] [--scrape-s 1]
                                    [--confirm-s 5] [--skip-metrics] [--skip-config]

The whole gateway as deployed (bench/calls.py's ``GatewayRun``: floorgated as its own
process on config/floors/bench.toml, 60 rooms on four RS-485 lines and a Modbus TCP
endpoint, floorsim in another process, Mosquitto on a free loopback port).

**Metrics.** The daemon runs with metrics off (no ``[metrics]``) and on (a loopback
listener scraped every ``--scrape-s`` seconds — Prometheus's own default is 60 s, 15 s is
common — plus the textfile, written every 15 s), alternately, ``--rounds`` times each.
For each run: the daemon's CPU over the window (``/proc/PID/stat``, % of one core) and
its mean RSS. Printed: median off, median on, the difference, against the targets
(< 1 % of a core, < 5 MB). Also: the RSS of importing prometheus_client in a fresh
interpreter (the daemon imports it whether metrics are on or not).

**Remote configuration.** On one daemon (``[remote_config] confirm_min_s`` lowered to
``--confirm-s`` so the run is short; a real floor uses 30..900 s):

- a good ``apply_config`` (one more probe interval setting): from the command published
  to its reply, to the new process answering on the control socket, to the new floor
  polling (the first device answered, from ``floorctl devices``), and to
  ``config.applied``;
- a bad one (a bus on a port that does not exist, which passes ``--check``): from the
  command to ``config.rolled_back`` (the window plus the verdict), and to the floor
  polling again on the last-known-good file.

Every time is CLOCK_MONOTONIC of this machine; the control socket is polled every 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from calls import FLOOR, GatewayRun, ProcSample, Usage  # noqa: E402

from gateway.cli.client import Client  # noqa: E402
from gateway.model.errors import DaemonUnreachableError, ViewRefused  # noqa: E402
from tests.mosquitto import HOST, free_port  # noqa: E402

TARGET_CPU_PCT = 1.0
TARGET_RSS_MB = 5.0
POLL_S = 0.02


# -- metrics ---------------------------------------------------------------------------------


async def scrape_forever(port: int, every_s: float, sizes: list[int]) -> None:
    """GET /metrics every ``every_s``, as Prometheus would."""
    while True:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: text/plain\r\n\r\n")
        await writer.drain()
        sizes.append(len(await reader.read()))
        writer.close()
        await asyncio.sleep(every_s)


per_scrape: list[float] = []


async def metrics_run(on: bool, seconds: float, warmup: float, scrape_s: float) -> Usage:
    port = free_port()
    extra = ""
    if on:
        extra = f'[metrics]\nlisten = "{HOST}:{port}"\ntextfile = "metrics.prom"\n'
    async with GatewayRun(warmup, "metrics-on" if on else "metrics-off", extra_toml=extra,
                          quiet_daemon=True) as run:  # fmt: skip
        sizes: list[int] = []
        scraper = asyncio.create_task(scrape_forever(port, scrape_s, sizes)) if on else None
        try:
            async with run.measuring() as usage:
                await asyncio.sleep(seconds)
        finally:
            if scraper is not None:
                scraper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scraper
        if dead := run.alive():
            raise SystemExit(f"bench: {dead} exited during the run")
        if on and not sizes:
            raise SystemExit("bench: no scrape succeeded")
        if on:
            print(f"   scrapes: {len(sizes)}, {statistics.median(sizes) / 1024:.1f} KiB each")
            per_scrape.append(await scrape_cost(run, port, cpu_pct(usage[0])))
        return usage[0]


async def scrape_cost(run: GatewayRun, port: int, background_pct: float) -> float:
    """The daemon's CPU per scrape (ms): back-to-back scrapes, less its background load."""
    assert run.daemon is not None
    n = 200
    before = ProcSample.of(run.daemon.pid)
    for _ in range(n):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
    after = ProcSample.of(run.daemon.pid)
    elapsed = after.mono - before.mono
    used = after.cpu_s - before.cpu_s - background_pct / 100 * elapsed
    ms = 1000 * max(0.0, used) / n
    print(f"   {n} scrapes back to back: {ms:.2f} ms of daemon CPU each")
    return ms


def cpu_pct(u: Usage) -> float:
    assert u.start is not None
    assert u.end is not None
    return 100 * (u.end.cpu_s - u.start.cpu_s) / (u.end.mono - u.start.mono)


def rss_mb(u: Usage) -> float:
    return sum(u.rss) / len(u.rss)


def import_cost_mb() -> float:
    """RSS added by importing prometheus_client in a fresh interpreter."""
    code = (
        "import re\n"
        "def rss():\n"
        "    t = open('/proc/self/status').read()\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', t).group(1))\n"
        "import gateway.model.messages, structlog, pydantic\n"
        "a = rss()\n"
        "import prometheus_client\n"
        "print((rss() - a) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return float(out.stdout)


async def bench_metrics(seconds: float, warmup: float, rounds: int, scrape_s: float) -> None:
    print(f"== metrics: {rounds} rounds of {seconds:g} s, off and on (scrape every {scrape_s:g} s)")
    off: list[Usage] = []
    on: list[Usage] = []
    for i in range(rounds):
        for enabled, runs in ((False, off), (True, on)):
            usage = await metrics_run(enabled, seconds, warmup, scrape_s)
            runs.append(usage)
            print(f"   round {i + 1}, metrics {'on ' if enabled else 'off'}: {usage.line()}")
    cpu_off = statistics.median(cpu_pct(u) for u in off)
    cpu_on = statistics.median(cpu_pct(u) for u in on)
    rss_off = statistics.median(rss_mb(u) for u in off)
    rss_on = statistics.median(rss_mb(u) for u in on)
    d_cpu, d_rss = cpu_on - cpu_off, rss_on - rss_off
    print(f"-- CPU, median: off {cpu_off:.2f} %, on {cpu_on:.2f} % of one core")
    print(
        f"   metrics cost {d_cpu:+.2f} % of a core (target < {TARGET_CPU_PCT:g} %): "
        f"{'met' if d_cpu < TARGET_CPU_PCT else 'MISSED'}"
    )
    print(f"-- RSS, median of the means: off {rss_off:.1f} MB, on {rss_on:.1f} MB")
    print(
        f"   metrics cost {d_rss:+.1f} MB (target < {TARGET_RSS_MB:g} MB): "
        f"{'met' if d_rss < TARGET_RSS_MB else 'MISSED'}"
    )
    ms = statistics.median(per_scrape)
    at = 100 * ms / 1000 / scrape_s
    print(
        f"   measured per scrape: {ms:.2f} ms of CPU, i.e. {at:.3f} % of a core at one scrape"
        f" every {scrape_s:g} s (target < {TARGET_CPU_PCT:g} %): "
        f"{'met' if at < TARGET_CPU_PCT else 'MISSED'}"
    )
    imported = import_cost_mb()
    print(
        f"   importing prometheus_client (in both runs) costs {imported:.1f} MB; with it, "
        f"{d_rss + imported:+.1f} MB: {'met' if d_rss + imported < TARGET_RSS_MB else 'MISSED'}"
    )


# -- remote configuration ----------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _started_at(client: Client) -> str | None:
    try:
        return client.status().started_at
    except (DaemonUnreachableError, ViewRefused):
        return None


def _polling(client: Client) -> bool:
    try:
        return any(d.last_seen_s is not None for d in client.devices().devices)
    except (DaemonUnreachableError, ViewRefused):
        return False


async def _until(cond: object, limit_s: float) -> float:
    """Poll ``cond()`` (in a thread: the client is blocking) until true; monotonic time."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):  # type: ignore[arg-type]
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise SystemExit("bench: timed out")


async def switch(run: GatewayRun, client: Client, text: str, confirm_s: int, what: str) -> None:
    before = await asyncio.to_thread(_started_at, client)
    outcome = "config.applied" if what == "good" else "config.rolled_back"
    told = run.expect(lambda d: d.get("type") == outcome)
    body = {"floor_toml": text, "sha256": _sha(text), "confirm_s": confirm_s}
    sent_ns, reply = await run.command("apply_config", body)
    t0 = sent_ns / 1e9
    t_reply = time.monotonic()
    if not reply.get("ok"):
        raise SystemExit(f"bench: apply_config refused: {reply}")
    t_up = await _until(lambda: (s := _started_at(client)) is not None and s != before, 60)
    t_poll = await _until(lambda: _polling(client), 60)
    got = await run.wait(told, confirm_s + 60)
    if got is None:
        raise SystemExit(f"bench: no {outcome}")
    t_told = got.mono_ns / 1e9
    print(f"-- {what} file (confirm_s {confirm_s}):")
    print(f"   reply               {1000 * (t_reply - t0):8.0f} ms")
    print(f"   new process answers {1000 * (t_up - t0):8.0f} ms")
    print(f"   new floor polling   {1000 * (t_poll - t0):8.0f} ms")
    print(f"   {outcome:<19} {1000 * (t_told - t0):8.0f} ms  (window {confirm_s} s)")
    if what == "bad":
        back = await asyncio.to_thread(_started_at, client)
        t_back = await _until(lambda: (s := _started_at(client)) is not None and s != back, 60)
        t_back_poll = await _until(lambda: _polling(client), 60)
        print(f"   back on the old file {1000 * (t_back - t0):7.0f} ms")
        print(f"   old floor polling   {1000 * (t_back_poll - t0):8.0f} ms")
        print(
            f"   rollback overhead beyond the window: "
            f"{1000 * (t_back_poll - t0) - 1000 * confirm_s:.0f} ms"
        )


async def bench_config(warmup: float, confirm_s: int) -> None:
    print(f"== remote configuration on the bench floor (confirm_min_s lowered to {confirm_s})")
    extra = f"[remote_config]\nconfirm_min_s = {confirm_s}\n"
    async with GatewayRun(warmup, "config", extra_toml=extra, quiet_daemon=True) as run:
        client = Client(run.ctl_path.parent / "floorctl.sock")
        text = run.floor.read_text()
        good = text + "\n[poll]\nprobe_max_s = 30\n"
        await switch(run, client, good, confirm_s, "good")
        bad = good.replace("tty-rs485-d", "tty-rs485-nowhere")
        assert bad != good
        await switch(run, client, bad, confirm_s, "bad")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=40.0, help="measured time per metrics run")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    p.add_argument("--rounds", type=int, default=2, help="metrics off/on runs, each")
    p.add_argument("--scrape-s", type=float, default=1.0, help="scrape interval, metrics on")
    p.add_argument("--confirm-s", type=int, default=5, help="confirmation window, seconds")
    p.add_argument("--skip-metrics", action="store_true")
    p.add_argument("--skip-config", action="store_true")
    args = p.parse_args()
    with open("/proc/loadavg") as f:
        print(f"bench floor {FLOOR.name}; load average at start: {f.read().split()[:3]}")
    if not args.skip_metrics:
        asyncio.run(bench_metrics(args.seconds, args.warmup, args.rounds, args.scrape_s))
    if not args.skip_config:
        asyncio.run(bench_config(args.warmup, args.confirm_s))
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {f.read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
