"""Service at the room and its housekeeping status, pure (mqtt.md v2: ``service``,
``housekeeping``).

Service is under way while the staff presence key is turned at the room and no call is
open there: a turn that answers a call (the key resolves it) is the call's response, not
service. ``mur_wait_s`` is how long the make-up-room request had waited when service
began. Housekeeping is the PMS's status, ``dirty`` after a checkout or an expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["CALL_ANSWER_WINDOW_S", "HOUSEKEEPING", "Service", "housekeeping_change"]

HOUSEKEEPING = ("dirty", "clean", "inspected", "out_of_order")
# A staff key turned this soon after it answered a call is that call's response.
CALL_ANSWER_WINDOW_S = 10.0


@dataclass(slots=True)
class Service:
    """One room's service: since when it is under way, and the MUR request's wait."""

    since: datetime | None = None
    mur_since: datetime | None = None
    mur_wait_s: int | None = None
    call_answered_at: datetime | None = None

    @property
    def in_progress(self) -> bool:
        """Staff are at work in the room."""
        return self.since is not None

    def mur(self, on: bool, now: datetime) -> None:
        """The make-up-room switch (its request waits from the moment it went on)."""
        self.mur_since = (self.mur_since or now) if on else None

    def call_answered(self, now: datetime) -> None:
        """The staff key just resolved a call at the room."""
        self.call_answered_at = now

    def staff_key(
        self, on: bool, now: datetime, *, call_open: bool
    ) -> tuple[str, dict[str, object]] | None:
        """The staff key turned (``on``) or released: the event it makes, if any."""
        if on:
            answered = self.call_answered_at is not None and (
                (now - self.call_answered_at).total_seconds() < CALL_ANSWER_WINDOW_S
            )
            if self.since is not None or answered or call_open:
                return None
            self.since = now
            mur = self.mur_since
            self.mur_wait_s = None if mur is None else round((now - mur).total_seconds())
            return "service.started", self._with_wait({})
        if self.since is None:
            return None
        done: dict[str, object] = {"duration_s": round((now - self.since).total_seconds())}
        done = self._with_wait(done)
        self.since = self.mur_wait_s = None
        return "service.finished", done

    def _with_wait(self, data: dict[str, object]) -> dict[str, object]:
        if self.mur_wait_s is not None:
            data["mur_wait_s"] = self.mur_wait_s
        return data


def housekeeping_change(previous: str | None, status: str, by: str) -> dict[str, object] | None:
    """The ``housekeeping.changed`` data of a new status (None: no change)."""
    if status == previous:
        return None
    return {"status": status, "previous": previous, "by": by}
