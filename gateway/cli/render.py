"""floorctl's one renderer: rich tables and the floor map for people, ``--json`` for scripts.

Everything is readable without colour (NO_COLOR, a pipe, a monochrome terminal): states
are words or letters, colour only repeats them. The floor map fits the console width
(80 columns included). Text from the daemon is never parsed as rich markup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from gateway.model.views import (
    AlarmRow,
    AlarmTable,
    AlarmUpdate,
    DeviceRow,
    DeviceTable,
    EventLog,
    EventRow,
    FloorMap,
    OutboxInfo,
    Result,
    RoomDetail,
    RoomRow,
    RoomTable,
    ScanProgress,
    ScanResult,
    Status,
)

__all__ = ["LEGEND", "event_line", "floor_map", "json_document", "render", "room_flags", "scan_bar"]

# The floor map's cell: a room's id over six fixed slots, each a letter or a blank.
# (letter, meaning, style) in slot order; style repeats the letter in colour.
LEGEND: tuple[tuple[str, str, str], ...] = (
    ("O", "occupied", "green"),
    (".", "vacant", "dim"),
    ("/", "door open", "bold cyan"),
    ("D", "do not disturb", "blue"),
    ("M", "make up room", "cyan"),
    ("!", "call active", "bold white on red"),
    ("a", "call acknowledged", "black on yellow"),
    ("X", "device offline", "bold magenta"),
)
# A cell's background, by its most urgent state.
_CELL_STYLES = {
    "call_active": "bold white on red",
    "call_acknowledged": "black on yellow",
    "offline": "white on magenta",
    "door_open": "black on cyan",
    "dnd": "white on blue",
    "mur": "black on bright_cyan",
    "occupied": "black on green",
    "vacant": "",
}
_STATE_STYLES = {"active": "bold red", "acknowledged": "yellow", "resolved": "green"}
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$")


def render(result: Result, console: Console) -> None:
    """Print a subcommand's result for people."""
    console.print(_renderable(result))


def json_document(result: Result) -> str:
    """The ``--json`` document: stable keys, sorted, indented."""
    return json.dumps(result.to_json(), indent=2, sort_keys=True, ensure_ascii=False)


def room_flags(row: RoomRow) -> str:
    """The six map slots of a room: occupancy, door, DND, MUR, call, devices (see LEGEND)."""
    occupancy = {"occupied": "O", "vacant": "."}.get(row.occupancy or "", "?")
    door = "/" if row.door == "open" else " "
    call = {"active": "!", "acknowledged": "a"}.get(row.call, " ")
    return "".join(
        (
            occupancy,
            door,
            "D" if row.dnd else " ",
            "M" if row.mur else " ",
            call,
            "X" if row.offline else " ",
        )
    )


