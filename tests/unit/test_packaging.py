"""The plugin image installs packaging/requirements.txt only, from a wheelhouse:
every dependency pyproject.toml names must be pinned there, or the plugin build
fails long after the change that added it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_dependency_is_pinned_for_the_plugin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {_name(line): line for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert all("==" in line for line in pinned.values())
    assert sorted(_name(d) for d in deps if _name(d) not in pinned) == []
