"""The pure command checks: canonical JSON, HMAC, and mqtt.md's check order."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import commands as c
from gateway.model.messages import COMMAND_BODIES, CheckinBody, SetLightsBody

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
NOW = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
ROOMS = ("1201", "1203")


def envelope(**over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "schema": 1,
        "id": "7f6c-1",
        "type": "set_lights",
        "issued_at": "2026-11-23T06:00:00Z",
        "body": {"room": "1203", "circuits": {"main": True}},
    }
    env.update(over)
    return env


def signed(env: dict[str, Any], key: bytes = KEY) -> bytes:
    return json.dumps({**env, "sig": c.sign(env, key)}).encode()


def test_canonical_json_is_the_spec_form() -> None:
    obj = {"b": 1, "a": {"y": "é", "x": [1, 2.5]}}
    assert c.canonical_json(obj) == '{"a":{"x":[1,2.5],"y":"é"},"b":1}'.encode()


def test_signature_is_hmac_sha256_of_the_canonical_envelope_without_sig() -> None:
    env = envelope()
    unsigned = json.dumps(env, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(KEY, unsigned.encode(), hashlib.sha256).hexdigest()
    assert c.sign(env, KEY) == expected
    assert c.sign({**env, "sig": "whatever"}, KEY) == expected
    assert c.signature_ok({**env, "sig": expected}, KEY)
    assert not c.signature_ok({**env, "sig": expected.upper()}, KEY)
    assert not c.signature_ok({**env, "sig": expected}, KEY[:-1] + b"\x00")


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.booleans())))
def test_key_order_and_whitespace_do_not_change_the_signature(body: dict[str, Any]) -> None:
    env = envelope(body=body)
    reordered = dict(reversed(list(env.items())))
    assert c.sign(env, KEY) == c.sign(reordered, KEY)
    sent = json.dumps({**env, "sig": c.sign(env, KEY)}, indent=3).encode()
    assert isinstance(c.authenticate(sent, KEY), c.Authenticated)


def test_a_good_command_is_authenticated_then_admitted() -> None:
    verdict = c.authenticate(signed(envelope()), KEY)
    assert isinstance(verdict, c.Authenticated)
    assert (verdict.id, verdict.type, verdict.issued_at) == ("7f6c-1", "set_lights", NOW)
    admitted = c.admit(verdict, NOW, COMMAND_BODIES, ROOMS)
    assert isinstance(admitted, c.Admitted)
    assert isinstance(admitted.body, SetLightsBody)
    assert admitted.body.circuits == {"main": True}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'{"type": "checkin"}',
        b'{"id": 17, "type": "checkin"}',
        b'{"id": ""}',
        json.dumps({"id": "x" * 129}).encode(),
        b"[" * 50_000 + b"]" * 50_000,  # deep nesting: RecursionError inside json
    ],
)
def test_no_reply_without_a_readable_id(payload: bytes) -> None:
    assert isinstance(c.authenticate(payload, KEY), c.Unreadable)


def test_unparseable_payload_with_a_readable_id_is_invalid_unrecorded() -> None:
    verdict = c.authenticate(b'{"id": "abc", "type": "checkin", oops', KEY)
    assert verdict == c.Refused("abc", "invalid", verdict.message, recorded=False)  # type: ignore[union-attr]
    assert "not JSON" in verdict.message  # type: ignore[union-attr]
    nan = c.authenticate(b'{"id": "n1", "type": "x", "issued_at": NaN}', KEY)
    assert isinstance(nan, c.Refused)
    assert nan.code == "invalid"


def test_oversized_payload_is_refused_before_parsing() -> None:
    env = envelope(body={"room": "1203", "pad": "x" * c.MAX_PAYLOAD_BYTES})
    verdict = c.authenticate(signed(env), KEY)
    assert isinstance(verdict, c.Refused)
    assert (verdict.id, verdict.code, verdict.recorded) == ("7f6c-1", "invalid", False)
    assert "limit is 65536" in verdict.message
    assert isinstance(c.authenticate(b" " * (1 << 20), KEY), c.Unreadable)


def test_exactly_the_cap_is_parsed() -> None:
    env = envelope()
    raw = signed(env)
    padded = raw[:-1] + b" " * (c.MAX_PAYLOAD_BYTES - len(raw)) + b"}"
    assert len(padded) == c.MAX_PAYLOAD_BYTES
    assert isinstance(c.authenticate(padded, KEY), c.Authenticated)


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"type": 5}, "type"),
        ({"type": None}, "type"),
        ({"issued_at": "2026-11-23 06:00:00"}, "issued_at"),
        ({"issued_at": "2026-11-23T06:00:00+00:00"}, "issued_at"),
        ({"issued_at": 1700000000}, "issued_at"),
        ({"issued_at": "2026-13-23T06:00:00Z"}, "issued_at"),
    ],
)
def test_mistyped_envelope_is_invalid_before_the_signature(over: dict[str, Any], why: str) -> None:
    env = envelope(**over)
    # Even unsigned: the envelope check comes first (mqtt.md's order).
    verdict = c.authenticate(json.dumps(env).encode(), KEY)
    assert isinstance(verdict, c.Refused)
    assert (verdict.code, verdict.recorded) == ("invalid", False)
    assert why in verdict.message


def test_missing_envelope_field_is_invalid() -> None:
    env = envelope()
    del env["issued_at"]
    verdict = c.authenticate(signed(env), KEY)
    assert isinstance(verdict, c.Refused)
    assert verdict.code == "invalid"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: {k: v for k, v in raw.items() if k != "sig"},
        lambda raw: {**raw, "sig": None},
        lambda raw: {**raw, "sig": 12},
        lambda raw: {**raw, "sig": "0" * 64},
        lambda raw: {**raw, "sig": "é" * 64},
        lambda raw: {**raw, "sig": raw["sig"].upper()},
        lambda raw: {**raw, "body": {**raw["body"], "room": "1201"}},
        lambda raw: {**raw, "extra": 1},
    ],
)
def test_missing_or_wrong_signature_is_unauthenticated(mutate: Any) -> None:
    raw = json.loads(signed(envelope()))
    verdict = c.authenticate(json.dumps(mutate(raw)).encode(), KEY)
    assert isinstance(verdict, c.Refused)
    assert (verdict.code, verdict.recorded) == ("unauthenticated", False)


def test_signed_with_another_key_is_unauthenticated() -> None:
    verdict = c.authenticate(signed(envelope(), key=b"\x01" * 32), KEY)
    assert isinstance(verdict, c.Refused)
    assert verdict.code == "unauthenticated"


@pytest.mark.parametrize(
    ("offset_s", "stale"),
    [(0, False), (300, False), (301, True), (-30, False), (-31, True), (86_400, True)],
)
def test_freshness_window_is_300_s_old_30_s_ahead(offset_s: int, stale: bool) -> None:
    verdict = c.authenticate(signed(envelope()), KEY)
    assert isinstance(verdict, c.Authenticated)
    result = c.admit(verdict, NOW + timedelta(seconds=offset_s), COMMAND_BODIES)
    if stale:
        assert isinstance(result, c.Refused)
        assert (result.code, result.recorded) == ("stale", False)
        assert ("old" if offset_s > 0 else "future") in result.message
    else:
        assert isinstance(result, c.Admitted)


def test_stale_is_checked_before_the_body() -> None:
    verdict = c.authenticate(signed(envelope(body={"nonsense": 1})), KEY)
    assert isinstance(verdict, c.Authenticated)
    result = c.admit(verdict, NOW + timedelta(hours=1), COMMAND_BODIES)
    assert isinstance(result, c.Refused)
    assert result.code == "stale"


def admit(env: dict[str, Any], rooms: tuple[str, ...] | None = ROOMS) -> c.Admitted | c.Refused:
    verdict = c.authenticate(signed(env), KEY)
    assert isinstance(verdict, c.Authenticated)
    return c.admit(verdict, NOW, COMMAND_BODIES, rooms)


@pytest.mark.parametrize(
    "env",
    [
        envelope(type="open_sesame"),
        envelope(schema=2),
        envelope(schema=True),
        envelope(body=[]),
        envelope(extra="x"),
        envelope(id="x" * 128, body={"room": 1203, "circuits": {"main": True}}),
        envelope(body={"room": "1203", "circuits": {}}),
        envelope(body={"room": "1203", "circuits": {"disco": True}}),
        envelope(body={"room": "1203", "circuits": {"main": 1}}),
        envelope(type="resync", body={"room": "1203"}),
    ],
)
def test_schema_problems_after_the_signature_are_invalid_and_recorded(
    env: dict[str, Any],
) -> None:
    result = admit(env)
    assert isinstance(result, c.Refused)
    assert (result.code, result.recorded) == ("invalid", True)


def test_unknown_room_is_refused_and_recorded_and_optional() -> None:
    env = envelope(body={"room": "9999", "circuits": {"main": True}})
    result = admit(env)
    assert isinstance(result, c.Refused)
    assert (result.code, result.recorded) == ("unknown_room", True)
    assert isinstance(admit(env, rooms=None), c.Admitted)


def test_invalid_message_names_the_field() -> None:
    body = {"room": "1203", "stay_id": "R1", "valid_from": "2026-11-23T06:00:00Z",
            "valid_until": "2026-11-25T06:00:00Z", "tokens": ["00000000000000000"]}  # fmt: skip
    result = admit(envelope(type="checkin", body=body))
    assert isinstance(result, c.Refused)
    assert result.message.startswith("body.tokens[0]:")


def test_checkin_tokens_are_normalised() -> None:
    body = {"room": "1203", "stay_id": "R1", "valid_from": "2026-11-23T06:00:00Z",
            "valid_until": "2026-11-25T06:00:00.250Z",
            "tokens": ["ABCDEF0123456789", "abcdef0123456789", "0000000000000001"]}  # fmt: skip
    result = admit(envelope(type="checkin", body=body))
    assert isinstance(result, c.Admitted)
    assert isinstance(result.body, CheckinBody)
    assert result.body.tokens == ["abcdef0123456789", "0000000000000001"]
    assert result.body.valid_until == datetime(2026, 11, 25, 6, 0, 0, 250000, tzinfo=UTC)


# -- operator signatures (Ed25519) ------------------------------------------------------

FD_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SEC_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _public(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


OPERATORS = {
    "fd-03": c.Operator("fd-03", (_public(FD_KEY),), frozenset({"front_desk"})),
    "sec-02": c.Operator("sec-02", (_public(SEC_KEY),), frozenset({"security"})),
}
CREDS = c.Credentials(KEY, OPERATORS)


def op_signed(env: dict[str, Any], operator: str, key: Ed25519PrivateKey) -> bytes:
    env = {**env, "alg": "ed25519", "operator": operator}
    return json.dumps({**env, "sig": key.sign(c.canonical_json(env)).hex()}).encode()


def test_an_operator_signature_is_ed25519_over_the_canonical_envelope() -> None:
    verdict = c.authenticate(op_signed(envelope(), "fd-03", FD_KEY), CREDS)
    assert isinstance(verdict, c.Authenticated)
    assert verdict.operator == "fd-03"
    admitted = c.admit(verdict, NOW, COMMAND_BODIES, ROOMS)
    assert isinstance(admitted, c.Admitted)
    assert admitted.operator == "fd-03"


@pytest.mark.parametrize(
    ("payload", "code", "by"),
    [
        (op_signed(envelope(), "fd-03", SEC_KEY), "unauthenticated", None),  # wrong key
        (op_signed(envelope(), "nobody", FD_KEY), "unauthenticated", None),  # unknown operator
        (op_signed(envelope(type="lockdown", body={}), "fd-03", FD_KEY), "forbidden", "fd-03"),
        (op_signed(envelope(type="unlock", body={}), "sec-02", SEC_KEY), None, None),
        (signed({**envelope(), "operator": "fd-03"}), "invalid", None),  # no alg
    ],
)
def test_operator_checks_come_right_after_the_signature(
    payload: bytes, code: str | None, by: str | None
) -> None:
    verdict = c.authenticate(payload, CREDS)
    if code is None:
        assert isinstance(verdict, c.Authenticated)  # body checks come later
        return
    assert isinstance(verdict, c.Refused)
    assert (verdict.code, verdict.recorded, verdict.by) == (code, False, by)


def test_a_tampered_operator_envelope_is_unauthenticated() -> None:
    doc = json.loads(op_signed(envelope(), "fd-03", FD_KEY))
    doc["body"]["room"] = "1201"
    verdict = c.authenticate(json.dumps(doc).encode(), CREDS)
    assert isinstance(verdict, c.Refused)
    assert verdict.code == "unauthenticated"


def test_hmac_refused_when_the_floor_says_so_and_operators_still_work() -> None:
    no_hmac = c.Credentials(KEY, OPERATORS, allow_hmac=False)
    verdict = c.authenticate(signed(envelope()), no_hmac)
    assert isinstance(verdict, c.Refused)
    assert verdict.code == "unauthenticated"
    assert isinstance(
        c.authenticate(op_signed(envelope(), "fd-03", FD_KEY), no_hmac), c.Authenticated
    )


def test_a_body_by_must_be_the_signing_operator() -> None:
    body = {"room": "1203", "by": "someone-else", "reason": "x"}
    verdict = c.authenticate(
        op_signed(envelope(type="unlock", body=body), "sec-02", SEC_KEY), CREDS
    )
    assert isinstance(verdict, c.Authenticated)
    refused = c.admit(verdict, NOW, COMMAND_BODIES, ROOMS)
    assert isinstance(refused, c.Refused)
    assert (refused.code, refused.recorded, refused.by) == ("invalid", True, "sec-02")
    body["by"] = "sec-02"
    verdict = c.authenticate(
        op_signed(envelope(type="unlock", body=body), "sec-02", SEC_KEY), CREDS
    )
    assert isinstance(c.admit(verdict, NOW, COMMAND_BODIES, ROOMS), c.Admitted)  # type: ignore[arg-type]


def test_roles_are_the_operations_table() -> None:
    fd = OPERATORS["fd-03"]
    assert all(fd.may(t) for t in ("checkin", "move_room", "resync"))
    assert not any(fd.may(t) for t in ("unlock", "lockdown", "staff_key"))
    admin = c.Operator("adm", (_public(FD_KEY),), frozenset({"admin"}))
    assert all(admin.may(t) for t in COMMAND_BODIES)


def test_during_a_rotation_either_key_of_an_operator_signs() -> None:
    new_key = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
    rotating = c.Operator("fd-03", (_public(FD_KEY), _public(new_key)), frozenset({"front_desk"}))
    creds = c.Credentials(KEY, {"fd-03": rotating})
    for key in (FD_KEY, new_key):
        assert isinstance(
            c.authenticate(op_signed(envelope(), "fd-03", key), creds), c.Authenticated
        )
    retired = c.Credentials(
        KEY, {"fd-03": c.Operator("fd-03", (_public(new_key),), frozenset({"front_desk"}))}
    )
    verdict = c.authenticate(op_signed(envelope(), "fd-03", FD_KEY), retired)
    assert isinstance(verdict, c.Refused)
    assert verdict.code == "unauthenticated"
