"""Hold a mount namespace whose root is another Debian release's root filesystem,
for a second Docker engine: run inside `unshare -m --propagation unchanged`,
itself inside a test host's mount namespace (mount_namespace.py's).

Usage: engine_root.py ROOT WORKDIR

pivot_root, not chroot: under a chroot `docker exec` lands in the wrong root
(runc's setns into a container finds the root where the chroot was).

What is shared with the test host, and nothing else:
- /run/docker/plugins (the host's tmpfs: plugin sockets both ways);
- WORKDIR (the host's data, exec root and sockets, at the same path), whose
  `exec` must already be a mount of its own with shared propagation: the
  container namespaces dockerd mounts under exec/netns then show up on the
  host, where pynet opens them.
Every other mount is made a slave first (one by one, so that the exec root
stays shared), so nothing mounted here (the root's own /proc, /sys, /dev and
/run) reaches the host, wherever ROOT lies (/tmp may be a mount of its own),
and pivot_root accepts it (it refuses a shared parent); the old root is made
a slave before it is unmounted, so unmounting it does not unmount the
host's copies.
Prints "ready" and sleeps for ever; dockerd and containerd join with nsenter.
"""

import os
import subprocess
import sys


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        return [line.split()[4].encode().decode("unicode_escape") for line in f]


def main() -> None:
    root, workdir = sys.argv[1:]
    shared = os.path.join(workdir, "exec")
    for point in mount_points():
        if point != shared:
            mount("--make-slave", point)
    mount("--rbind", root, root)  # pivot_root needs the new root to be a mount point
    for fs in ("proc", "sys", "dev"):
        mount("--rbind", f"/{fs}", f"{root}/{fs}")
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", f"{root}/run")
    os.makedirs(f"{root}/run/docker/plugins")
    mount("--bind", "/run/docker/plugins", f"{root}/run/docker/plugins")
    inner = root + workdir
    os.makedirs(inner, exist_ok=True)
    mount("--bind", workdir, inner)
    mount("--make-rslave", inner)
    mount("--bind", f"{workdir}/exec", f"{inner}/exec")  # shared with the host: container namespaces
    os.makedirs(f"{root}/.oldroot", exist_ok=True)
    os.chdir(root)
    subprocess.run(["pivot_root", ".", ".oldroot"], check=True)
    os.chdir("/")
    # From here on the binaries are the new root's.
    subprocess.run(["mount", "--make-rslave", "/.oldroot"], check=True)
    subprocess.run(["umount", "--lazy", "/.oldroot"], check=True)
    os.rmdir("/.oldroot")
    print("ready", flush=True)
    os.execv("/bin/sleep", ["sleep", "infinity"])


if __name__ == "__main__":
    main()
