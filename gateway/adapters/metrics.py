"""Prometheus metrics (operations.md "Metrics"): the one module that owns the registry.

Nothing else in the daemon counts for Prometheus. The figures already exist where they
are kept — the bus schedulers' ``stats()``, the uplink's ``stats()``, the command
pipeline's counts, the floor state's figures, the health verdict, the log's warning
counts — and a collector reads them each time the metrics are rendered (a scrape of the
listener, a write of the textfile). The one metric fed as things happen is the call
histogram: the uplink calls ``delivered(event)`` on each PUBACK.

Exposition is prometheus_client's (``generate_latest``). The listener is a small asyncio
HTTP responder (GET ``/metrics``) so that rendering runs in the event loop, next to the
objects it reads; the textfile is rendered in the loop and written by a thread, replaced
atomically (a temporary file in the same directory, then ``os.replace``), as
node_exporter's textfile collector requires.

Label sets are bounded: buses, devices and rooms come from the floor file, alarm kinds,
energy modes, transaction results and health reasons are closed sets, command types are
the served ones (anything else is ``other``), log events are literals of the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from drivers.busview import BusStats
from gateway.adapters.mqtt import UplinkStats
from gateway.adapters.schema import StoredEvent
from gateway.core.figures import FloorFigures
from gateway.core.health import REASON_CODES, Health
from gateway.model.time import parse_ts

__all__ = ["CALL_BUCKETS_S", "FloorMetrics", "MetricsSources"]

log = structlog.get_logger("gateway.metrics")

CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""floorgate_call_publish_seconds: from a call seen on the floor to the broker's PUBACK."""
REQUEST_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100


@dataclass(frozen=True, slots=True)
class MetricsSources:
    """Where each figure is read at render time."""

    buses: Mapping[str, Callable[[], BusStats]]
    link: Callable[[], UplinkStats]
    floor: Callable[[], FloorFigures]
    commands: Callable[[], Mapping[tuple[str, str], int]]
    lock_slots_pending: Callable[[], int]
    health: Callable[[], Health]
    log_counts: Callable[[], Mapping[tuple[str, str], int]]
    config_pending: Callable[[], bool] = lambda: False
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)


class FloorMetrics:
    """The registry, the call histogram, and the two ways out: listener and textfile."""

    def __init__(
        self, sources: MetricsSources, *, gateway: str, version: str, process: bool = True
    ) -> None:
        """Register the floor's collector (and the process's: CPU, memory, descriptors)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_FloorCollector(sources, gateway, version))
        self._calls = Histogram(
            "floorgate_call_publish_seconds",
            "Seconds from a guest call seen on the floor to the broker's PUBACK of its"
            " alarm.raised event",
            buckets=CALL_BUCKETS_S,
            registry=self.registry,
        )
        if process:
            ProcessCollector(registry=self.registry)
        self._wall = sources.wall
        self._handlers: set[asyncio.Task[None]] = set()

    def delivered(self, event: StoredEvent) -> None:
        """The broker acknowledged ``event``: a guest call's raise is timed."""
        if event.type != "alarm.raised" or event.data.get("kind") != "call":
            return
        try:
            seen = parse_ts(event.ts)
        except ValueError:
            return
        self._calls.observe(max(0.0, (self._wall() - seen).total_seconds()))

    def render(self) -> bytes:
        """The Prometheus text format of every metric, now."""
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> None:
        """Answer GET /metrics on ``host:port`` until cancelled."""
        server = await asyncio.start_server(self._accept, host, port, limit=16 * 1024)
        log.info("metrics_listening", host=host, port=port)
        try:
            async with server:
                await server.serve_forever()
        finally:
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(self._handlers)
            log.info("metrics_stopped", host=host, port=port)

    async def write_textfile(self, path: Path, every_s: float) -> None:
        """Render and replace ``path`` atomically every ``every_s`` until cancelled."""
        failing = False
        while True:
            data = self.render()
            try:
                await asyncio.to_thread(_replace, path, data)
            except OSError as exc:
                (log.debug if failing else log.warning)(
                    "metrics_textfile_failed", path=str(path), error=str(exc)
                )
                failing = True
            else:
                if failing:
                    log.info("metrics_textfile_written", path=str(path))
                failing = False
            await asyncio.sleep(every_s)

    # -- the listener ------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._answer(reader, writer), name="metrics-request")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await reader.readline()
                for _ in range(MAX_HEADER_LINES):
                    if (await reader.readline()).strip() == b"":
                        break
                status, body, kind = self._route(request)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("ascii"))
                if not request.startswith(b"HEAD "):
                    writer.write(body)
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug("metrics_request_failed", error=repr(exc))
        except Exception:  # the edge: a scrape must never take the listener down
            log.exception("metrics_request_failed")
        finally:
            writer.close()

    def _route(self, request: bytes) -> tuple[str, bytes, str]:
        parts = request.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        if target not in (b"/metrics", b"/"):
            return "404 Not Found", b"GET /metrics\n", "text/plain"
        return "200 OK", self.render(), CONTENT_TYPE_LATEST


