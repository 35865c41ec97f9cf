"""floorgate_central without a broker: signing, payload parsing, duplicates and gaps, replies.

The client library is written from docs/mqtt-api.md alone; these tests hold it to the
gateway's own code (the signature check, the payload models' AsyncAPI examples).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import floorgate_central as fc
from floorgate_central.client import Central
from gateway.core import commands as gateway_commands
from gateway.model.messages import COMMAND_BODIES
from tests.conftest import REPO

EXAMPLE_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
ROOT = "hotel/demo/demo-12"
ASYNCAPI = json.loads((REPO / "docs" / "asyncapi.json").read_text())


def examples(message: str) -> list[dict[str, Any]]:
    """The payload examples of one AsyncAPI message (made from the gateway's models)."""
    found = ASYNCAPI["components"]["messages"][message]["examples"]
    return [e["payload"] for e in found]


# -- signing ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(body=st.dictionaries(st.text(), json_values, max_size=5), type_=st.text(max_size=20))
def test_the_client_signs_as_the_gateway_checks(body: dict[str, Any], type_: str) -> None:
    env = fc.envelope(type_, body, EXAMPLE_KEY)
    assert env["sig"] == gateway_commands.sign(env, EXAMPLE_KEY)
    assert fc.canonical_json(env) == gateway_commands.canonical_json(env)
    # What goes on the wire (any key order) still verifies.
    assert gateway_commands.signature_ok(json.loads(json.dumps(env)), EXAMPLE_KEY)


@pytest.mark.parametrize("command", sorted(COMMAND_BODIES))
def test_the_documented_examples_carry_the_clients_signature(command: str) -> None:
    for example in examples(f"command.{command}"):
        assert fc.sign(example, EXAMPLE_KEY) == example["sig"]


def test_a_fresh_envelope_passes_the_gateways_checks() -> None:
    body = {"room": "1201", "setpoint_c": 21.5}
    env = fc.envelope("set_climate", body, EXAMPLE_KEY, command_id="c-1")
    checked = gateway_commands.authenticate(json.dumps(env).encode(), EXAMPLE_KEY)
    assert isinstance(checked, gateway_commands.Authenticated)
    admitted = gateway_commands.admit(checked, datetime.now(UTC), COMMAND_BODIES, {"1201"})
    assert isinstance(admitted, gateway_commands.Admitted), admitted
    assert admitted.id == "c-1"


def test_token_hash_and_times_as_the_contract_writes_them(tmp_path: Path) -> None:
    assert fc.token_hash("0A1B2C3D4E5F6071") == fc.token_hash("0a1b2c3d4e5f6071")
    assert fc.token_hash("0a1b2c3d4e5f6071") == "879cc99a"  # sha256(b"0a1b2c3d4e5f6071")[:8]
    with pytest.raises(ValueError, match="16 hex digits"):
        fc.token_hash("0a1b")
    at = datetime(2026, 11, 23, 6, 3, 22, 123456, tzinfo=UTC)
    assert fc.format_ts(at) == "2026-11-23T06:03:22.123Z"
    assert fc.parse_ts("2026-11-23T06:03:22.123456789Z") == at
    with pytest.raises(ValueError, match="naive"):
        fc.format_ts(datetime(2026, 1, 1))  # noqa: DTZ001
    key = tmp_path / "command.key"
    key.write_text(f"  {EXAMPLE_KEY.hex()[:32]}\n{EXAMPLE_KEY.hex()[32:]}\n")
    assert fc.load_key(key) == EXAMPLE_KEY
    key.write_text("abcd\n")
    with pytest.raises(ValueError, match="at least 32"):
        fc.load_key(key)


# -- payloads ---------------------------------------------------------------------------------


def test_every_documented_payload_parses_into_its_typed_value() -> None:
    statuses = [fc.FloorStatus.parse(p) for p in examples("status")]
    assert [s.online for s in statuses] == [True, False]
    room = fc.RoomState.parse(examples("roomState")[0])
    assert room.climate is not None
    assert isinstance(room.climate.setpoint_c, float)
    alarms = [fc.Alarm.parse(p) for p in examples("alarm")]
    assert {a.state for a in alarms} == {"active", "acknowledged"}
    events = [fc.Event.parse(p) for p in examples("event")]
    assert all(e.seq >= 1 for e in events)
    replies = [fc.Reply.parse(p) for p in examples("reply")]
    assert [(r.ok, r.code, r.duplicate) for r in replies][:3] == [
        (True, None, False),
        (False, replies[1].code, False),
        (True, None, True),
    ]
    assert replies[1].code is not None


def test_unknown_fields_are_kept_and_wrong_types_refused() -> None:
    doc = {**examples("roomState")[0], "presence": "present"}
    assert fc.RoomState.parse(doc).raw["presence"] == "present"
    with pytest.raises(ValueError, match="seq"):
        fc.Event.parse({**examples("event")[0], "seq": True})
    with pytest.raises(ValueError, match="online"):
        fc.FloorStatus.parse({**examples("status")[0], "online": "yes"})


# -- duplicates and gaps ------------------------------------------------------------------------


def test_duplicates_are_dropped_by_id_and_gaps_found_by_seq() -> None:
    f = fc.EventFilter()
    assert f.accept(7, "a", "door.opened") == fc.sequence.Accepted(None)
    assert f.accept(8, "b", "door.closed") == fc.sequence.Accepted(None)
    assert f.accept(8, "b", "door.closed") is None  # at least once: the same id again
    assert f.accept(7, "a", "door.opened") is None
    found = f.accept(12, "c", "room.dnd")
    assert found is not None
    assert found.gap == fc.SeqRange(9, 11)
    assert len(found.gap) == 3
    assert f.missing == [fc.SeqRange(9, 11)]
    assert f.accept(10, "d", "room.mur") == fc.sequence.Accepted(None)  # a late arrival
    assert f.missing == [fc.SeqRange(9, 9), fc.SeqRange(11, 11)]
    assert f.last_seq == 12


def test_a_replaced_database_starts_counting_again() -> None:
    f = fc.EventFilter()
    f.accept(500, "a", "door.opened")
    f.accept(503, "b", "door.opened")
    assert f.accept(1, "c", "gateway.started") == fc.sequence.Accepted(None)
    assert (f.last_seq, f.missing) == (1, [])
    assert f.accept(2, "d", "door.opened") == fc.sequence.Accepted(None)


def test_the_ids_remembered_are_bounded() -> None:
    f = fc.EventFilter(remember=2)
    for seq, event_id in enumerate("abc", start=1):
        f.accept(seq, event_id, "door.opened")
    assert f.accept(1, "a", "door.opened") is not None  # forgotten: taken as new
    assert f.accept(3, "c", "door.opened") is None


async def test_a_floor_yields_each_event_once_and_marks_gaps() -> None:
    floor = fc.Floor(ROOT, _NoRequests(), {})
    event = examples("event")[0]
    with floor.events() as stream:
        for seq, event_id in ((1, "x1"), (2, "x2"), (2, "x2"), (5, "x5")):
            floor.receive("events", json.dumps({**event, "seq": seq, "id": event_id}).encode())
        floor.receive("events", b"{not json")  # dropped, logged
        got = [await anext(stream) for _ in range(3)]
    assert [(e.seq, e.gap) for e in got] == [(1, None), (2, None), (5, fc.SeqRange(3, 4))]
    assert [e.seq for e in floor.history] == [1, 2, 5]
    assert floor.missing == [fc.SeqRange(3, 4)]


async def test_a_floor_keeps_rooms_and_open_alarms() -> None:
    floor = fc.Floor(ROOT, _NoRequests(), {})
    alarm = examples("alarm")[0]
    with floor.changes() as changes:
        floor.receive("status", json.dumps(examples("status")[0]).encode())
        floor.receive("rooms/1203/state", json.dumps(examples("roomState")[0]).encode())
        floor.receive(f"alarms/{alarm['alarm_id']}", json.dumps(alarm).encode())
        assert floor.online
        assert set(floor.rooms) == {"1203"}
        assert set(floor.alarms) == {alarm["alarm_id"]}
        floor.receive(f"alarms/{alarm['alarm_id']}", b"")
        kinds = [type(await anext(changes)).__name__ for _ in range(4)]
    assert kinds == ["FloorStatus", "RoomState", "Alarm", "AlarmCleared"]
    assert floor.alarms == {}


# -- commands and replies --------------------------------------------------------------------


class _NoRequests:
    async def request(
        self, root: str, payload: bytes, command_id: str, timeout_s: float
    ) -> Mapping[str, Any]:
        raise TimeoutError


class FakeBroker:
    """Stands in for the aiomqtt client: records publishes, answers through the Central."""

    def __init__(self, central: Central, answer: Any) -> None:
        self.central = central
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any], Any]] = []

    async def publish(self, topic: str, payload: bytes, qos: int, properties: Any) -> None:
        env = json.loads(payload)
        self.sent.append((topic, env, properties))
        for reply_topic, doc in self.answer(len(self.sent), env):
            message = aiomqtt.Message(reply_topic, json.dumps(doc).encode(), 1, False, 1, None)
            asyncio.get_running_loop().call_soon(self.central._dispatch, message)


