"""The MQTT client seam: the only module that imports paho-mqtt (mqtt.md v2 "MQTT 5").

A thin asyncio adapter over paho's v2 callback API: a fresh paho client per connection,
driven by the event loop, that hands back what MQTT 5 says and aiomqtt 2.5 drops — each
PUBACK's reason code, Session Present, the broker's Receive Maximum — and ends at once,
failing every publish in flight, when the link dies (a hung broker included, through
paho's keepalive). ``gateway.adapters.mqtt`` (the uplink) is its only user;
``tests/test_mqtt_client.py`` fails if paho's behaviour changes under us.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config.floor import MqttSection
from gateway.model.errors import LinkError

__all__ = ["CONTENT_TYPE", "MISC_S", "Connack", "Connection", "Incoming", "Properties", "PubAck"]

MISC_S = 0.5
"""paho's keepalive bookkeeping runs this often (a hung broker is noticed within 2 K + this)."""
MAX_TIMEOUT_S = 10.0
"""Longest wait for a CONNACK or a SUBACK before the link is declared broken."""
CONTENT_TYPE = "application/json"

log = structlog.get_logger("gateway.adapters.mqtt")


@dataclass(frozen=True, slots=True)
class Connack:
    """What the broker said when it accepted the connection."""

    session_present: bool
    receive_maximum: int | None  # None: not given (MQTT 3.1.1, or no limit: 65535)


@dataclass(frozen=True, slots=True)
class PubAck:
    """A PUBACK: reason code 0x00 or 0x10 (no subscribers) is delivered; >= 0x80 refused."""

    code: int
    reason: str

    @property
    def refused(self) -> bool:
        """The broker did not accept the message."""
        return self.code >= 0x80


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message from the broker (to acknowledge with ``Connection.ack`` once handled)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None = None
    correlation_data: bytes | None = None


