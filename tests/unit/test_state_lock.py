"""One pynet per state directory and per network namespace (an upgrade, or a
plugin beside the service, must never run two on one host)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from driver.app import claim_network_namespace, lock_state_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_pynet_on_the_same_state_directory_refuses_to_start(tmp_path):
    state = tmp_path / "state"
    fd = lock_state_dir(str(state))
    try:
        with pytest.raises(SystemExit, match="is in use by another pynet"):
            lock_state_dir(str(state))
        # As root, in a network namespace of its own, should the lock ever fail to stop it.
        isolate = ["unshare", "--net"] if os.geteuid() == 0 else []
        proc = subprocess.run([*isolate, sys.executable, "-m", "driver", "serve", "--state-dir", str(state),
                               "--socket", str(tmp_path / "pynet.sock")],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert f"state directory {state} is in use by another pynet" in proc.stderr
        assert not (tmp_path / "pynet.sock").exists()
    finally:
        os.close(fd)
    os.close(lock_state_dir(str(state)))  # free again once the holder goes


def test_a_second_pynet_in_the_same_network_namespace_refuses_to_start():
    name = f"pynet-test-{secrets.token_hex(4)}"  # not the real name: a pynet may run here
    claim_network_namespace(name)
    with pytest.raises(SystemExit, match="another pynet is running on this host"):
        claim_network_namespace(name)
