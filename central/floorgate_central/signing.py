"""Signed commands (mqtt-api.md "Signing"): canonical JSON, HMAC-SHA256, the envelope.

Written from the contract alone, not from the gateway's code: a test checks that both
sign the same envelope alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "Operator",
    "canonical_json",
    "envelope",
    "format_ts",
    "load_key",
    "parse_ts",
    "sign",
    "token_hash",
]

SCHEMA = 1
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_TOKEN_RE = re.compile(r"[0-9a-fA-F]{16}")
_MIN_KEY_HEX = 32


def canonical_json(obj: Mapping[str, object]) -> bytes:
    """Sorted keys at every depth, ``,``/``:`` separators, UTF-8 without ``\\u`` escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(envelope: Mapping[str, object], key: bytes) -> str:
    """Lowercase hex HMAC-SHA256 under ``key`` of the canonical envelope without ``sig``."""
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


class Operator:
    """An operator's Ed25519 signing key (mqtt-api.md "Operator signatures").

    ``private_key``: the 32 raw bytes (or 64 hex digits) of the key, or a ``cryptography``
    ``Ed25519PrivateKey``; signing needs the ``cryptography`` package
    (``pip install floorgate-central[ed25519]``). The gateway holds only the public key.
    """

    def __init__(self, operator_id: str, private_key: bytes | str | Any) -> None:
        """The operator ``operator_id`` as the floor file's ``[[operator]] id`` names it."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PrivateKey,
        )

        if isinstance(private_key, str):
            private_key = bytes.fromhex(private_key)
        if isinstance(private_key, bytes):
            private_key = Ed25519PrivateKey.from_private_bytes(private_key)
        self.id = operator_id
        self._key = private_key

    def sign(self, unsigned: Mapping[str, object]) -> str:
        """The hex Ed25519 signature of the canonical envelope without ``sig``."""
        body = {k: v for k, v in unsigned.items() if k != "sig"}
        return str(self._key.sign(canonical_json(body)).hex())


def envelope(
    type_: str,
    body: Mapping[str, Any],
    key: bytes | Operator,
    *,
    command_id: str | None = None,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """A signed command envelope: with the floor's HMAC ``key``, or by an ``Operator``; a
    new UUID ``id`` unless given, ``issued_at`` now unless given."""
    env: dict[str, Any] = {
        "schema": SCHEMA,
        "id": command_id or uuid.uuid4().hex,
        "type": type_,
        "issued_at": format_ts(issued_at or datetime.now(UTC)),
        "body": dict(body),
    }
    if isinstance(key, Operator):
        env["alg"] = "ed25519"
        env["operator"] = key.id
        env["sig"] = key.sign(env)
    else:
        env["sig"] = sign(env, key)
    return env


def format_ts(dt: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``; a naive datetime is refused."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: give it a timezone")
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def parse_ts(text: object) -> datetime:
    """An aware UTC datetime from the contract's RFC 3339 text (0 to 9 fraction digits)."""
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    head, _, frac = text[:-1].partition(".")
    parsed = datetime.fromisoformat(head).replace(tzinfo=UTC)
    return parsed.replace(microsecond=int((frac + "000000")[:6])) if frac else parsed


def load_key(path: str | Path) -> bytes:
    """A floor's command key from its file: hex text (at least 32 digits), whitespace ignored."""
    text = "".join(Path(path).read_text().split())
    if len(text) < _MIN_KEY_HEX:
        raise ValueError(f"{path}: a command key has at least {_MIN_KEY_HEX} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: a command key is hex text") from None


def token_hash(token: str) -> str:
    """An event's ``token_hash``: the first 8 hex digits of SHA-256 of the lowercase token."""
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError(f"a token is 16 hex digits, not {token!r}")
    return hashlib.sha256(token.lower().encode()).hexdigest()[:8]
