"""The connection to the hotel broker: every floor under the roots given, one session.

``Central`` keeps one MQTT connection with a persistent session (fixed client id, QoS 1
subscriptions), so events published while it is away are queued by the broker for it.
It reconnects with capped, jittered backoff, building a new aiomqtt client per
connection. It speaks MQTT 5 when the broker does (``protocol="auto"`` tries 5 first and
falls back to 3.1.1 once for good if only 3.1.1 connects) and then sends each command with
a Response Topic and Correlation Data; it also listens on ``{root}/reply``, matching
replies by command id, so replies are found whether or not the gateway honours the
response topic (a v1 gateway does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import zlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from floorgate_central.errors import CentralError
from floorgate_central.floor import HISTORY, Floor, GapFilling
from floorgate_central.signing import Operator

__all__ = ["Central", "partition_of"]

Protocol = Literal["auto", "5", "3.1.1"]
RECONNECT_FIRST_S = 0.1
DISCOVERY = ("inventory", "status")
"""Subscribed last: a floor is discovered with its retained rooms and alarms already in."""
STREAMS = ("events", "replay")
FILL_GAPS = GapFilling()
log = logging.getLogger("floorgate_central")


class Central:
    """The central system's view of every floor under ``roots`` (``async with`` it)."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        keys: Mapping[str, bytes],
        roots: Sequence[str] = ("hotel/+/+",),
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        protocol: Protocol = "auto",
        keepalive_s: int = 30,
        session_expiry_s: int = 3600,
        connect_timeout_s: float = 5.0,
        reconnect_max_s: float = 5.0,
        history: int = HISTORY,
        gaps: GapFilling = FILL_GAPS,
        operator: Operator | None = None,
        partition: tuple[int, int] | None = None,
        share_group: str | None = None,
        resume: Mapping[str, int] | None = None,
    ) -> None:
        """``roots``: topic filters of the floor roots, ``+`` allowed, ``#`` not (one depth).

        ``keys``: each floor's command key by gateway id (``load_key`` reads a key file).
        ``gaps``: filling gaps by replay; ``operator`` signs the replays instead of the key.
        ``partition``: ``(member, members)``, follow only the floors whose root hashes to
        ``member`` (``partition_of``); ``share_group``: take the events through
        ``$share/{share_group}/`` subscriptions (the broker picks the member per message);
        ``resume``: the last event seq already processed, by root.
        """
        if not client_id or any(c in client_id for c in "+#/"):
            raise ValueError(f"client_id {client_id!r}: non-empty, without '+', '#' or '/'")
        if partition is not None and not 0 <= partition[0] < partition[1]:
            raise ValueError(f"partition {partition!r}: (member, members), 0 <= member < members")
        if share_group is not None and (not share_group or any(c in share_group for c in "+#/")):
            raise ValueError(f"share_group {share_group!r}: non-empty, without '+', '#' or '/'")
        self._roots = [_root_filter(r) for r in roots]
        self.host, self.port, self.client_id = host, port, client_id
        self._keys = keys
        self._auth = (username, password)
        self._tls = tls_context
        self._protocol: Protocol = protocol
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_max_s = reconnect_max_s
        self._history = history
        self._gaps = gaps
        self._operator = operator
        self._partition = partition
        self._share = share_group
        self._resume = dict(resume or {})
        self._by_root: dict[str, Floor] = {}
        self._pending: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._client: aiomqtt.Client | None = None
        self._session_present = True  # the last CONNACK's flag (nothing to catch up at first)
        self._v5 = False
        self._link = asyncio.Event()  # replaced at every connect and disconnect
        self._statuses = asyncio.Event()  # replaced at every status received
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Central:
        self.start()
        return self

    async def __aexit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting (in the background; ``wait_connected`` waits for it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"central[{self.client_id}]")

    async def close(self) -> None:
        """Disconnect; end every stream; pending commands raise ``CentralError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CentralError("the client was closed"))
        for floor in self._by_root.values():
            floor.close()

    @property
    def connected(self) -> bool:
        """Connected to the broker now."""
        return self._client is not None

    @property
    def protocol(self) -> str | None:
        """``"5"`` or ``"3.1.1"`` while connected, else None."""
        if self._client is None:
            return None
        return "5" if self._v5 else "3.1.1"

    @property
    def floors(self) -> Mapping[str, Floor]:
        """Every floor whose retained status or inventory has been received, by gateway id."""
        return {f.gateway: f for f in self._by_root.values() if f.gateway is not None}

    def owns(self, root: str) -> bool:
        """This member follows the floor at ``root`` (always, without ``partition``)."""
        return (
            self._partition is None
            or partition_of(root, self._partition[1]) == (self._partition[0])
        )

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Return once connected (TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            while self._client is None:
                await self._link.wait()

    async def floor(self, gateway: str, timeout_s: float | None = None) -> Floor:
        """The floor of ``gateway``, once its status has been received (TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            while True:
                seen = self._statuses
                found = self.floors.get(gateway)
                if found is not None and found.status is not None:
                    return found
                await seen.wait()

    async def request(
        self, root: str, payload: bytes, command_id: str, timeout_s: float
    ) -> Mapping[str, Any]:
        """Publish a command to ``{root}/cmd`` and await the reply with its id (TimeoutError)."""
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                await self._publish(root, payload, command_id)
                return await future
        finally:
            if self._pending.get(command_id) is future:
                del self._pending[command_id]

    async def _publish(self, root: str, payload: bytes, command_id: str) -> None:
        while True:
            client = self._client
            if client is None:
                await self._link.wait()
                continue
            try:
                props = self._command_properties(root, command_id)
                await client.publish(f"{root}/cmd", payload, qos=1, properties=props)
            except aiomqtt.MqttError:
                # The link broke under us: send again on the next connection.
                while self._client is client:
                    await self._link.wait()
                continue
            return

    def _command_properties(self, root: str, command_id: str) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"{root}/reply/{self.client_id}"
        props.CorrelationData = command_id.encode()
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        return props

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    failures = 0
                    # Status and inventory last, in a SUBSCRIBE of their own: the broker sends
                    # retained messages in order, so a floor already on the broker is
                    # discovered with its room states and open alarms already here.
                    await client.subscribe([(t, 1) for t in self._topics()])
                    await client.subscribe(
                        [(f"{root}/{sub}", 1) for root in self._roots for sub in DISCOVERY]
                    )
                    self._set_link(client)
                    log.info("connected", extra={"protocol": self.protocol})
                    if not self._session_present:
                        # The broker had no session for us: what it would have queued
                        # while we were away is gone; each floor's gateway still has it.
                        for floor in self._by_root.values():
                            floor.catch_up()
                    async for message in client.messages:
                        self._dispatch(message)
            except aiomqtt.MqttError as exc:
                log.warning("disconnected", extra={"error": str(exc)})
            finally:
                self._set_link(None)
            ceiling = min(self._reconnect_max_s, RECONNECT_FIRST_S * 2 ** min(failures, 16))
            failures += 1
            await asyncio.sleep(random.uniform(0, ceiling))

    async def _connect(self, stack: contextlib.AsyncExitStack) -> aiomqtt.Client:
        """Enter a new client: MQTT 5 first unless told, 3.1.1 if only that connects."""
        if self._protocol in ("auto", "5"):
            try:
                client = await stack.enter_async_context(self._new_client(v5=True))
            except aiomqtt.MqttError:
                if self._protocol == "5":
                    raise
                client = await stack.enter_async_context(self._new_client(v5=False))
                log.info("broker_without_mqtt5", extra={"host": self.host, "port": self.port})
                self._protocol = "3.1.1"  # it answered 3.1.1 and not 5: stay with 3.1.1
            else:
                self._protocol = "5"  # never fall back because a broker restarted
                self._v5 = True
                return client
        else:
            client = await stack.enter_async_context(self._new_client(v5=False))
        self._v5 = False
        return client

    def _new_client(self, *, v5: bool) -> aiomqtt.Client:
        client = self._make_client(v5=v5)
        # aiomqtt drops CONNACK's Session Present flag: read it on the way through.
        inner = client._client
        on_connect = inner.on_connect
        assert on_connect is not None  # aiomqtt sets it when it makes the paho client

        def connected(c: Any, userdata: Any, flags: Any, *rest: Any) -> None:
            self._session_present = bool(getattr(flags, "session_present", False))
            on_connect(c, userdata, flags, *rest)

        inner.on_connect = connected
        return client

    def _make_client(self, *, v5: bool) -> aiomqtt.Client:
        username, password = self._auth
        common: dict[str, Any] = {
            "identifier": self.client_id,
            "username": username,
            "password": password,
            "tls_context": self._tls,
            "keepalive": self._keepalive_s,
            "timeout": self._connect_timeout_s,
        }
        if not v5:
            return aiomqtt.Client(
                self.host, self.port, protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=False, **common,
            )  # fmt: skip
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        # Both are needed for a session that outlives the connection (MQTT 5).
        return aiomqtt.Client(
            self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
            properties=props, **common,
        )  # fmt: skip

    def _topics(self) -> list[str]:
        subs = ["rooms/+/state", "alarms/+", "reply"]
        if self._v5:
            subs.append(f"reply/{self.client_id}")
        topics = [f"{root}/{sub}" for root in self._roots for sub in subs]
        # A shared subscription gets no retained messages: only the events go through it.
        share = "" if self._share is None else f"$share/{self._share}/"
        return topics + [f"{share}{root}/{sub}" for root in self._roots for sub in STREAMS]

    def _set_link(self, client: aiomqtt.Client | None) -> None:
        self._client = client
        self._link.set()
        self._link = asyncio.Event()

    def _dispatch(self, message: aiomqtt.Message) -> None:
        split = self._split(message.topic.value)
        if split is None:
            return
        root, sub = split
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if sub in ("reply", f"reply/{self.client_id}"):
            self._reply(bytes(payload))
            return
        floor = self._by_root.get(root)
        if floor is None:
            if not self.owns(root):
                return
            floor = self._by_root[root] = Floor(
                root, self, self._keys, self._history, gaps=self._gaps,
                operator=self._operator, last_seq=self._resume.get(root),
            )  # fmt: skip
            if root in self._resume:
                floor.catch_up()  # what was published since the seq handed over
        floor.receive(sub, bytes(payload))
        if sub in DISCOVERY:
            self._statuses.set()
            self._statuses = asyncio.Event()

    def _reply(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            log.warning("reply_dropped", extra={"why": "not JSON"})
            return
        command_id = doc.get("id") if isinstance(doc, dict) else None
        future = self._pending.get(command_id) if isinstance(command_id, str) else None
        if future is not None and not future.done():
            future.set_result(doc)

    def _split(self, topic: str) -> tuple[str, str] | None:
        levels = topic.split("/")
        for root in self._roots:
            pattern = root.split("/")
            if len(levels) <= len(pattern):
                continue
            head = levels[: len(pattern)]
            if all(p in ("+", h) for p, h in zip(pattern, head, strict=True)):
                return "/".join(head), "/".join(levels[len(pattern) :])
        return None


def partition_of(root: str, members: int) -> int:
    """The member (0..members-1) that follows the floor at ``root``: CRC-32 of the root,
    stable across processes, machines and Python versions."""
    return zlib.crc32(root.encode()) % members


def _root_filter(root: str) -> str:
    levels = root.split("/")
    if not root or "#" in root or any(not level for level in levels):
        raise ValueError(f"root {root!r}: '/'-separated non-empty levels, '+' allowed, '#' not")
    if any("+" in level and level != "+" for level in levels):
        raise ValueError(f"root {root!r}: '+' must be a whole level")
    return root
