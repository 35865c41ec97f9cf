"""A real full filesystem under the daemon's state directory, without touching the host.

The daemon is started through ``unshare`` in a mount namespace of its own (with a user
namespace when not root), where a size-limited tmpfs is mounted over its state
directory; the test reaches that filesystem through ``/proc/PID/root`` to fill it up and
to free it again. Nothing is mounted outside the daemon's namespace, and the mount goes
away with the process. ``unavailable()`` says why this cannot be done here (a test skips).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["FILLER", "fill", "free", "prefix", "unavailable"]

FILLER = "filler.bin"
_CHUNK = b"\0" * 65536


def prefix(state_dir: Path, size: str) -> list[str]:
    """The command that runs the daemon with a ``size`` tmpfs on ``state_dir``."""
    flags = "-m" if os.geteuid() == 0 else "-rm"
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    return ["unshare", flags, "--propagation", "private", "sh", "-c", script, str(state_dir), size]


def unavailable() -> str | None:
    """Why a size-limited tmpfs cannot be mounted in a namespace here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    with tempfile.TemporaryDirectory() as where:
        probe = [*prefix(Path(where), "64k"), "true"]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"mounting a tmpfs in a mount namespace is not permitted: {done.stderr.strip()}"
    return None


def fill(pid: int, state_dir: Path) -> int:
    """Fill the daemon's state filesystem to the last byte; the bytes written."""
    path = _inside(pid, state_dir) / FILLER
    written = 0
    with path.open("ab", buffering=0) as out:
        for chunk in (_CHUNK, b"\0" * 4096, b"\0" * 512, b"\0"):
            while True:
                try:
                    written += out.write(chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def free(pid: int, state_dir: Path) -> None:
    """Give the space back."""
    (_inside(pid, state_dir) / FILLER).unlink(missing_ok=True)


def _inside(pid: int, state_dir: Path) -> Path:
    return Path(f"/proc/{pid}/root") / state_dir.relative_to("/")
