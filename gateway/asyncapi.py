"""The AsyncAPI 3.0.0 document of the MQTT interface (mqtt.md), built from gateway.model.messages.

``build_document()`` returns the document as a dict: the broker (plain and TLS), one
channel per topic with its parameters, the operations from the gateway's point of view
(it sends status, room states, alarms, events and replies; it receives commands, each
with its reply), one message per payload and per command type, and ``components.schemas``
from the models' JSON schemas. Every example is built through the models, and each
command example is signed with ``EXAMPLE_KEY_HEX`` (the key of docs/mqtt-api.md's worked
example), so no example can disagree with what the gateway accepts.

Two adjustments to pydantic's schemas, both read from the models: an outgoing payload's
``required`` lists every key the gateway writes (pydantic omits keys that have a default,
but ``Message.to_dict`` writes them all except ``omit_when_none``); and the per-property
``title`` pydantic derives from each field name is dropped as noise.

``python -m gateway.asyncapi`` writes docs/asyncapi.json; with ``--check`` it writes
nothing and exits 1 if the file differs from a fresh build (tests/test_asyncapi.py runs
the same comparison, so models and document cannot drift apart unnoticed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
import typing
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.config.floor import MqttSection
from gateway.core.commands import MAX_AGE_S, MAX_AHEAD_S, sign
from gateway.core.locksync import token_hash
from gateway.model.messages import (
    COMMAND_BODIES,
    SCHEMA_VERSION,
    AlarmSnapshot,
    CommandEnvelope,
    EventEnvelope,
    Inventory,
    Message,
    ReplayResult,
    Reply,
    RoomState,
    Status,
    dumps,
)

__all__ = [
    "ASYNCAPI_VERSION",
    "DEFAULT_OUTPUT",
    "EXAMPLE_KEY_HEX",
    "INCOMING",
    "OUTGOING",
    "build_document",
    "command_message_key",
    "main",
    "render",
]

ASYNCAPI_VERSION = "3.0.0"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"
EXAMPLE_KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
"""The command key of the examples (docs/mqtt-api.md): public, so never a real floor's."""

OUTGOING: tuple[type[Message], ...] = (
    Status,
    RoomState,
    AlarmSnapshot,
    EventEnvelope,
    Reply,
    ReplayResult,
    Inventory,
)
"""Payloads the gateway writes (schemas in serialization mode)."""
INCOMING: tuple[type[Message], ...] = (CommandEnvelope, *COMMAND_BODIES.values())
"""Payloads the gateway reads (schemas in validation mode)."""

MQTT_BINDING_VERSION = "0.2.0"
_JSON_BINDING: dict[str, Any] = {
    "payloadFormatIndicator": 1,
    "contentType": "application/json",
    "bindingVersion": MQTT_BINDING_VERSION,
}
"""MQTT 5 properties on every payload the gateway publishes (none under 3.1.1)."""
EX_OK, EX_DIFFERS = 0, 1
_SCHEMAS = "#/components/schemas/"
_MESSAGES = "#/components/messages/"

# Example values shared by the payload examples (and the worked example of mqtt-api.md).
_GATEWAY, _ROOM, _STAY = "sh-bund-12", "1203", "R-88231"
_ISSUED_AT = "2026-11-23T06:00:00Z"
_ALARM_ID = "5d0c7a1e9b3f4e2a8c6d1f0b7a9e3c21"
_CARD = "0a1b2c3d4e5f6071"
_FLOOR_TOML = """\
[gateway]
id = "main-12"
state_dir = "/var/lib/floorgate"

[mqtt]
host = "mqtt.hotel.internal"
root = "hotel/main/main-12"
command_key_file = "/etc/floorgate/command.key"

[[escalation]]
after_s = 0
notify = "floor-staff"

[[bus]]
name = "rs485-a"
kind = "modbus-rtu"
port = "/dev/ttyUSB0"

[[room]]
id = "1201"
devices = [
  { role = "tstat", profile = "fg-tstat-1", bus = "rs485-a", unit = 1 },
  { role = "lock",  profile = "fg-lock-1",  bus = "rs485-a", unit = 2 },
  { role = "rio",   profile = "fg-rio-1",   bus = "rs485-a", unit = 3 },
]
"""

_EXAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "checkin": {
        "room": _ROOM,
        "stay_id": _STAY,
        "valid_from": "2026-11-23T14:00:00Z",
        "valid_until": "2026-11-25T11:00:00Z",
        "tokens": [_CARD],
        "preferences": {"setpoint_c": 22.5, "scene": "welcome"},
    },
    "checkout": {"room": _ROOM, "stay_id": _STAY},
    "extend": {"room": _ROOM, "stay_id": _STAY, "valid_until": "2026-11-26T11:00:00Z"},
    "add_token": {"room": _ROOM, "stay_id": _STAY, "token": "8F9E0D1C2B3A4958"},
    "revoke_token": {"room": _ROOM, "stay_id": _STAY, "token": "8f9e0d1c2b3a4958"},
    "set_climate": {"room": _ROOM, "setpoint_c": 21.0, "mode": "cool", "fan": "auto"},
    "set_lights": {"room": _ROOM, "circuits": {"main": True, "bath": False}},
    "unlock": {"room": _ROOM, "by": "front-desk/maria", "reason": "guest locked out, ID checked"},
    "ack_alarm": {"alarm_id": _ALARM_ID, "by": "ana"},
    "resolve_alarm": {"alarm_id": _ALARM_ID, "by": "ana"},
    "resync": {},
    "apply_config": {
        "floor_toml": _FLOOR_TOML,
        "sha256": hashlib.sha256(_FLOOR_TOML.encode()).hexdigest(),
        "confirm_s": 120,
    },
    "set_housekeeping": {"room": _ROOM, "status": "inspected", "by": "hk/li"},
    "set_energy": {"room": _ROOM, "hold": True},
    "replay": {"from_seq": 1001, "to_seq": 1041},
    "move_room": {"stay_id": _STAY, "from": _ROOM, "to": "1207", "grace_s": 300},
    "staff_key": {
        "op": "add",
        "key_id": "hk-ana",
        "token": "5a6b7c8d9e0f1a2b",
        "zones": ["1201", "1202", _ROOM],
        "schedule": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "from": "07:00",
            "until": "15:00",
        },
    },
    "lockdown": {"on": True, "by": "sec-02", "reason": "police request"},
}


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the gateway's MQTT interface, as a JSON-ready dict."""
    missing = sorted(set(COMMAND_BODIES) - set(_EXAMPLE_BODIES))
    if missing:
        raise ValueError(f"no example body for command type(s) {', '.join(missing)}")
    messages = _messages()
    commands = {
        command_message_key(t): {"$ref": _MESSAGES + command_message_key(t)} for t in COMMAND_BODIES
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(),
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": {
            "status": _channel(
                "{root}/status",
                "Retained gateway status; the will (and a clean stop) publishes it offline.",
                ["status"],
            ),
            "roomState": _channel(
                "{root}/rooms/{room}/state",
                "Retained room snapshot, republished on every change (coalesced up to 200 ms).",
                ["roomState"],
            ),
            "alarm": _channel(
                "{root}/alarms/{alarm_id}",
                "Retained alarm snapshot while the alarm is open; cleared (an empty retained"
                " payload) when it is resolved. The final snapshot is the data of the"
                " alarm.resolved event, which may arrive after the clear.",
                ["alarm", "alarmCleared"],
            ),
            "events": _channel(
                "{root}/events",
                "Events in seq order, at least once: drop duplicates by id, detect loss by a"
                " gap in seq.",
                ["event"],
            ),
            "replay": _channel(
                "{root}/replay",
                "Stored events published again at a replay command's request, each its"
                " original envelope (same seq and id), in seq order; live events keep flowing"
                " on {root}/events meanwhile.",
                ["replayedEvent"],
            ),
            "inventory": _channel(
                "{root}/inventory",
                "Retained: what the floor is made of (rooms, device roles and profiles, call"
                " panels, escalation), published on every connect; names no port, host, key"
                " or token.",
                ["inventory"],
            ),
            "cmd": {
                "address": "{root}/cmd",
                "description": "Signed commands from the central system.",
                "messages": commands,
                "parameters": _parameters("{root}/cmd"),
            },
            "reply": _channel(
                "{root}/reply",
                "One reply per command whose id can be read; a duplicate gets the original"
                ' reply again with "duplicate": true. A signed command with the MQTT 5'
                " Response Topic and Correlation Data properties gets its reply on that topic"
                " with the same Correlation Data instead; a reply to an unauthenticated"
                " command always comes here. Replies expire after 300 s.",
                ["reply"],
            ),
        },
        "operations": _operations(),
        "components": {
            "schemas": _schemas(),
            "messages": messages,
            "parameters": {
                "root": {
                    "description": "The floor's topic root, [mqtt] root in its floor file:"
                    " hotel/{site}/{gateway id} by convention, e.g. hotel/sh-bund/sh-bund-12"
                    " (several topic levels; the broker ACL fences each floor by its id).",
                    "examples": [f"hotel/sh-bund/{_GATEWAY}"],
                },
                "room": {
                    "description": "A room id of the floor file ([[room]] id).",
                    "examples": [_ROOM],
                },
                "alarm_id": {
                    "description": "The alarm's id, as in its snapshot.",
                    "examples": [_ALARM_ID],
                },
            },
            "securitySchemes": {
                "userPassword": {
                    "type": "userPassword",
                    "description": "[mqtt] username and password_file (docs/security.md).",
                },
                "clientCertificate": {
                    "type": "X509",
                    "description": "[mqtt] tls_cert_file and tls_key_file, one certificate per"
                    " floor with the gateway id as its CN (docs/security.md).",
                },
            },
        },
    }


