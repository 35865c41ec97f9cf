"""floorctl's one renderer: rich tables and the floor map for people, ``--json`` for scripts.

``show(output, ...)`` prints whatever a subcommand returned. Everything is readable
without colour (NO_COLOR, a pipe, a monochrome terminal): states are words or letters,
colour only repeats them. The floor map fits the console width (80 columns included).
Text from the daemon is never parsed as rich markup.

Both renderings show the same numbers: measurements are rounded here, once, by the unit
their key ends with (``_ms`` to 0.1 ms, ``_s`` to 0.1 s, ``_c`` to 0.1 °C, ``_rate`` to
0.1 %), except inside an event's ``data``, which is printed as the event was recorded.
An event of the floor (no room) has no ``room`` key in JSON, as on MQTT; an alarm of
the floor has ``"room": null``, as its MQTT snapshot has. Alarm ids in tables are short
(gateway.cli.alarm_ids); JSON keeps them whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, Self, TypeVar

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from gateway.cli import render_fleet
from gateway.cli.alarm_ids import short_ids
from gateway.cli.energybars import energy_table
from gateway.cli.floormap import LEGEND, FloorMapRenderable, floor_map, room_flags
from gateway.cli.render_access import audit_check, audit_log, lock_table
from gateway.cli.results import EventStream, Notice, Output, Script
from gateway.cli.tables import grid as _grid
from gateway.cli.tables import table as _table
from gateway.cli.tables import ts as _ts
from gateway.model.views import (
    AlarmRow,
    AlarmTable,
    AlarmUpdate,
    AuditCheck,
    AuditLog,
    ConfigHistory,
    ConfigView,
    DeviceRow,
    DeviceTable,
    EnergyLedger,
    EventLog,
    EventRow,
    FloorMap,
    HealthView,
    LampTest,
    LockTable,
    OutboxInfo,
    Result,
    RoomDetail,
    RoomRow,
    RoomTable,
    ScanProgress,
    ScanResult,
    Status,
)

__all__ = [
    "LEGEND",
    "ROUNDING",
    "event_line",
    "floor_map",
    "json_document",
    "json_value",
    "render",
    "room_flags",
    "scan_bar",
    "show",
]

# Decimal places by the unit a key ends with (the first suffix that fits).
ROUNDING: tuple[tuple[str, int], ...] = (("_ms", 1), ("_s", 1), ("_c", 1), ("_rate", 3))

_STATE_STYLES = {"active": "bold red", "acknowledged": "yellow", "resolved": "green"}


def show(output: Output, *, as_json: bool, out: Console, err: Console) -> None:
    """Print what a subcommand returned: on ``out``, notices of a stream on ``err``."""
    match output:
        case Script():
            out.file.write(output.text)
            out.file.flush()
        case EventStream():
            _stream(output, as_json=as_json, out=out, err=err)
        case _ if as_json:
            print(json_document(output), file=out.file, flush=True)
        case _:
            render(output, out)


def render(result: Result, console: Console) -> None:
    """Print a subcommand's result for people."""
    console.print(_renderable(_rounded_result(result)))


def json_document(result: Result) -> str:
    """The ``--json`` document: stable keys, sorted, indented."""
    return json.dumps(json_value(result), indent=2, sort_keys=True, ensure_ascii=False)


def json_value(value: Result | EventRow) -> dict[str, Any]:
    """What ``--json`` prints for a result or a followed event (see the module's rules)."""
    key = "events" if isinstance(value, EventRow) else ""
    doc: dict[str, Any] = _floor_events_roomless(_rounded(value.to_json(), key), key)
    return doc


def event_line(event: EventRow, *, header: bool = False) -> RenderableType:
    """One event: seq, time, type, room, then the data that matters (wrapped in its column).

    With ``header``, the column names first (the lines that follow line up under them).
    """
    return _event_table([event], header=header)


@contextmanager
def scan_bar(console: Console, bus: str) -> Iterator[Callable[[ScanProgress], None]]:
    """A progress bar for ``scan``; yields ``update(ScanProgress)``. Shown on terminals only."""
    progress = Progress(
        TextColumn(f"scanning {bus}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[found]} answered"),
        console=console,
        transient=True,
        auto_refresh=False,
        disable=not console.is_terminal,
    )
    task = progress.add_task("scan", total=None, found=0)

    def update(p: ScanProgress) -> None:
        progress.update(task, completed=p.done, total=p.total, found=p.found)
        progress.refresh()

    with progress:
        yield update


