"""The MQTT uplink (mqtt.md, v1 and v2 "MQTT 5"): status, retained state, the outbox, commands.

It speaks MQTT through one seam, ``gateway.adapters.mqtt_client`` (the only module that
imports paho), and is that seam's only user. ``Uplink.run()`` connects in a loop with the
gateway id as client id, ``clean_start`` false and a Session Expiry Interval (MQTT 5;
``clean_session`` false under 3.1.1), and a retained offline status as will. On every
connect, in this order: retained online status, subscribe ``{root}/cmd``, every open alarm
and the room states (all of them, or with Session Present only those changed since the
broker last acknowledged them), the retained changes still pending, the inventory, and
only then the event backlog: the floor as it is now reaches the central system first,
whatever the backlog.

Outbox: one drainer publishes undelivered events in ``seq`` order at QoS 1; every publish
of the connection (events, retained state, replies, replays) shares one window of at most
min(Receive Maximum, ``max_in_flight``) awaiting PUBACK. An event is marked delivered only
after a PUBACK with a success code (marks are written in batches). A refusal (reason code
>= 0x80) keeps it in the outbox: the drainer lets what is in flight settle, waits (backoff
1 s up to 60 s) and sends the refused event alone until it is accepted, then goes on; a
refused retained state is kept and published again the same way. While something that
must be delivered is refused, ``on_refusing(True)``; once all of it is accepted,
``on_refusing(False)`` (the core raises and resolves ``uplink_refused``).

Commands are acknowledged to the broker only once handled and replied to (manual ack),
one at a time: a flood waits at the broker, and a command whose reply was lost comes back
after a reconnect (a duplicate: the original reply again). A reply goes to the command's
Response Topic with its Correlation Data when the command's signature was verified, else
to ``{root}/reply``; replies expire after 300 s; every payload says it is UTF-8 JSON.

A broker that stops answering (TCP open) is noticed by paho's keepalive within
2 x keepalive + ``MISC_S``; the connection then ends at once and every publish in flight
fails with it (never a wait for a timeout). After a session that was up ends, the first
attempt waits a random 0..``reconnect_jitter_s``; later ones back off (full jitter,
capped at ``reconnect_max_s``). run() returns only by cancellation, when it sends the last
undelivered events and the retained offline status itself (bounded), since a clean
disconnect sends no will.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from drivers.backoff import Backoff
from gateway.adapters import schema
from gateway.adapters.mqtt_client import Connack, Connection, Incoming, PubAck
from gateway.adapters.outbox import OutboxKeeper
from gateway.adapters.schema import StoredEvent
from gateway.adapters.signals import Broadcast, CommandReply, ReplayRequests, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.model.errors import LinkError, StoreError
from gateway.model.messages import Status, dumps

__all__ = ["LinkState", "Uplink", "UplinkStats"]

READ_BATCH = 500
"""Undelivered events read from the store at once."""
IDLE_POLL_S = 1.0
"""An idle drainer looks at the outbox this often even if nobody rang it."""
STOP_PUBLISH_S = 2.0
HEALTH_CHECK_S = 1.0
"""How often the health is compared with the one the status told."""
"""Bound on publishing the offline status when stopping (and on the last marks)."""
STOP_DRAIN_S = 1.0
STOP_DRAIN_MAX = 256
"""A clean stop first sends (bounded) the first undelivered events, e.g. gateway.stopping."""
REPLY_EXPIRY_S = 300  # mqtt.md v2: replies carry a Message Expiry Interval of 300 s
RETRY_INITIAL_S, RETRY_MAX_S = 1.0, 60.0  # mqtt.md v2: a refused publish is retried 1..60 s
DIGEST_IGNORES = ("ts", "observed")  # mqtt.md v2: a room state "changed" in any other field
EVENTS = "events"  # the refusal stream of the outbox (retained streams are their subtopics)

log = structlog.get_logger(__name__)

StateItem = tuple[str, dict[str, object] | None]
_LINK_ERRORS = (LinkError, OSError)  # ssl.SSLError and TimeoutError are OSErrors


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
    in_flight: int  # publishes awaiting PUBACK
    shed: int  # undelivered low-value events dropped at the disk cap, ever
    last_error: str | None
    failures: int  # connection attempts failed in a row (0 while connected)
    refused: int = 0  # publishes the broker refused (PUBACK >= 0x80) since the start
    window: int = 0  # the window of this connection (0 while down)


@dataclass(slots=True)
class _Drain:
    """One drainer's bookkeeping: its publishes awaiting PUBACK, the first refused seq."""

    in_flight: set[asyncio.Future[PubAck]] = field(default_factory=set)
    refused: int | None = None


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
        on_command: Callable[[bytes], Awaitable[CommandReply | None]],
        retained: RetainedChanges,
        outbox: Broadcast,
        replays: ReplayRequests | None = None,
        inventory: Mapping[str, object] | None = None,
        on_link: Callable[[bool], None] = lambda up: None,
        on_refusing: Callable[[bool], None] = lambda refusing: None,
        backoff: Backoff | None = None,
        beat: Callable[[], None] | None = None,
        coalesce_s: float = 0.2,
        rng: random.Random | None = None,
        health: Callable[[], dict[str, object]] | None = None,
        on_delivered: Callable[[StoredEvent], None] = lambda event: None,
    ) -> None:
        """``current_state()``: (subtopic, payload) of every open alarm, then every room;
        ``retained``: the retained changes to publish; ``outbox``: rung when events were
        committed; ``replays``: stored events to publish again; ``inventory``: the retained
        ``{root}/inventory``; ``on_link``: told when the link goes up or down;
        ``on_refusing``: told when the broker starts or stops refusing what must go out;
        ``health()``: the status's ``health`` field (the status is published again when
        its level or reasons change); ``on_delivered``: told of each event the broker
        accepted."""
        self._mqtt = config.mqtt
        self._gateway_id = config.gateway.id
        self._store = store
        self._current_state = current_state
        self._on_command = on_command
        self._rng = rng or random.Random()
        mqtt = self._mqtt
        self._backoff = backoff or Backoff(
            initial_s=min(0.5, mqtt.reconnect_max_s), cap_s=mqtt.reconnect_max_s, jitter="full"
        )
        self._event_retry = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, rng=self._rng)
        self._state_retry = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, rng=self._rng)
        self._beat = beat or (lambda: None)
        self._coalesce_s = coalesce_s
        root = mqtt.root
        self._root = root
        self._topic_status = f"{root}/status"
        self._topic_events = f"{root}/events"
        self._topic_cmd = f"{root}/cmd"
        self._topic_reply = f"{root}/reply"
        self._topic_replay = f"{root}/replay"
        status = {"gateway": self._gateway_id, "version": version, "started_at": started_at}
        self._status = status
        self._health = health
        self._on_delivered = on_delivered
        self._told_health: tuple[object, ...] | None = None
        self._offline = Status.model_validate({**status, "online": False}).to_json()
        self._inventory = dict(inventory) if inventory is not None else None
        self._retained = retained
        self._replays = replays
        self._outbox_wake = outbox.listener()
        self._outbox = OutboxKeeper(store, mqtt, beat=self._beat)
        self._on_link = on_link
        self._on_refusing = on_refusing
        self._link = LinkState.DISCONNECTED
        self._session_up = False  # the session being served reached SYNCING
        self._conn: Connection | None = None
        self._since = datetime.now(UTC)
        self._connects = 0
        self._last_error: str | None = None
        self._failures = 0
        # What outlives a connection: the digest of each retained payload the broker
        # accepted, what it refuses now, and the refusals counted.
        self._digests: dict[str, str] = {}
        self._blocked: set[str] = set()
        self._reported: bool | None = None
        self._refused = 0
        self._state_retry_at: float | None = None

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled; never returns otherwise."""
        if self._mqtt.protocol == "3.1.1":
            log.warning(
                "mqtt_v311_refusals_invisible",
                detail="MQTT 3.1.1 has no PUBACK reason code: a publish the broker refuses"
                " (ACL) is acknowledged as if delivered and is lost to the central system",
            )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._outbox.run(), name="uplink-housekeeping")
            tg.create_task(self._outbox.marks(), name="uplink-marks")
            tg.create_task(self._watch_health(), name="uplink-health")
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
        conn = self._conn if self._link.up else None
        outbox = self._outbox.figures
        return UplinkStats(
            connected=self._link.up,
            link=str(self._link),
            since=self._since,
            reconnects=max(self._connects - 1, 0),
            outbox_depth=outbox.depth,
            oldest_undelivered=outbox.oldest,
            in_flight=conn.in_flight if conn is not None else 0,
            shed=outbox.shed,
            last_error=self._last_error,
            failures=self._failures,
            refused=self._refused,
            window=conn.window if conn is not None else 0,
        )

    async def maintain(self, now: datetime, *, purge: bool = True) -> None:
        """Outbox upkeep once: purge old delivered events, shed at the cap, refresh stats."""
        await self._outbox.maintain(now, purge=purge)

    # -- connection ----------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        while True:
            self._beat()
            self._to(LinkState.CONNECTING)
            self._session_up = False
            try:
                await self._session()
            except* _LINK_ERRORS as group:
                self._link_down(_first_leaf(group))
            if self._session_up:
                # A broker lost: every floor it served notices now, so spread the first
                # attempt; the backoff starts afresh behind it.
                delay = self._rng.uniform(0.0, self._mqtt.reconnect_jitter_s)
                self._backoff.reset()
            else:
                delay = self._backoff.next_delay()
            log.debug("mqtt_reconnect_in", delay_s=round(delay, 3))
            await self._pause(delay)

    async def _session(self) -> None:
        conn = Connection(
            self._mqtt,
            self._gateway_id,
            will=(self._topic_status, self._offline),
            max_in_flight=self._mqtt.max_in_flight,
        )
        connack = await conn.open()
        self._conn = conn
        stopping = False
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(conn.ended(), name="uplink-link")
                await self._start_session(conn, connack)
                tg.create_task(self._read_commands(conn), name="uplink-commands")
                tg.create_task(self._drain(conn), name="uplink-drain")
                tg.create_task(self._flush_retained(conn), name="uplink-retained")
                if self._replays is not None:
                    tg.create_task(self._serve_replays(conn, self._replays), name="uplink-replay")
        except asyncio.CancelledError:
            stopping = True
            await self._last_events(conn)
            await self._say_offline(conn)
            raise
        finally:
            self._disconnected()
            if not stopping:
                conn.close()

    async def _start_session(self, conn: Connection, connack: Connack) -> None:
        """Status, subscription, then the current state, acknowledged, before any event."""
        self._to(LinkState.SYNCING)
        self._session_up = True
        self._connects += 1
        self._since = datetime.now(UTC)
        self._failures = 0
        mqtt = self._mqtt
        log.info(
            "mqtt_connected",
            host=mqtt.host,
            port=mqtt.port,
            tls=mqtt.tls_ca_file is not None or mqtt.tls_cert_file is not None,
            protocol=mqtt.protocol,
            session_present=connack.session_present,
            receive_maximum=connack.receive_maximum,
            window=conn.window,
            connects=self._connects,
        )
        await self._publish_retained(conn, [("status", self._online())])
        code = await conn.subscribe(self._topic_cmd)
        if code.is_failure:
            log.warning("mqtt_subscribe_refused", topic=self._topic_cmd, reason=str(code))
        # Without Session Present the broker lost what it held of us: everything goes out.
        full = self._retained.take_resync() or not connack.session_present
        started = time.monotonic()
        items = self._state_items(full=full)
        await self._publish_retained(conn, items)
        ms = round((time.monotonic() - started) * 1000, 1)
        log.info("mqtt_current_state_published", items=len(items), full=full, ms=ms)
        self._to(LinkState.CONNECTED)
        self._backoff.reset()

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

    async def _pause(self, seconds: float) -> None:
        """Sleep, beating the progress monitor at least every second."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            self._beat()

    async def _last_events(self, conn: Connection) -> None:
        """Clean stop: deliver what is still undelivered (gateway.stopping), bounded in time."""
        if not self._link.up:
            return
        read = functools.partial(schema.undelivered_after, after_seq=0, limit=STOP_DRAIN_MAX)
        try:
            async with asyncio.timeout(STOP_DRAIN_S):
                events = await self._store.read(read)
                sent = [await self._send_event(conn, self._topic_events, e) for e in events]
                acks = await _all(sent)
                seqs = [e.seq for e, ack in zip(events, acks, strict=True) if not ack.refused]
                now = datetime.now(UTC)
                await self._store.write(functools.partial(schema.mark_delivered, seqs=seqs, ts=now))
        except* (*_LINK_ERRORS, TimeoutError, StoreError) as group:
            log.info("mqtt_last_events_not_sent", error=str(_first_leaf(group)))

    async def _say_offline(self, conn: Connection) -> None:
        """Clean stop: publish the retained offline status ourselves, then DISCONNECT."""
        if not self._link.up:
            conn.close()
            return
        try:
            async with asyncio.timeout(STOP_PUBLISH_S):
                props = conn.properties()
                acked = await conn.publish(
                    self._topic_status, self._offline, retain=True, properties=props
                )
                ack = await acked
        except (*_LINK_ERRORS, TimeoutError) as exc:
            log.warning("mqtt_offline_status_failed", error=str(exc))
        else:
            log.info("mqtt_offline_status_published", reason=ack.reason)
        await conn.disconnect(STOP_PUBLISH_S)

    # -- refusals ------------------------------------------------------------------------

    def _note(self, ack: PubAck, topic: str, stream: str | None) -> None:
        """Count a refusal, and mark or clear ``stream`` (None: not retried) as blocked."""
        if ack.refused:
            self._refused += 1
            level = log.warning if not self._blocked else log.debug
            level("mqtt_publish_refused", topic=topic, reason=ack.reason, code=ack.code)
            if stream is not None:
                self._blocked.add(stream)
        elif stream is not None:
            self._blocked.discard(stream)
        refusing = bool(self._blocked)
        if refusing != self._reported and (refusing or not ack.refused):
            self._reported = refusing
            log.info("mqtt_refusals", refusing=refusing, refused_total=self._refused)
            self._on_refusing(refusing)

    # -- retained state ------------------------------------------------------------------

    def _state_items(self, *, full: bool) -> list[StateItem]:
        """Every current-state item (rooms unchanged since their last acknowledged publish
        left out unless ``full``), then pending changes not superseded by them."""
        snapshot = list(self._current_state())
        pending = self._retained.take()
        fresh = {subtopic for subtopic, _ in snapshot} | {"status", "inventory"}
        if not full:
            snapshot = [
                (s, p)
                for s, p in snapshot
                if not s.startswith("rooms/") or self._digests.get(s) != _digest(p)
            ]
        items = snapshot + [(s, p) for s, p in pending.items() if s not in fresh]
        if self._inventory is not None:
            items.append(("inventory", self._inventory))
        return items

    async def _flush_retained(self, conn: Connection) -> None:
        retained = self._retained
        while True:
            timeout = None
            if self._state_retry_at is not None:
                timeout = max(0.0, self._state_retry_at - time.monotonic())
            woken = True
            try:
                async with asyncio.timeout(timeout):
                    await retained.wake.wait()
            except TimeoutError:
                woken = False  # time to retry what the broker refused
                self._state_retry_at = None
            if woken and not retained.resync_pending:
                await asyncio.sleep(self._coalesce_s)  # gather changes arriving meanwhile
            retained.wake.clear()
            if retained.take_resync():
                log.info("mqtt_resync")
                items = [("status", self._online()), *self._state_items(full=True)]
            else:
                items = list(retained.take().items())
            if items:
                await self._publish_retained(conn, items)

    async def _publish_retained(self, conn: Connection, items: list[StateItem]) -> None:
        """Publish retained, in order, within the window; keep what the broker refused (or
        what is not known to be out when the link ends) for the next attempt."""
        sent: list[tuple[str, dict[str, object] | None, asyncio.Future[PubAck]]] = []
        settled = 0
        try:
            props = conn.properties()
            for subtopic, payload in items:
                data = b"" if payload is None else dumps(payload)
                topic = f"{self._root}/{subtopic}"
                acked = await conn.publish(topic, data, retain=True, properties=props)
                sent.append((subtopic, payload, acked))
            for subtopic, payload, acked in sent:
                ack = await acked
                settled += 1
                self._retained_acked(subtopic, payload, ack)
        except BaseException:
            # Not known to be out: keep them for the next attempt unless something newer came.
            self._retained.keep([(s, p) for s, p, _ in sent[settled:]] + items[len(sent) :])
            raise

    def _retained_acked(
        self, subtopic: str, payload: dict[str, object] | None, ack: PubAck
    ) -> None:
        self._note(ack, f"{self._root}/{subtopic}", subtopic)
        if ack.refused:
            self._retained.keep([(subtopic, payload)])
            if self._state_retry_at is None:
                self._state_retry_at = time.monotonic() + self._state_retry.next_delay()
            return
        if payload is None:
            self._digests.pop(subtopic, None)
        else:
            self._digests[subtopic] = _digest(payload)
        if not any(s != EVENTS for s in self._blocked):
            self._state_retry.reset()
            self._state_retry_at = None

    # -- outbox --------------------------------------------------------------------------

    async def _drain(self, conn: Connection) -> None:
        """Publish undelivered events in seq order until the session ends.

        Every wait here is bounded or ends with the connection: a store read, a window slot
        (given back at a PUBACK or failed when the link ends), the outbox bell or
        ``IDLE_POLL_S``, and after a refusal the PUBACKs in flight and the retry delay.
        The cursor only moves past an event handed to paho, and goes back to the refused
        event after a refusal; events the broker accepted but not yet marked are skipped.
        """
        drain = _Drain()
        skip = self._outbox.unmarked()  # accepted in an earlier session, not marked yet
        cursor = 0
        probe = EVENTS in self._blocked  # refused before: the head goes alone first
        while True:
            if drain.refused is not None:
                first = drain.refused
                if drain.in_flight:
                    await asyncio.wait(drain.in_flight)
                await self._pause(self._event_retry.next_delay())
                drain.refused, cursor, probe = None, first - 1, True
                skip = self._outbox.unmarked()
            self._outbox_wake.clear()
            limit = 1 if probe else READ_BATCH
            read = await self._store.read(
                functools.partial(schema.undelivered_after, after_seq=cursor, limit=limit)
            )
            self._beat()
            batch = [e for e in read if e.seq not in skip]
            if read and not batch:
                cursor = read[-1].seq
                continue
            if not batch:
                if probe:  # the refused events are gone (delivered or shed): none is refused
                    probe = False
                    self._note(PubAck(0, "Success"), self._topic_events, EVENTS)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL_S):
                        await self._outbox_wake.wait()
                continue
            acked: asyncio.Future[PubAck] | None = None
            for event in batch:
                if drain.refused is not None:
                    break
                acked = await self._send_event(conn, self._topic_events, event)
                drain.in_flight.add(acked)
                acked.add_done_callback(functools.partial(self._event_settled, drain, event))
                cursor = event.seq
            if probe and acked is not None:
                ack = await acked
                if not ack.refused:
                    probe = False
                    self._event_retry.reset()
                    self._note(ack, self._topic_events, EVENTS)

    async def _send_event(
        self, conn: Connection, topic: str, event: StoredEvent
    ) -> asyncio.Future[PubAck]:
        return await conn.publish(
            topic, self._envelope(event), retain=False, properties=conn.properties()
        )

    def _event_settled(
        self, drain: _Drain, event: StoredEvent, acked: asyncio.Future[PubAck]
    ) -> None:
        seq = event.seq
        drain.in_flight.discard(acked)
        if acked.cancelled() or acked.exception() is not None:
            return  # the link ended: the event goes again on the next connection
        ack = acked.result()
        # Only the head (the probe) clears a refusal: an event behind it going through
        # does not mean the refused one will.
        self._note(ack, self._topic_events, EVENTS if ack.refused else None)
        if ack.refused:
            if drain.refused is None or seq < drain.refused:
                drain.refused = seq
            return
        self._outbox.delivered(seq)
        self._on_delivered(event)

    def _online(self) -> dict[str, object]:
        """The online status now, with the floor's health; remembers what it told."""
        doc: dict[str, object] = {**self._status, "online": True}
        if self._health is not None:
            health = self._health()
            doc["health"] = health
            self._told_health = _health_key(health)
        return Status.model_validate(doc).to_dict()

    async def _watch_health(self) -> None:
        """Publish the status again when the health's level or reasons changed."""
        if self._health is None:
            return
        while True:
            await asyncio.sleep(HEALTH_CHECK_S)
            told = self._told_health
            if self._link.up and told is not None and _health_key(self._health()) != told:
                self._retained.set("status", self._online())

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

    # -- replay --------------------------------------------------------------------------

    async def _serve_replays(self, conn: Connection, replays: ReplayRequests) -> None:
        """Publish stored events again on ``{root}/replay``, in order, as asked."""
        while True:
            events, done = await replays.take()
            if done.done():
                continue  # its asker is gone
            try:
                acks = [await self._send_event(conn, self._topic_replay, e) for e in events]
                results = await _all(acks)
            except LinkError as exc:
                if not done.done():
                    done.set_exception(exc)
                raise
            for ack in results:
                self._note(ack, self._topic_replay, None)
            if not done.done():
                done.set_result(sum(1 for ack in results if not ack.refused))

    # -- commands ------------------------------------------------------------------------

    async def _read_commands(self, conn: Connection) -> None:
        while True:
            message = await conn.receive()
            if message.topic == self._topic_cmd:
                await self._command(conn, message)
            conn.ack(message)  # handled and replied to: the broker may forget it
            _raise_lost_cancel()

    async def _command(self, conn: Connection, message: Incoming) -> None:
        try:
            reply = await self._on_command(message.payload)
        except LinkError:
            raise
        except Exception:  # nothing a peer sends may take the link down
            log.exception("mqtt_command_failed", size=len(message.payload))
            return
        if reply is None:
            return
        topic, correlation = self._topic_reply, None
        if reply.authenticated:
            correlation = message.correlation_data
            if message.response_topic is not None:
                if _publishable(message.response_topic):
                    topic = message.response_topic
                else:
                    log.warning("mqtt_response_topic_invalid", topic=message.response_topic[:200])
        props = conn.properties(expiry_s=REPLY_EXPIRY_S, correlation=correlation)
        ack = await (await conn.publish(topic, reply.payload, retain=False, properties=props))
        self._note(ack, topic, None)


