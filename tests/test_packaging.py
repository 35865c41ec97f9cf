"""Packaging: what pip installs is every package of the source tree.

An editable install (the tests' own) finds every package whatever pyproject.toml lists; a
real install (scripts/install, the Debian package) installs only the listed ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_of_the_source_tree_is_installed() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("gateway", "drivers")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found - listed == set()
    assert {"floorsim", "floorgate_config"} <= listed
