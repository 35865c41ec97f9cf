"""The audit log's hash chain, pure: how a row is hashed and how the chain is checked.

operations.md, "Audit": "Every audit row ... carries ``prev_hash`` and ``hash`` = SHA-256
over ``prev_hash`` and the row's canonical JSON, from a fixed genesis value; rows are never
updated or deleted within their retention. ``floorctl audit verify`` checks the whole chain
and names the first row that does not match by its sequence number."

Here: the row's canonical JSON is mqtt.md's canonical form (sorted keys, ``,``/``:``,
UTF-8 unescaped) of ``{"seq", "ts", "actor", "action", "room", "detail"}``, and
``hash = sha256(prev_hash_hex + canonical_json)`` in lowercase hex; the first row's
``prev_hash`` is ``GENESIS``. The sequence number is in what is hashed, so a deleted or
reordered row breaks the chain at the next one. Rows written before the chain existed
(an older database) have no hashes; the migration that began the chain recorded where it
begins, and the rows before that are counted, not checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["GENESIS", "AuditRecord", "ChainCheck", "chain_hash", "check_chain"]

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row as stored: what is hashed, and its two hashes (None before the chain)."""

    seq: int
    ts: str
    actor: str
    action: str
    room: str | None
    detail: Mapping[str, object]
    prev_hash: str | None
    hash: str | None

    def canonical(self) -> bytes:
        """The row's canonical JSON (without its hashes)."""
        doc = {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "room": self.room,
            "detail": dict(self.detail),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """What a check of the chain found."""

    rows: int  # rows read
    unchained: int  # rows from before the chain existed (not checked)
    first_bad: int | None  # sequence number of the first row that does not match
    problem: str | None  # why it does not match

    @property
    def ok(self) -> bool:
        """The whole chain matches."""
        return self.first_bad is None


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """``hash`` of a row: SHA-256 of the previous row's hash (hex) and its canonical JSON."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def check_chain(records: Iterable[AuditRecord], chain_from: int = 1) -> ChainCheck:
    """Check rows in sequence order: each links to the one before and hashes to its ``hash``.

    ``chain_from``: the first sequence number of the chain; rows before it were written
    before the chain existed and are only counted.
    """
    rows = unchained = 0
    prev: str | None = None  # None: the chain has not started
    last_seq: int | None = None
    for r in records:
        rows += 1
        if last_seq is not None and r.seq != last_seq + 1:
            return ChainCheck(rows, unchained, r.seq, f"rows {last_seq + 1}..{r.seq - 1} missing")
        last_seq = r.seq
        if r.seq < chain_from:
            unchained += 1
            continue
        expected_prev = GENESIS if prev is None else prev
        if r.prev_hash != expected_prev:
            return ChainCheck(rows, unchained, r.seq, "prev_hash is not the previous row's hash")
        if r.hash != chain_hash(expected_prev, r.canonical()):
            return ChainCheck(rows, unchained, r.seq, "hash does not match the row's content")
        prev = r.hash
    return ChainCheck(rows, unchained, None, None)
