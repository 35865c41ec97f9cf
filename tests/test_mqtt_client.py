"""The paho seam (gateway.adapters.mqtt_client) against a real Mosquitto: these fail if paho
(or the broker) changes what the uplink relies on — PUBACK reason codes under MQTT 5 and
their absence under 3.1.1, Session Present, Receive Maximum, properties on the wire,
manual acknowledgement, and a hung broker ending the connection and every publish in it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.adapters.mqtt_client import MISC_S, Connection
from gateway.config.floor import MqttSection
from gateway.model.errors import LinkError
from tests.mosquitto import (  # noqa: F401 (fixtures)
    HOST,
    Mosquitto,
    collecting,
    mosquitto_fixture,
    mqtt_certs,
)
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = "seam/12"
DENY_EVENTS_ACL = f"""user floor
topic readwrite {ROOT}/status
topic readwrite {ROOT}/rooms/#
topic read {ROOT}/cmd
"""


def section(tmp_path: Path, mosquitto: Mosquitto, **over: Any) -> MqttSection:
    key = tmp_path / "command.key"
    key.write_text("5a" * 32)
    base = MqttSection(host=HOST, port=mosquitto.port, root=ROOT, command_key_file=key)
    # model_copy skips validation: a 2 s keepalive keeps the hung-broker test short.
    return base.model_copy(update=over)


@contextlib.asynccontextmanager
async def connected(mqtt: MqttSection, client_id: str = "seam-12") -> AsyncIterator[Any]:
    conn = Connection(mqtt, client_id, will=(f"{ROOT}/status", b"{}"), max_in_flight=32)
    connack = await conn.open()
    try:
        yield conn, connack
    finally:
        await conn.disconnect(2.0)


def as_floor(tmp_path: Path, mosquitto: Mosquitto, **over: Any) -> MqttSection:
    """The gateway's user on the password listener (where the ACL applies)."""
    login = {"username": mosquitto.username, "password_file": mosquitto.password_file}
    return section(tmp_path, mosquitto, port=mosquitto.auth_port, **{**login, **over})


