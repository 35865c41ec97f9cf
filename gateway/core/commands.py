"""Signed commands, pure: canonical JSON, HMAC-SHA256 or an operator's Ed25519 signature,
the operator's roles, and the checks of mqtt.md in order.

mqtt.md, "Checks run in this order": size and JSON; envelope (``id``, ``type``,
``issued_at`` present and typed: else ``invalid``); signature (``unauthenticated``); the
operator's roles (``forbidden``, "checked right after the signature"); duplicate;
freshness (``stale``); body (``invalid``, ``unknown_room``; an operator-signed body's own
``by`` must be the operator: ``invalid``); the room's state (``conflict``).
``authenticate`` runs the checks up to the roles, the caller looks up duplicates in its
replay cache, then ``admit`` runs freshness and the body. The room's state is the
handler's business. No clock is read here: ``now`` is an argument.

Operator signatures (mqtt.md v2): ``"alg":"ed25519","operator":ID`` in the envelope and
``sig`` the hex Ed25519 signature over the same canonical JSON; the gateway holds public
keys only. The floor's HMAC key may send every type unless ``allow_hmac`` is off.

A refusal says whether it is ``recorded``: a command that passed the signature and the
freshness checks counts as executed whatever its result, so its reply goes into the replay
cache; one refused before that (``forbidden`` included) may be re-signed and sent again
with the same ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from gateway.model.messages import COMMAND_BODIES, CommandEnvelope, ErrorCode
from gateway.model.time import parse_ts

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "MAX_AGE_S",
    "MAX_AHEAD_S",
    "MAX_PAYLOAD_BYTES",
    "REPLAY_WINDOW",
    "ROLES",
    "Admitted",
    "Authenticated",
    "Credentials",
    "Operator",
    "Refused",
    "Unreadable",
    "admit",
    "authenticate",
    "canonical_json",
    "sign",
    "signature_ok",
]

MAX_PAYLOAD_BYTES = 64 * 1024  # the payload cap: larger ones are not parsed
MAX_AGE_S = 300  # mqtt.md: issued_at more than 300 s old is stale
MAX_AHEAD_S = 30  # mqtt.md: or more than 30 s in the future
REPLAY_WINDOW = timedelta(hours=24)  # an id executed in the last 24 h is not executed again
MAX_ID_CHARS = 128
# Where a payload cannot be parsed, an id is still read from its head if it has one.
_SNIFF_BYTES = 4096
_ID_RE = re.compile(rb'"id"\s*:\s*"([^"\\\x00-\x1f]{1,128})"')
_MAX_ERRORS = 3
_ED25519_SIG = re.compile(r"[0-9a-f]{128}")


_ANYONE = ("resync", "replay")
ROLES: Mapping[str, frozenset[str]] = {
    "front_desk": frozenset(
        {
            "checkin", "checkout", "extend", "add_token", "revoke_token", "move_room",
            "set_climate", "set_lights", "set_energy", *_ANYONE,
        }
    ),
    "housekeeping": frozenset({"set_housekeeping", *_ANYONE}),
    "engineering": frozenset(
        {"set_climate", "set_lights", "set_energy", "ack_alarm", *_ANYONE}
    ),
    "security": frozenset(
        {"unlock", "lockdown", "staff_key", "ack_alarm", "resolve_alarm", *_ANYONE}
    ),
    "nurse": frozenset({"ack_alarm", "resolve_alarm", *_ANYONE}),
    "admin": frozenset({"apply_config", *COMMAND_BODIES}),
}  # fmt: skip
"""operations.md, "Operators": the command types each role may send (admin: every type)."""


@dataclass(frozen=True, slots=True)
class Operator:
    """A person who signs commands: Ed25519 public keys and roles (the floor file's).

    Usually one key; two while the key is being rotated (the new one added, the old one
    not yet removed): a signature by either is good.
    """

    id: str
    public_keys: tuple[bytes, ...]  # 32 bytes each
    roles: frozenset[str]
    _verifiers: tuple[Ed25519PublicKey, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Imported here: cryptography costs ~6 MB of RSS, and a floor without operators
        # (HMAC only) never needs it.
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

        verifiers = tuple(Ed25519PublicKey.from_public_bytes(k) for k in self.public_keys)
        object.__setattr__(self, "_verifiers", verifiers)

    def may(self, command_type: str) -> bool:
        """One of the operator's roles allows this command type."""
        return "admin" in self.roles or any(
            command_type in ROLES.get(role, frozenset()) for role in self.roles
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """The signature is this operator's over ``data`` (by any of its keys)."""
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

        for verifier in self._verifiers:
            try:
                verifier.verify(signature, data)
            except InvalidSignature:
                continue
            return True
        return False


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who may sign commands: the floor's HMAC key (unless refused) and the operators."""

    hmac_key: bytes
    operators: Mapping[str, Operator] = field(default_factory=dict)
    allow_hmac: bool = True


@dataclass(frozen=True, slots=True)
class Unreadable:
    """No id can be read from the payload: nothing is replied."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The command is refused with ``code``; ``recorded``: it counts as executed."""

    id: str
    code: ErrorCode
    message: str
    recorded: bool
    by: str | None = None  # the operator who signed it, once the signature is known good


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The envelope is well typed, its signature is right and its signer may send its type
    (not yet fresh or valid)."""

    id: str
    type: str
    issued_at: datetime
    envelope: Mapping[str, Any]
    operator: str | None = None  # None: signed with the floor's HMAC key


@dataclass(frozen=True, slots=True)
class Admitted:
    """Fresh, and the body is valid for its type: ready for the handler."""

    id: str
    type: str
    issued_at: datetime
    body: BaseModel
    operator: str | None = None


def canonical_json(obj: Mapping[str, object]) -> bytes:
    """mqtt.md's canonical JSON: sorted keys, ``,``/``:`` separators, UTF-8, no escaping."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def sign(envelope: Mapping[str, object], key: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical envelope without ``sig``."""
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def signature_ok(envelope: Mapping[str, object], key: bytes) -> bool:
    """True if ``sig`` is a string equal to the expected signature (constant-time compare)."""
    sig = envelope.get("sig")
    if not isinstance(sig, str):
        return False
    return hmac.compare_digest(sign(envelope, key).encode(), sig.encode())


def authenticate(
    payload: bytes, credentials: Credentials | bytes
) -> Authenticated | Refused | Unreadable:
    """Run the checks up to the roles: size, JSON, envelope fields, signature, roles."""
    creds = credentials if isinstance(credentials, Credentials) else Credentials(credentials)
    if len(payload) > MAX_PAYLOAD_BYTES:
        why = f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        return _unparsed(payload, why)
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return _unparsed(payload, f"not JSON: {_first_line(exc)}")
    if not isinstance(obj, dict):
        return Unreadable("the payload is not a JSON object")
    command_id = obj.get("id")
    if not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_ID_CHARS:
        return Unreadable(f"id is not a string of 1 to {MAX_ID_CHARS} characters")
    problem = _envelope_problem(obj)
    if problem is not None:
        return Refused(command_id, "invalid", problem, recorded=False)
    operator = obj.get("operator")
    try:
        if isinstance(operator, str):
            refused = _operator_signature(obj, command_id, operator, creds)
        else:
            refused = _hmac_signature(obj, command_id, creds)
    except (ValueError, RecursionError):  # numbers or nesting json.dumps refuses
        return Refused(command_id, "invalid", "the envelope cannot be canonicalised", False)
    if refused is not None:
        return refused
    return Authenticated(command_id, obj["type"], parse_ts(obj["issued_at"]), obj, operator)


def _hmac_signature(obj: Mapping[str, Any], command_id: str, creds: Credentials) -> Refused | None:
    if not creds.allow_hmac:
        why = "commands signed with the floor's HMAC key are refused here"
        return Refused(command_id, "unauthenticated", why, recorded=False)
    if signature_ok(obj, creds.hmac_key):
        return None
    why = "sig is missing" if "sig" not in obj else "sig is not a valid signature"
    return Refused(command_id, "unauthenticated", why, recorded=False)


def _operator_signature(
    obj: Mapping[str, Any], command_id: str, operator: str, creds: Credentials
) -> Refused | None:
    who = creds.operators.get(operator)
    sig = obj.get("sig")
    if who is None:
        return Refused(command_id, "unauthenticated", "unknown operator", recorded=False)
    if not isinstance(sig, str) or not _ED25519_SIG.fullmatch(sig):
        why = "sig is missing" if sig is None else "sig is not an Ed25519 signature in hex"
        return Refused(command_id, "unauthenticated", why, recorded=False)
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    if not who.verify(bytes.fromhex(sig), canonical_json(unsigned)):
        return Refused(command_id, "unauthenticated", "sig is not a valid signature", False)
    if not who.may(obj["type"]):
        why = f"operator {operator} may not send {obj['type']}"
        return Refused(command_id, "forbidden", why, recorded=False, by=operator)
    return None


def admit(
    command: Authenticated,
    now: datetime,
    bodies: Mapping[str, type[BaseModel]],
    rooms: Collection[str] | None = None,
) -> Admitted | Refused:
    """Run the checks after the duplicate lookup: freshness, envelope and body schema, room.

    ``rooms``: the floor's room ids; a body whose ``room`` is not among them is
    ``unknown_room`` (None: leave that check to the handler).
    """
    age = (now - command.issued_at).total_seconds()
    if age > MAX_AGE_S:
        why = f"issued_at is {age:.0f} s old"
        return Refused(command.id, "stale", why, recorded=False, by=command.operator)
    if -age > MAX_AHEAD_S:
        why = f"issued_at is {-age:.0f} s in the future"
        return Refused(command.id, "stale", why, recorded=False, by=command.operator)
    try:
        CommandEnvelope.model_validate(command.envelope)
    except ValidationError as exc:
        return Refused(command.id, "invalid", _describe(exc), recorded=True, by=command.operator)
    model = bodies.get(command.type)
    if model is None:
        why = f"unknown command type {command.type!r}"
        return Refused(command.id, "invalid", why, recorded=True, by=command.operator)
    try:
        body = model.model_validate(command.envelope["body"])
    except ValidationError as exc:
        why = _describe(exc, "body")
        return Refused(command.id, "invalid", why, recorded=True, by=command.operator)
    by = getattr(body, "by", None)
    if command.operator is not None and isinstance(by, str) and by != command.operator:
        why = f"body.by {by!r} is not the signing operator {command.operator!r}"
        return Refused(command.id, "invalid", why, recorded=True, by=command.operator)
    room = getattr(body, "room", None)
    if rooms is not None and isinstance(room, str) and room not in rooms:
        why = f"room {room!r} is not on this floor"
        return Refused(command.id, "unknown_room", why, recorded=True, by=command.operator)
    return Admitted(command.id, command.type, command.issued_at, body, command.operator)


def _envelope_problem(obj: Mapping[str, Any]) -> str | None:
    """Why ``type``, ``issued_at`` or the signer is missing or mistyped, or None."""
    if not isinstance(obj.get("type"), str):
        return "type is missing or not a string"
    alg, operator = obj.get("alg"), obj.get("operator")
    if (alg, operator) != (None, None) and (alg != "ed25519" or not isinstance(operator, str)):
        return 'an operator signature is "alg":"ed25519" with "operator" as a string'

    try:
        parse_ts(obj.get("issued_at"))
    except ValueError as exc:
        return f"issued_at {exc}"
    return None


def _unparsed(payload: bytes, why: str) -> Refused | Unreadable:
    """An unparseable payload gets a reply only if an id can be read from its head."""
    match = _ID_RE.search(payload[:_SNIFF_BYTES])
    if match is None:
        return Unreadable(why)
    try:
        command_id = match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return Unreadable(why)
    return Refused(command_id, "invalid", why, recorded=False)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """Located, short problems: ``body.tokens[0]: String should match pattern …``."""
    parts = []
    for err in exc.errors(include_url=False)[:_MAX_ERRORS]:
        where = prefix
        for item in err["loc"]:
            where += f"[{item}]" if isinstance(item, int) else f".{item}"
        where = where.lstrip(".") or "envelope"
        parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    more = exc.error_count() - _MAX_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
