#!/bin/bash
# Install pynet on Debian 12 or 13 and run it as a legacy Docker plugin on
# /run/docker/plugins/pynet.sock, with its state in /var/lib/pynet/pynet.db.
# Run as root from a clone: ./scripts/install.sh
# With systemd, pynet becomes the service pynet.service, socket-activated by
# pynet.socket (both ordered before docker.service): the socket stays open
# while pynet restarts, so no call of Docker's is lost. Without systemd,
# pynet runs in the foreground on a socket of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PYNET_PREFIX:-/opt/pynet}

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

packages=(python3-venv iptables iproute2)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --disable-pip-version-check .
ln -sf "$prefix/venv/bin/pynet" /usr/local/bin/pynet
install -d -m 0700 /var/lib/pynet

if [ -d /run/systemd/system ]; then
    for unit in pynet.socket pynet.service; do
        sed "s|/opt/pynet|$prefix|g" "packaging/$unit" > "/etc/systemd/system/$unit"
    done
    systemctl daemon-reload
    if ! systemctl is-active --quiet pynet.socket; then
        # A pynet from before socket activation removes the socket's path when it
        # stops: stop it before systemd takes the path over.
        systemctl stop pynet.service 2>/dev/null || true
    fi
    systemctl enable pynet.socket pynet.service
    systemctl start pynet.socket
    systemctl restart pynet.service  # an upgrade: the old pynet answers what it accepted, then the new one serves
    systemctl --no-pager status pynet.socket pynet.service | head -n 12
    echo "pynet is running: docker network create -d pynet --ipam-driver pynet ..."
else
    echo "install.sh: no systemd here; running pynet in the foreground (Ctrl-C stops it)"
    exec "$prefix/venv/bin/pynet" serve
fi
