"""The MQTT uplink (mqtt.md): the only module that imports aiomqtt.

``Uplink.run()`` connects in a loop (capped full-jitter backoff) with the gateway id as
client id, a persistent session (MQTT 3.1.1 ``clean_session=False``) and a retained
offline status as will. On every connect, in this order: retained online status,
subscribe ``{root}/cmd``, every item of ``current_state()`` (open alarms, then rooms) and
the retained changes still pending, all acknowledged, and only then the event backlog.
This is mqtt.md's "current state first": the floor as it is now reaches the central
system within a second of the link returning, whatever the backlog.

Outbox: one drainer publishes undelivered events in ``seq`` order at QoS 1 with at most
``max_in_flight`` publishes awaiting PUBACK; an event is marked delivered only after its
PUBACK (marks are written in batches). After a reconnect or a restart it resumes from
the first undelivered event: delivery is at-least-once, duplicates carry the same id.

Housekeeping (every second, connected or not): delivered events older than
``events_keep_days`` are purged (every ``PURGE_EVERY_S``); above ``outbox_max_mib`` the
low-value events are shed, and nothing else (schema.shed_low_value); stats are refreshed.

Any broker failure (refused, gone, hung past the timeout, TLS or password problems) ends
the session and the loop reconnects: run() returns only by cancellation, when it
publishes the retained offline status itself (bounded), since a clean disconnect sends
no will.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiomqtt
import structlog

from drivers.backoff import Backoff
from gateway.adapters import schema
from gateway.adapters.schema import StoredEvent
from gateway.adapters.signals import Broadcast, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.model.messages import Status, dumps
from gateway.model.time import format_ts

__all__ = ["LinkState", "Uplink", "UplinkStats"]

READ_BATCH = 500
"""Undelivered events read from the store at once."""
STATE_WINDOW = 16
"""Retained publishes (status, rooms, alarms) awaiting PUBACK at once."""
IDLE_POLL_S = 1.0
"""An idle drainer looks at the outbox this often even if nobody rang it."""
HOUSEKEEPING_S = 1.0
PURGE_EVERY_S = 600.0
STOP_PUBLISH_S = 2.0
"""Bound on publishing the offline status when stopping (and on the last marks)."""
STOP_DRAIN_S = 1.0
STOP_DRAIN_MAX = 256
"""A clean stop first sends (bounded) the first undelivered events, e.g. gateway.stopping."""
MAX_TIMEOUT_S = 10.0
"""Longest wait for a CONNACK or a PUBACK before the link is declared broken."""

log = structlog.get_logger(__name__)

StateItem = tuple[str, dict[str, object] | None]
_LINK_ERRORS = (aiomqtt.MqttError, OSError)  # ssl.SSLError and TimeoutError are OSErrors


class LinkState(enum.StrEnum):
    """The link's life cycle; ``up`` (commands flow, the floor counts the link as up) once
    the broker accepted the connection."""

    DISCONNECTED = "disconnected"  # no connection; waiting out the backoff
    CONNECTING = "connecting"  # CONNECT sent, no CONNACK yet
    SYNCING = "syncing"  # connected: status, subscription and the current state going out
    CONNECTED = "connected"  # current state out; the outbox drains and changes follow

    @property
    def up(self) -> bool:
        """The broker accepted the connection."""
        return self in (LinkState.SYNCING, LinkState.CONNECTED)


_TRANSITIONS: dict[LinkState, frozenset[LinkState]] = {
    LinkState.DISCONNECTED: frozenset({LinkState.CONNECTING}),
    LinkState.CONNECTING: frozenset({LinkState.SYNCING, LinkState.DISCONNECTED}),
    LinkState.SYNCING: frozenset({LinkState.CONNECTED, LinkState.DISCONNECTED}),
    LinkState.CONNECTED: frozenset({LinkState.DISCONNECTED}),
}


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """The uplink at a glance (outbox figures are refreshed every second)."""

    connected: bool
    link: str  # the LinkState
    since: datetime  # when the link last came up or went down
    reconnects: int  # connections made after the first
    outbox_depth: int  # undelivered events
    oldest_undelivered: str | None  # ts of the oldest undelivered event
    in_flight: int  # event publishes awaiting PUBACK
    shed: int  # undelivered low-value events dropped at the disk cap, ever
    last_error: str | None
    failures: int  # connection attempts failed in a row (0 while connected)


class Uplink:
    """The link to the hotel broker: status, retained state, the outbox and commands."""

    def __init__(
        self,
        config: FloorConfig,
        store: Store,
        *,
        version: str,
        started_at: datetime,
        current_state: Callable[[], Sequence[StateItem]],
        on_command: Callable[[bytes], Awaitable[bytes | None]],
        retained: RetainedChanges,
        outbox: Broadcast,
        on_link: Callable[[bool], None] = lambda up: None,
        backoff: Backoff | None = None,
        beat: Callable[[], None] | None = None,
        coalesce_s: float = 0.2,
        health: Callable[[], dict[str, object]] | None = None,
        on_delivered: Callable[[StoredEvent], None] = lambda event: None,
    ) -> None:
        """``current_state()``: (subtopic, payload) of every open alarm, then every room;
        ``retained``: the retained changes to publish; ``outbox``: rung when events were
        committed; ``on_link``: told when the link goes up or down; ``health()``: the
        status's ``health`` field (the status is published again when its level or
        reasons change); ``on_delivered``: told of each event the broker acknowledged."""
        self._mqtt = config.mqtt
        self._gateway_id = config.gateway.id
        self._store = store
        self._current_state = current_state
        self._on_command = on_command
        self._backoff = backoff or Backoff(initial_s=1.0, cap_s=60.0, jitter="full")
        self._beat = beat or (lambda: None)
        self._coalesce_s = coalesce_s
        root = self._mqtt.root
        self._topic_status = f"{root}/status"
        self._topic_events = f"{root}/events"
        self._topic_cmd = f"{root}/cmd"
        self._topic_reply = f"{root}/reply"
        self._root = root
        status = {"gateway": self._gateway_id, "version": version, "started_at": started_at}
        self._status = status
        self._health = health
        self._on_delivered = on_delivered
        self._told_health: tuple[object, ...] | None = None
        self._offline = Status.model_validate({**status, "online": False}).to_json()
        self._retained = retained
        self._outbox_wake = outbox.listener()
        self._on_link = on_link
        self._link = LinkState.DISCONNECTED
        self._acked: list[int] = []
        self._ack_wake = asyncio.Event()
        self._ack_lock = asyncio.Lock()
        self._since = datetime.now(UTC)
        self._connects = 0
        self._in_flight = 0
        self._depth = 0
        self._oldest: str | None = None
        self._shed = 0
        self._last_error: str | None = None
        self._failures = 0
        self._over_cap = False

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled; never returns otherwise."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._housekeeping(), name="uplink-housekeeping")
            tg.create_task(self._mark_loop(), name="uplink-marks")
            await self._connect_loop()

    @property
    def connected(self) -> bool:
        """True while a session with the broker is up."""
        return self._link.up

    @property
    def link(self) -> LinkState:
        """Where the link is in its life cycle."""
        return self._link

    def _to(self, state: LinkState) -> None:
        """Move the link to ``state``; ValueError for a transition the machine does not have."""
        if state not in _TRANSITIONS[self._link]:
            raise ValueError(f"link cannot go from {self._link} to {state}")
        was_up = self._link.up
        self._link = state
        if state.up != was_up:
            self._on_link(state.up)

    def stats(self) -> UplinkStats:
        """Connection and outbox figures."""
        return UplinkStats(
            connected=self._link.up,
            link=str(self._link),
            since=self._since,
            reconnects=max(self._connects - 1, 0),
            outbox_depth=self._depth,
            oldest_undelivered=self._oldest,
            in_flight=self._in_flight,
            shed=self._shed,
            last_error=self._last_error,
            failures=self._failures,
        )

    async def maintain(self, now: datetime, *, purge: bool = True) -> None:
        """Outbox upkeep once: purge old delivered events, shed at the cap, refresh stats."""
        mqtt = self._mqtt
        if purge:
            cutoff = now - timedelta(days=mqtt.events_keep_days)
            purged = await self._store.write(
                functools.partial(schema.purge_delivered, older_than=cutoff)
            )
            if purged:
                log.info("outbox_purged", events=purged, older_than=format_ts(cutoff))
        cap = mqtt.outbox_max_mib * 1024 * 1024
        over_cap = await self._store.read(schema.used_bytes) > cap
        if over_cap:
            delivered, shed = await self._store.write(
                functools.partial(schema.shed_low_value, max_bytes=cap)
            )
            if delivered or shed:
                log.warning(
                    "outbox_shed", shed=shed, delivered_dropped=delivered, cap_mib=cap >> 20
                )
            elif not self._over_cap:  # nothing may be shed: say so once, not every second
                log.warning("outbox_over_cap", cap_mib=cap >> 20, nothing_to_shed=True)
        self._over_cap = over_cap
        self._depth, self._oldest, self._shed = await self._store.read(_outbox_figures)

    # -- connection ----------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        while True:
            self._beat()
            self._to(LinkState.CONNECTING)
            try:
                await self._session()
            except* _LINK_ERRORS as group:
                self._link_down(_first_leaf(group))
            delay = self._backoff.next_delay()
            log.debug("mqtt_reconnect_in", delay_s=round(delay, 3))
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 1.0))
                self._beat()

    async def _session(self) -> None:
        client = self._client()
        stopping = False
        # Cancel requests already counted on this task (see _raise_lost_cancel).
        cancels = _cancelling()
        try:
            async with client:
                try:
                    async with asyncio.TaskGroup() as tg:
                        # The reader first: iterating messages is how a lost link is noticed
                        # at once (else only a PUBACK timeout would tell, even mid-state).
                        tg.create_task(self._read_commands(client), name="uplink-commands")
                        await self._start_session(client)
                        _raise_lost_cancel(cancels)  # a stop while connecting: stop path
                        tg.create_task(self._drain(client), name="uplink-drain")
                        tg.create_task(self._flush_retained(client), name="uplink-retained")
                except asyncio.CancelledError:
                    stopping = True
                    await self._last_events(client)
                    await self._say_offline(client)
                    raise
                finally:
                    self._disconnected()
        except Exception:
            if stopping:
                # The client's exit (a hung broker) replaced our CancelledError with its own
                # timeout: the stop still wins.
                raise asyncio.CancelledError from None
            raise

    def _client(self) -> aiomqtt.Client:
        mqtt = self._mqtt
        tls = None
        if mqtt.tls_ca_file is not None or mqtt.tls_cert_file is not None:
            tls = aiomqtt.TLSParameters(
                ca_certs=_str_or_none(mqtt.tls_ca_file),
                certfile=_str_or_none(mqtt.tls_cert_file),
                keyfile=_str_or_none(mqtt.tls_key_file),
            )
        password = None
        if mqtt.password_file is not None:
            # Read at every connect so a rotated password is picked up; never logged.
            password = mqtt.password_file.read_text(encoding="utf-8").strip("\r\n")
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=self._gateway_id,
            clean_session=False,
            will=aiomqtt.Will(self._topic_status, self._offline, qos=1, retain=True),
            keepalive=mqtt.keepalive_s,
            username=mqtt.username,
            password=password,
            tls_params=tls,
            timeout=min(float(mqtt.keepalive_s), MAX_TIMEOUT_S),
            # Our own windows bound what is in flight; paho would otherwise queue past 20.
            max_inflight_messages=0,
            # Small packets (PUBACK, then a reply) must not wait for a delayed ACK (Nagle).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client.pending_calls_threshold = mqtt.max_in_flight + STATE_WINDOW + 8
        return client

    async def _start_session(self, client: aiomqtt.Client) -> None:
        """Status, subscription, then the current state, acknowledged, before any event."""
        self._to(LinkState.SYNCING)
        self._connects += 1
        self._since = datetime.now(UTC)
        self._failures = 0
        log.info(
            "mqtt_connected",
            host=self._mqtt.host,
            port=self._mqtt.port,
            tls=self._mqtt.tls_ca_file is not None or self._mqtt.tls_cert_file is not None,
            connects=self._connects,
        )
        await client.publish(self._topic_status, dumps(self._online()), qos=1, retain=True)
        await client.subscribe(self._topic_cmd, qos=1)
        self._retained.take_resync()  # everything goes out now anyway
        started = time.monotonic()
        items = await self._publish_state(client)
        ms = round((time.monotonic() - started) * 1000, 1)
        log.info("mqtt_current_state_published", items=items, ms=ms)
        self._to(LinkState.CONNECTED)
        self._backoff.reset()
        await self._flush_acks()  # acks of the last session first: fewer duplicates

    def _disconnected(self) -> None:
        if self._link is not LinkState.DISCONNECTED:
            self._to(LinkState.DISCONNECTED)

    def _link_down(self, exc: BaseException) -> None:
        self._disconnected()
        self._since = datetime.now(UTC)
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._failures += 1
        level = log.warning if self._failures == 1 else log.debug
        level("mqtt_link_down", error=self._last_error, failures=self._failures)

    async def _last_events(self, client: aiomqtt.Client) -> None:
        """Clean stop: deliver what is still undelivered (gateway.stopping), bounded in time."""
        if not self._link.up:
            return
        read = functools.partial(schema.undelivered_after, after_seq=0, limit=STOP_DRAIN_MAX)
        try:
            async with asyncio.timeout(STOP_DRAIN_S):
                events = await self._store.read(read)
                messages = [(self._topic_events, self._envelope(e)) for e in events]
                await _publish_window(client, messages, self._mqtt.max_in_flight, retain=False)
                seqs = [e.seq for e in events]
                now = datetime.now(UTC)
                await self._store.write(functools.partial(schema.mark_delivered, seqs=seqs, ts=now))
        except* (*_LINK_ERRORS, TimeoutError) as group:
            log.info("mqtt_last_events_not_sent", error=str(_first_leaf(group)))

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Clean stop: publish the retained offline status ourselves, bounded in time."""
        if not self._link.up:
            return
        try:
            async with asyncio.timeout(STOP_PUBLISH_S):
                await client.publish(self._topic_status, self._offline, qos=1, retain=True)
        except (*_LINK_ERRORS, TimeoutError) as exc:
            log.warning("mqtt_offline_status_failed", error=str(exc))
        else:
            log.info("mqtt_offline_status_published")

    # -- retained state ------------------------------------------------------------------

    async def _publish_state(self, client: aiomqtt.Client) -> int:
        """Every current-state item, then pending retained changes not superseded by them."""
        snapshot = list(self._current_state())
        pending = self._retained.take()
        fresh = {subtopic for subtopic, _ in snapshot}
        items = snapshot + [(s, p) for s, p in pending.items() if s not in fresh]
        await self._publish_retained(client, items)
        return len(items)

    async def _flush_retained(self, client: aiomqtt.Client) -> None:
        retained = self._retained
        while True:
            _raise_lost_cancel()
            await retained.wake.wait()
            if not retained.resync_pending:
                await asyncio.sleep(self._coalesce_s)  # gather changes arriving meanwhile
            retained.wake.clear()
            if retained.take_resync():
                log.info("mqtt_resync")
                online = dumps(self._online())
                await client.publish(self._topic_status, online, qos=1, retain=True)
                await self._publish_state(client)
            else:
                await self._publish_retained(client, list(retained.take().items()))

    async def _publish_retained(self, client: aiomqtt.Client, items: list[StateItem]) -> None:
        messages = [(f"{self._root}/{s}", b"" if p is None else dumps(p)) for s, p in items]
        try:
            await _publish_window(client, messages, STATE_WINDOW, retain=True)
        except BaseException:
            # Not known to be out: keep them for the next attempt unless something newer came.
            self._retained.keep(items)
            raise

    # -- outbox --------------------------------------------------------------------------

    async def _drain(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(self._mqtt.max_in_flight)
        cursor = 0
        async with asyncio.TaskGroup() as tg:
            while True:
                self._outbox_wake.clear()
                batch = await self._store.read(
                    functools.partial(schema.undelivered_after, after_seq=cursor, limit=READ_BATCH)
                )
                self._beat()
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_S):
                            await self._outbox_wake.wait()
                    continue
                for event in batch:
                    await window.acquire()
                    self._in_flight += 1
                    # Tasks start in creation order and hand their message to paho before
                    # their first await, so events go on the wire in seq order.
                    tg.create_task(self._publish_event(client, event, window))
                    cursor = event.seq

    async def _publish_event(
        self, client: aiomqtt.Client, event: StoredEvent, window: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(self._topic_events, self._envelope(event), qos=1)
        finally:
            self._in_flight -= 1
            window.release()
        self._acked.append(event.seq)
        self._ack_wake.set()
        self._on_delivered(event)

    def _envelope(self, event: StoredEvent) -> bytes:
        data: dict[str, object] = {
            "schema": 1,
            "gateway": self._gateway_id,
            "seq": event.seq,
            "id": event.id,
            "ts": event.ts,
            "type": event.type,
        }
        if event.room is not None:
            data["room"] = event.room
        data["data"] = event.data
        return dumps(data)

    async def _mark_loop(self) -> None:
        try:
            while True:
                await self._ack_wake.wait()
                await self._flush_acks()
        except asyncio.CancelledError:
            # Best effort: an ack not written only means that event is sent again.
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(STOP_PUBLISH_S):
                    await self._flush_acks()
            raise

    async def _flush_acks(self) -> None:
        async with self._ack_lock:
            self._ack_wake.clear()
            seqs, self._acked = self._acked, []
            if seqs:
                now = datetime.now(UTC)
                await self._store.write(functools.partial(schema.mark_delivered, seqs=seqs, ts=now))

    def _online(self) -> dict[str, object]:
        """The online status now, with the floor's health; remembers what it told."""
        doc: dict[str, object] = {**self._status, "online": True}
        if self._health is not None:
            health = self._health()
            doc["health"] = health
            self._told_health = _health_key(health)
        return Status.model_validate(doc).to_dict()

    def _health_moved(self) -> None:
        """Publish the status again when the health's level or reasons changed."""
        if self._health is None or not self._link.up or self._told_health is None:
            return
        if _health_key(self._health()) != self._told_health:
            self._retained.set("status", self._online())

    async def _housekeeping(self) -> None:
        next_purge = time.monotonic()
        while True:
            self._beat()
            self._health_moved()
            purge = time.monotonic() >= next_purge
            if purge:
                next_purge = time.monotonic() + PURGE_EVERY_S
            await self.maintain(datetime.now(UTC), purge=purge)
            await asyncio.sleep(HOUSEKEEPING_S)

    # -- commands ------------------------------------------------------------------------

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != self._topic_cmd:
                continue
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            try:
                reply = await self._on_command(data)
            except Exception:  # nothing a peer sends may take the link down
                log.exception("mqtt_command_failed", size=len(data))
                continue
            if reply is not None:
                await client.publish(self._topic_reply, reply, qos=1)
            _raise_lost_cancel()


async def _publish_window(
    client: aiomqtt.Client, messages: Iterable[tuple[str, bytes]], window: int, *, retain: bool
) -> None:
    """Publish at QoS 1 in order with at most ``window`` awaiting PUBACK; return when all are."""
    slots = asyncio.Semaphore(window)

    async def one(topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        for topic, payload in messages:
            await slots.acquire()
            tg.create_task(one(topic, payload))


def _health_key(health: dict[str, object]) -> tuple[object, ...]:
    """What makes a health different enough to publish the status again: level and codes."""
    reasons = health.get("reasons")
    listed = reasons if isinstance(reasons, list) else []
    return (health.get("level"), *(r.get("code") for r in listed if isinstance(r, dict)))


def _outbox_figures(conn: sqlite3.Connection) -> tuple[int, str | None, int]:
    depth, oldest = schema.outbox_backlog(conn)
    return depth, oldest, schema.events_shed(conn)


def _raise_lost_cancel(counted: int = 0) -> None:
    """Raise CancelledError if this task was cancelled but an await swallowed it.

    On Python 3.11, ``asyncio.wait_for`` (aiomqtt waits for CONNACK, SUBACK and PUBACK with
    it) returns instead of raising when the cancel lands in the loop iteration in which the
    awaited packet arrives (CPython gh-86296, fixed in 3.12), and a stop then waited for the
    shutdown bound. The request is still counted by ``Task.cancelling()``. ``counted``: the
    count the task already had (3.11's TaskGroup can leave one behind on its parent after a
    child failed). Never on the stop path, which runs on purpose after the cancel.
    """
    if _cancelling() > counted:
        raise asyncio.CancelledError


def _cancelling() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _str_or_none(path: object) -> str | None:
    return None if path is None else str(path)
