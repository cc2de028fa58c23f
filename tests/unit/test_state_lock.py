"""One pynet per state directory (an upgrade must not run two on one state)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driver.app import lock_state_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_pynet_on_the_same_state_directory_refuses_to_start(tmp_path):
    state = tmp_path / "state"
    fd = lock_state_dir(str(state))
    try:
        with pytest.raises(SystemExit, match="is in use by another pynet"):
            lock_state_dir(str(state))
        proc = subprocess.run([sys.executable, "-m", "driver", "serve", "--state-dir", str(state),
                               "--socket", str(tmp_path / "pynet.sock")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert f"state directory {state} is in use by another pynet" in proc.stderr
        assert not (tmp_path / "pynet.sock").exists()
    finally:
        os.close(fd)
    os.close(lock_state_dir(str(state)))  # free again once the holder goes
