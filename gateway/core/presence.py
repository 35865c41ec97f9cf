"""Is anyone in the room? The presence machine of one room, pure (operations.md, Presence).

- A key card in the holder, or a detection of the motion sensor, makes the room present.
- A door opening makes it present (someone is at the door, coming in or going out), and
  its closing starts a re-check: a new detection within ``presence_check_s`` after the
  close, or a key card in the holder, keeps the room present, and it then stays present
  until the door opens again (a sleeping guest does not move); otherwise the room becomes
  absent when ``presence_check_s`` has passed.
- A new detection is ``motion_count`` advancing, or the motion bit seen rising; a motion
  bit still held from before the close does not count, but one seen set ``MOTION_HOLD_S``
  or more after the close was set again since (the sensor holds it 30 s).
- Unknown (``None``) at start until an input tells, while a needed device is offline, and
  for a room with neither a motion sensor nor a key-card holder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["MOTION_HOLD_S", "Cause", "Presence", "PresenceChange"]

MOTION_HOLD_S = 30.0  # devices.md v1.1: the sensor holds motion 30 s after movement


class Cause(enum.StrEnum):
    """What told the presence (``room.presence`` data.cause)."""

    MOTION = "motion"
    KEYCARD = "keycard"
    DOOR = "door"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """The room became present or absent, and why."""

    present: bool
    cause: Cause


@dataclass(slots=True)
class Presence:
    """One room's presence: ``state`` True present, False absent, None unknown."""

    state: bool | None = None
    closed_at: datetime | None = None  # the door's last close while a re-check runs
    check_until: datetime | None = None  # the re-check's end (None: no re-check running)

    def door(
        self, opened: bool, now: datetime, check_s: float, keycard: bool
    ) -> PresenceChange | None:
        """The door opened or closed (``keycard``: a card is in the holder now)."""
        if opened:
            self.closed_at = self.check_until = None
            return self._become(True, Cause.DOOR)
        if keycard:
            self.closed_at = self.check_until = None
            return self._become(True, Cause.KEYCARD)
        self.closed_at = now
        self.check_until = now + timedelta(seconds=check_s)
        return self._become(True, Cause.DOOR)

    def detection(self, cause: Cause) -> PresenceChange | None:
        """A new detection, or a key card put in the holder: present, re-check settled."""
        self.closed_at = self.check_until = None
        return self._become(True, cause)

    def motion_held(self, now: datetime) -> PresenceChange | None:
        """The motion bit is seen set: a detection only if set again since the close."""
        if self.closed_at is None:
            return None if self.state is not None else self.detection(Cause.MOTION)
        if now - self.closed_at >= timedelta(seconds=MOTION_HOLD_S):
            return self.detection(Cause.MOTION)
        return None

    def unknown(self) -> None:
        """A needed device is offline: nothing can be told until an input tells again."""
        self.state = None
        self.closed_at = self.check_until = None

    def reset(self) -> None:
        """A new rental begins: who is in the room is not known until an input tells."""
        self.unknown()

    def tick(self, now: datetime) -> PresenceChange | None:
        """The re-check ended without a detection: absent."""
        if self.check_until is None or now < self.check_until:
            return None
        self.closed_at = self.check_until = None
        return self._become(False, Cause.TIMEOUT)

    def _become(self, present: bool, cause: Cause) -> PresenceChange | None:
        if self.state is present:
            return None
        self.state = present
        return PresenceChange(present, cause)
