"""Floor file and profile validation: every kind of mistake, located, and exit 78."""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.config.load import load_floor, load_profile, shipped_profiles_dir, with_lines
from gateway.config.toml_lines import line_index, line_of
from gateway.core.kinds import ROLES
from gateway.daemon import EX_CONFIG, main
from gateway.model.errors import ConfigError
from tests.conftest import FLOORS, demo_floor_dict

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets a dotted/indexed path, e.g. 'room.1.devices.0.unit'."""

    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value

    return edit


def _del(path: str) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[int(last) if last.isdigit() else last]

    return edit


def _do(f: Callable[[dict[str, Any]], Any]) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        f(d)

    return edit


_STAFF: dict[str, Any] = {
    "key_id": "hk-ana",
    "token": "00000000000000c1",
    "zones": ["1201", "1202"],
    "schedule": {"days": ["mon", "tue"], "from": "07:00", "until": "15:00"},
}
_OPERATOR: dict[str, Any] = {"id": "fd-03", "public_key": "ab" * 32, "roles": ["front_desk"]}


FLOOR_MISTAKES: list[tuple[str, Edit, str]] = [
    ("unknown section", _set("colour", {"x": 1}), "colour: unknown section"),
    (
        "unknown key",
        _set("gateway.colour", "x"),
        "gateway.colour: unknown key (allowed: id, state_dir, socket",
    ),
    ("missing section", _del("mqtt"), "mqtt: missing section (required)"),
    ("missing key", _del("gateway.id"), "gateway.id: missing (required)"),
    ("duplicate room id", _set("room.1.id", "1201"), "room[1].id: room 1201 is already room[0]"),
    (
        "bus and unit used twice",
        _set("room.1.devices.1.unit", 2),
        "room[1].devices[1].unit: unit 2 on bus rs485-a is already room 1201's lock",
    ),
    (
        "floor panel unit used twice",
        _set("floorpanel.unit", 1),
        "room[0].devices[0].unit: unit 1 on bus rs485-a is already the floor panel",
    ),
    (
        "unknown bus",
        _set("room.0.devices.0.bus", "rs485-x"),
        "room[0].devices[0].bus: no bus named 'rs485-x' (buses: rs485-a, lan, panel)",
    ),
    (
        "device on a call panel line",
        _set("room.0.devices.0.bus", "panel"),
        "room[0].devices[0].bus: bus 'panel' is a call panel line, not a Modbus bus",
    ),
    (
        "unknown profile",
        _set("room.0.devices.0.profile", "fg-tstat-9"),
        "room[0].devices[0].profile: no profile named 'fg-tstat-9' (known: eastron-sdm120, "
        "fg-floorpanel-1, fg-lock-1, fg-rio-1, fg-tstat-1, kaysun-kc-fcd2-m, siemens-rdf302; "
        "did you mean 'fg-tstat-1'?)",
    ),
    (
        "unknown profile, nothing like it",
        _set("room.0.devices.0.profile", "acme-9000"),
        "no profile named 'acme-9000' (known: eastron-sdm120, fg-floorpanel-1, fg-lock-1, "
        "fg-rio-1, fg-tstat-1, kaysun-kc-fcd2-m, siemens-rdf302)",
    ),
    (
        "profile of another kind",
        _set("room.0.devices.0.profile", "fg-lock-1"),
        "room[0].devices[0].profile: 'fg-lock-1' is a lock profile, not a tstat",
    ),
    (
        "unknown device role",
        _set("room.0.devices.0.role", "fridge"),
        "room[0].devices[0].role: unknown role 'fridge'; a room's devices are tstat, lock, rio",
    ),
    (
        "role twice in a room",
        _set("room.0.devices.1.role", "tstat"),
        "room[0].devices[1].role: room 1201 already has a tstat (devices[0])",
    ),
    (
        "rio and call panel",
        _set("room.0.callpanel", "panel"),
        "room[0].callpanel: room 1201 has a rio and a call panel",
    ),
    (
        "no call points",
        _do(lambda d: d["room"][0]["devices"].pop(2)),
        "room[0]: room 1201 has no call points: give it a rio device or callpanel = BUS",
    ),
    (
        "call panel names a Modbus bus",
        _set("room.4.callpanel", "lan"),
        "room[4].callpanel: bus 'lan' is not a callpanel",
    ),
    (
        "call panel names no bus",
        _set("room.4.callpanel", "nope"),
        "room[4].callpanel: no bus named 'nope'",
    ),
    ("rtu bus without port", _del("bus.0.port"), "bus[0].port: missing (required)"),
    ("tcp bus without host", _del("bus.1.host"), "bus[1].host: missing (required)"),
    (
        "field of another bus kind",
        _set("bus.1.baud", 9600),
        "bus[1].baud: unknown key (allowed: name, timeout_ms, kind, host, port,"
        " max_in_flight, intervals_ms)",
    ),
    (
        "unknown bus kind",
        _set("bus.0.kind", "can"),
        "bus[0].kind: unknown kind 'can' (one of modbus-rtu, modbus-tcp, callpanel)",
    ),
    ("baud not standard", _set("bus.0.baud", 12345), "bus[0]: baud 12345 is not a standard rate"),
    ("bad parity", _set("bus.0.parity", "X"), "bus[0].parity: Input should be 'N', 'E' or 'O'"),
    (
        "duplicate bus name",
        _set("bus.2.name", "rs485-a"),
        "bus[2].name: bus 'rs485-a' is already bus[0]",
    ),
    (
        "serial port used twice",
        _do(lambda d: d["bus"][2].update(port=d["bus"][0]["port"])),
        "bus[2].port: /",
    ),
    (
        "unit out of range",
        _set("room.0.devices.0.unit", 248),
        "room[0].devices[0].unit: Input should be less than or equal to 247 (got 248)",
    ),
    (
        "first escalation level not at 0",
        _set("escalation.0.after_s", 5),
        "escalation[0].after_s: the first level must have after_s = 0",
    ),
    (
        "escalation not increasing",
        _set("escalation.2.after_s", 30),
        "escalation[2].after_s: 30 must be later than escalation[1]'s 60",
    ),
    ("no escalation", _del("escalation"), "escalation: at least one [[escalation]] level"),
    (
        "mqtt root with wildcard",
        _set("mqtt.root", "hotel/+/12"),
        "mqtt: root 'hotel/+/12' must be '/'-separated non-empty levels without '+' or '#'",
    ),
    (
        "tls cert without key",
        _set("mqtt.tls_cert_file", "cert.pem"),
        "mqtt: tls_cert_file and tls_key_file go together",
    ),
    (
        "command key missing",
        _set("mqtt.command_key_file", "/nonexistent/command.key"),
        "mqtt.command_key_file: cannot read /nonexistent/command.key",
    ),
    (
        "environment variable not set",
        _set("gateway.state_dir", "${FLOORGATE_TEST_UNSET_VAR}/state"),
        "gateway.state_dir: environment variable FLOORGATE_TEST_UNSET_VAR is not set",
    ),
    (
        "room id not usable in a topic",
        _set("room.0.id", "12/01"),
        "room[0].id: String should match pattern",
    ),
    (
        "floor panel with a room profile",
        _set("floorpanel.profile", "fg-rio-1"),
        "floorpanel.profile: 'fg-rio-1' is a rio profile, not a floorpanel",
    ),
    (
        "profile directory missing",
        _set("gateway.profile_dirs", ["/nonexistent/profiles"]),
        "gateway.profile_dirs[0]: /nonexistent/profiles is not a directory",
    ),
    (
        "setpoint policy out of range",
        _set("policy.vacant_setpoint_c", 60),
        "policy.vacant_setpoint_c: Input should be less than or equal to 35",
    ),
    (
        "unknown time zone",
        _set("gateway.timezone", "Mars/Olympus"),
        "gateway.timezone: unknown time zone 'Mars/Olympus'",
    ),
    (
        "no slot left for guests",
        _do(lambda d: d.update(locks={"staff_slots": 32})),
        "locks.staff_slots",
    ),
    (
        "staff key zone not on the floor",
        _do(lambda d: d.update(staff_key=[{**_STAFF, "zones": ["1201", "9999"]}])),
        "staff_key[0].zones[1]: no room '9999' on this floor",
    ),
    (
        "staff key id twice",
        _do(lambda d: d.update(staff_key=[_STAFF, {**_STAFF, "token": "00000000000000c2"}])),
        "staff_key[1].key_id: 'hk-ana' is already staff_key[0]",
    ),
    (
        "staff schedule from equals until",
        _do(
            lambda d: d.update(
                staff_key=[
                    {**_STAFF, "schedule": {"days": ["mon"], "from": "08:00", "until": "08:00"}}
                ]
            )
        ),
        "staff_key[0].schedule",
    ),
    (
        "operator with an unknown role",
        _do(lambda d: d.update(operator=[{**_OPERATOR, "roles": ["janitor"]}])),
        "operator[0].roles[0]",
    ),
    (
        "operator key not hex",
        _do(lambda d: d.update(operator=[{**_OPERATOR, "public_key": "xy" * 32}])),
        "operator[0].public_key",
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [pytest.param(e, m, id=name) for name, e, m in FLOOR_MISTAKES],
)
def test_floor_mistake_is_located(
    write_floor: Callable[..., Path], edit: Edit, expected: str
) -> None:
    data = demo_floor_dict()
    edit(data)
    path = write_floor(data)
    with pytest.raises(ConfigError) as info:
        load_floor(path)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_key_file_too_short(write_floor: Callable[..., Path], run_dir: Path) -> None:
    (run_dir / "command.key").write_text("abcd\n")
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor())
    assert any(
        p.startswith("mqtt.command_key_file:") and "at least 32 hex digits" in p
        for p in info.value.problems
    )


def test_toml_syntax_error(run_dir: Path) -> None:
    path = run_dir / "broken.toml"
    path.write_text("[gateway\nid = 1\n")
    with pytest.raises(ConfigError) as info:
        load_floor(path)
    assert "TOML syntax error" in info.value.problems[0]
    assert "line 1" in info.value.problems[0]


def test_every_problem_is_reported_at_once(write_floor: Callable[..., Path]) -> None:
    data = demo_floor_dict()
    data["room"][1]["id"] = "1201"
    data["room"][2]["devices"][0]["unit"] = 999
    data["bus"][0]["baud"] = 1234
    data["escalation"][0]["after_s"] = 9
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor(data))
    text = "\n".join(info.value.problems)
    for where in ("room[1].id", "room[2].devices[0].unit", "bus[0]", "escalation[0].after_s"):
        assert where in text, text


def test_locks_staff_keys_and_operators_reach_the_core(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    data = demo_floor_dict()
    data["gateway"]["timezone"] = "Asia/Shanghai"
    data["locks"] = {"staff_slots": 6}
    data["staff_key"] = [
        _STAFF,
        {"key_id": "sec", "token": "00000000000000c9", "zones": ["floor"], "security": True},
    ]
    data["operator"] = [_OPERATOR]
    data["mqtt"]["allow_hmac"] = False
    config, _ = load_floor(write_floor(data))
    staff = config.layout().staff
    assert (staff.staff_slots, str(staff.tz)) == (6, "Asia/Shanghai")
    assert [k.key_id for k in staff.file_keys] == ["hk-ana", "sec"]
    assert staff.file_keys[1].security
    creds = config.credentials(b"k" * 16)
    assert not creds.allow_hmac
    assert creds.operators["fd-03"].roles == {"front_desk"}
    # A key being rotated: the same id twice, both keys good until the old one goes.
    data["operator"] = [_OPERATOR, {**_OPERATOR, "public_key": "cd" * 32}]
    config, _ = load_floor(write_floor(data))
    assert len(config.credentials(b"k" * 16).operators["fd-03"].public_keys) == 2
    data["operator"] = [_OPERATOR, {**_OPERATOR, "public_key": "cd" * 32, "roles": ["admin"]}]
    with pytest.raises(ConfigError, match="other roles"):
        load_floor(write_floor(data))
    assert config.layout().policy.door_held_open_staff_s == 120


def test_shipped_floors_are_valid(run_dir: Path) -> None:
    demo, warnings = load_floor(FLOORS / "demo.toml")
    assert len(demo.rooms) == 6
    assert {b.kind for b in demo.buses} == {"modbus-rtu", "modbus-tcp", "callpanel"}
    assert sum(1 for r in demo.rooms if r.callpanel) == 2
    assert demo.floorpanel is not None
    assert demo.gateway.state_dir == run_dir / "state"
    assert warnings == []
    bench, _ = load_floor(FLOORS / "bench.toml")
    assert len(bench.rooms) == 60
    rtu = [b for b in bench.buses if b.kind == "modbus-rtu"]
    assert len(rtu) == 4
    assert all(b.baud == 19200 for b in rtu)  # type: ignore[union-attr]
    for b in rtu:
        assert sum(1 for r in bench.rooms if r.devices[0].bus == b.name) == 12
    assert sum(1 for r in bench.rooms if r.devices[0].bus == "lan") == 12


def test_environment_and_relative_paths(write_floor: Callable[..., Path], run_dir: Path) -> None:
    data = demo_floor_dict()
    data["gateway"]["state_dir"] = "relative/state"
    data["mqtt"]["port"] = "${FLOORGATE_TEST_PORT:-2883}"
    config, _ = load_floor(write_floor(data))
    assert config.gateway.state_dir == run_dir / "relative" / "state"
    assert config.mqtt.port == 2883


def test_profile_parity_mismatch_is_a_warning(write_floor: Callable[..., Path]) -> None:
    data = demo_floor_dict()
    data["room"][0]["devices"][0]["profile"] = "siemens-rdf302"
    config, warnings = load_floor(write_floor(data))
    assert config.profiles["siemens-rdf302"].serial.parity == "E"
    assert any("room[0].devices[0]: siemens-rdf302 ships at 19200 E" in w for w in warnings)


# -- profiles ------------------------------------------------------------------------------

GOOD_TSTAT = {
    "profile": {"name": "acme-t1", "device": "tstat"},
    "point": [
        {"name": "room_temp", "role": "room_temp", "table": "input", "address": 0,
         "type": "i16", "scale": 0.1},
        {"name": "setpoint", "role": "setpoint", "table": "holding", "address": 2,
         "type": "i16", "scale": 0.1, "access": "rw", "min": 5.0, "max": 35.0},
    ],
}  # fmt: skip


def _profile(**changes: Any) -> dict[str, Any]:
    prof = copy.deepcopy(GOOD_TSTAT)
    for key, value in changes.items():
        i, field = key.split("__")
        prof["point"][int(i.removeprefix("p"))][field] = value
    return prof


PROFILE_MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown key", _profile(p0__colour="red"), "point[0].colour: unknown key (allowed: name,"),
    ("bit type in a register", _profile(p0__type="bit"), "point[0]: type bit does not fit table"),
    (
        "address out of range",
        _profile(p0__address=70000),
        "point[0].address: Input should be less than or equal to 65535",
    ),
    ("unknown role", _profile(p0__role="fridge_temp"), "point[0].role: unknown role 'fridge_temp'"),
    (
        "role of the wrong type",
        _profile(p1__type="bitfield", p1__bits={"a": 0}),
        "point[1].type: role 'setpoint' is a number, not bitfield",
    ),
    (
        "written role not writable",
        _profile(p1__access="r"),
        "point[1].access: role 'setpoint' is written by the gateway",
    ),
    ("enum key not an integer", _profile(p0__enum={"x": "a"}), "enum key 'x' is not an integer"),
    ("points overlap", _profile(p1__table="input", p1__address=0, p1__access="r"),
     "point[1].address: input 0 is already point[0] (room_temp)"),
    ("write on a read-only table", _profile(p0__access="rw"), "access 'rw' on table input"),
    ("no value out of range", _profile(p0__no_value=[0x1FFFF]), "no_value 0x1ffff is outside"),
    ("bad data type", _profile(p0__type="f64"), "point[0].type: Input should be"),
    ("min above max", _profile(p1__min=40.0), "point[1]: min 40.0 is above max 35.0"),
]  # fmt: skip


def _write_profile(dir_: Path, name: str, data: dict[str, Any]) -> None:
    dir_.mkdir(exist_ok=True)
    (dir_ / f"{name}.toml").write_text(tomli_w.dumps(data))


def _floor_using(write_floor: Callable[..., Path], run_dir: Path, profile: str) -> Path:
    data = demo_floor_dict()
    data["gateway"]["profile_dirs"] = [str(run_dir / "profiles")]
    data["room"][0]["devices"][0]["profile"] = profile
    return write_floor(data)


@pytest.mark.parametrize(
    ("prof", "expected"), [pytest.param(p, m, id=n) for n, p, m in PROFILE_MISTAKES]
)
def test_profile_mistake_is_located(
    write_floor: Callable[..., Path], run_dir: Path, prof: dict[str, Any], expected: str
) -> None:
    _write_profile(run_dir / "profiles", "acme-t1", prof)
    path = _floor_using(write_floor, run_dir, "acme-t1")
    with pytest.raises(ConfigError) as info:
        load_floor(path)
    located = f"profile acme-t1: {run_dir / 'profiles' / 'acme-t1.toml'}: "
    assert any(p.startswith(located) and expected in p for p in info.value.problems), (
        info.value.problems
    )


def test_profile_missing_required_role(write_floor: Callable[..., Path], run_dir: Path) -> None:
    prof = _profile()
    prof["point"].pop(0)
    _write_profile(run_dir / "profiles", "acme-t1", prof)
    with pytest.raises(ConfigError) as info:
        load_floor(_floor_using(write_floor, run_dir, "acme-t1"))
    assert any(
        "a tstat profile needs a point with role 'room_temp'" in p for p in info.value.problems
    )


def test_profile_name_differs_from_file(write_floor: Callable[..., Path], run_dir: Path) -> None:
    _write_profile(run_dir / "profiles", "acme-t2", _profile())
    with pytest.raises(ConfigError) as info:
        load_floor(_floor_using(write_floor, run_dir, "acme-t2"))
    assert any(
        "profile.name: 'acme-t1' differs from the file name" in p for p in info.value.problems
    )


def test_profile_defined_twice(write_floor: Callable[..., Path], run_dir: Path) -> None:
    shipped = (shipped_profiles_dir() / "fg-tstat-1.toml").read_text()
    (run_dir / "profiles").mkdir()
    (run_dir / "profiles" / "fg-tstat-1.toml").write_text(shipped)
    with pytest.raises(ConfigError) as info:
        load_floor(_floor_using(write_floor, run_dir, "fg-tstat-1"))
    assert any(p.startswith("profile fg-tstat-1: defined twice") for p in info.value.problems)


def test_user_profile_is_used(write_floor: Callable[..., Path], run_dir: Path) -> None:
    _write_profile(run_dir / "profiles", "acme-t1", _profile())
    config, _ = load_floor(_floor_using(write_floor, run_dir, "acme-t1"))
    assert config.profiles["acme-t1"].by_role()["setpoint"].address == 2


def test_shipped_profiles_match_devices_md() -> None:
    d = shipped_profiles_dir()
    lock = load_profile(d / "fg-lock-1.toml").by_role()
    assert (lock["slot"].table, lock["slot"].address, lock["slot"].count) == ("holding", 100, 32)
    assert lock["slot"].type == "u64"
    assert (lock["log_token"].address, lock["log_token"].step) == (12, 6)
    rio = load_profile(d / "fg-rio-1.toml").by_role()
    assert [rio[r].address for r in ("bath_count", "staff_count", "bed_count")] == [0, 1, 2]
    assert rio["dome_lamp"].address == 4
    assert rio["reassure_lamp"].address == 5
    tstat = load_profile(d / "fg-tstat-1.toml")
    assert "sensor_fault" in tstat.roles(ROLES["tstat"])
    assert tstat.by_role()["mode"].enum_map == {0: "auto", 1: "cool", 2: "heat", 3: "fan_only"}
    rdf = load_profile(d / "siemens-rdf302.toml")
    assert (rdf.serial.baud, rdf.serial.parity) == (19200, "E")
    temp = rdf.by_role()["room_temp"]
    assert (temp.address, temp.scale, temp.no_value) == (1002, 0.02, [0xFFFF])
    assert rdf.by_role()["fan_speed"].enum_map == {0: "auto", 33: "low", 66: "medium", 100: "high"}
    panel = load_profile(d / "fg-floorpanel-1.toml").by_role()
    assert (panel["floor_sounder"].address, panel["floor_call_lamp"].address) == (0, 1)


# -- the command line ----------------------------------------------------------------------


def test_check_exit_78_with_report(
    write_floor: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo_floor_dict()
    data["room"][1]["devices"][1]["unit"] = 2
    path = write_floor(data)
    assert main(["--config", str(path), "--check"]) == EX_CONFIG
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{path}: 1 problem"
    lock = '    { role = "lock", profile = "fg-lock-1", bus = "rs485-a", unit = 2 },'
    line = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text == lock][1]
    assert out.splitlines()[1] == (
        f"  line {line}: room[1].devices[1].unit: unit 2 on bus rs485-a is already room 1201's lock"
    )


def test_check_names_the_line_of_each_problem(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A floor file as people write it: every problem on the line of its key, item or table."""
    text = (FLOORS / "demo.toml").read_text()
    rio = 'profile = "fg-rio-1",   bus = "rs485-a", unit = 6'
    for old, new in (
        ('host = "127.0.0.1"\nport = "${', 'hots = "127.0.0.1"\nport = "${'),
        ("door_held_open_s = 60 ", 'door_held_open_s = "2 min" '),
        ("after_s = 60", "after_s = 0"),
        ('bus = "rs485-a", unit = 5 }', 'bus = "rs485-a", unit = 2 }'),
        (rio, rio.replace("fg-rio-1", "fg-rio-2").replace("rs485-a", "rs485-b")),
        ('id = "1206"', 'id = "1206"\ncolour = "green"  # [[room]] = not a table'),
    ):  # fmt: skip
        assert old in text
        text = text.replace(old, new, 1)
    path = run_dir / "floor.toml"
    path.write_text(text)
    lines = text.splitlines()

    def line(fragment: str, after: str = "") -> int:
        """The line of the first ``fragment`` after the first ``after``."""
        start = next(n for n, t in enumerate(lines, 1) if after in t) if after else 0
        return next(n for n, t in enumerate(lines, 1) if n > start and fragment in t)

    second_level = line("after_s = 0", "floor-staff")
    second_lock = line("unit = 2 }", '"1202"')
    assert main(["--config", str(path), "--check"]) == EX_CONFIG
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: 8 problems",
        f"  line {line('[mqtt]')}: mqtt.host: missing (required)",
        f"  line {line('hots')}: mqtt.hots: unknown key (allowed: host, port, root, "
        "command_key_file, tls_ca_file, tls_cert_file, tls_key_file, username, password_file, "
        "keepalive_s, max_in_flight, events_keep_days, outbox_max_mib, protocol, "
        "session_expiry_s, reconnect_jitter_s, reconnect_max_s, allow_hmac)",
        f"  line {line('door_held')}: policy.door_held_open_s: Input should be a valid integer, "
        "unable to parse string as an integer (got '2 min')",
        f"  line {line('colour')}: room[5].colour: unknown key (allowed: id, devices, callpanel)",
        f"  line {second_level}: escalation[1].after_s: 0 must be later than escalation[0]'s 0",
        f"  line {second_lock}: room[1].devices[1].unit: unit 2 on bus "
        "rs485-a is already room 1201's lock",
        f"  line {line('fg-rio-2')}: room[1].devices[2].bus: no bus named 'rs485-b' "
        "(buses: rs485-a, lan, panel)",
        f"  line {line('fg-rio-2')}: room[1].devices[2].profile: no profile named 'fg-rio-2' "
        "(known: eastron-sdm120, fg-floorpanel-1, fg-lock-1, fg-rio-1, fg-tstat-1, "
        "kaysun-kc-fcd2-m, siemens-rdf302; did you mean 'fg-rio-1'?)",
    ]