class _FloorCollector(Collector):
    """Every floorgate_* metric but the call histogram, read from the sources."""

    def __init__(self, sources: MetricsSources, gateway: str, version: str) -> None:
        self._s = sources
        self._gateway = gateway
        self._version = version

    def collect(self) -> Iterable[Metric]:
        s = self._s
        info = InfoMetricFamily("floorgate", "The gateway and its software version")
        info.add_metric([], {"gateway": self._gateway, "version": self._version})
        yield info
        yield GaugeMetricFamily("floorgate_up", "1 while the gateway daemon runs", value=1)
        yield from _buses(s.buses)
        yield from _link(s.link(), s.wall())
        yield from _floor(s.floor())
        yield from _commands(s.commands())
        yield GaugeMetricFamily(
            "floorgate_lock_slots_pending",
            "Lock credential slots still to be written or cleared to match the stays",
            value=s.lock_slots_pending(),
        )
        yield from _health(s.health())
        yield GaugeMetricFamily(
            "floorgate_config_pending",
            "1 while a remotely applied floor file is being confirmed",
            value=int(s.config_pending()),
        )
        logged = CounterMetricFamily(
            "floorgate_log_messages",
            "Log lines at warning level or above, by level and event name",
            labels=["level", "event"],
        )
        for (level, event), n in sorted(s.log_counts().items()):
            logged.add_metric([level, event], n)
        yield logged

    def describe(self) -> Iterable[Metric]:
        return []


def _buses(buses: Mapping[str, Callable[[], BusStats]]) -> Iterator[Metric]:
    tx = CounterMetricFamily(
        "floorgate_bus_transactions",
        "Modbus transactions by bus and result: ok, timeout, crc, exception_NN, bus_gone",
        labels=["bus", "result"],
    )
    util = GaugeMetricFamily(
        "floorgate_bus_utilisation",
        "Share of the last 10 s the bus spent in transactions (0..1; TCP: per request lane)",
        labels=["bus"],
    )
    gone = GaugeMetricFamily(
        "floorgate_bus_gone", "1 while the bus's port or TCP endpoint is lost", labels=["bus"]
    )
    up = GaugeMetricFamily(
        "floorgate_device_up", "1 while the device answers, 0 offline or not yet heard",
        labels=["device"],
    )  # fmt: skip
    for name, stats in buses.items():
        st = stats()
        failed = sum(st.errors.values())
        tx.add_metric([name, "ok"], max(0, st.transactions - failed))
        for reason, n in sorted(st.errors.items()):
            tx.add_metric([name, reason.replace(" ", "_")], n)
        util.add_metric([name], st.utilisation)
        gone.add_metric([name], int(st.gone))
        for d in st.devices:
            up.add_metric([d.name], int(d.online))
    yield from (tx, util, gone, up)


def _link(link: UplinkStats, now: datetime) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "floorgate_mqtt_connected", "1 while the broker accepted the connection",
        value=int(link.connected),
    )  # fmt: skip
    yield GaugeMetricFamily(
        "floorgate_outbox_pending", "Events not yet acknowledged by the broker",
        value=link.outbox_depth,
    )  # fmt: skip
    oldest = 0.0
    if link.oldest_undelivered is not None:
        with contextlib.suppress(ValueError):
            oldest = max(0.0, (now - parse_ts(link.oldest_undelivered)).total_seconds())
    yield GaugeMetricFamily(
        "floorgate_outbox_oldest_seconds", "Age of the oldest undelivered event (0: none)",
        value=oldest,
    )  # fmt: skip
    yield CounterMetricFamily(
        "floorgate_events_shed", "Low-value events dropped at the outbox's disk cap",
        value=link.shed,
    )  # fmt: skip
    yield CounterMetricFamily(
        "floorgate_publish_refused",
        "Publishes the broker refused (MQTT 5 PUBACK reason code >= 0x80)",
        value=link.refused,
    )
    yield CounterMetricFamily(
        "floorgate_mqtt_reconnects", "Connections to the broker after the first",
        value=link.reconnects,
    )  # fmt: skip


def _floor(figures: FloorFigures) -> Iterator[Metric]:
    alarms = GaugeMetricFamily(
        "floorgate_alarms_open", "Open (active or acknowledged) alarms by kind", labels=["kind"]
    )
    for kind, n in sorted(figures.alarms_open.items()):
        alarms.add_metric([kind], n)
    yield alarms
    waiting = GaugeMetricFamily(
        "floorgate_alarm_unacknowledged_seconds",
        "Age of the oldest active (unacknowledged) alarm by kind (0: none)",
        labels=["kind"],
    )
    for kind, age in sorted(figures.unacknowledged_s.items()):
        waiting.add_metric([kind], age)
    yield waiting
    rooms = GaugeMetricFamily("floorgate_rooms", "Rooms by energy mode", labels=["energy_mode"])
    for mode, n in sorted(figures.rooms.items()):
        rooms.add_metric([mode], n)
    yield rooms


def _commands(counts: Mapping[tuple[str, str], int]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "floorgate_commands",
        "Commands from the central system by type and result (ok or the refusal code)",
        labels=["type", "result"],
    )
    for (type_, result), n in sorted(counts.items()):
        family.add_metric([type_, result], n)
    yield family


def _health(health: Health) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "floorgate_health", "The floor's health: 0 ok, 1 degraded, 2 failed",
        value=health.level.rank,
    )  # fmt: skip
    reasons = GaugeMetricFamily(
        "floorgate_health_reason", "1 while the floor's health names this reason",
        labels=["reason"],
    )  # fmt: skip
    active = set(health.codes)
    for code in REASON_CODES:
        reasons.add_metric([code], int(code in active))
    yield reasons


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
