"""Remote configuration around the running floor (gateway.core.remote_config decides).

``ConfigKeeper.start(local, store)`` runs before the floor is built: it reads the record,
lets ``remote_config.boot`` choose the file this start runs (the local floor file, a
confirmed remote one, the one being confirmed, or the last-known-good one after a
rollback), loads it exactly as ``--check`` would, and writes the record back *before*
anything is built — so a file that kills the daemon is never started twice.

While the floor runs, ``propose`` checks an ``apply_config`` body for the command pipeline
(``--check``'s checks on the text, as if it were the local file; what cannot change
remotely), and ``watch`` ends a confirmation window: at its deadline the floor's health
facts either hold (``config.applied``) or not (``config.rolled_back``), decided through
the engine like every other input.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from gateway.adapters import config_store
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.config.load import load_floor_text, with_lines_of
from gateway.core.effects import Effect
from gateway.core.health import HealthFacts
from gateway.core.inputs import ConfigVerdict, Input
from gateway.core.remote_config import (
    Boot,
    ConfigEntry,
    ConfigRecord,
    Proposal,
    boot,
    boot_effects,
    confirm_problems,
    sha256_text,
)
from gateway.model.errors import ConfigError
from gateway.model.messages import ApplyConfigBody

__all__ = ["REMOTE_MQTT_KEYS", "ConfigKeeper", "Running"]

log = structlog.get_logger("gateway.configs")

REMOTE_MQTT_KEYS = frozenset({"max_in_flight", "events_keep_days", "outbox_max_mib"})
"""The [mqtt] keys a remote file may change: the outbox's, not the connection's."""


@dataclass(frozen=True, slots=True)
class Running:
    """The file this start runs: its sha256, and whether it came from the local file."""

    sha256: str
    local: bool
    text: str


class ConfigKeeper:
    """Which floor file runs, the check of apply_config, the confirmation window."""

    def __init__(
        self,
        local: FloorConfig,
        local_sha: str,
        config: FloorConfig,
        running: Running,
        start: Boot,
        *,
        environ: Mapping[str, str] | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Use ``ConfigKeeper.start``; this only holds what it found."""
        self.local = local
        self.local_sha = local_sha
        self.config = config
        self.running = running
        self.boot = start
        self._environ = environ
        self._wall = wall

    @classmethod
    async def start(
        cls, local: FloorConfig, store: Store, *, environ: Mapping[str, str] | None = None
    ) -> ConfigKeeper:
        """Choose, load and record the file this start runs (see the module doc)."""
        local_text = await asyncio.to_thread(local.path.read_text, encoding="utf-8")
        local_sha = sha256_text(local_text)
        record = await store.read(config_store.load_record)
        now = datetime.now(UTC)
        start = boot(record, local_sha, now)
        config, running = local, Running(local_sha, True, local_text)
        if start.run is not None:
            loaded = await _load_stored(store, start.run, local.path, environ)
            if isinstance(loaded, str):
                start = _fall_back(start, loaded)
            else:
                config, running = loaded
        if start.record != record:
            await store.write(lambda conn: config_store.save_record(conn, start.record))
        _log_boot(start, running)
        return cls(local, local_sha, config, running, start, environ=environ)

    @property
    def record(self) -> ConfigRecord:
        """The record as this start wrote it (the floor state's ``config``)."""
        return self.boot.record

    def initial_effects(self) -> list[Effect]:
        """What this start tells once the engine runs (events, audit rows, history)."""
        return boot_effects(self.boot)

    async def prepare(self, body: BaseModel) -> Proposal:
        """The command pipeline's preparer of ``apply_config`` (see ``propose``)."""
        if not isinstance(body, ApplyConfigBody):
            raise TypeError(f"apply_config prepares an ApplyConfigBody, not {type(body)}")
        return await self.propose(body)

    async def propose(self, body: ApplyConfigBody, by: str = "central") -> Proposal:
        """Check an apply_config body as --check would, and against what may not change."""
        text, claimed = body.floor_toml, body.sha256
        sha = sha256_text(text)
        problems: list[str] = []
        if sha != claimed:
            problems.append(f"sha256 {claimed} does not match the file's {sha}")
        minimum = self.config.remote_config.confirm_min_s
        if body.confirm_s < minimum:
            problems.append(
                f"confirm_s {body.confirm_s} is below this floor's minimum {minimum}"
                " ([remote_config] confirm_min_s)"
            )
        conflicts: list[str] = []
        summary = ""
        try:
            new, _ = await asyncio.to_thread(
                load_floor_text, text, self.local.path, environ=self._environ
            )
        except ConfigError as exc:
            problems += with_lines_of(exc.problems, text)
        else:
            conflicts = fixed_changes(self.config, new)
            summary = new.summary()
        if problems or conflicts:
            log.warning("config_refused", sha256=sha, problems=len(problems), conflicts=conflicts)
        return Proposal(
            sha256=sha,
            text=text,
            confirm_s=body.confirm_s,
            problems=tuple(problems),
            conflicts=tuple(conflicts),
            summary=summary,
            by=by,
            local=self.local_sha,
            running=self.running.sha256,
        )

    async def watch(
        self,
        facts: Callable[[], HealthFacts],
        submit: Callable[[Input], Awaitable[Any]],
    ) -> None:
        """End this start's confirmation window at its deadline (nothing to do without one)."""
        pending = self.boot.record.pending
        deadline = self.boot.watch_until
        if pending is None or deadline is None:
            return
        wait = max(0.0, (deadline - self._wall()).total_seconds())
        log.info("config_watching", sha256=pending.sha256, confirm_s=round(wait, 1))
        # The loop's clock is monotonic: a wall-clock step during the window moves nothing.
        await asyncio.sleep(wait)
        problems = confirm_problems(facts(), pending.offline_before)
        if problems:
            log.warning("config_rolled_back", sha256=pending.sha256, reasons=problems)
        else:
            log.info("config_applied", sha256=pending.sha256)
        await submit(ConfigVerdict(pending.sha256, tuple(problems)))

    async def start_failed(self, store: Store, reason: str) -> bool:
        """The file being confirmed could not start: mark it so the next start rolls back.

        True if there was such a file (the caller then restarts); False otherwise.
        """
        pending = self.boot.record.pending
        if pending is None or self.boot.watch_until is None:
            return False
        failed = replace(self.boot.record, pending=replace(pending, failure=reason))
        await store.write(lambda conn: config_store.save_record(conn, failed))
        log.error("config_start_failed", sha256=pending.sha256, error=reason)
        return True