def test_problems_not_in_the_floor_file_have_no_line(tmp_path: Path) -> None:
    path = tmp_path / "floor.toml"
    path.write_text("[gateway]\nid = 1\n")
    assert with_lines(
        ["gateway.id: bad", "profile x: /p/x.toml: points: bad", "(top level): bad"], path
    ) == ["line 2: gateway.id: bad", "profile x: /p/x.toml: points: bad", "(top level): bad"]
    assert with_lines(["gateway.id: bad"], tmp_path / "gone.toml") == ["gateway.id: bad"]


def test_check_valid_prints_summary(
    write_floor: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(write_floor()), "--check"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("ok: floor demo-12: 6 rooms, 17 devices on 3 buses")
    assert len(out.splitlines()) == 1


def test_daemon_refuses_invalid_floor(write_floor: Callable[..., Path], run_dir: Path) -> None:
    data = demo_floor_dict()
    data["bus"][0]["baud"] = 1234
    path = write_floor(data)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.daemon", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == EX_CONFIG
    assert "bus[0]: baud 1234 is not a standard rate" in proc.stderr
    assert not (run_dir / "state").exists()


def test_invalid_bus_does_not_cascade(write_floor: Callable[..., Path]) -> None:
    data = demo_floor_dict()
    data["bus"][0]["baud"] = 1234
    data["room"][1]["devices"][1]["unit"] = 2
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor(data))
    assert info.value.problems == [
        "bus[0]: baud 1234 is not a standard rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, "
        "115200)",
        "room[1].devices[1].unit: unit 2 on bus rs485-a is already room 1201's lock",
    ]


