"""The MQTT payload models against mqtt.md's examples and rules."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.core.kinds.tstat import FANS, MODES
from gateway.model.messages import (
    COMMAND_BODIES,
    AddTokenBody,
    AlarmSnapshot,
    CheckinBody,
    CommandEnvelope,
    EventEnvelope,
    Fan,
    Message,
    Mode,
    Reply,
    ReplyError,
    ResyncBody,
    RoomState,
    SetClimateBody,
    Status,
)
from gateway.model.time import format_ts, parse_ts

# The examples of mqtt.md, with its "…" filled in.
ROOM_STATE = {
    "schema": 1, "room": "1203", "ts": "2026-11-23T06:03:22.123Z", "occupancy": "occupied",
    "stay_id": "R-88231", "rental": "sold", "presence": "present",
    "energy": {"mode": "comfort", "since": "2026-11-23T06:00:00.000Z"},
    "housekeeping": "clean", "service": "idle", "door": "closed", "deadbolt": False,
    "lock_battery": 87,
    "climate": {"temp_c": 23.4, "setpoint_c": 22.5, "mode": "cool", "fan": "auto", "power": True},
    "lights": {"entry": False, "main": True, "bedside": False, "bath": False},
    "keycard": True, "dnd": False, "mur": False, "window_open": False,
    "call": "idle", "devices": {"tstat": "online", "lock": "online", "rio": "online"},
    "observed": {"tstat": "2026-11-23T06:00:00.000Z", "lock": "2026-11-23T05:59:59.000Z",
                 "rio": None},
    "stale": ["climate.temp_c"],
}  # fmt: skip
ALARM = {
    "schema": 1, "alarm_id": "a-1", "room": "1203", "kind": "call", "point": "bath",
    "state": "active", "level": 1, "raised_at": "2026-11-23T06:03:22.123Z",
    "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None, "resolved_by": None,
}  # fmt: skip
EVENT = {
    "schema": 1, "gateway": "sh-bund-12", "seq": 1042, "id": "e1",
    "ts": "2026-11-23T06:03:22.123Z", "type": "alarm.raised", "room": "1203", "data": {},
}  # fmt: skip
STATUS = {
    "schema": 1, "gateway": "sh-bund-12", "online": True, "version": "0.1.0",
    "started_at": "2026-11-23T06:00:00.000Z",
}  # fmt: skip
CHECKIN = {
    "room": "1203", "stay_id": "R-88231", "valid_from": "2026-11-23T14:00:00Z",
    "valid_until": "2026-11-25T12:00:00Z", "tokens": ["0123456789ABCDEF"],
    "preferences": {"setpoint_c": 22.5, "scene": "warm"},
}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "example"),
    [(RoomState, ROOM_STATE), (AlarmSnapshot, ALARM), (EventEnvelope, EVENT), (Status, STATUS)],
)
def test_spec_examples_round_trip(model: type[Message], example: dict[str, Any]) -> None:
    parsed = model.model_validate(example)
    assert json.loads(parsed.to_json()) == example


def test_unknown_values_are_null_and_written_as_null() -> None:
    unknown = {**ROOM_STATE, "door": None, "deadbolt": None, "lock_battery": None,
               "climate": dict.fromkeys(ROOM_STATE["climate"]), "lights": None,
               "keycard": None, "devices": {"tstat": "offline"}}  # fmt: skip
    state = RoomState.model_validate(unknown)
    out = json.loads(state.to_json())
    assert out["door"] is None
    assert out["climate"]["temp_c"] is None
    assert out["lights"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"occupancy": "busy"},
        {"call": "ringing"},
        {"presence": "maybe"},
        {"energy": {"mode": "eco", "since": None}},
        {"housekeeping": "tidy"},
        {"lock_battery": 101},
        {"lock_battery": "87"},
        {"deadbolt": 0},
        {"ts": "2026-11-23T06:03:22+08:00"},
        {"devices": {"tstat": "broken"}},
        {"climate": {**ROOM_STATE["climate"], "mode": "turbo"}},
        {"schema": 2},
    ],
)
def test_room_state_rejects(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RoomState.model_validate({**ROOM_STATE, **change})


def test_floor_level_event_has_no_room_key() -> None:
    event = EventEnvelope.model_validate({k: v for k, v in EVENT.items() if k != "room"})
    assert "room" not in json.loads(event.to_json())
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({**EVENT, "type": "room.exploded"})
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({**EVENT, "seq": 0})


def test_alarm_points_and_kinds() -> None:
    panel = {**ALARM, "room": None, "kind": "technical", "point": "callpanel_offline"}
    assert AlarmSnapshot.model_validate(panel).room is None
    with pytest.raises(ValidationError):
        AlarmSnapshot.model_validate({**ALARM, "point": "kitchen"})


def test_replies_of_the_spec() -> None:
    ok = Reply(id="7f6c", ok=True, result={"pending": []})
    assert json.loads(ok.to_json()) == {"schema": 1, "id": "7f6c", "ok": True,
                                        "result": {"pending": []}}  # fmt: skip
    error = ReplyError(code="stale", message="issued_at is 412 s old")
    refused = Reply(id="7f6c", ok=False, error=error)
    assert json.loads(refused.to_json()) == {
        "schema": 1, "id": "7f6c", "ok": False,
        "error": {"code": "stale", "message": "issued_at is 412 s old"},
    }  # fmt: skip
    again = Reply.model_validate({**json.loads(ok.to_json()), "duplicate": True})
    assert json.loads(again.to_json())["duplicate"] is True
    with pytest.raises(ValidationError):
        Reply(id="x", ok=True, error=error)
    with pytest.raises(ValidationError):
        ReplyError.model_validate({"code": "nope", "message": ""})


def test_command_envelope_of_the_spec() -> None:
    env = {"schema": 1, "id": "7f6c", "type": "checkin", "issued_at": "2026-11-23T06:00:00Z",
           "body": CHECKIN, "sig": "ab" * 32}  # fmt: skip
    assert CommandEnvelope.model_validate(env).issued_at == datetime(2026, 11, 23, 6, tzinfo=UTC)
    for bad in ({"sig": "AB" * 32}, {"sig": "ab"}, {"body": "x"}, {"id": ""}, {"more": 1}):
        with pytest.raises(ValidationError):
            CommandEnvelope.model_validate({**env, **bad})


def test_checkin_rules() -> None:
    body = CheckinBody.model_validate(CHECKIN)
    assert body.tokens == ["0123456789abcdef"]
    assert body.preferences is not None
    assert body.preferences.setpoint_c == 22.5
    bad_cases: list[dict[str, Any]] = [
        {"tokens": []},
        {"tokens": ["0123456789abcdef"] * 2 + [f"{i:016x}" for i in range(1, 8)]},
        {"tokens": ["0000000000000000"]},
        {"tokens": ["0123456789abcdeg"]},
        {"tokens": ["0123456789abcde"]},
        {"tokens": [81985529216486895]},
        {"room": 1203},
        {"valid_until": "2026-11-23T14:00:00Z"},
        {"valid_from": "2026-11-23T14:00:00"},
        {"preferences": {"setpoint_c": 40}},
        {"preferences": {"colour": "red"}},
    ]
    for change in bad_cases:
        with pytest.raises(ValidationError):
            CheckinBody.model_validate({**CHECKIN, **change})
    eight = [f"{i:016X}" for i in range(1, 9)]
    assert len(CheckinBody.model_validate({**CHECKIN, "tokens": eight}).tokens) == 8


def test_token_case_is_one_token() -> None:
    upper = AddTokenBody.model_validate({"room": "1", "stay_id": "s", "token": "ABCDEF0123456789"})
    assert upper.token == "abcdef0123456789"


def test_set_climate_needs_something_and_strict_types() -> None:
    assert SetClimateBody.model_validate({"room": "1", "setpoint_c": 21}).setpoint_c == 21.0
    for body in ({"room": "1"}, {"room": "1", "setpoint_c": True},
                 {"room": "1", "setpoint_c": "21"}, {"room": "1", "mode": "dry"},
                 {"room": "1", "power": "on"}):  # fmt: skip
        with pytest.raises(ValidationError):
            SetClimateBody.model_validate(body)


def test_mode_and_fan_names_match_the_roles() -> None:
    assert typing.get_args(Mode) == MODES
    assert typing.get_args(Fan) == FANS


def test_resync_body_is_empty() -> None:
    ResyncBody.model_validate({})
    with pytest.raises(ValidationError):
        ResyncBody.model_validate({"room": "1"})


def test_every_command_type_of_the_spec_has_a_body() -> None:
    assert set(COMMAND_BODIES) == {
        "checkin", "checkout", "extend", "add_token", "revoke_token", "set_climate",
        "set_lights", "unlock", "ack_alarm", "resolve_alarm", "resync",
        "set_housekeeping", "set_energy", "apply_config",
        "replay",  # mqtt.md v2
        "move_room", "staff_key", "lockdown",
    }  # fmt: skip


def test_every_model_documents_itself_for_asyncapi() -> None:
    models: list[type[BaseModel]] = [RoomState, AlarmSnapshot, EventEnvelope, Status, Reply,
                                     CommandEnvelope, *COMMAND_BODIES.values()]  # fmt: skip
    for model in models:
        schema = model.model_json_schema(by_alias=True)
        assert schema.get("description"), model.__name__
        assert schema.get("additionalProperties") is False, model.__name__
    props = CommandEnvelope.model_json_schema(by_alias=True)["properties"]
    assert props["issued_at"]["format"] == "date-time"
    assert "schema" in props


def test_times() -> None:
    t = parse_ts("2026-11-23T06:03:22.1234567Z")
    assert t == datetime(2026, 11, 23, 6, 3, 22, 123456, tzinfo=UTC)
    assert format_ts(t) == "2026-11-23T06:03:22.123Z"
    plus8 = datetime(2026, 11, 23, 14, 3, 22, tzinfo=timezone(timedelta(hours=8)))
    assert format_ts(plus8) == "2026-11-23T06:03:22.000Z"
    for bad in ("2026-11-23T06:03:22z", "2026-11-23", "2026-02-30T00:00:00Z", 5):
        with pytest.raises(ValueError, match=r"RFC 3339|valid time"):
            parse_ts(bad)
    with pytest.raises(ValueError, match="timezone"):
        parse_ts(datetime(2026, 1, 1))  # noqa: DTZ001
