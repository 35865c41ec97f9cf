"""The systemd unit and snippets, their offline lint, and install/uninstall into a temp root."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import BUS_MAX_SILENCE_S, COMMITTER_MAX_SILENCE_S
from gateway.config.load import load_floor, read_command_key
from gateway.daemon import EX_CONFIG, STORE_MAX_SILENCE_S, check
from tests.conftest import FLOORS
from tests.test_daemon import NotifySocket

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "floorgate.service"
LINT = REPO / "scripts" / "lint-systemd"
INSTALL = REPO / "scripts" / "install"
UNINSTALL = REPO / "scripts" / "uninstall"
EXAMPLE = REPO / "config" / "floors" / "example.toml"

# MemoryDenyWriteExecute= without systemd: Linux >= 6.3 has the same rule as a process
# flag, prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), kept across fork and execve.
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""
EX_UNSUPPORTED = 77

needs_systemd_tools = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("systemd-sysusers") is None,
    reason="systemd-analyze and systemd-sysusers are not installed",
)


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a script to completion (bounded), stdout and stderr merged."""
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file: section -> key -> every value in order (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


# -- the unit ---------------------------------------------------------------------------------


def test_unit_has_the_required_settings() -> None:
    s = unit_settings(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        assert len(s.get(key, [])) == 1, f"{key}: {s.get(key)}"
        return s[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == (
        "/opt/floorgate/venv/bin/floorgated --config /etc/floorgate/floor.toml"
    )
    assert one("WatchdogSec") == "30"
    assert one("Restart") == "on-failure"
    assert str(EX_CONFIG) in one("RestartPreventExitStatus").split()
    assert (one("User"), one("Group"), one("SupplementaryGroups")) == (
        "floorgate",
        "floorgate",
        "dialout",
    )
    assert one("StateDirectory") == one("RuntimeDirectory") == "floorgate"
    assert one("ConfigurationDirectory") == "floorgate"
    assert one("RuntimeDirectoryMode") == "0750"
    assert one("UMask") == "0027"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "no",
        "DevicePolicy": "closed",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }.items():
        assert one(key) == value, key
    # Serial ports only, read-write; nothing else is opened up.
    assert sorted(s["DeviceAllow"]) == [
        f"char-{name} rw" for name in ("ttyACM", "ttyAMA", "ttyS", "ttyUSB")
    ]
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert s["SystemCallFilter"][0] == "@system-service"
    assert "IPAddressDeny" not in s  # the broker may be anywhere on the hotel network


def test_unit_documents_the_daemons_watchdog_tie() -> None:
    # The unit's comment states the daemon's silence bound and the worst case it gives:
    # they must not drift from the code.
    text = " ".join(UNIT.read_text().replace("#", " ").split())
    watchdog_s = float(unit_settings(UNIT.read_text())["Service"]["WatchdogSec"][0])
    assert f"a bus owner {BUS_MAX_SILENCE_S:g} s" in text
    assert f"the committer {COMMITTER_MAX_SILENCE_S:g} s" in text
    assert f"the store's liveness loop {STORE_MAX_SILENCE_S:g} s" in text
    assert f"within {watchdog_s:g} s of its last ping" in text
    assert f"within {watchdog_s:g} s of its limit" in text


@needs_systemd_tools
def test_sysusers_creates_the_user_groups_and_serial_membership(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    with (SYSTEMD / "floorgate.sysusers").open() as snippet:
        subprocess.run(
            ["systemd-sysusers", f"--root={tmp_path}", "-"],
            stdin=snippet,
            capture_output=True,
            timeout=30,
            check=True,
        )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    groups = {
        line.split(":")[0]: line.split(":")[3]
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    }
    assert re.search(r"^floorgate:x:\d+:\d+:.*:/var/lib/floorgate:.*nologin$", passwd, re.M)
    assert "floorgate" in groups
    assert "floorgate-admin" in groups
    assert groups["dialout"].split(",") == ["floorgate"]


# -- the lint -------------------------------------------------------------------------------


@needs_systemd_tools
def test_lint_systemd_passes_with_exposure_at_most_3() -> None:
    result = run(LINT)
    assert result.returncode == 0, result.stdout + result.stderr
    for what in ("verify floorgate.service", "sysusers", "tmpfiles"):
        assert re.search(rf"^ok: .*{what}", result.stdout, re.M), result.stdout
    score = re.search(r"^ok: exposure ([0-9.]+) <= 3\.0$", result.stdout, re.M)
    assert score is not None, result.stdout
    assert float(score.group(1)) <= 3.0


@needs_systemd_tools
def test_lint_fails_on_a_value_verify_only_warns_about(tmp_path: Path) -> None:
    # systemd-analyze verify exits 0 on "Failed to parse ..., ignoring": the lint must not.
    broken = tmp_path / "floorgate.service"
    broken.write_text(UNIT.read_text().replace("WatchdogSec=30", "WatchdogSec=thirty"))
    result = run(LINT, "--unit", broken)
    assert result.returncode == 1
    assert "FAIL: systemd-analyze verify" in result.stdout
    assert "Failed to parse" in result.stdout


@needs_systemd_tools
def test_lint_fails_on_weak_hardening(tmp_path: Path) -> None:
    weak = tmp_path / "floorgate.service"
    hardening = re.compile(r"^(Protect|Private|Restrict|SystemCall|Capability|NoNew|Memory)")
    weak.write_text(
        "".join(line for line in UNIT.read_text().splitlines(True) if not hardening.match(line))
    )
    result = run(LINT, "--unit", weak)
    assert result.returncode == 1
    assert re.search(r"^ok: systemd-analyze verify", result.stdout, re.M)
    assert re.search(r"^FAIL: exposure [0-9.]+ is above 3\.0$", result.stdout, re.M)


@needs_systemd_tools
@pytest.mark.parametrize(
    ("option", "name", "line", "complaint"),
    [
        ("--sysusers", "floorgate.sysusers", "u bad user\n", "Failed to parse UID"),
        ("--tmpfiles", "floorgate.tmpfiles", "d /x 0750 nobody-here floorgate -\n", "nobody-here"),
    ],
)
def test_lint_fails_on_a_bad_snippet(
    tmp_path: Path, option: str, name: str, line: str, complaint: str
) -> None:
    bad = tmp_path / name
    bad.write_text((SYSTEMD / name).read_text() + line)
    result = run(LINT, option, bad)
    assert result.returncode == 1
    assert "FAIL: systemd-" in result.stdout
    assert complaint in result.stdout


# -- install and uninstall --------------------------------------------------------------------


def relative_files(root: Path) -> set[str]:
    """Every file (not directory) under root, as a path relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def mode(path: Path) -> int:
    """The permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_root_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run(INSTALL, "--root", root, "--no-venv")
    assert result.returncode == 0, result.stdout + result.stderr
    docs = {f"opt/floorgate/docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    docs.add("opt/floorgate/docs/asyncapi.json")
    assert relative_files(root) == {
        "etc/systemd/system/floorgate.service",
        "etc/sysusers.d/floorgate.conf",
        "etc/tmpfiles.d/floorgate.conf",
        "etc/floorgate/floor.toml",
        "etc/floorgate/command.key",
        *docs,
    }
    assert (root / "etc/systemd/system/floorgate.service").read_bytes() == UNIT.read_bytes()
    sysusers = root / "etc/sysusers.d/floorgate.conf"
    assert sysusers.read_bytes() == (SYSTEMD / "floorgate.sysusers").read_bytes()
    tmpfiles = root / "etc/tmpfiles.d/floorgate.conf"
    assert tmpfiles.read_bytes() == (SYSTEMD / "floorgate.tmpfiles").read_bytes()
    floor = root / "etc/floorgate/floor.toml"
    key = root / "etc/floorgate/command.key"
    assert floor.read_bytes() == EXAMPLE.read_bytes()
    assert mode(floor) == mode(key) == 0o640
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())
    assert len(read_command_key(key)) == 32

    # Again (an upgrade): the floor file and the key are never overwritten.
    floor.write_text(floor.read_text() + "# edited for this floor\n")
    edited, old_key = floor.read_bytes(), key.read_bytes()
    result = run(INSTALL, "--root", root, "--no-venv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept the existing" in result.stdout
    assert (floor.read_bytes(), key.read_bytes()) == (edited, old_key)

    state = root / "var/lib/floorgate/floorgate.db"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"events")
    result = run(UNINSTALL, "--root", root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert relative_files(root) == {
        "etc/floorgate/floor.toml",
        "etc/floorgate/command.key",
        "var/lib/floorgate/floorgate.db",
    }
    assert not (root / "opt/floorgate").exists()

    result = run(UNINSTALL, "--root", root, "--purge")
    assert result.returncode == 0, result.stdout + result.stderr
    assert relative_files(root) == set()
    assert not (root / "etc/floorgate").exists()
    assert not (root / "var/lib/floorgate").exists()


def test_install_keeps_a_key_that_exists(tmp_path: Path) -> None:
    root = tmp_path / "root"
    key = root / "etc/floorgate/command.key"
    key.parent.mkdir(parents=True)
    key.write_text("00" * 32 + "\n")
    result = run(INSTALL, "--root", root, "--no-venv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert key.read_text() == "00" * 32 + "\n"
    assert (root / "etc/floorgate/floor.toml").is_file()


def test_install_enable_refuses_without_systemd_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run(INSTALL, "--root", root, "--no-venv", "--enable")
    assert result.returncode == 1
    assert "--enable needs systemd" in result.stderr
    assert not root.exists()


# -- the example floor file ---------------------------------------------------------------------


def test_example_floor_passes_check_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "command.key"
    key.write_text("ab" * 32 + "\n")
    text = EXAMPLE.read_text()
    assert '"/etc/floorgate/command.key"' in text
    floor = tmp_path / "floor.toml"
    floor.write_text(text.replace("/etc/floorgate/command.key", str(key)))
    assert check(floor) == 0
    assert capsys.readouterr().out.startswith("ok: floor main-12: 3 rooms")
    config, warnings = load_floor(floor)
    assert warnings == []
    assert config.gateway.state_dir == Path("/var/lib/floorgate")
    assert config.gateway.socket == Path("/run/floorgate/floorctl.sock")
    assert {b.kind for b in config.buses} == {"modbus-rtu", "callpanel"}


def test_example_floor_without_its_key_is_refused(tmp_path: Path) -> None:
    floor = tmp_path / "floor.toml"
    floor.write_text(EXAMPLE.read_text().replace("/etc/floorgate/", f"{tmp_path}/absent/"))
    assert check(floor) == EX_CONFIG


# -- MemoryDenyWriteExecute=yes: CPython and our dependencies run under it ----------------------


def under_mdwe(*argv: str) -> list[str]:
    """The command line that runs ``argv`` with write-or-execute memory enforced."""
    return [sys.executable, "-c", MDWE_EXEC, *argv]


def skip_unless_mdwe() -> None:
    """Skip the test on kernels without PR_SET_MDWE (before Linux 6.3)."""
    probe = subprocess.run(
        under_mdwe(sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode == EX_UNSUPPORTED:
        pytest.skip("this kernel has no PR_SET_MDWE")
    # The rule is really on: a writable and executable mapping is refused.
    assert probe.returncode == 1
    assert "PermissionError" in probe.stderr


def test_dependencies_work_without_writable_executable_memory(run_dir: Path) -> None:
    skip_unless_mdwe()
    script = f"""
import asyncio, sqlite3, ssl
import aiomqtt, pydantic_core, pymodbus.client, serial
from gateway.config.load import load_floor
from pathlib import Path
ssl.create_default_context().load_default_certs()
conn = sqlite3.connect(":memory:")
conn.execute("CREATE TABLE t (x)")
config, _ = load_floor(Path({str(FLOORS / "demo.toml")!r}))
asyncio.run(asyncio.sleep(0))
print("ok", config.gateway.id)
"""
    result = subprocess.run(
        under_mdwe(sys.executable, "-c", script),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok demo-12"


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A stand-in for systemd's NOTIFY_SOCKET."""
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


@pytest.mark.integration
def test_daemon_runs_without_writable_executable_memory(
    run_dir: Path, notify: NotifySocket
) -> None:
    skip_unless_mdwe()
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen(
        under_mdwe(sys.executable, "-m", "gateway.daemon", "--config", str(FLOORS / "demo.toml")),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        notify.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:  # only the process this test started, by its PID
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert '"event": "gateway_started"' in out