TRICKY_TOML = '''\
# [[room]] in a comment is no table
title = """a [[room]] in a string,
id = "no key" # nor a comment"""
when = 1979-05-27 07:32:00Z
"quoted key" = 'C:\\'
[gateway]   # a comment after a header
id = "x"
a.b.c = [1, 2,
  3]

[[room]]
id = "1"
devices = [
  { role = "tstat", unit = 1 },
  # a comment { between } items, and an empty line

  { role = "lock", unit = 2 },
]

[[room]]
id = "2"

[[room.devices]]
role = "rio"

[[room.devices]]
role = "lock"
unit = 5

[room.extra]
x = { y = { z = 1 } }
'''


@pytest.mark.parametrize(
    ("place", "line"),
    [
        ("title", 2),
        ("when", 4),
        ("gateway", 6),
        ("gateway.id", 7),
        ("gateway.a.b.c", 8),
        ("gateway.a.b.c[2]", 9),
        ("room", 11),
        ("room[0]", 11),
        ("room[0].devices", 13),
        ("room[0].devices[0].unit", 14),
        ("room[0].devices[1]", 17),
        ("room[0].devices[1].unit", 17),
        ("room[0].devices[1].colour", 17),  # a missing key: its table
        ("room[1].id", 21),
        ("room[1].devices[0]", 23),
        ("room[1].devices[1].unit", 28),
        ("room[1].extra.x.y.z", 31),
        ("room[7].id", 11),  # no such room: the array
        ("nothing.here", None),
        ("profile fg-x", None),
        ("(top level)", None),
    ],
)
def test_toml_lines(place: str, line: int | None) -> None:
    assert tomllib.loads(TRICKY_TOML)  # valid TOML, as line_index expects
    assert line_of(line_index(TRICKY_TOML), place) == line


def test_toml_lines_stop_quietly_at_what_they_cannot_follow() -> None:
    index = line_index('[gateway]\nid = "x"\n@@@\n[mqtt]\nhost = "h"\n')
    assert index == {("gateway",): 1, ("gateway", "id"): 2}