class Connection:
    """One MQTT connection: a fresh paho client (v2 callbacks) driven by the asyncio loop.

    paho's blocking connect (TCP, TLS, the CONNECT packet) runs in a worker thread before
    any socket callback is installed; the socket is then registered on the loop thread and
    every later paho call and callback happens there, so no registration can race a close.
    Every QoS 1 publish takes a slot of the connection's window (FIFO) and gives it back at
    its PUBACK; when the connection ends, every waiter and every PUBACK future fails with
    the same ``LinkError`` at once.
    """

    def __init__(
        self,
        mqtt: MqttSection,
        client_id: str,
        *,
        will: tuple[str, bytes],
        max_in_flight: int,
    ) -> None:
        """Prepare the client; ``open()`` connects."""
        self._mqtt = mqtt
        self._v5 = mqtt.protocol == "5"
        self._loop = asyncio.get_running_loop()
        self._max_in_flight = max_in_flight
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client = self._client
        client.max_inflight_messages_set(0)  # our window bounds what is in flight, not paho
        client.max_queued_messages_set(0)
        client.connect_timeout = min(float(mqtt.keepalive_s), MAX_TIMEOUT_S)
        topic, payload = will
        client.will_set(topic, payload, qos=1, retain=True, properties=self.properties(will=True))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._connack: asyncio.Future[Connack] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[PubAck]] = {}
        self._subscribing: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._incoming: collections.deque[Incoming] = collections.deque()
        self._incoming_wake = asyncio.Event()
        self._ended = asyncio.Event()
        self._error: LinkError | None = None
        self._window = _Window(max_in_flight)
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        self._plain: Properties | None = None
        plain = self.properties()
        # Events and states all carry the same two properties: packed once, not at every
        # publish (paho's pack() walks every property name, a fifth of a publish's cost).
        self._plain = _Packed(plain) if plain is not None else None

    # public API

    async def open(self) -> Connack:
        """Connect and wait for the CONNACK; LinkError (or OSError) if refused or unanswered."""
        started = self._loop.run_in_executor(None, self._connect_blocking)
        try:
            await started
        except asyncio.CancelledError:
            started.add_done_callback(lambda _: self.close())
            raise
        except BaseException as exc:
            self.close()
            if isinstance(exc, ValueError):  # paho's refusal of an argument (host, TLS files)
                raise LinkError(f"cannot connect: {exc}") from exc
            raise
        self._register()
        try:
            async with asyncio.timeout(self._client.connect_timeout):
                connack = await self._connack
        except TimeoutError:
            self.close()
            raise LinkError("no CONNACK from the broker in time") from None
        except BaseException:
            self.close()
            raise
        size = min(self._max_in_flight, connack.receive_maximum or self._max_in_flight)
        self._window.resize(size)
        return connack

    @property
    def window(self) -> int:
        """Publishes allowed to await PUBACK at once (min of Receive Maximum, max_in_flight)."""
        return self._window.size

    @property
    def in_flight(self) -> int:
        """QoS 1 publishes awaiting PUBACK now."""
        return 0 if self._error is not None else self._window.used

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool, properties: Properties | None
    ) -> asyncio.Future[PubAck]:
        """Wait for a window slot, hand the message to paho (calls return in call order, so
        messages go on the wire in that order); the future settles at its PUBACK."""
        await self._window.take()
        self._check()
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._window.give()
            raise LinkError(f"publish not accepted by the client: {paho.error_string(info.rc)}")
        acked: asyncio.Future[PubAck] = self._loop.create_future()
        self._pending[info.mid] = acked
        return acked

    async def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe at QoS 1; the broker's reason code (refused when >= 0x80)."""
        self._check()
        rc, mid = self._client.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"subscribe not accepted by the client: {paho.error_string(rc)}")
        done: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subscribing[mid] = done
        try:
            async with asyncio.timeout(MAX_TIMEOUT_S):
                codes = await done
        except TimeoutError:
            raise LinkError("no SUBACK from the broker in time") from None
        return codes[0]

    async def receive(self) -> Incoming:
        """The next message from the broker (LinkError once the connection has ended)."""
        while not self._incoming:
            self._check()
            self._incoming_wake.clear()
            await self._incoming_wake.wait()
        return self._incoming.popleft()

    def ack(self, message: Incoming) -> None:
        """Acknowledge a handled message to the broker (QoS 1: PUBACK)."""
        if self._error is None and message.qos > 0:
            self._client.ack(message.mid, message.qos)

    async def ended(self) -> NoReturn:
        """Wait until the connection ends, then raise why."""
        await self._ended.wait()
        self._check()
        raise LinkError("connection ended")  # pragma: no cover - _check raised

    async def disconnect(self, wait_s: float) -> None:
        """Send DISCONNECT (normal: the broker does not publish the will) and close."""
        if self._error is None:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._ended.wait()
        self.close()

    def close(self) -> None:
        """End the connection now (idempotent); everything waiting fails with LinkError."""
        client = self._client
        # paho still holds the socket and closes it again when collected: it must not call
        # back into a connection that is over (perhaps with no loop running any more).
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        self._unregister()
        sock = client.socket()
        if sock is not None:
            sock.close()
        self._end(LinkError("connection closed"))

    def properties(
        self,
        *,
        will: bool = False,
        expiry_s: int | None = None,
        correlation: bytes | None = None,
    ) -> Properties | None:
        """PUBLISH (or will) properties: UTF-8 JSON always, expiry and correlation if given."""
        if not self._v5:
            return None
        if not will and expiry_s is None and correlation is None and self._plain is not None:
            return self._plain
        props = Properties(PacketTypes.WILLMESSAGE if will else PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.PayloadFormatIndicator = 1
        props.ContentType = CONTENT_TYPE
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        if correlation is not None:
            props.CorrelationData = correlation
        return props

    # the worker thread

    def _connect_blocking(self) -> None:
        """TLS, password, TCP connect and CONNECT, on a worker thread (no callbacks run)."""
        mqtt, client = self._mqtt, self._client
        if mqtt.tls_ca_file is not None or mqtt.tls_cert_file is not None:
            client.tls_set(
                ca_certs=_str_or_none(mqtt.tls_ca_file),
                certfile=_str_or_none(mqtt.tls_cert_file),
                keyfile=_str_or_none(mqtt.tls_key_file),
            )
        if mqtt.username is not None:
            password = None
            if mqtt.password_file is not None:
                # Read at every connect so a rotated password is picked up; never logged.
                password = mqtt.password_file.read_text(encoding="utf-8").strip("\r\n")
            client.username_pw_set(mqtt.username, password)
        if not self._v5:  # 3.1.1: clean_session=False (set on the client) keeps the session
            client.connect(mqtt.host, mqtt.port, mqtt.keepalive_s)
            return
        # A persistent MQTT 5 session needs both: no Clean Start, and a Session Expiry.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = mqtt.session_expiry_s
        client.connect(mqtt.host, mqtt.port, mqtt.keepalive_s, clean_start=False, properties=props)

    # the loop thread

    def _register(self) -> None:
        sock = self._client.socket()
        if sock is None:
            raise LinkError("the connection closed while connecting")
        self._sock = sock
        # Small packets (PUBACK, then a reply) must not wait for a delayed ACK (Nagle).
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = self._client
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote
        client.on_socket_close = self._closing
        self._loop.add_reader(sock, self._readable)
        if client.want_write():  # CONNECT not wholly written by the worker
            self._loop.add_writer(sock, self._writable)
        self._misc = self._loop.create_task(self._misc_loop(), name="uplink-keepalive")

    def _want_write(self, _client: paho.Client, _userdata: object, sock: Any) -> None:
        self._loop.add_writer(sock, self._writable)

    def _wrote(self, _client: paho.Client, _userdata: object, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _closing(self, _client: paho.Client, _userdata: object, _sock: Any) -> None:
        self._unregister()  # before paho closes it: the number may be reused at once

    def _unregister(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
            self._sock = None
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()

    def _readable(self) -> None:
        try:
            while True:
                self._client.loop_read()
                sock = self._client.socket()
                # An SSL socket may hold decoded bytes the selector cannot see.
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    break
        except Exception as exc:  # noqa: BLE001 - a broken socket ends this connection
            self._fail(exc)

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    async def _misc_loop(self) -> None:
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(MISC_S)  # paho's keepalive is a clock check, not an event
        self._fail(LinkError("keepalive: the broker stopped answering"))

    def _fail(self, exc: BaseException) -> None:
        log.debug("mqtt_connection_failed", error=f"{type(exc).__name__}: {exc}")
        self._end(exc if isinstance(exc, LinkError) else LinkError(f"{type(exc).__name__}: {exc}"))
        self.close()

    def _end(self, error: LinkError) -> None:
        if self._error is None:
            self._error = error
        why = str(self._error)
        self._ended.set()
        self._incoming_wake.set()
        self._window.close(why)
        waiting: list[asyncio.Future[Any]] = [
            self._connack,
            *self._pending.values(),
            *self._subscribing.values(),
        ]
        self._pending.clear()
        self._subscribing.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(LinkError(why))
                # Marked retrieved: a publish whose PUBACK nobody awaits any more (its
                # session is ending for this very reason) must not be logged as lost.
                future.exception()

    def _check(self) -> None:
        if self._error is not None:
            raise LinkError(str(self._error))

    # paho's callbacks (loop thread, inside loop_read / loop_misc)

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(LinkError(f"connection refused: {reason}"))
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None) if properties else None
        self._connack.set_result(Connack(bool(flags.session_present), receive_maximum))

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._unregister()
        self._end(LinkError(f"disconnected: {reason}"))

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        acked = self._pending.pop(mid, None)
        if acked is None:
            return
        self._window.give()
        if not acked.done():
            acked.set_result(PubAck(int(reason.value), str(reason)))

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        done = self._subscribing.pop(mid, None)
        if done is not None and not done.done():
            done.set_result(codes)

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        self._incoming.append(
            Incoming(
                topic=msg.topic,
                payload=bytes(msg.payload),
                mid=msg.mid,
                qos=msg.qos,
                response_topic=response if isinstance(response, str) else None,
                correlation_data=bytes(correlation) if correlation is not None else None,
            )
        )
        self._incoming_wake.set()


class _Packed(Properties):
    """Properties packed once (paho calls ``pack()`` at every publish): never changed."""

    def __init__(self, source: Properties) -> None:
        super().__init__(source.packetType)  # type: ignore[no-untyped-call]
        for name in ("PayloadFormatIndicator", "ContentType"):
            setattr(self, name, getattr(source, name))
        object.__setattr__(self, "_packed", source.pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        """The bytes packed at construction."""
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed


class _Window:
    """FIFO slots for publishes awaiting PUBACK; closing fails every waiter at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._error: str | None = None

    def resize(self, size: int) -> None:
        self.size = size

    async def take(self) -> None:
        if self._error is not None:
            raise LinkError(self._error)
        if self.used < self.size and not self._waiters:
            self.used += 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self.give()  # handed to us as we were cancelled: pass it on
            with contextlib.suppress(ValueError):
                self._waiters.remove(slot)
            raise

    def give(self) -> None:
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes to the waiter: ``used`` stays
                return
        self.used = max(self.used - 1, 0)

    def close(self, why: str) -> None:
        self._error = why
        waiters, self._waiters = self._waiters, collections.deque()
        for slot in waiters:
            if not slot.done():
                slot.set_exception(LinkError(why))
                slot.exception()  # retrieved: its waiter may have been cancelled


def _str_or_none(path: object) -> str | None:
    return None if path is None else str(path)