def floor_map(rows: Sequence[RoomRow], width: int) -> RenderableType:
    """The floor at a glance: a grid of room cells within ``width`` columns, and a legend."""
    cell = max([6, *(len(r.room) for r in rows)]) + 2
    per_line = max(1, (width + 1) // (cell + 1))
    lines: list[Text] = []
    for start in range(0, len(rows), per_line):
        chunk = rows[start : start + per_line]
        top, bottom = Text(), Text()
        for i, row in enumerate(chunk):
            style = _CELL_STYLES[_cell_state(row)]
            if i:
                top.append(" ")
                bottom.append(" ")
            top.append(f" {row.room:<{cell - 2}} ", style=style)
            bottom.append(f" {room_flags(row):<{cell - 2}} ", style=style)
        lines += [top, bottom, Text()]
    return Group(_floor_summary(rows, width), Text(), *lines, _legend(width))


def event_line(event: EventRow) -> RenderableType:
    """One event: seq, time, type, room, then the data that matters (wrapped in its column)."""
    return _event_grid([event])


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
            return _FloorMapRenderable(result.rooms)
        case RoomTable():
            return _rooms(result.rooms)
        case RoomDetail():
            return _room(result)
        case DeviceTable():
            return _devices(result.devices, title="Devices")
        case AlarmTable():
            if not result.alarms:
                return Text("No open alarms.", style="green")
            return _alarms(result.alarms)
        case AlarmUpdate():
            return _alarm_update(result)
        case EventLog():
            if not result.events:
                return Text("No events.")
            return _event_grid(result.events)
        case OutboxInfo():
            return _outbox(result)
        case ScanResult():
            return _scan(result)


class _FloorMapRenderable:
    """Lays the map out at the width of the console it is printed on."""

    def __init__(self, rows: Sequence[RoomRow]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: Any) -> Iterator[RenderableType]:
        yield floor_map(self.rows, options.max_width)


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
    grid.add_row("Room", Text(d.room, style="bold"))
    grid.add_row("Occupancy", occupancy)
    call = str(s.get("call") or "?")
    grid.add_row("Call", Text(call, style=_STATE_STYLES.get(call, "")))
    grid.add_row("Door", Text(f"{_maybe_str(s.get('door'))} · deadbolt {_yes(s.get('deadbolt'))}"))
    grid.add_row("Lock battery", Text(_maybe_str(s.get("lock_battery"), "%")))
    climate = _sub(s, "climate")
    grid.add_row(
        "Climate",
        Text(
            f"{_num(climate.get('temp_c'))} °C, set {_num(climate.get('setpoint_c'))} °C, "
            f"{_maybe_str(climate.get('mode'))}, fan {_maybe_str(climate.get('fan'))}, "
            f"power {_yes(climate.get('power'))}"
        ),
    )
    on = [name for name, value in _sub(s, "lights").items() if value]
    grid.add_row("Lights on", Text(", ".join(on) or "none"))
    flags = ", ".join(
        f"{label} {_yes(s.get(key))}"
        for key, label in (("keycard", "keycard"), ("dnd", "DND"), ("mur", "MUR"))
    )
    grid.add_row("Service", Text(f"{flags}, window {_yes(s.get('window_open'))}"))
    parts: list[RenderableType] = [grid, Text(), _devices(d.devices, title="Devices"), Text()]
    if d.alarms:
        parts += [_alarms(d.alarms), Text()]
    parts.append(Text("Recent events", style="bold"))
    parts.append(_event_grid(d.events) if d.events else Text("none"))
    return Group(*parts)


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


def _alarms(rows: Sequence[AlarmRow]) -> RenderableType:
    width = max(len(a.alarm_id) for a in rows)
    table = _table("Alarms", "Alarm", "Room", "What", "State", "Lvl", "Open", key_width=width)
    now = datetime.now(UTC)
    for a in rows:
        state = Text(a.state, style=_STATE_STYLES.get(a.state, ""))
        if a.acknowledged_by:
            state.append(f"\nby {a.acknowledged_by}")
        table.add_row(
            a.alarm_id,
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


def _cell_state(row: RoomRow) -> str:
    if row.call == "active":
        return "call_active"
    if row.call == "acknowledged":
        return "call_acknowledged"
    if row.offline:
        return "offline"
    if row.door == "open":
        return "door_open"
    if row.dnd:
        return "dnd"
    if row.mur:
        return "mur"
    return "occupied" if row.occupancy == "occupied" else "vacant"


def _floor_summary(rows: Sequence[RoomRow], width: int) -> Text:
    counts = [
        (sum(r.occupancy == "occupied" for r in rows), "occupied", ""),
        (sum(r.call == "active" for r in rows), "call active", "bold red"),
        (sum(r.call == "acknowledged" for r in rows), "call acknowledged", "yellow"),
        (sum(bool(r.offline) for r in rows), "with a device offline", "magenta"),
        (sum(r.door == "open" for r in rows), "door open", "cyan"),
    ]
    parts = [(f"{len(rows)} rooms", "bold")]
    parts += [(f"{n} {label}", style) for n, label, style in counts if n or label == "occupied"]
    return _packed(parts, " · ", width)


def _legend(width: int) -> Text:
    parts: list[tuple[str, str] | list[tuple[str, str]]] = [
        [(letter, style), (f" {meaning}", "dim")] for letter, meaning, style in LEGEND
    ]
    legend = _packed(parts, "  ", width)
    legend.append("\nslots: occupancy, door, DND, MUR, call, devices", style="dim")
    return legend


def _packed(
    parts: Sequence[tuple[str, str] | list[tuple[str, str]]], separator: str, width: int
) -> Text:
    """Parts (each one or more styled pieces) joined, breaking lines only between parts."""
    text, line = Text(), 0
    for part in parts:
        pieces = [part] if isinstance(part, tuple) else part
        size = sum(len(piece) for piece, _ in pieces)
        if line and line + len(separator) + size > width:
            text.append("\n")
            line = 0
        elif line:
            text.append(separator)
            line += len(separator)
        for piece, style in pieces:
            text.append(piece, style=style)
        line += size
    return text


def _event_grid(events: Sequence[EventRow]) -> Table:
    # Fixed widths, so that lines printed one by one (--follow) line up.
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", width=6, no_wrap=True, style="dim")
    grid.add_column(width=15, no_wrap=True)
    grid.add_column(width=20, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=5, no_wrap=True, overflow="ellipsis")
    grid.add_column(overflow="fold")
    for e in events:
        style = "bold red" if e.type in ("alarm.raised", "alarm.escalated") else "bold"
        grid.add_row(
            str(e.seq),
            _ts(e.ts, short=True),
            Text(e.type, style=style),
            e.room or "-",
            _event_data(e),
        )
    return grid


def _event_data(event: EventRow) -> str:
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
        # the id's head is enough to tell alarms apart here; `floorctl alarms` has it all
        alarm_id = str(data["alarm_id"])
        short = alarm_id if len(alarm_id) <= 9 else f"{alarm_id[:8]}…"
        return ", ".join(parts) + f" (alarm {short})"
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())


def _sub(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


def _table(title: str | None, *columns: str, key_width: int = 0) -> Table:
    # Compact (one space of padding, no outer edge) to fit 80 columns. The first column
    # is the key (room, device, alarm id: what one types next) and is never cut or
    # wrapped; the others wrap when the terminal is too narrow.
    table = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for i, name in enumerate(columns):
        if i == 0:
            table.add_column(name, no_wrap=True, min_width=max(key_width, len(name)))
        else:
            table.add_column(name, overflow="fold")
    return table


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _ts(ts: str, *, short: bool = False) -> str:
    """RFC 3339 UTC as ``2026-11-23 06:03:22Z`` (short: ``11-23 06:03:22Z``)."""
    m = _TS.match(ts)
    if not m:
        return ts
    return f"{m.group(1)[5:] if short else m.group(1)} {m.group(2)}Z"


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
