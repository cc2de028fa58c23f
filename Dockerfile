# pynet's managed-plugin root filesystem. Build it with scripts/build-plugin,
# which fills build/wheelhouse, runs this, and hands the result to
# `docker plugin create` (README: "As a managed Docker plugin").
#
# Everything is installed from build/wheelhouse, never from an index, so
# `docker build --network none` works given a base image with Python and
# iptables (scripts/build-plugin --offline makes one with debootstrap).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# The iptables tools pynet drives. The local base has them; a public Python image needs the network here.
RUN command -v iptables-restore >/dev/null \
    || { apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/*; }
COPY build/wheelhouse /wheels
# A venv without pip; pip runs from its wheel, so it never lands in the plugin.
RUN set -e; python3 -m venv --without-pip /opt/pynet; set -- /wheels/pip-*.whl; \
    /opt/pynet/bin/python "$1/pip" install --no-index --find-links /wheels --no-cache-dir \
        --disable-pip-version-check --no-warn-script-location -r /wheels/requirements.txt pynet
COPY packaging/collect_rootfs.py /collect_rootfs.py
# Only what runs: the venv, the interpreter and its standard library (less the parts
# nothing imports), the iptables tools and modules, /sbin/ldconfig (ctypes.util.find_library),
# and every library these load.
RUN set -e; \
    stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'); \
    tools=; for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
        iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore \
        iptables-legacy iptables-legacy-save iptables-legacy-restore ip6tables-legacy ip6tables-legacy-save \
        ip6tables-legacy-restore; do p=$(command -v "$t") && tools="$tools $p" || true; done; \
    extra=; for p in /sbin/ldconfig /usr/lib/*/xtables /usr/lib/xtables /etc/ld.so.cache /etc/protocols /etc/services \
        $(ldconfig -p | awk '/libgcc_s\.so\.1 /{print $NF; exit}'); do [ -e "$p" ] && extra="$extra $p"; done; \
    python3 /collect_rootfs.py /rootfs /opt/pynet "$(readlink -f /opt/pynet/bin/python)" "$stdlib" $tools $extra \
        --exclude "$stdlib"/site-packages "$stdlib"/dist-packages "$stdlib"/config-* "$stdlib"/idlelib \
        "$stdlib"/tkinter "$stdlib"/turtledemo "$stdlib"/ensurepip "$stdlib"/lib2to3 "$stdlib"/test \
        "$stdlib"/pydoc_data; \
    mkdir -p -m 1777 /rootfs/tmp; mkdir -p /rootfs/etc /rootfs/run /rootfs/var/lib/pynet; \
    echo 'root:x:0:0:root:/root:/nonexistent' > /rootfs/etc/passwd; echo 'root:x:0:' > /rootfs/etc/group

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/opt/pynet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Checked while it is cheap: every module pynet imports loads, and the iptables tools run.
# pyroute2 enters namespaces with libc's setns, found as ctypes.util.find_library('c') finds it.
RUN ["/opt/pynet/bin/python", "-c", "import driver.app, driver.cli, ipam.service, sqlite3, ssl, ctypes, ctypes.util; ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True).setns"]
RUN ["/opt/pynet/bin/pynet", "--version"]
RUN ["iptables-save", "--version"]
RUN ["ip6tables-restore", "--version"]
RUN ["iptables-nft-save", "--version"]
RUN ["iptables-legacy-save", "--version"]
ENTRYPOINT ["/opt/pynet/bin/pynet", "serve"]