def connected(
    answer: Any, *, v5: bool = False, keys: Mapping[str, bytes] | None = None
) -> tuple[Central, FakeBroker]:
    """A Central whose 'connection' is ``answer`` and that has seen demo-12's status."""
    keys = {"demo-12": EXAMPLE_KEY} if keys is None else keys
    central = Central("127.0.0.1", client_id="desk", keys=keys, roots=["hotel/+/+"])
    broker = FakeBroker(central, answer)
    central._client = broker  # type: ignore[assignment]
    central._v5 = v5
    status = aiomqtt.Message(
        f"{ROOT}/status", json.dumps({**examples("status")[0], "gateway": "demo-12"}).encode(),
        1, True, 1, None,
    )  # fmt: skip
    central._dispatch(status)
    return central, broker


def ok(env: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schema": 1, "id": env["id"], "ok": True, "result": {"pending": []}, **extra}


def refused(env: dict[str, Any], code: str) -> dict[str, Any]:
    return {"schema": 1, "id": env["id"], "ok": False, "error": {"code": code, "message": "no"}}


async def test_replies_are_matched_by_id_whatever_the_topic() -> None:
    def answer(n: int, env: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        other = {**ok(env), "id": "someone-elses"}
        return [
            (f"{ROOT}/reply", other),
            (f"{ROOT}/reply/desk", ok(env, result={"pending": ["1201/lock"]})),
        ]

    central, broker = connected(answer, v5=True)
    floor = await central.floor("demo-12", timeout_s=1)
    reply = await floor.command("checkout", {"room": "1201", "stay_id": "S-1"})
    assert reply.ok
    assert reply.pending == ["1201/lock"]
    topic, env, props = broker.sent[0]
    assert topic == f"{ROOT}/cmd"
    assert gateway_commands.signature_ok(env, EXAMPLE_KEY)
    # MQTT 5: the reply may come to our own topic, correlated by the command id.
    assert props.ResponseTopic == f"{ROOT}/reply/desk"
    assert props.CorrelationData == env["id"].encode()
    assert central._pending == {}


async def test_no_reply_sends_the_same_command_again_then_times_out() -> None:
    central, broker = connected(lambda n, env: [(f"{ROOT}/reply", ok(env))] if n == 2 else [])
    floor = await central.floor("demo-12", timeout_s=1)
    reply = await floor.command("resync", {}, timeout_s=0.2)
    assert reply.ok
    first, second = (env for _, env, _ in broker.sent)
    assert first == second  # the same bytes: a duplicate would get the original reply
    assert broker.sent[0][2] is None  # MQTT 3.1.1: no properties

    central, broker = connected(lambda n, env: [])
    floor = await central.floor("demo-12", timeout_s=1)
    with pytest.raises(fc.CommandTimeout) as timeout:
        await floor.command("resync", {}, command_id="r-9", timeout_s=0.05, attempts=2)
    assert (timeout.value.command_id, timeout.value.attempts, len(broker.sent)) == ("r-9", 2, 2)


async def test_a_refusal_raises_with_its_code_and_internal_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fc.floor, "INTERNAL_RETRY_S", 0.0)
    central, broker = connected(
        lambda n, env: [(f"{ROOT}/reply", refused(env, "internal" if n == 1 else "conflict"))]
    )
    floor = await central.floor("demo-12", timeout_s=1)
    with pytest.raises(fc.CommandRefused) as refusal:
        await floor.command("ack_alarm", {"alarm_id": "5d0c", "by": "ana"})
    assert refusal.value.code == "conflict"
    assert len(broker.sent) == 2
    assert broker.sent[0][1]["id"] == broker.sent[1][1]["id"]
    reply = await floor.send("ack_alarm", {"alarm_id": "5d0c", "by": "ana"})  # no raise
    assert (reply.ok, reply.code) == (False, "conflict")


async def test_an_old_command_is_re_signed_with_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fc.floor, "RESIGN_AFTER_S", -1.0)  # every resend counts as old
    central, broker = connected(lambda n, env: [(f"{ROOT}/reply", ok(env))] if n == 2 else [])
    floor = await central.floor("demo-12", timeout_s=1)
    await floor.command("resync", {}, timeout_s=0.1)
    first, second = (env for _, env, _ in broker.sent)
    assert first["id"] == second["id"]
    assert first["issued_at"] < second["issued_at"]
    assert first["sig"] != second["sig"]
    assert gateway_commands.signature_ok(second, EXAMPLE_KEY)


