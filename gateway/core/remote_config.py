"""Remote configuration (operations.md "Remote configuration"): the record and its decisions.

A floor runs either its local floor file (``--config``) or a file applied remotely with
``apply_config``. ``ConfigRecord`` says which, what the last-known-good file is, and
whether a new file is being confirmed. Its life, every step a pure decision here:

1. ``apply_config`` arrives; the pipeline checks the file exactly as ``--check`` does and
   hands the handler a ``Proposal``. Problems or a change of what cannot change remotely:
   refused (``config.refused``), nothing else changes. Else the file is stored, the record
   gets a ``Pending`` in phase ``switching`` and the daemon restarts onto it.
2. The next start (``boot``) finds ``switching``: it runs the new file and moves the
   pending record to ``watching`` with its deadline (written before anything is built, so
   a file that crashes the daemon is never started twice).
3. At the deadline the engine asks whether the floor holds (``confirm_problems``: the
   broker reachable, every bus turning, no more devices offline than before): yes →
   ``config.applied``, it becomes the last-known-good file; no → ``config.rolled_back``
   with the reasons, the last-known-good file is active again and the daemon restarts.
4. A start that finds ``watching`` means the daemon stopped or died during the window
   (kill -9, a crash, a power cut): ``boot`` rolls back at once.

A local floor file edited after a remote apply wins: ``boot`` sees the local file's
sha256 differ from the one the remote apply was based on and runs the local file.
Pure: no I/O; every time is an argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from gateway.core.effects import Audit, Effect, Emit, Restart, SaveConfig
from gateway.core.health import HealthFacts, Level, assess
from gateway.model.time import format_ts

__all__ = [
    "Boot",
    "ConfigEntry",
    "ConfigRecord",
    "Pending",
    "Proposal",
    "boot",
    "boot_effects",
    "confirm_problems",
    "decide_verdict",
    "refusal_effects",
    "sha256_text",
    "verdict_effects",
]

Phase = Literal["switching", "watching"]
HistoryAction = Literal["applying", "applied", "rolled_back", "refused", "local"]

ROLLED_BACK_RESTARTED = "the daemon restarted during the confirmation window"
ROLLED_BACK_EXPIRED = "the confirmation window ended while the daemon was down"


def sha256_text(text: str) -> str:
    """The sha256 of a floor file's text as UTF-8, lowercase hex (the body's ``sha256``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Proposal:
    """An ``apply_config`` body, checked by the pipeline as ``--check`` would check it."""

    sha256: str
    text: str
    confirm_s: int
    problems: tuple[str, ...] = ()  # --check's problems, each with its line; sha256 mismatch
    conflicts: tuple[str, ...] = ()  # keys that cannot change remotely, each with its change
    summary: str = ""  # --check's one-line summary of a valid file
    by: str = "central"  # who sent it (the operator id, or "central" for the HMAC key)
    local: str = ""  # sha256 of the local floor file (--config)
    running: str = ""  # sha256 of the file the floor runs now