# -- per result ---------------------------------------------------------------------------


def _renderable(result: Result) -> RenderableType:
    match result:
        case Status():
            return _status(result)
        case FloorMap():
            return FloorMapRenderable(result.rooms)
        case RoomTable():
            return _rooms(result.rooms)
        case RoomDetail():
            return _room(result)
        case DeviceTable():
            return _devices(result.devices, title="Devices")
        case AlarmTable():
            if not result.alarms:
                return Text("No open alarms.", style="green")
            return _alarms(result.alarms, _short(result.alarms, ()))
        case AlarmUpdate():
            return _alarm_update(result)
        case EventLog():
            if not result.events:
                return Text("No events.")
            return _event_table(result.events)
        case OutboxInfo():
            return _outbox(result)
        case ScanResult():
            return _scan(result)
        case HealthView():
            return render_fleet.health_view(result)
        case ConfigView():
            return render_fleet.config_view(result)
        case ConfigHistory():
            return render_fleet.config_history(result)
        case EnergyLedger():
            return energy_table(result)
        case LockTable():
            return lock_table(result)
        case AuditLog():
            return audit_log(result)
        case AuditCheck():
            return audit_check(result)
        case LampTest():
            return _lamp_test(result)


def _lamp_test(t: LampTest) -> RenderableType:
    table = Table(title=f"Lamp test, room {t.room} (lit {t.held_s:g} s)", title_justify="left")
    for column in ("Lamp", "Lit", "Back as the calls want"):
        table.add_column(column)
    for lamp in t.lamps:
        table.add_row(lamp.point, _check(lamp.lit), _check(lamp.restored))
    return table


def _check(ok: bool) -> Text:
    return Text("read back", style="green") if ok else Text("NOT READ BACK", style="bold red")


def _status(s: Status) -> RenderableType:
    grid = _grid()
    grid.add_row("Gateway", Text(f"{s.gateway} · floorgate {s.version}"))
    grid.add_row("Up", Text(f"{_duration(s.uptime_s)} (since {_ts(s.started_at)})"))
    m = s.mqtt
    link = Text("connected", style="green") if m.connected else Text("DOWN", style="bold red")
    if m.since:
        link.append(f" since {_ts(m.since)}")
    link.append(f" · {m.reconnects} reconnects · {m.in_flight} in flight")
    grid.add_row("MQTT", link)
    outbox = Text(f"{m.outbox_depth} waiting")
    if m.oldest_undelivered_ts:
        outbox.append(f", oldest {_ts(m.oldest_undelivered_ts)}", style="yellow")
    outbox.append(f" · {m.shed} shed", style="red" if m.shed else "")
    grid.add_row("Outbox", outbox)
    alarms = Text(f"{s.open_alarms} open", style="bold red" if s.open_alarms else "green")
    grid.add_row("Alarms", alarms)
    buses = _table("Buses", "Bus", "Kind", "tx/s", "Errors", "Offline")
    buses.columns[2].justify = buses.columns[3].justify = "right"
    for b in s.buses:
        rate = Text(f"{b.error_rate:.1%}", style=_rate_style(b.error_rate))
        offline = Text(", ".join(b.offline) or "-", style="red" if b.offline else "")
        buses.add_row(b.name, b.kind, f"{b.tx_per_s:.1f}", rate, offline)
    return Group(grid, Text(), buses)


def _rooms(rows: Sequence[RoomRow]) -> RenderableType:
    columns = ("Room", "Occupancy", "Stay", "Door", "Service", "Call", "°C/set", "Offline")
    table = _table(None, *columns, key_width=max((len(r.room) for r in rows), default=0))
    for r in rows:
        service = " ".join(n for n, on in (("DND", r.dnd), ("MUR", r.mur)) if on) or "-"
        table.add_row(
            Text(r.room, style="bold"),
            _maybe(r.occupancy),
            _maybe(r.stay_id),
            Text(r.door or "?", style="bold cyan" if r.door == "open" else ""),
            service,
            Text(r.call, style=_STATE_STYLES.get(r.call, "")),
            f"{_num(r.temp_c)}/{_num(r.setpoint_c)}",
            Text(", ".join(r.offline) or "-", style="magenta" if r.offline else ""),
        )
    return table


