"""Hold a test host's mount namespace: run inside `unshare -m`.

Usage: mount_namespace.py PLUGIN_SOCKET PLUGIN_NAME

Mounts a tmpfs over /run/docker/plugins (hiding the machine's own plugin
sockets), links pynet's socket (in the test's work directory) there as a
legacy plugin named PLUGIN_NAME (unless that is empty: a host for managed
plugins), then sleeps for ever. Mounts here are made shared, as systemd
makes them on a real host, so that a managed plugin's rslave mount of
Docker's exec root sees the namespaces dockerd mounts later (`unshare -m`
made them private: nothing propagates back to the machine). dockerd and pynet
both join this namespace with nsenter, so, as on a real host, pynet sees
the container namespaces dockerd mounts, and a restarted dockerd finds
the same plugin directory.
"""

import os
import subprocess
import sys

PLUGINS_DIR = "/run/docker/plugins"


def main() -> None:
    socket_path, name = sys.argv[1:]
    os.makedirs(PLUGINS_DIR, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", PLUGINS_DIR], check=True)
    subprocess.run(["mount", "--make-rshared", "/"], check=True)
    if name:
        os.symlink(socket_path, os.path.join(PLUGINS_DIR, f"{name}.sock"))
    print("ready", flush=True)
    os.execvp("sleep", ["sleep", "infinity"])


if __name__ == "__main__":
    main()