@dataclass(frozen=True, slots=True)
class Pending:
    """A file applied remotely and not yet confirmed."""

    sha256: str
    confirm_s: int
    offline_before: int  # devices offline when it was applied
    phase: Phase = "switching"
    deadline: datetime | None = None  # set when the new file starts (phase watching)
    by: str = "central"
    failure: str | None = None  # why the new file could not even start


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """Which file runs; ``None`` means the local floor file (``--config``)."""

    active: str | None = None  # sha256 of the remote file running
    last_good: str | None = None  # sha256 of the file to come back to
    base: str | None = None  # sha256 of the local file the remote files were applied over
    pending: Pending | None = None


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One line of the history (``floorctl config history``)."""

    action: HistoryAction
    sha256: str
    reason: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Boot:
    """What a start runs (``run``: a stored file's sha256, None for the local file), the
    record to write before building the floor, and what to tell once the engine runs."""

    run: str | None
    record: ConfigRecord
    outcome: Literal["applied", "rolled_back"] | None = None  # an event to emit
    sha256: str | None = None  # the file the outcome is about
    reason: str | None = None
    entries: tuple[ConfigEntry, ...] = field(default=())
    watch_until: datetime | None = None  # confirm at this time (phase watching)


def boot(record: ConfigRecord, local_sha: str, now: datetime) -> Boot:
    """What this start runs, given the record on disk and the local file's sha256."""
    pending = record.pending
    if record.base is not None and record.base != local_sha:
        cleared = ConfigRecord()
        entry = ConfigEntry("local", local_sha, "the local floor file changed", "local")
        if pending is not None:
            reason = "the local floor file changed during the confirmation window"
            return Boot(None, cleared, "rolled_back", pending.sha256, reason, (entry,))
        return Boot(None, cleared, entries=(entry,))
    if pending is None:
        return Boot(record.active, record)
    if pending.phase == "switching" and pending.failure is None:
        deadline = now + timedelta(seconds=pending.confirm_s)
        watching = replace(record, pending=replace(pending, phase="watching", deadline=deadline))
        return Boot(pending.sha256, watching, watch_until=deadline)
    if pending.failure is not None:
        reason = pending.failure
    elif pending.deadline is not None and now >= pending.deadline:
        reason = ROLLED_BACK_EXPIRED
    else:
        reason = ROLLED_BACK_RESTARTED
    back = _rolled_back(record)
    entry = ConfigEntry("rolled_back", pending.sha256, reason, pending.by)
    return Boot(back.active, back, "rolled_back", pending.sha256, reason, (entry,))


def confirm_problems(facts: HealthFacts, offline_before: int) -> list[str]:
    """Why the floor does not hold on a new file (empty: it holds).

    operations.md: the broker reachable, every bus turning, and no more devices offline
    than before.
    """
    problems = []
    if facts.broker_down_s is not None:
        problems.append(f"the broker is unreachable ({facts.broker_down_s:.0f} s)")
    health = assess(facts)
    for reason in health.reasons:
        if reason.code in ("loop_stalled", "bus_down") and reason.level is Level.FAILED:
            problems.append(reason.message)
    offline = sorted(d for bus in facts.buses for d in bus.offline)
    if len(offline) > offline_before:
        names = ", ".join(offline[:5]) + (" …" if len(offline) > 5 else "")
        problems.append(f"{len(offline)} devices offline, {offline_before} before: {names}")
    return problems


def decide_verdict(
    record: ConfigRecord, sha256: str, problems: Sequence[str]
) -> tuple[ConfigRecord, ConfigEntry] | None:
    """The record once the window of ``sha256`` ended; None if that file is not pending."""
    pending = record.pending
    if pending is None or pending.sha256 != sha256 or pending.phase != "watching":
        return None
    if problems:
        reason = "; ".join(problems)
        return _rolled_back(record), ConfigEntry("rolled_back", sha256, reason, pending.by)
    confirmed = replace(record, active=sha256, last_good=sha256, pending=None)
    return confirmed, ConfigEntry("applied", sha256, None, pending.by)


def _rolled_back(record: ConfigRecord) -> ConfigRecord:
    """The last-known-good file active again, nothing pending."""
    back = record.last_good
    return ConfigRecord(active=back, last_good=back, base=record.base if back else None)


def boot_effects(start: Boot) -> list[Effect]:
    """What a start tells once the engine runs: the outcome event, audit rows, history."""
    out: list[Effect] = []
    if start.outcome is not None and start.sha256 is not None:
        out += _told(start.outcome, start.sha256, start.reason, "gateway")
    for entry in start.entries:
        out.append(SaveConfig(start.record, None, entry))
        if entry.action == "local":
            out.append(Audit("local", "config.local", None, {"sha256": entry.sha256}))
    if start.watch_until is not None and start.record.pending is not None:
        pending = start.record.pending
        detail = {
            "sha256": pending.sha256,
            "confirm_s": pending.confirm_s,
            "until": format_ts(start.watch_until),
        }
        out.append(Audit("gateway", "config.watching", None, detail))
    return out


def verdict_effects(
    record: ConfigRecord, sha256: str, problems: Sequence[str]
) -> tuple[ConfigRecord, list[Effect]] | None:
    """The record and effects once the window of ``sha256`` ended (None: not pending)."""
    decided = decide_verdict(record, sha256, problems)
    if decided is None:
        return None
    new, entry = decided
    out: list[Effect] = [SaveConfig(new, None, entry)]
    out += _told(entry.action, sha256, entry.reason, "gateway")
    if entry.action == "rolled_back":
        out.append(Restart(f"configuration {sha256[:12]} rolled back"))
    return new, out


def refusal_effects(proposal: Proposal, record: ConfigRecord, reason: str) -> list[Effect]:
    """``config.refused``, its audit row and history line; the record is unchanged."""
    entry = ConfigEntry("refused", proposal.sha256, reason, proposal.by)
    data: dict[str, object] = {"sha256": proposal.sha256, "reason": reason}
    if proposal.problems:
        data["problems"] = list(proposal.problems)
    if proposal.conflicts:
        data["conflicts"] = list(proposal.conflicts)
    return [
        Emit("config.refused", None, data),
        Audit(proposal.by, "config.refused", None, data),
        SaveConfig(record, None, entry),
    ]


def _told(action: str, sha256: str, reason: str | None, actor: str) -> list[Effect]:
    data = {"sha256": sha256, "reason": reason}
    return [Emit(f"config.{action}", None, data), Audit(actor, f"config.{action}", None, data)]