def _room(d: RoomDetail) -> RenderableType:
    s = d.snapshot
    grid = _grid()
    occupancy = Text(str(s.get("occupancy") or "?"))
    if s.get("stay_id"):
        occupancy.append(f" (stay {s['stay_id']})")
    fresh = _Freshness(s)
    grid.add_row("Room", Text(d.room, style="bold"))
    grid.add_row("Occupancy", occupancy)
    call = str(s.get("call") or "?")
    grid.add_row("Call", fresh.of(Text(call, style=_STATE_STYLES.get(call, "")), "rio", "call"))
    door = Text(f"{_maybe_str(s.get('door'))} · deadbolt {_yes(s.get('deadbolt'))}")
    grid.add_row("Door", fresh.of(door, "lock", "door", "deadbolt"))
    battery = Text(_maybe_str(s.get("lock_battery"), "%"))
    grid.add_row("Lock battery", fresh.of(battery, "lock", "lock_battery"))
    climate = _sub(s, "climate")
    climate_text = Text(
        f"{_num(climate.get('temp_c'))} °C, set {_num(climate.get('setpoint_c'))} °C, "
        f"{_maybe_str(climate.get('mode'))}, fan {_maybe_str(climate.get('fan'))}, "
        f"power {_yes(climate.get('power'))}"
    )
    grid.add_row("Climate", fresh.of(climate_text, "tstat", "climate."))
    on = [name for name, value in _sub(s, "lights").items() if value]
    grid.add_row("Lights on", fresh.of(Text(", ".join(on) or "none"), "rio", "lights."))
    flags = ", ".join(
        f"{label} {_yes(s.get(key))}"
        for key, label in (("keycard", "keycard"), ("dnd", "DND"), ("mur", "MUR"))
    )
    service = Text(f"{flags}, window {_yes(s.get('window_open'))}")
    grid.add_row("Service", fresh.of(service, "rio", "keycard", "dnd", "mur", "window_open"))
    if fresh.stale:
        grid.add_row("Stale", Text(", ".join(fresh.stale) + " (not current)", style="bold red"))
    parts: list[RenderableType] = [grid, Text(), _devices(d.devices, title="Devices"), Text()]
    short = _short(d.alarms, d.events)
    if d.alarms:
        parts += [_alarms(d.alarms, short), Text()]
    parts.append(Text("Recent events", style="bold"))
    parts.append(_event_table(d.events, short=short) if d.events else Text("none"))
    return Group(*parts)


class _Freshness:
    """The age of a room snapshot's values (``observed``) and its ``stale`` fields."""

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        observed = snapshot.get("observed")
        self.observed: Mapping[str, Any] = observed if isinstance(observed, Mapping) else {}
        stale = snapshot.get("stale")
        self.stale = [str(f) for f in stale] if isinstance(stale, list) else []
        ts = snapshot.get("ts")
        try:
            self.now = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        except ValueError:
            self.now = datetime.now(UTC)

    def of(self, text: Text, role: str, *fields: str) -> Text:
        """``text`` with the age of the role's last answer, and STALE if a field is."""
        seen = self.observed.get(role)
        if isinstance(seen, str):
            text.append(f"  ({_since(seen, self.now)} ago)", style="dim")
        if any(f == p or (p.endswith(".") and f.startswith(p)) for f in self.stale for p in fields):
            text.append("  STALE", style="bold red")
        return text


def _devices(rows: Sequence[DeviceRow], *, title: str) -> RenderableType:
    width = max((len(r.name) for r in rows), default=0)
    columns = ("Device", "Bus:unit", "Profile", "State", "OK", "ms", "Seen", "Fails")
    table = _table(title, *columns, key_width=width)
    for column in table.columns[4:]:
        column.justify = "right"
    for r in rows:
        state = Text("online", style="green") if r.online else Text("OFFLINE", style="bold magenta")
        fails = Text(str(r.consecutive_failures))
        if r.reason:
            fails.append(f" {r.reason}", style="magenta")
        table.add_row(
            r.name,
            f"{r.bus}:{r.unit}",
            r.profile,
            state,
            "-" if r.success_rate is None else f"{r.success_rate:.0%}",
            _num(r.latency_ms, "{:.0f}"),
            "never" if r.last_seen_s is None else _age(r.last_seen_s),
            fails,
        )
    return table


