"""The AsyncAPI document: structurally valid AsyncAPI 3.0.0, true to the models, in sync.

No AsyncAPI validator is installed, so the structure is checked here against the fields
the AsyncAPI 3.0.0 specification (and the MQTT bindings 0.2.0) define for the objects the
document uses: required fields present, no field the specification does not know (a typo
would otherwise pass silently), every ``$ref`` resolving, operations naming messages of
their own channel, channel parameters matching the addresses. The examples are checked by
the gateway's own models and command checks, and the committed docs/asyncapi.json must
equal a fresh build: the test fails when the models and the document drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import asyncapi
from gateway.core.commands import Admitted, Authenticated, admit, authenticate, sign
from gateway.model.messages import (
    COMMAND_BODIES,
    AlarmSnapshot,
    EventEnvelope,
    Message,
    Reply,
    RoomState,
    Status,
)
from gateway.model.time import parse_ts

DOCS = Path(__file__).resolve().parent.parent / "docs"

# mqtt.md "Event types (v1)", copied from the spec (not from gateway.model.messages).
SPEC_EVENT_TYPES = {
    "gateway.started", "gateway.stopping", "room.checked_in", "room.checked_out",
    "room.stay_extended", "access.granted", "access.denied", "access.remote_unlock",
    "door.opened", "door.closed", "door.held_open", "lock.drift_repaired", "alarm.raised",
    "alarm.escalated", "alarm.acknowledged", "alarm.resolved", "device.offline",
    "device.online", "device.fault", "callpanel.offline", "callpanel.online", "lock.tamper",
    "room.dnd", "room.mur", "room.keycard", "room.window", "command.rejected",
    # v2 "Events, v2"
    "config.applied", "config.rolled_back", "config.refused",
    # v2
    "lock.battery", "room.moved", "lockdown.changed", "audit",
}  # fmt: skip
# mqtt.md "Commands": the command types of its table.
SPEC_COMMAND_TYPES = {
    "checkin", "checkout", "extend", "add_token", "revoke_token", "set_climate",
    "set_lights", "unlock", "ack_alarm", "resolve_alarm", "resync",
    # v2 "Commands, v2"
    "apply_config",
    "set_housekeeping", "set_energy",  # v2
    "replay",  # mqtt.md v2 "Inventory and replay"
    # v2
    "move_room", "staff_key", "lockdown",
}  # fmt: skip

# AsyncAPI 3.0.0: the fixed fields of each object used here (required ones listed apart).
FIELDS: dict[str, set[str]] = {
    "document": {"asyncapi", "id", "info", "servers", "defaultContentType", "channels",
                 "operations", "components"},
    "info": {"title", "version", "description", "termsOfService", "contact", "license",
             "tags", "externalDocs"},
    "server": {"host", "protocol", "protocolVersion", "pathname", "description", "title",
               "summary", "variables", "security", "tags", "externalDocs", "bindings"},
    "serverVariable": {"enum", "default", "description", "examples"},
    "channel": {"address", "messages", "title", "summary", "description", "servers",
                "parameters", "tags", "externalDocs", "bindings"},
    "operation": {"action", "channel", "title", "summary", "description", "security", "tags",
                  "externalDocs", "bindings", "traits", "messages", "reply"},
    "reply": {"address", "channel", "messages"},
    "message": {"headers", "payload", "correlationId", "contentType", "name", "title",
                "summary", "description", "tags", "externalDocs", "bindings", "examples",
                "traits"},
    "messageExample": {"headers", "payload", "name", "summary"},
    "parameter": {"enum", "default", "description", "examples", "location"},
    "securityScheme": {"type", "description", "name", "in", "scheme", "bearerFormat", "flows",
                       "openIdConnectUrl", "scopes"},
    "components": {"schemas", "servers", "channels", "operations", "messages",
                   "securitySchemes", "serverVariables", "parameters", "correlationIds",
                   "replies", "replyAddresses", "externalDocs", "tags", "operationTraits",
                   "messageTraits", "serverBindings", "channelBindings", "operationBindings",
                   "messageBindings"},
    "mqttServerBinding": {"clientId", "cleanSession", "lastWill", "keepAlive",
                          "sessionExpiryInterval", "maximumPacketSize", "bindingVersion"},
    "mqttLastWill": {"topic", "qos", "message", "retain"},
    "mqttOperationBinding": {"qos", "retain", "messageExpiryInterval", "bindingVersion"},
    "mqttMessageBinding": {"payloadFormatIndicator", "correlationData", "contentType",
                           "responseTopic", "bindingVersion"},
}  # fmt: skip
REQUIRED: dict[str, set[str]] = {
    "document": {"asyncapi", "info"},
    "info": {"title", "version"},
    "server": {"host", "protocol"},
    "operation": {"action", "channel"},
    "securityScheme": {"type"},
    # Not required by AsyncAPI, but a message or channel without them says nothing here.
    "channel": {"address", "messages"},
    "message": {"payload", "examples"},
    "messageExample": {"payload"},
}
SECURITY_TYPES = {
    "userPassword", "apiKey", "X509", "symmetricEncryption", "asymmetricEncryption",
    "httpApiKey", "http", "oauth2", "openIdConnect", "plain", "scramSha256", "scramSha512",
    "gssapi",
}  # fmt: skip
COMPONENT_KEY = re.compile(r"^[a-zA-Z0-9\.\-_]+$")

PAYLOAD_MODELS: dict[str, type[Message]] = {
    "status": Status,
    "roomState": RoomState,
    "alarm": AlarmSnapshot,
    "event": EventEnvelope,
    "reply": Reply,
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.build_document()


def check_object(kind: str, obj: Any, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: a {kind} must be an object"
    unknown = {k for k in obj if not k.startswith("x-")} - FIELDS[kind]
    assert not unknown, f"{where}: fields a {kind} does not have: {sorted(unknown)}"
    missing = REQUIRED.get(kind, set()) - set(obj)
    assert not missing, f"{where}: a {kind} needs {sorted(missing)}"


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (``#/a/b``) into the document; KeyError if it leads nowhere."""
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def deref(doc: dict[str, Any], node: dict[str, Any]) -> Any:
    return resolve(doc, node["$ref"]) if "$ref" in node else node