def command_message_key(command_type: str) -> str:
    """The key of a command type's message, in components.messages and the cmd channel."""
    return f"command.{command_type}"


def render(document: dict[str, Any]) -> str:
    """The document as committed: indented UTF-8 JSON ending in a newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document, or with ``--check`` exit 1 if the file on disk differs."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.asyncapi",
        description="Generate the AsyncAPI 3 document of floorgate's MQTT interface.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="PATH")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if PATH is not up to date"
    )
    args = parser.parse_args(argv)
    text = render(build_document())
    path: Path = args.output
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            return EX_DIFFERS
        if current != text:
            print(
                f"{path} differs from gateway.model.messages: run python -m gateway.asyncapi",
                file=sys.stderr,
            )
            return EX_DIFFERS
        print(f"{path} is up to date")
        return EX_OK
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return EX_OK


# -- document parts ----------------------------------------------------------------------


def _info() -> dict[str, Any]:
    return {
        "title": "floorgate: a hotel floor gateway over MQTT",
        "version": f"{SCHEMA_VERSION}.0.0",
        "description": (
            "The contract between one floor's gateway and the hotel's central system"
            " (mqtt.md v1 and its v2 MQTT 5 additions): every payload is UTF-8 JSON with"
            f' "schema": {SCHEMA_VERSION}, times are RFC 3339 UTC with a Z. On every'
            " (re)connect the gateway publishes its status, every open alarm and every room"
            " state (with Session Present: only the room states changed since the broker"
            " last acknowledged them) before any backlog of events. A publish the broker"
            " refuses (PUBACK reason code >= 0x80) stays in the outbox and is retried."
            " Commands are signed with HMAC-SHA256 under"
            f" the floor's command key and refused when older than {MAX_AGE_S} s or more than"
            f" {MAX_AHEAD_S} s ahead. The examples are signed with a public example key:"
            " never use it. The prose, the worked signing example and the choices made"
            " where the spec is open are in docs/mqtt-api.md. Generated from"
            " gateway/messages.py by python -m gateway.asyncapi."
        ),
    }


def _servers() -> dict[str, Any]:
    mqtt = MqttSection.model_fields
    offline = Status.model_validate(
        {"gateway": _GATEWAY, "online": False, "version": "0.1.0", "started_at": _ISSUED_AT}
    )
    bindings = {
        "mqtt": {
            "cleanSession": False,
            "keepAlive": mqtt["keepalive_s"].default,
            "sessionExpiryInterval": mqtt["session_expiry_s"].default,
            "lastWill": {
                "topic": "{root}/status",
                "qos": 1,
                "retain": True,
                "message": offline.to_json().decode(),
            },
            "bindingVersion": MQTT_BINDING_VERSION,
        }
    }
    security = [
        {"$ref": "#/components/securitySchemes/userPassword"},
        {"$ref": "#/components/securitySchemes/clientCertificate"},
    ]

    def server(protocol: str, port: str, what: str) -> dict[str, Any]:
        return {
            "host": "{host}:{port}",
            "protocol": protocol,
            "protocolVersion": "5",
            "description": (
                f"The hotel's broker, {what}. Each gateway connects with its gateway id as"
                " client id and a persistent session (Clean Start off, a Session Expiry"
                " Interval of [mqtt] session_expiry_s), so commands sent while it is briefly"
                ' away are delivered when it returns. [mqtt] protocol = "3.1.1" remains for'
                " old brokers: there a publish refused by the broker's ACL is acknowledged"
                " as delivered and lost to the central system."
            ),
            "variables": {
                "host": {"description": "[mqtt] host", "examples": ["mqtt.hotel.internal"]},
                "port": {"description": "[mqtt] port", "default": port},
            },
            "security": security,
            "bindings": bindings,
        }

    return {
        "broker": server("mqtt", str(mqtt["port"].default), "plain MQTT"),
        "brokerTls": server(
            "secure-mqtt", "8883", "over TLS ([mqtt] tls_ca_file, optional client certificate)"
        ),
    }


def _channel(address: str, description: str, message_keys: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {k: {"$ref": _MESSAGES + k} for k in message_keys},
        "parameters": _parameters(address),
    }


def _parameters(address: str) -> dict[str, Any]:
    names = [part[1:-1] for part in address.split("/") if part.startswith("{")]
    return {n: {"$ref": f"#/components/parameters/{n}"} for n in names}


def _operations() -> dict[str, Any]:
    def op(
        action: str, channel: str, keys: list[str], retain: bool, summary: str
    ) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{k}"} for k in keys],
            "bindings": {
                "mqtt": {"qos": 1, "retain": retain, "bindingVersion": MQTT_BINDING_VERSION}
            },
        }

    receive = op(
        "receive",
        "cmd",
        [command_message_key(t) for t in COMMAND_BODIES],
        False,
        "The gateway executes a signed command and replies on {root}/reply (or, for a"
        " signed command, on its Response Topic).",
    )
    receive["reply"] = {
        "channel": {"$ref": "#/channels/reply"},
        "messages": [{"$ref": "#/channels/reply/messages/reply"}],
    }
    return {
        "sendStatus": op("send", "status", ["status"], True, "The gateway's status (retained)."),
        "sendRoomState": op(
            "send", "roomState", ["roomState"], True, "A room's snapshot (retained)."
        ),
        "sendAlarm": op(
            "send",
            "alarm",
            ["alarm", "alarmCleared"],
            True,
            "An open alarm's snapshot (retained), cleared when it is resolved.",
        ),
        "sendEvent": op("send", "events", ["event"], False, "One event of the outbox."),
        "sendReplayedEvent": op(
            "send", "replay", ["replayedEvent"], False, "A stored event, published again."
        ),
        "sendInventory": op(
            "send", "inventory", ["inventory"], True, "What the floor is made of (retained)."
        ),
        "receiveCommand": receive,
        "sendReply": {
            **op("send", "reply", ["reply"], False, "The reply to a command."),
            "bindings": {
                "mqtt": {
                    "qos": 1,
                    "retain": False,
                    "messageExpiryInterval": 300,
                    "bindingVersion": MQTT_BINDING_VERSION,
                }
            },
        },
    }


def _messages() -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": _message(
            Status,
            "status",
            "Gateway status",
            [
                ("online", _status(online=True)),
                ("offline", _status(online=False)),
            ],
        ),
        "roomState": _message(RoomState, "roomState", "Room state", [("occupied", _room())]),
        "alarm": _message(
            AlarmSnapshot,
            "alarm",
            "Alarm snapshot",
            [
                ("bathroom call, active", _alarm()),
                ("acknowledged", _alarm(acknowledged=True)),
            ],
        ),
        "alarmCleared": {
            "name": "alarmCleared",
            "title": "Alarm cleared",
            "summary": "An empty retained payload: the alarm is resolved (see alarm.resolved).",
            "contentType": "application/octet-stream",
            "payload": {"type": "string", "maxLength": 0},
            "examples": [{"name": "cleared", "payload": ""}],
        },
        "event": _message(EventEnvelope, "event", "Event", _event_examples()),
        "replayedEvent": _message(
            EventEnvelope, "replayedEvent", "Replayed event", _event_examples()[:1]
        ),
        "inventory": _message(Inventory, "inventory", "Inventory", [("floor", _inventory())]),
        "reply": _message(Reply, "reply", "Reply", _reply_examples()),
    }
    out["reply"]["bindings"] = {
        "mqtt": {
            **_JSON_BINDING,
            "correlationData": {
                "type": "string",
                "description": "The command's Correlation Data, when it gave a Response Topic",
            },
        }
    }
    for command_type, body in COMMAND_BODIES.items():
        key = command_message_key(command_type)
        out[key] = {
            "name": command_type,
            "title": f"Command {command_type}",
            "summary": _first_line(body.__doc__),
            "payload": {
                "allOf": [
                    {"$ref": _SCHEMAS + CommandEnvelope.__name__},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": command_type},
                            "body": {"$ref": _SCHEMAS + body.__name__},
                        },
                        "required": ["type", "body"],
                    },
                ]
            },
            "examples": [{"name": command_type, "payload": _signed(command_type)}],
        }
    return out


def _message(
    model: type[Message], name: str, title: str, examples: list[tuple[str, Message]]
) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": _first_line(model.__doc__),
        "payload": {"$ref": _SCHEMAS + model.__name__},
        "bindings": {"mqtt": dict(_JSON_BINDING)},
        "examples": [{"name": n, "payload": m.to_dict()} for n, m in examples],
    }


def _schemas() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "serialization") for m in OUTGOING]
    pairs += [(m, "validation") for m in INCOMING]
    _, top = models_json_schema(pairs, ref_template=_SCHEMAS + "{model}")
    schemas: dict[str, Any] = top["$defs"]
    for model in _nested(OUTGOING):
        schema = schemas[model.__name__]
        schema["required"] = [
            f.alias or name
            for name, f in model.model_fields.items()
            if (f.alias or name) not in model.omit_when_none
        ]
    for schema in schemas.values():
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
    return dict(sorted(schemas.items()))


def _nested(models: Sequence[type[Message]]) -> Iterator[type[Message]]:
    """The models and every Message model their fields hold, each once."""
    seen: set[type[Message]] = set()
    todo = list(models)
    while todo:
        model = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        yield model
        for f in model.model_fields.values():
            todo += _models_in(f.annotation)


def _models_in(annotation: Any) -> list[type[Message]]:
    if isinstance(annotation, type) and issubclass(annotation, Message):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


# -- examples ------------------------------------------------------------------------------

_ROOM_STATE: dict[str, Any] = {
    "room": _ROOM, "ts": "2026-11-23T06:03:22.123Z", "occupancy": "occupied", "stay_id": _STAY,
    "rental": "sold", "presence": "present",
    "energy": {"mode": "comfort", "since": "2026-11-23T05:58:40.000Z"},
    "housekeeping": "clean", "service": "idle",
    "door": "closed", "deadbolt": False, "lock_battery": 87,
    "climate": {"temp_c": 23.4, "setpoint_c": 22.5, "mode": "cool", "fan": "auto", "power": True},
    "lights": {"entry": False, "main": True, "bedside": False, "bath": False},
    "keycard": True, "dnd": False, "mur": False, "window_open": False, "call": "active",
    "devices": {"tstat": "online", "lock": "online", "rio": "online"},
}  # fmt: skip
_ALARM: dict[str, Any] = {
    "alarm_id": _ALARM_ID, "room": _ROOM, "kind": "call", "point": "bath", "state": "active",
    "level": 0, "raised_at": "2026-11-23T06:03:22.120Z", "acknowledged_at": None,
    "acknowledged_by": None, "resolved_at": None, "resolved_by": None,
}  # fmt: skip
_ACKNOWLEDGED = {
    "state": "acknowledged", "acknowledged_at": "2026-11-23T06:03:51.604Z",
    "acknowledged_by": "ana",
}  # fmt: skip


def _status(*, online: bool) -> Status:
    started = "2026-11-23T05:58:41.207Z"
    doc: dict[str, Any] = {
        "gateway": _GATEWAY, "online": online, "version": "0.1.0", "started_at": started,
    }  # fmt: skip
    if online:
        doc["health"] = {
            "level": "degraded",
            "reasons": [
                {
                    "code": "devices_offline",
                    "level": "degraded",
                    "message": "1 of 36 devices offline: 1204/tstat",
                }
            ],
        }
    return Status.model_validate(doc)


def _room() -> RoomState:
    return RoomState.model_validate(_ROOM_STATE)


def _alarm(*, acknowledged: bool = False) -> AlarmSnapshot:
    return AlarmSnapshot.model_validate({**_ALARM, **(_ACKNOWLEDGED if acknowledged else {})})


def _event_examples() -> list[tuple[str, Message]]:
    raised = {**_alarm().to_dict(), "notify": "floor-staff"}
    denied = {"stay_id": _STAY, "log_seq": 311, "reason": "deadbolt"}
    offline = {"device": f"{_ROOM}/lock", "reason": "timeout"}
    rejected = {"id": _command_id("checkout"), "code": "stale"}
    flood = {"code": "unauthenticated", "count": 9412}
    events: list[tuple[str, str | None, dict[str, Any], str]] = [
        ("alarm.raised", _ROOM, raised, "06:03:22.123"),
        ("access.denied", _ROOM, {**denied, "token_hash": token_hash(_CARD)}, "06:04:10.532"),
        ("device.offline", _ROOM, offline, "06:05:02.918"),
        ("command.rejected", None, rejected, "06:05:40.001"),
        ("command.rejected", None, flood, "06:06:10.007"),
    ]
    out: list[tuple[str, Message]] = []
    for seq, (type_, room, data, time) in enumerate(events, start=1042):
        envelope: dict[str, Any] = {
            "gateway": _GATEWAY,
            "seq": seq,
            "id": uuid.uuid5(uuid.NAMESPACE_URL, f"floorgate-example-event-{seq}").hex,
            "ts": f"2026-11-23T{time}Z",
            "type": type_,
            **({"room": room} if room is not None else {}),
            "data": data,
        }
        name = type_ if "count" not in data else f"{type_} (coalesced in a flood)"
        out.append((name, EventEnvelope.model_validate(envelope)))
    return out


def _reply_examples() -> list[tuple[str, Message]]:
    ok = Reply.model_validate(
        {"id": _command_id("checkin"), "ok": True, "result": {"pending": [f"{_ROOM}/lock"]}}
    )
    error = {"code": "stale", "message": "issued_at is 412 s old"}
    refused = Reply.model_validate({"id": _command_id("checkout"), "ok": False, "error": error})
    duplicate = ok.model_copy(update={"duplicate": True})
    result = {
        "count": 34,
        "first_seq": 1011,
        "last_seq": 1041,
        "missing": [{"from_seq": 1001, "to_seq": 1010}],
    }
    replayed = Reply.model_validate(
        {
            "id": _command_id("replay"),
            "ok": True,
            "result": ReplayResult.model_validate(result).to_dict(),
        }
    )
    return [("ok", ok), ("refused", refused), ("duplicate", duplicate), ("replay", replayed)]


def _inventory() -> Inventory:
    tstat = {"role": "tstat", "profile": "fg-tstat-1"}
    lock = {"role": "lock", "profile": "fg-lock-1"}
    return Inventory.model_validate(
        {
            "gateway": _GATEWAY,
            "version": "0.1.0",
            "config_sha256": "9f2c" * 16,
            "timezone": "Asia/Shanghai",
            "rooms": [
                {"room": "1201", "devices": [tstat, lock], "callpanel": None},
                {"room": "1205", "devices": [tstat], "callpanel": "panel"},
            ],
            "escalation": [
                {"after_s": 0, "notify": "floor-staff"},
                {"after_s": 60, "notify": "duty-manager"},
            ],
        }
    )


def _command_id(command_type: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"floorgate-example-command-{command_type}").hex


def _signed(command_type: str) -> dict[str, Any]:
    """A command envelope of this type as sent, signed with the example key.

    The envelope and body are validated by their models (ValidationError if an example
    would be refused), but returned as written: re-serialising would change what was signed.
    """
    envelope: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "id": _command_id(command_type),
        "type": command_type,
        "issued_at": _ISSUED_AT,
        "body": json.loads(dumps(_EXAMPLE_BODIES[command_type])),
    }
    envelope["sig"] = sign(envelope, bytes.fromhex(EXAMPLE_KEY_HEX))
    CommandEnvelope.model_validate(envelope)
    COMMAND_BODIES[command_type].model_validate(envelope["body"])
    return envelope


def _first_line(doc: str | None) -> str:
    """A docstring's first line, reST double backticks made CommonMark single ones."""
    lines = (doc or "").strip().splitlines()
    return lines[0].replace("``", "`") if lines else ""


if __name__ == "__main__":
    sys.exit(main())