def _alarms(rows: Sequence[AlarmRow], short: Mapping[str, str]) -> RenderableType:
    width = max(len(short[a.alarm_id]) for a in rows)
    table = _table("Alarms", "Alarm", "Room", "What", "State", "Lvl", "Open", key_width=width)
    now = datetime.now(UTC)
    for a in rows:
        state = Text(a.state, style=_STATE_STYLES.get(a.state, ""))
        if a.acknowledged_by:
            state.append(f"\nby {a.acknowledged_by}")
        table.add_row(
            short[a.alarm_id],
            a.room or "-",
            f"{a.kind} {a.point}",
            state,
            str(a.level),
            _since(a.raised_at, now),
        )
    return table


def _alarm_update(u: AlarmUpdate) -> RenderableType:
    a = u.alarm
    verb, who, when = (
        ("acknowledged", a.acknowledged_by, a.acknowledged_at)
        if u.action == "ack"
        else ("resolved", a.resolved_by, a.resolved_at)
    )
    where = f"room {a.room}" if a.room else "floor"
    text = Text(f"Alarm {a.alarm_id} ({where}, {a.kind} {a.point}) {verb}", style="bold")
    text.append(f" by {who or '?'}")
    if when:
        text.append(f" at {_ts(when)}")
    text.append(f"; state now {a.state}.", style=_STATE_STYLES.get(a.state, ""))
    return text


def _outbox(o: OutboxInfo) -> RenderableType:
    grid = _grid()
    grid.add_row("Waiting", Text(str(o.depth), style="yellow" if o.depth else "green"))
    if o.oldest_undelivered_seq is not None:
        oldest = f"seq {o.oldest_undelivered_seq} at {_ts(o.oldest_undelivered_ts or '?')}"
        grid.add_row("Oldest waiting", Text(oldest))
    last = "none yet" if o.last_delivered_seq is None else str(o.last_delivered_seq)
    grid.add_row("Last delivered", Text(last))
    grid.add_row("Delivered, kept", Text(str(o.delivered_kept)))
    grid.add_row("Shed", Text(str(o.shed), style="red" if o.shed else ""))
    grid.add_row("Refused by the broker", Text(str(o.refused), style="red" if o.refused else ""))
    return grid


def _scan(r: ScanResult) -> RenderableType:
    head = Text(f"Bus {r.bus}: {len(r.hits)} of {r.probed} unit ids answered.", style="bold")
    if not r.hits:
        return head
    table = _table(None, "Unit", "Tables", "Consistent with", "Floor file")
    for h in r.hits:
        configured = Text(h.configured or "not configured", style="" if h.configured else "yellow")
        table.add_row(str(h.unit), ", ".join(h.tables), ", ".join(h.profiles) or "-", configured)
    return Group(head, table)


# -- helpers ------------------------------------------------------------------------------


def _event_table(
    events: Sequence[EventRow], *, header: bool = True, short: Mapping[str, str] | None = None
) -> Table:
    # Fixed widths, so that lines printed one by one (--follow) line up under one header.
    table = Table(
        box=None,
        show_header=header,
        header_style="bold",
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("Seq", justify="right", width=6, no_wrap=True, style="dim")
    table.add_column("Time (UTC)", width=15, no_wrap=True)
    table.add_column("Type", width=20, no_wrap=True, overflow="ellipsis")
    table.add_column("Room", width=5, no_wrap=True, overflow="ellipsis")
    table.add_column("Details", overflow="fold")
    if short is None:
        short = short_ids(_event_alarm_ids(events))
    for e in events:
        style = "bold red" if e.type in ("alarm.raised", "alarm.escalated") else "bold"
        table.add_row(
            str(e.seq),
            _ts(e.ts, short=True),
            Text(e.type, style=style),
            e.room or "-",
            _event_data(e, short),
        )
    return table


def _event_data(event: EventRow, short: Mapping[str, str]) -> str:
    data = dict(event.data)
    if event.type.startswith("alarm.") and "alarm_id" in data:
        parts = [f"{data.get('kind')} {data.get('point')}", f"level {data.get('level')}"]
        for key, label in (
            ("notify", "notify"),
            ("acknowledged_by", "ack by"),
            ("resolved_by", "resolved by"),
        ):
            if data.get(key):
                parts.append(f"{label} {data[key]}")
        alarm_id = str(data["alarm_id"])
        return ", ".join(parts) + f" (alarm {short.get(alarm_id, alarm_id)})"
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())


