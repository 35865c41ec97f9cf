"""Alarms in the pure core: calls and technical alarms, escalation, annunciation decisions.

An ``Alarms`` value holds the floor's open alarms; every operation takes ``now`` (an
aware datetime) and returns the next value and its effects: per transition
``SaveAlarm``, ``Emit`` (mqtt.md ``alarm.*``, data = the snapshot) and ``Retain``
(``alarms/<id>``), then the lamp and sounder writes that changed (``annunciation``).
Every operation first runs ``tick(now)``, so escalation is always current.

Choices where the specs leave room (documented for the engine and the central system):

- Escalation: level 0 goes with ``alarm.raised``, which also carries ``data.notify``
  (level 0's), since it is level 0's notification; each later level at
  ``cycle start + after_s`` emits ``alarm.escalated``; after the last level
  ``alarm.escalated`` is emitted again with the same (last) level every ``repeat_s``.
  Levels that fell due while the daemon was down are all emitted, in order; missed
  repeats are emitted once, and the next repeat keeps the original ``repeat_s`` grid.
- An acknowledged alarm not resolved ``ack_timeout_s`` after its acknowledgement becomes
  active again at level 0 (``alarm.escalated`` with level 0's notify, acknowledged_at/by
  cleared) and climbs the levels anew from that moment.
- Timers come from stored times: the next due time is the previous one plus a configured
  delay, never ``now`` plus a delay, so restore() continues on schedule. Times are kept
  to the millisecond (the store's precision).
- ``ack`` and ``resolve`` of an alarm that is not open (unknown, or already resolved) and
  ``ack`` of an acknowledged alarm are refused with ``conflict`` (mqtt.md has no other
  fitting code: the id is well-formed, the floor's state disagrees). ``resolve`` is
  allowed for technical alarms and bedside calls only; a ``bath`` or ``other`` call must
  be reset at the room (``conflict``).
- Lamps and the floor sounder are for guest calls (and the well-being check, which
  sends staff to the room like a call) only, so a corridor lamp always means a guest
  needs someone. Technical alarms ("troubles") light the floor panel's trouble lamp
  while open and sound its trouble buzzer while any is unacknowledged: acknowledging
  silences the buzzer, a new trouble (or an acknowledgement that timed out) sounds it.
- ``storage`` (``room`` null): raised by the engine when the store cannot write, resolved
  when it writes again. ``lamp_fault`` (one per room, listing its faulty lamps like
  ``call_point_fault`` lists points): a dome or reassure lamp write was not read back;
  resolved when each of those lamps has read back a write since.
- ``wellbeing`` (point ``no_activity``): escalated like a call, resolved by staff
  presence at the room or ``resolve_alarm``.
- The floor sounder sounds for an active call past level 0, and for a call raised (or
  re-activated) while the link is down until it is acknowledged (``Alarm.latched``). A
  link going down does not latch calls already raised.
- A counter that went backwards by more than half its range means the device restarted
  its counter: the call is raised if the new value is not 0 (presses since the restart).
- ``uplink_refused`` (``room`` null): raised once the broker has refused publishes that
  must be delivered for ``UPLINK_REFUSED_AFTER`` without a break (the uplink reports when
  a run of refusals starts and when it ends); resolved by the system when the run ends.
  The run is not kept across a restart: it starts again at the first refusal after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from drivers.ids import DeviceRef
from drivers.panelproto import FaultCode, Point
from gateway.core import annunciation
from gateway.core.alarm import (
    BATH,
    BED,
    CALL_POINT_FAULT,
    CALL_POINT_UNREACHABLE,
    CALLPANEL_OFFLINE,
    LAMP_FAULT,
    LOCK_TAMPER,
    NO_ACTIVITY,
    OTHER,
    STORAGE,
    UPLINK_REFUSED,
    UPLINK_REFUSED_AFTER,
    Alarm,
    AlarmKind,
    AlarmLayout,
    AlarmState,
    Refusal,
)
from gateway.core.annunciation import CallDemand, Outputs
from gateway.core.effects import Audit, Emit, Retain, SaveAlarm, SetPanelLamp, WritePoint
from gateway.model.time import to_ms

__all__ = [
    "BATH", "BED", "CALLPANEL_OFFLINE", "CALL_POINT_FAULT", "CALL_POINT_UNREACHABLE",
    "LAMP_FAULT", "LOCK_TAMPER", "NO_ACTIVITY", "OTHER", "STORAGE", "UPLINK_REFUSED",
    "UPLINK_REFUSED_AFTER", "Alarm", "AlarmKind",
    "AlarmLayout", "AlarmState", "Alarms", "Effect", "Refusal", "SaveAlarm",
]  # fmt: skip

RAISED, ESCALATED = "alarm.raised", "alarm.escalated"
ACKNOWLEDGED, RESOLVED = "alarm.acknowledged", "alarm.resolved"
STAFF_PRESENCE = "staff_presence"  # resolved_by for a call reset at the room
SYSTEM = "system"  # resolved_by for a technical alarm whose cause cleared
COUNTER_MODULO = 65536  # devices.md: counters wrap 65535 -> 0
_CALL_COUNTERS = {"bath_count": BATH, "bed_count": BED}
_STAFF_COUNTER = "staff_count"


Effect = SaveAlarm | Retain | Emit | Audit | WritePoint | SetPanelLamp
Result = tuple["Alarms", list[Effect]]


@dataclass(frozen=True, slots=True)
class Alarms:
    """The floor's open alarms (in raise order), immutable; operations return the next value."""

    layout: AlarmLayout
    alarms: tuple[Alarm, ...] = ()
    link_up: bool = True
    refused_since: datetime | None = None  # the broker has refused publishes since then
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex, compare=False)

    @classmethod
    def restore(
        cls,
        layout: AlarmLayout,
        open_alarms: Iterable[Alarm],
        now: datetime,
        *,
        link_up: bool,
        new_id: Callable[[], str],
    ) -> Result:
        """The alarms after a restart: what fell due while down, in order, then every output."""
        now = to_ms(now)
        alarms = sorted(open_alarms, key=lambda a: (a.raised_at, a.alarm_id))
        if any(not a.is_open for a in alarms):
            raise ValueError("restore() takes open alarms only")
        start = cls(layout, tuple(_scheduled(a, layout) for a in alarms), link_up, new_id=new_id)
        current, effects = start.tick(now)
        kept = [e for e in effects if not isinstance(e, WritePoint | SetPanelLamp)]
        return current, kept + current.outputs()

    # Inputs from devices --------------------------------------------------------------

    def counter(self, room: str, point: str, old: int | None, new: int, now: datetime) -> Result:
        """A room I/O counter read: a call counter advanced raises, staff_count resolves calls."""
        if point != _STAFF_COUNTER and point not in _CALL_COUNTERS:
            raise ValueError(f"not a call or staff counter: {point!r}")
        cur, effects = self.tick(now)
        if old is None or not _advanced(old, new):
            return cur, effects
        if point == _STAFF_COUNTER:
            return _then(effects, cur._resolve_calls(room, None, to_ms(now)))
        return _then(effects, cur._raise(room, AlarmKind.CALL, _CALL_COUNTERS[point], now))

    def panel_call(self, bus: str, room: str, point: Point, now: datetime) -> Result:
        """A call panel ``CALL``: raises a call unless one is open for the room and point."""
        cur, effects = self.tick(now)
        return _then(effects, cur._raise(room, AlarmKind.CALL, _panel_point(point), now, bus))

    def panel_cancel(self, bus: str, room: str, point: Point, now: datetime) -> Result:
        """A call panel ``CANCEL``: resolves the room's call at that point, clears its fault."""
        cur, effects = self.tick(now)
        now, name = to_ms(now), _panel_point(point)
        cur, more = cur._resolve_calls(room, name, now)
        effects += more
        fault = cur._find(room, CALL_POINT_FAULT)
        if fault is None or name not in fault.faults:
            return cur, effects
        remaining = tuple(p for p in fault.faults if p != name)
        if remaining:
            return _then(effects, cur._save(replace(fault, faults=remaining)))
        return _then(effects, cur._resolve(fault, SYSTEM, now))

    def panel_fault(
        self, bus: str, room: str, point: Point, code: FaultCode, now: datetime
    ) -> Result:
        """A call panel ``FAULT``: a call_point_fault alarm for the room (one, listing points).

        ``code`` (CUT, SHORT) is for the engine's ``device.fault``-style logging; the alarm
        keys on the point, which a ``CANCEL`` for that point clears.
        """
        cur, effects = self.tick(now)
        name = _panel_point(point)
        fault = cur._find(room, CALL_POINT_FAULT)
        if fault is None:
            return _then(
                effects,
                cur._raise(room, AlarmKind.TECHNICAL, CALL_POINT_FAULT, now, bus, faults=(name,)),
            )
        if name in fault.faults:
            return cur, effects
        return _then(
            effects, cur._save(replace(fault, faults=tuple(sorted({*fault.faults, name}))))
        )

    def panel_offline(self, bus: str, now: datetime) -> Result:
        """A panel fell silent: one callpanel_offline alarm for it (``room`` null)."""
        cur, effects = self.tick(now)
        return _then(effects, cur._raise(None, AlarmKind.TECHNICAL, CALLPANEL_OFFLINE, now, bus))

    def panel_online(self, bus: str, now: datetime) -> Result:
        """A panel is heard again: its offline alarm resolves; its rooms' lamps are re-sent."""
        cur, effects = self.tick(now)
        alarm = cur._find(None, CALLPANEL_OFFLINE, bus)
        if alarm is not None:
            cur, more = cur._resolve(alarm, SYSTEM, to_ms(now))
            effects += more
        sent = {e for e in effects if isinstance(e, SetPanelLamp)}
        resend = annunciation.outputs_of(cur._desired(), f"panel:{bus}")
        return cur, effects + [e for e in resend if e not in sent]

    def call_point_unreachable(self, room: str, now: datetime) -> Result:
        """A room's call input cannot be read (its room I/O is offline)."""
        return self._cause(room, CALL_POINT_UNREACHABLE, True, now)

    def call_point_reachable(self, room: str, now: datetime) -> Result:
        """A room's call input answers again: its unreachable alarm resolves."""
        return self._cause(room, CALL_POINT_UNREACHABLE, False, now)

    def tamper(self, room: str, on: bool, now: datetime) -> Result:
        """A lock's tamper switch: opened raises lock_tamper, closed resolves it."""
        return self._cause(room, LOCK_TAMPER, on, now)

    def storage(self, failing: bool, now: datetime) -> Result:
        """The store cannot write (raises ``storage``) or writes again (resolves it)."""
        return self._cause(None, STORAGE, failing, now)

    def lamp_checked(self, room: str, point: str, ok: bool, now: datetime) -> Result:
        """A room lamp write did not read back (``lamp_fault`` lists the lamp) or did (the
        lamp leaves the list; the alarm resolves when no lamp of the room is left)."""
        cur, effects = self.tick(now)
        fault = cur._find(room, LAMP_FAULT)
        if not ok:
            if fault is None:
                raised = cur._raise(room, AlarmKind.TECHNICAL, LAMP_FAULT, now, faults=(point,))
                return _then(effects, raised)
            if point in fault.faults:
                return cur, effects
            lamps = tuple(sorted({*fault.faults, point}))
            return _then(effects, cur._save(replace(fault, faults=lamps)))
        if fault is None or point not in fault.faults:
            return cur, effects
        remaining = tuple(p for p in fault.faults if p != point)
        if remaining:
            return _then(effects, cur._save(replace(fault, faults=remaining)))
        return _then(effects, cur._resolve(fault, SYSTEM, to_ms(now)))

    def wellbeing(self, room: str, now: datetime) -> Result:
        """No activity in a present, opted-in room for its period: a ``wellbeing`` alarm."""
        cur, effects = self.tick(now)
        return _then(effects, cur._raise(room, AlarmKind.WELLBEING, NO_ACTIVITY, now))

    def link_changed(self, up: bool, now: datetime) -> Result:
        """The broker link went up or down (calls raised while it is down latch the sounder)."""
        cur, effects = self.tick(now)
        return replace(cur, link_up=up), effects

    def uplink_refusing(self, refusing: bool, now: datetime) -> Result:
        """A run of broker refusals began (``uplink_refused`` falls due later) or ended."""
        cur, effects = self.tick(now)
        now = to_ms(now)
        if refusing:
            if cur.refused_since is None:
                cur = replace(cur, refused_since=now)
            return cur, effects
        cur = replace(cur, refused_since=None)
        alarm = cur._find(None, UPLINK_REFUSED)
        if alarm is None:
            return cur, effects
        return _then(effects, cur._resolve(alarm, SYSTEM, now))

    # Commands -------------------------------------------------------------------------

    def ack(self, alarm_id: str, by: str, now: datetime) -> Result | Refusal:
        """Acknowledge: escalation stops, panel lamps flash; the ack timeout starts."""
        cur, effects = self.tick(now)
        now = to_ms(now)
        alarm = cur._by_id(alarm_id)
        if alarm is None:
            return Refusal("conflict", f"alarm {alarm_id} is not open")
        if alarm.state is AlarmState.ACKNOWLEDGED:
            return Refusal(
                "conflict", f"alarm {alarm_id} is already acknowledged by {alarm.acknowledged_by}"
            )
        acked = replace(
            alarm,
            state=AlarmState.ACKNOWLEDGED,
            acknowledged_at=now,
            acknowledged_by=by,
            latched=False,
            next_due_at=now + timedelta(seconds=cur.layout.ack_timeout_s),
        )
        audit = Audit(by, "alarm.acknowledge", alarm.room, {"alarm_id": alarm_id})
        return _then(
            effects,
            cur._commit(_swap(cur.alarms, acked), [*_transition(acked, ACKNOWLEDGED), audit]),
        )

    def resolve(self, alarm_id: str, by: str, now: datetime) -> Result | Refusal:
        """Resolve a technical alarm or a bedside call; any other call is reset at the room."""
        cur, effects = self.tick(now)
        alarm = cur._by_id(alarm_id)
        if alarm is None:
            return Refusal("conflict", f"alarm {alarm_id} is not open")
        if alarm.kind is AlarmKind.CALL and alarm.point != BED:
            return Refusal(
                "conflict", f"a {alarm.point} call must be reset at the room by staff presence"
            )
        audit = Audit(by, "alarm.resolve", alarm.room, {"alarm_id": alarm_id})
        return _then(effects, cur._resolve(alarm, by, to_ms(now), audit))

    # Time -----------------------------------------------------------------------------

    def tick(self, now: datetime) -> Result:
        """Every escalation level, repeat and acknowledgement timeout due by ``now``, in
        order; then ``uplink_refused`` if a run of refusals has lasted long enough."""
        now = to_ms(now)
        alarms = list(self.alarms)
        effects: list[Effect] = []
        while due := [a for a in alarms if a.next_due_at is not None and a.next_due_at <= now]:
            alarm = min(due, key=lambda a: (a.next_due_at, a.raised_at, a.alarm_id))
            stepped, notify = self._step(alarm, now)
            alarms[alarms.index(alarm)] = stepped
            effects += _transition(stepped, ESCALATED, notify)
        cur: Alarms = self
        if effects:
            cur, effects = self._commit(tuple(alarms), effects)
        refused_due = cur._refused_due()
        if refused_due is not None and refused_due <= now:
            return _then(effects, cur._raise(None, AlarmKind.TECHNICAL, UPLINK_REFUSED, now))
        return cur, effects

    def next_deadline(self) -> datetime | None:
        """When tick() has something to do next (None: nothing scheduled)."""
        dues = [a.next_due_at for a in self.alarms if a.next_due_at is not None]
        refused_due = self._refused_due()
        if refused_due is not None:
            dues.append(refused_due)
        return min(dues, default=None)

    # Queries --------------------------------------------------------------------------

    def call_state(self, room: str) -> str:
        """The room state's ``call``: ``idle``, ``active`` or ``acknowledged``."""
        states = {a.state for a in self.alarms if a.room == room and a.kind is AlarmKind.CALL}
        if AlarmState.ACTIVE in states:
            return "active"
        return "acknowledged" if states else "idle"

    def has_open(self, room: str, point: str) -> bool:
        """Whether the room has an open alarm of this point."""
        return self._find(room, point) is not None

    def open_alarms(self) -> list[Alarm]:
        """The open alarms, oldest first."""
        return list(self.alarms)

    def outputs(self) -> list[Effect]:
        """Every lamp and sounder as it should be now (to re-assert at start)."""
        return list(self._desired().values())

    def outputs_for(self, device: DeviceRef | str) -> list[Effect]:
        """The lamps of one device (or ``panel:<bus>``) as they should be now."""
        return list(annunciation.outputs_of(self._desired(), device))

    # Helpers --------------------------------------------------------------------------

    def _cause(self, room: str | None, point: str, present: bool, now: datetime) -> Result:
        """A technical alarm that follows its cause: raised while present, resolved after."""
        cur, effects = self.tick(now)
        if present:
            return _then(effects, cur._raise(room, AlarmKind.TECHNICAL, point, now))
        alarm = cur._find(room, point)
        if alarm is None:
            return cur, effects
        return _then(effects, cur._resolve(alarm, SYSTEM, to_ms(now)))

    def _refused_due(self) -> datetime | None:
        """When ``uplink_refused`` is to be raised (None: no run, or it is open already)."""
        if self.refused_since is None or self._find(None, UPLINK_REFUSED) is not None:
            return None
        return self.refused_since + UPLINK_REFUSED_AFTER

    def _by_id(self, alarm_id: str) -> Alarm | None:
        return next((a for a in self.alarms if a.alarm_id == alarm_id), None)

    def _find(self, room: str | None, point: str, source: str | None = None) -> Alarm | None:
        """The open alarm of this room and point (of this panel, for a room-less alarm)."""
        for a in self.alarms:
            if a.room == room and a.point == point and (room is not None or a.source == source):
                return a
        return None

    def _raise(
        self,
        room: str | None,
        kind: AlarmKind,
        point: str,
        now: datetime,
        source: str | None = None,
        *,
        faults: tuple[str, ...] = (),
    ) -> Result:
        if self._find(room, point, source) is not None:
            return self, []  # a repeat press, a panel repeat, a cause still present
        now = to_ms(now)
        alarm = Alarm(
            alarm_id=self.new_id(),
            room=room,
            kind=kind,
            point=point,
            state=AlarmState.ACTIVE,
            level=0,
            raised_at=now,
            next_due_at=_after_level(self.layout, now, 0),
            source=source,
            latched=kind is not AlarmKind.TECHNICAL and not self.link_up,
            faults=faults,
        )
        notify = self.layout.escalation[0][1]
        return self._commit((*self.alarms, alarm), _transition(alarm, RAISED, notify))

    def _resolve(self, alarm: Alarm, by: str, now: datetime, *audit: Audit) -> Result:
        done = replace(
            alarm, state=AlarmState.RESOLVED, resolved_at=now, resolved_by=by, next_due_at=None
        )
        rest = tuple(a for a in self.alarms if a.alarm_id != alarm.alarm_id)
        return self._commit(rest, [*_transition(done, RESOLVED), *audit])

    def _resolve_calls(self, room: str, point: str | None, now: datetime) -> Result:
        """Staff presence: resolve the room's open calls (of ``point`` only, if given) and,
        on presence, its well-being alarm."""
        cur, effects = self, []
        for a in self.alarms:
            if a.room != room:
                continue
            if (a.kind is AlarmKind.CALL and point in (None, a.point)) or (
                a.kind is AlarmKind.WELLBEING and point is None
            ):
                cur, more = cur._resolve(a, STAFF_PRESENCE, now)
                effects += more
        return cur, effects

    def _save(self, alarm: Alarm) -> Result:
        """A stored detail changed, not the lifecycle: no event."""
        return replace(self, alarms=_swap(self.alarms, alarm)), [SaveAlarm(alarm)]

    def _step(self, alarm: Alarm, now: datetime) -> tuple[Alarm, str]:
        """The escalation step due at ``alarm.next_due_at``, and whom it notifies."""
        layout, due = self.layout, alarm.next_due_at
        assert due is not None
        last = len(layout.escalation) - 1
        if alarm.state is AlarmState.ACKNOWLEDGED:  # the ack timed out: a fresh cycle
            stepped = replace(
                alarm,
                state=AlarmState.ACTIVE,
                level=0,
                acknowledged_at=None,
                acknowledged_by=None,
                latched=alarm.kind is AlarmKind.CALL and not self.link_up,
                next_due_at=_after_level(layout, due, 0),
            )
        elif alarm.level < last:
            level = alarm.level + 1
            stepped = replace(alarm, level=level, next_due_at=_after_level(layout, due, level))
        else:  # a repeat; missed repeats collapse into this one, on the same grid
            period = timedelta(seconds=layout.repeat_s)
            missed = (now - due) // period
            stepped = replace(alarm, level=last, next_due_at=due + (missed + 1) * period)
        return stepped, layout.escalation[stepped.level][1]

    def _commit(self, alarms: tuple[Alarm, ...], effects: list[Effect]) -> Result:
        """The next value, with ``effects`` followed by the outputs that changed."""
        nxt = replace(self, alarms=alarms)
        return nxt, [*effects, *annunciation.changes(self._desired(), nxt._desired())]

    def _desired(self) -> Outputs:
        calls = [
            CallDemand(
                room=a.room,
                bus=a.source,
                acknowledged=a.state is AlarmState.ACKNOWLEDGED,
                sounding=a.state is AlarmState.ACTIVE and (a.level > 0 or a.latched),
            )
            for a in self.alarms
            if a.kind is not AlarmKind.TECHNICAL and a.room is not None
        ]
        technical = [a for a in self.alarms if a.kind is AlarmKind.TECHNICAL]
        troubles = annunciation.Troubles(
            open=bool(technical),
            unacknowledged=any(a.state is AlarmState.ACTIVE for a in technical),
        )
        return annunciation.desired(self.layout, calls, troubles)