def fixed_changes(running: FloorConfig, new: FloorConfig) -> list[str]:
    """What ``new`` changes of what cannot change remotely: [gateway] id and state_dir,
    the [mqtt] connection (every key but the outbox's)."""
    out = []
    for key in ("id", "state_dir"):
        before, after = getattr(running.gateway, key), getattr(new.gateway, key)
        if before != after:
            out.append(f"gateway.{key} {_show(before)} → {_show(after)}")
    old_mqtt = running.mqtt.model_dump()
    for key, after in new.mqtt.model_dump().items():
        before = old_mqtt.get(key)
        if key not in REMOTE_MQTT_KEYS and before != after:
            out.append(f"mqtt.{key} {_show(before)} → {_show(after)}")
    return out


def _show(value: object) -> str:
    return repr(os.fspath(value)) if isinstance(value, Path) else repr(value)


async def _load_stored(
    store: Store, sha: str, path: Path, environ: Mapping[str, str] | None
) -> tuple[FloorConfig, Running] | str:
    """The stored file ``sha`` loaded as the local one would be, or why it cannot be."""
    text = await store.read(lambda conn: config_store.load_text(conn, sha))
    if text is None:
        return f"the stored floor file {sha[:12]} is missing"
    try:
        config, warnings = await asyncio.to_thread(load_floor_text, text, path, environ=environ)
    except ConfigError as exc:
        return f"the stored floor file {sha[:12]} no longer passes --check: " + "; ".join(
            with_lines_of(exc.problems, text)
        )
    for warning in warnings:
        log.warning("config_warning", detail=warning, sha256=sha)
    return config, Running(sha, False, text)


def _fall_back(start: Boot, reason: str) -> Boot:
    """The stored file cannot run: the local file runs, and the floor is told why."""
    sha = start.run or ""
    entry = ConfigEntry("rolled_back", sha, reason, "gateway")
    return Boot(None, ConfigRecord(), "rolled_back", sha, reason, (*start.entries, entry))


def _log_boot(start: Boot, running: Running) -> None:
    where = "local" if running.local else "remote"
    log.info("config_running", sha256=running.sha256, source=where)
    if start.outcome == "rolled_back":
        log.warning("config_rolled_back", sha256=start.sha256, reason=start.reason)