async def _all(futures: Sequence[asyncio.Future[PubAck]]) -> list[PubAck]:
    """Every PUBACK, in order (the first link error raises)."""
    return [await f for f in futures]


def _digest(payload: Mapping[str, object] | None) -> str:
    """A retained payload's fingerprint, blind to the fields that change without news."""
    if payload is None:
        return ""
    kept = {k: v for k, v in payload.items() if k not in DIGEST_IGNORES}
    return hashlib.sha256(dumps(kept)).hexdigest()


def _publishable(topic: str) -> bool:
    """A topic name one may publish to: not empty, no wildcard, no NUL, not too long."""
    return (
        bool(topic) and not any(c in topic for c in "+#\0") and len(topic.encode("utf-8")) <= 65535
    )


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _raise_lost_cancel() -> None:
    """Raise CancelledError if this task was cancelled but an await swallowed it.

    On Python 3.11, ``asyncio.wait_for`` (in code a command handler may call) returns instead
    of raising when the cancel lands in the loop iteration in which what it waits for
    arrives (CPython gh-86296, fixed in 3.12); the request is still counted by
    ``Task.cancelling()``, and a stop would otherwise wait for the shutdown bound.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _health_key(health: Mapping[str, object]) -> tuple[object, ...]:
    """What makes a health different enough to publish the status again: level and codes."""
    reasons = health.get("reasons")
    listed = reasons if isinstance(reasons, list) else []
    return (health.get("level"), *(r.get("code") for r in listed if isinstance(r, dict)))
