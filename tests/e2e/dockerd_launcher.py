"""Run inside `unshare -m`: give dockerd a private /run/docker/plugins, then exec it.

Usage: dockerd_launcher.py PLUGIN_SOCKET PLUGIN_NAME DOCKERD_ARGV...

The tmpfs hides the machine's own plugin sockets from this dockerd, and the
link makes pynet's socket (which lives in the test's work directory) known
under PLUGIN_NAME, as a legacy plugin.
"""

import os
import subprocess
import sys

PLUGINS_DIR = "/run/docker/plugins"


def main() -> None:
    socket_path, name, *dockerd = sys.argv[1:]
    os.makedirs(PLUGINS_DIR, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", PLUGINS_DIR], check=True)
    os.symlink(socket_path, os.path.join(PLUGINS_DIR, f"{name}.sock"))
    os.execvp(dockerd[0], dockerd)


if __name__ == "__main__":
    main()