# -- in sync --------------------------------------------------------------------------------


def test_committed_document_equals_a_fresh_build(doc: dict[str, Any]) -> None:
    committed = (DOCS / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == asyncapi.render(doc), (
        "docs/asyncapi.json differs from gateway.model.messages: run python -m gateway.asyncapi"
    )


def test_check_mode_reports_drift_and_writing_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "asyncapi.json"
    assert asyncapi.main(["--check", "--output", str(out)]) == 1  # missing
    out.write_text(asyncapi.render(asyncapi.build_document()).replace("3.0.0", "2.6.0", 1))
    assert asyncapi.main(["--check", "--output", str(out)]) == 1  # stale
    assert "run python -m gateway.asyncapi" in capsys.readouterr().err
    assert asyncapi.main(["--output", str(out)]) == 0
    assert asyncapi.main(["--check", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["asyncapi"] == "3.0.0"


def test_the_build_is_deterministic() -> None:
    assert asyncapi.render(asyncapi.build_document()) == asyncapi.render(asyncapi.build_document())


# -- AsyncAPI 3.0.0 structure -----------------------------------------------------------------


def test_objects_have_their_required_fields_and_no_unknown_ones(doc: dict[str, Any]) -> None:
    check_object("document", doc, "document")
    assert doc["asyncapi"] == "3.0.0"
    check_object("info", doc["info"], "info")
    for name, server in doc["servers"].items():
        check_object("server", server, f"servers.{name}")
        assert server["protocol"] in {"mqtt", "secure-mqtt"}
        for var, spec in server["variables"].items():
            check_object("serverVariable", spec, f"servers.{name}.variables.{var}")
            assert f"{{{var}}}" in server["host"]
        for scheme in server["security"]:
            assert "$ref" in scheme
        binding = server["bindings"]["mqtt"]
        check_object("mqttServerBinding", binding, f"servers.{name}.bindings.mqtt")
        check_object("mqttLastWill", binding["lastWill"], f"servers.{name}.lastWill")
    for name, channel in doc["channels"].items():
        check_object("channel", channel, f"channels.{name}")
    for name, op in doc["operations"].items():
        check_object("operation", op, f"operations.{name}")
        assert op["action"] in {"send", "receive"}
        check_object("mqttOperationBinding", op["bindings"]["mqtt"], f"operations.{name}")
        if "reply" in op:
            check_object("reply", op["reply"], f"operations.{name}.reply")
    components = doc["components"]
    check_object("components", components, "components")
    for name, message in components["messages"].items():
        check_object("message", message, f"components.messages.{name}")
        for i, example in enumerate(message["examples"]):
            check_object("messageExample", example, f"components.messages.{name}.examples[{i}]")
    for name, param in components["parameters"].items():
        check_object("parameter", param, f"components.parameters.{name}")
    for name, scheme in components["securitySchemes"].items():
        check_object("securityScheme", scheme, f"components.securitySchemes.{name}")
        assert scheme["type"] in SECURITY_TYPES
    for section, entries in components.items():
        for key in entries:
            assert COMPONENT_KEY.match(key), f"components.{section}.{key}: not a valid key"
    for channel in doc["channels"].values():
        for key in channel["messages"]:
            assert COMPONENT_KEY.match(key)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert len(found) > 50
    for ref in found:
        try:
            resolve(doc, ref)
        except (KeyError, TypeError):
            pytest.fail(f"$ref {ref} does not resolve")


def test_operations_use_messages_of_their_own_channel(doc: dict[str, Any]) -> None:
    for name, op in doc["operations"].items():
        channel = op["channel"]["$ref"]
        assert channel.startswith("#/channels/"), name
        assert op["messages"], f"operations.{name} has no messages"
        for message in op["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), (name, message)
        if "reply" in op:
            reply_channel = op["reply"]["channel"]["$ref"]
            for message in op["reply"]["messages"]:
                assert message["$ref"].startswith(reply_channel + "/messages/")
    used = {op["channel"]["$ref"] for op in doc["operations"].values()}
    assert used == {f"#/channels/{name}" for name in doc["channels"]}, "a channel is unused"


def test_channel_parameters_match_their_address(doc: dict[str, Any]) -> None:
    for name, channel in doc["channels"].items():
        in_address = set(re.findall(r"\{([^}]+)\}", channel["address"]))
        assert set(channel.get("parameters", {})) == in_address, name


def test_topics_directions_qos_and_retain_are_mqtt_md_s(doc: dict[str, Any]) -> None:
    topics = {
        (
            op["action"],
            resolve(doc, op["channel"]["$ref"])["address"],
            op["bindings"]["mqtt"]["qos"],
            op["bindings"]["mqtt"]["retain"],
        )
        for op in doc["operations"].values()
    }
    assert topics == {
        ("send", "{root}/status", 1, True),
        ("send", "{root}/rooms/{room}/state", 1, True),
        ("send", "{root}/alarms/{alarm_id}", 1, True),
        ("send", "{root}/events", 1, False),
        ("receive", "{root}/cmd", 1, False),
        ("send", "{root}/reply", 1, False),
        ("send", "{root}/replay", 1, False),  # mqtt.md v2
        ("send", "{root}/inventory", 1, True),
    }
    # mqtt.md v2: replies expire after 300 s; every payload says it is UTF-8 JSON.
    assert doc["operations"]["sendReply"]["bindings"]["mqtt"]["messageExpiryInterval"] == 300
    for key, message in doc["components"]["messages"].items():
        if key.startswith("command.") or key == "alarmCleared":
            continue
        binding = message["bindings"]["mqtt"]
        check_object("mqttMessageBinding", binding, f"messages.{key}.bindings.mqtt")
        assert (binding["payloadFormatIndicator"], binding["contentType"]) == (
            1,
            "application/json",
        )
    for server in doc["servers"].values():
        mqtt = server["bindings"]["mqtt"]
        assert mqtt["cleanSession"] is False
        assert server["protocolVersion"] == "5"
        assert mqtt["sessionExpiryInterval"] == 3600
        assert mqtt["lastWill"]["topic"] == "{root}/status"
        assert (mqtt["lastWill"]["qos"], mqtt["lastWill"]["retain"]) == (1, True)
        will = Status.model_validate_json(mqtt["lastWill"]["message"])
        assert will.online is False


# -- true to the models and the spec ----------------------------------------------------------


def test_every_command_type_has_a_message_with_its_body(doc: dict[str, Any]) -> None:
    assert set(COMMAND_BODIES) == SPEC_COMMAND_TYPES
    cmd = doc["channels"]["cmd"]["messages"]
    assert len(cmd) == len(COMMAND_BODIES)
    for command_type, body in COMMAND_BODIES.items():
        message = deref(doc, cmd[asyncapi.command_message_key(command_type)])
        envelope, specific = message["payload"]["allOf"]
        assert envelope == {"$ref": "#/components/schemas/CommandEnvelope"}
        assert specific["properties"]["type"] == {"const": command_type}
        body_schema = resolve(doc, specific["properties"]["body"]["$ref"])
        assert body_schema == doc["components"]["schemas"][body.__name__]
        aliases = {f.alias or name for name, f in body.model_fields.items()}
        assert set(body_schema.get("properties", {})) == aliases


def test_every_spec_event_type_is_in_the_event_schema(doc: dict[str, Any]) -> None:
    enum = doc["components"]["schemas"]["EventEnvelope"]["properties"]["type"]["enum"]
    assert set(enum) == SPEC_EVENT_TYPES
    assert len(enum) == len(SPEC_EVENT_TYPES)


def test_schemas_are_the_models_json_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for model in (*asyncapi.OUTGOING, *asyncapi.INCOMING):
        schema = schemas[model.__name__]
        aliases = {f.alias or name for name, f in model.model_fields.items()}
        assert set(schema.get("properties", {})) == aliases, model.__name__
        assert schema["additionalProperties"] is False  # extra="forbid"
    # mqtt.md's closed value sets, as the integrator reads them
    alarm = schemas["AlarmSnapshot"]["properties"]
    assert set(alarm["point"]["enum"]) == {
        "bath", "bed", "other", "callpanel_offline", "call_point_unreachable",
        "call_point_fault", "lock_tamper", "uplink_refused", "lamp_fault", "storage",
        "no_activity",
    }  # fmt: skip
    assert set(alarm["state"]["enum"]) == {"active", "acknowledged", "resolved"}
    codes = schemas["ReplyError"]["properties"]["code"]["enum"]
    assert {"unauthenticated", "stale", "invalid", "unknown_room", "conflict"} <= set(codes)


def test_required_keys_are_what_the_gateway_writes(doc: dict[str, Any]) -> None:
    """An outgoing example's keys include every required key and only known ones."""
    schemas = doc["components"]["schemas"]
    for key, model in PAYLOAD_MODELS.items():
        schema = schemas[model.__name__]
        assert "schema" in schema["required"], model.__name__
        for example in doc["components"]["messages"][key]["examples"]:
            written = set(example["payload"])
            assert set(schema["required"]) <= written, (key, example["name"])
            assert written <= set(schema["properties"]), (key, example["name"])
    assert "room" not in schemas["EventEnvelope"]["required"]  # absent for floor-level events
    assert set(schemas["Reply"]["required"]) == {"schema", "id", "ok"}


def test_payload_examples_validate_against_their_models(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for key, model in PAYLOAD_MODELS.items():
        for example in messages[key]["examples"]:
            parsed = model.model_validate(example["payload"])
            assert parsed.to_dict() == example["payload"], (key, example["name"])
    assert messages["alarmCleared"]["examples"][0]["payload"] == ""
    events = [e["payload"] for e in messages["event"]["examples"]]
    raised = next(e for e in events if e["type"] == "alarm.raised")
    snapshot = {k: v for k, v in raised["data"].items() if k != "notify"}
    AlarmSnapshot.model_validate(snapshot)  # alarm.* data is the snapshot (+ notify)
    assert raised["data"]["notify"]


def test_command_examples_pass_the_gateways_checks(doc: dict[str, Any]) -> None:
    """Each example is signed with the example key and admitted by the real checks."""
    key = bytes.fromhex(asyncapi.EXAMPLE_KEY_HEX)
    for command_type in COMMAND_BODIES:
        message = doc["components"]["messages"][asyncapi.command_message_key(command_type)]
        (example,) = message["examples"]
        payload = example["payload"]
        verdict = authenticate(json.dumps(payload, ensure_ascii=False).encode(), key)
        assert isinstance(verdict, Authenticated), (command_type, verdict)
        now: datetime = parse_ts(payload["issued_at"])
        admitted = admit(verdict, now, COMMAND_BODIES, rooms={"1203"})
        assert isinstance(admitted, Admitted), (command_type, admitted)
        assert admitted.type == command_type
        tampered = {**payload, "issued_at": "2026-11-23T06:00:01Z"}
        assert not isinstance(authenticate(json.dumps(tampered).encode(), key), Authenticated)


def test_worked_signing_example_of_mqtt_api_md_runs(doc: dict[str, Any]) -> None:
    """The Python of docs/mqtt-api.md's worked example computes what the gateway checks."""
    text = (DOCS / "mqtt-api.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "hmac.new" in b]
    assert len(blocks) == 1, "one worked signing example in docs/mqtt-api.md"
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "mqtt-api.md", "exec"), namespace)  # its asserts run too
    envelope, key = namespace["envelope"], namespace["key"]
    assert key == bytes.fromhex(asyncapi.EXAMPLE_KEY_HEX)
    assert namespace["sig"] == sign(envelope, key)
    example = doc["components"]["messages"]["command.checkin"]["examples"][0]["payload"]
    assert namespace["message"] == example  # the same command as the AsyncAPI example
    shown = re.findall(r"\b[0-9a-f]{64}\b", text)
    assert namespace["sig"] in shown, "the signature printed in the text is the computed one"