async def test_a_floor_without_a_key_says_so() -> None:
    central, _ = connected(lambda n, env: [], keys={"demo-13": EXAMPLE_KEY})
    floor = await central.floor("demo-12", timeout_s=1)
    with pytest.raises(fc.NoKey, match="demo-12"):
        await floor.command("resync", {})


def test_roots_and_client_ids_are_checked() -> None:
    for bad in ("hotel/#", "hotel//x", "hotel/a+/x", ""):
        with pytest.raises(ValueError, match="root"):
            Central("h", client_id="c", keys={}, roots=[bad])
    with pytest.raises(ValueError, match="client_id"):
        Central("h", client_id="a/b", keys={})
    central = Central("h", client_id="c", keys={}, roots=["hotel/+/+", "bench/x"])
    assert central._split("hotel/demo/demo-12/rooms/1201/state") == (ROOT, "rooms/1201/state")
    assert central._split("bench/x/events") == ("bench/x", "events")
    assert central._split("hotel/demo") is None
    assert central._split("other/a/b/status") is None


def test_the_retry_policy_fits_the_freshness_window() -> None:
    # The resend window stays inside the gateway's freshness window.
    assert timedelta(seconds=fc.RESIGN_AFTER_S) < timedelta(seconds=gateway_commands.MAX_AGE_S)
    assert fc.REPLY_TIMEOUT_S * fc.ATTEMPTS < gateway_commands.MAX_AGE_S