@pytest.mark.parametrize("mosquitto", [{"acl": DENY_EVENTS_ACL}], indirect=True)
async def test_v5_puback_says_refused_0x87_for_an_acl_denied_topic_and_0x10_is_delivered(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with connected(as_floor(tmp_path, mosquitto)) as (conn, _):
        denied = await (await conn.publish(f"{ROOT}/events", b"{}", retain=False, properties=None))
        assert (denied.code, denied.refused) == (0x87, True)
        nobody = await (
            await conn.publish(f"{ROOT}/rooms/1/state", b"{}", retain=False, properties=None)
        )
        assert (nobody.code, nobody.refused) == (0x10, False)  # no subscribers: still delivered
        # The connection survives a refusal.
        ok = await (await conn.publish(f"{ROOT}/status", b"{}", retain=True, properties=None))
        assert not ok.refused


@pytest.mark.parametrize("mosquitto", [{"acl": DENY_EVENTS_ACL}], indirect=True)
async def test_v311_hides_an_acl_refusal_behind_a_plain_puback(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # Why 3.1.1 loses events on a misconfigured ACL (the docs' caveat).
    async with (
        collecting(mosquitto, f"{ROOT}/#") as col,
        connected(as_floor(tmp_path, mosquitto, protocol="3.1.1")) as (conn, connack),
    ):
        ack = await (await conn.publish(f"{ROOT}/events", b"{}", retain=False, properties=None))
        assert not ack.refused
        assert connack.receive_maximum is None
        await (await conn.publish(f"{ROOT}/status", b"marker", retain=False, properties=None))
        await until(lambda: col.payloads(f"{ROOT}/status"))
        assert col.payloads(f"{ROOT}/events") == []  # acknowledged, never delivered


async def test_session_present_is_visible(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mqtt = section(tmp_path, mosquitto, session_expiry_s=60)
    async with connected(mqtt) as (_, first):
        assert first.session_present is False
    async with connected(mqtt) as (_, again):
        assert again.session_present is True  # clean_start false and a Session Expiry
    mosquitto.stop()
    mosquitto.start()
    async with connected(mqtt) as (_, restarted):
        assert restarted.session_present is True  # persistence keeps it across a restart


@pytest.mark.parametrize("mosquitto", [{"persistence": False}], indirect=True)
async def test_a_broker_without_persistence_forgets_the_session(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mqtt = section(tmp_path, mosquitto)
    async with connected(mqtt):
        pass
    mosquitto.stop()
    mosquitto.start()
    async with connected(mqtt) as (_, connack):
        assert connack.session_present is False


async def test_no_session_expiry_means_no_session_after_disconnect(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mqtt = section(tmp_path, mosquitto, session_expiry_s=0)
    async with connected(mqtt):
        pass
    async with connected(mqtt) as (_, connack):
        assert connack.session_present is False


@pytest.mark.parametrize("mosquitto", [{"max_inflight": 3}], indirect=True)
async def test_the_window_is_the_brokers_receive_maximum_when_smaller(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with connected(section(tmp_path, mosquitto)) as (conn, connack):
        assert connack.receive_maximum == 3
        assert conn.window == 3
        acks = [
            await conn.publish(f"{ROOT}/x", b"{}", retain=False, properties=None) for _ in range(3)
        ]
        assert conn.in_flight <= 3
        fourth = asyncio.create_task(
            conn.publish(f"{ROOT}/x", b"{}", retain=False, properties=None)
        )
        await asyncio.sleep(0)
        assert not fourth.done() or conn.in_flight <= 3  # waits for a PUBACK to free a slot
        for acked in acks:
            await acked
        await (await fourth)
        assert conn.in_flight == 0


async def test_properties_go_on_the_wire(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with (
        collecting(mosquitto, f"{ROOT}/#", protocol=aiomqtt.ProtocolVersion.V5) as col,
        connected(section(tmp_path, mosquitto)) as (conn, _),
    ):
        props = conn.properties(expiry_s=300, correlation=b"\x01req")
        await (await conn.publish(f"{ROOT}/reply", b"{}", retain=False, properties=props))
        # The plain properties of events and states (packed once, sent many times).
        for _ in range(2):
            plain = conn.properties()
            await (await conn.publish(f"{ROOT}/events", b"{}", retain=False, properties=plain))
        await until(lambda: len(col.payloads(f"{ROOT}/events")) == 2)
        await until(lambda: col.payloads(f"{ROOT}/reply"))
    for event in (m for m in col.messages if m.topic.value == f"{ROOT}/events"):
        assert event.properties is not None
        assert event.properties.PayloadFormatIndicator == 1
        assert event.properties.ContentType == "application/json"
        assert not hasattr(event.properties, "MessageExpiryInterval")
    received = next(m for m in col.messages if m.topic.value == f"{ROOT}/reply").properties
    assert received is not None
    assert received.PayloadFormatIndicator == 1
    assert received.ContentType == "application/json"
    assert received.CorrelationData == b"\x01req"
    assert 0 < received.MessageExpiryInterval <= 300


async def test_a_message_not_acknowledged_comes_back_on_the_next_connection(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mqtt = section(tmp_path, mosquitto)
    async with connected(mqtt) as (conn, _):
        assert not (await conn.subscribe(f"{ROOT}/cmd")).is_failure
        async with aiomqtt.Client(HOST, mosquitto.port) as central:
            await central.publish(f"{ROOT}/cmd", b"first", qos=1)
        first = await conn.receive()
        assert first.payload == b"first"
        # Not acknowledged: the broker keeps it for the session.
    async with connected(mqtt) as (conn, _):
        again = await conn.receive()
        assert again.payload == b"first"
        conn.ack(again)
    async with connected(mqtt) as (conn, _):
        async with aiomqtt.Client(HOST, mosquitto.port) as central:
            await central.publish(f"{ROOT}/cmd", b"second", qos=1)
        assert (await conn.receive()).payload == b"second"  # "first" was acknowledged


async def test_a_hung_broker_ends_the_connection_and_every_publish_in_flight(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    keepalive = 2
    async with connected(section(tmp_path, mosquitto, keepalive_s=keepalive)) as (conn, _):
        mosquitto.pause()
        try:
            started = time.monotonic()
            acked = await conn.publish(f"{ROOT}/x", b"{}", retain=False, properties=None)
            with pytest.raises(LinkError):
                async with asyncio.timeout(2 * keepalive + 2 + 5):
                    await acked
            waited = time.monotonic() - started
            with pytest.raises(LinkError):
                await conn.publish(f"{ROOT}/x", b"{}", retain=False, properties=None)
            with pytest.raises(LinkError):
                await conn.receive()
        finally:
            mosquitto.resume()
    # mqtt.md v2: detected within 2 x keepalive + 2 s (paho's keepalive and our misc loop).
    assert waited <= 2 * keepalive + MISC_S + 2


async def test_the_connection_ends_at_once_when_the_broker_dies(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with connected(section(tmp_path, mosquitto)) as (conn, _):
        acked = await conn.publish(f"{ROOT}/x", b"{}", retain=False, properties=None)
        await acked
        mosquitto.kill()
        with pytest.raises(LinkError):
            async with asyncio.timeout(5):
                await conn.ended()
        assert conn.in_flight == 0


async def test_a_refused_connection_is_a_link_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    mqtt = section(
        tmp_path,
        mosquitto,
        port=mosquitto.auth_port,
        username=mosquitto.username,
        password_file=wrong,
    )
    conn = Connection(mqtt, "seam-12", will=(f"{ROOT}/status", b"{}"), max_in_flight=4)
    with pytest.raises(LinkError, match=r"[Nn]ot authori"):
        await conn.open()
    conn.close()