def _event_alarm_ids(events: Iterable[EventRow]) -> list[str]:
    return [
        str(e.data["alarm_id"])
        for e in events
        if e.type.startswith("alarm.") and "alarm_id" in e.data
    ]


def _short(alarms: Iterable[AlarmRow], events: Iterable[EventRow]) -> dict[str, str]:
    """Short alarm ids, unique among every alarm id one rendering shows."""
    return short_ids([*(a.alarm_id for a in alarms), *_event_alarm_ids(events)])


def _stream(stream: EventStream, *, as_json: bool, out: Console, err: Console) -> None:
    """Print each item as it comes; Ctrl-C is how a stream ends (normally)."""
    header = not as_json
    try:
        for item in stream.items:
            if isinstance(item, Notice):
                err.print(f"floorctl: {item.text}", soft_wrap=True)
            elif as_json:
                line = json.dumps(json_value(item), sort_keys=True, ensure_ascii=False)
                print(line, file=out.file, flush=True)
            else:
                out.print(event_line(item, header=header))
                out.file.flush()
                header = False
    except KeyboardInterrupt:
        return


class _Typed(Protocol):
    def to_json(self) -> dict[str, Any]: ...
    @classmethod
    def from_json(cls, doc: object) -> Self: ...


_R = TypeVar("_R", bound=_Typed)


def _rounded_result(result: _R) -> _R:
    """The same result with its measurements rounded as ``--json`` prints them."""
    cls: type[_R] = type(result)
    return cls.from_json(_rounded(result.to_json(), ""))


def _rounded(value: Any, key: str) -> Any:
    """``value`` (found at ``key``) with its measurements rounded by ROUNDING, recursively.

    An event's ``data`` is left as recorded.
    """
    if isinstance(value, dict):
        return {k: v if k == "data" else _rounded(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, key) for v in value]
    if isinstance(value, float):
        for suffix, places in ROUNDING:
            if key.endswith(suffix):
                return round(value, places)
    return value


def _floor_events_roomless(value: Any, key: str) -> Any:
    """``value`` (found at ``key``) without ``"room": null`` in its events, recursively."""
    if isinstance(value, dict):
        if key == "events" and value.get("room", "") is None:
            value = {k: v for k, v in value.items() if k != "room"}
        return {k: v if k == "data" else _floor_events_roomless(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_floor_events_roomless(v, key) for v in value]
    return value


def _sub(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s" if seconds < 10 else f"{secs} s"


def _since(ts: str, now: datetime) -> str:
    """How long ago an RFC 3339 time was, compactly ("?" if unreadable)."""
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return _age(max(0.0, (now - then).total_seconds()))


def _age(seconds: float) -> str:
    """A compact duration for tables: 0.8s, 42s, 5m12s, 3h12m, 2d4h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    for unit, size, sub, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if s >= size:
            return f"{s // size}{unit}{s % size // sub_size}{sub}"
    return f"{s}s"


def _rate_style(rate: float) -> str:
    return "bold red" if rate >= 0.2 else "yellow" if rate >= 0.05 else "green"


def _num(value: object, fmt: str = "{:.1f}") -> str:
    return "?" if not isinstance(value, int | float) else fmt.format(value)


def _maybe(value: str | None) -> Text:
    return Text(value or "-", style="" if value else "dim")


def _maybe_str(value: object, unit: str = "") -> str:
    return "?" if value is None else f"{value}{unit}"


def _yes(value: object) -> str:
    return "?" if value is None else "on" if value else "off"