def _after_level(layout: AlarmLayout, at: datetime, level: int) -> datetime:
    """When the step after ``level`` (reached at ``at``) falls due: next level, or a repeat."""
    levels = layout.escalation
    if level + 1 < len(levels):
        return at + timedelta(seconds=levels[level + 1][0] - levels[level][0])
    return at + timedelta(seconds=layout.repeat_s)


def _scheduled(alarm: Alarm, layout: AlarmLayout) -> Alarm:
    """``alarm`` as restored, its times in UTC ms, a next due time if the row lacked one."""
    alarm = replace(alarm, raised_at=to_ms(alarm.raised_at))
    if alarm.next_due_at is not None:
        return replace(alarm, next_due_at=to_ms(alarm.next_due_at))
    if alarm.state is AlarmState.ACKNOWLEDGED and alarm.acknowledged_at is not None:
        due = to_ms(alarm.acknowledged_at) + timedelta(seconds=layout.ack_timeout_s)
    else:
        level = min(alarm.level, len(layout.escalation) - 1)
        due = alarm.raised_at + timedelta(seconds=layout.escalation[level][0])
        due = _after_level(layout, due, level)
    return replace(alarm, next_due_at=due)


def _advanced(old: int, new: int) -> bool:
    """Whether a counter counted at least one press from ``old`` to ``new`` (wrapping)."""
    delta = (new - old) % COUNTER_MODULO
    if delta > COUNTER_MODULO // 2:  # backwards: the device restarted its counter
        return new % COUNTER_MODULO != 0
    return delta != 0


def _panel_point(point: Point) -> str:
    return {Point.BATH: BATH, Point.BED: BED, Point.OTHER: OTHER}[Point(point)]


def _transition(alarm: Alarm, event: str, notify: str | None = None) -> list[Effect]:
    """Save, announce and publish one lifecycle transition."""
    data = alarm.snapshot()
    if notify is not None:
        data["notify"] = notify
    retained = None if alarm.state is AlarmState.RESOLVED else alarm.snapshot()
    return [
        SaveAlarm(alarm),
        Emit(event, alarm.room, data),
        Retain(f"alarms/{alarm.alarm_id}", retained),
    ]


def _swap(alarms: tuple[Alarm, ...], alarm: Alarm) -> tuple[Alarm, ...]:
    return tuple(alarm if a.alarm_id == alarm.alarm_id else a for a in alarms)


def _then(effects: list[Effect], result: Result) -> Result:
    """Prefix ``effects`` (from the tick that ran first) to an operation's result."""
    cur, more = result
    return cur, [*effects, *more]
