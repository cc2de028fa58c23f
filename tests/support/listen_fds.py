"""Stand in for systemd's socket activation (this machine has no systemd).

Usage: listen_fds.py FD PROGRAM [ARGS...]

Runs PROGRAM with the listening socket FD (inherited from the caller, which
holds it as systemd would) as file descriptor 3, and LISTEN_FDS=1 and
LISTEN_PID set to PROGRAM's process ID, as sd_listen_fds(3) expects. exec
keeps the process ID, so the variable is right for PROGRAM (and for nsenter
in between, which execs too).
"""

import os
import sys


def main() -> None:
    fd = int(sys.argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.set_inheritable(3, True)
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="pynet.socket")
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
