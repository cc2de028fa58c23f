"""Container network namespaces, as Docker leaves them under its exec root."""

from __future__ import annotations

import os

# Where Docker mounts them: its default exec root (/var/run is /run on Debian).
DEFAULT_NETNS_DIRS = ("/var/run/docker/netns", "/run/docker/netns")


def is_alive(path: str) -> bool:
    """Whether a SandboxKey still names a network namespace.

    Docker bind-mounts each sandbox's namespace on an empty file; when the
    sandbox is destroyed the mount goes (and usually the file). A file that
    is no mount point is a dead sandbox.
    """
    try:
        return os.path.ismount(path)
    except OSError:
        return False
