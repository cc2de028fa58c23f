#!/bin/bash
# Install everything the test suite needs on Debian 12 or 13, then run the
# whole suite (unit, kernel and end-to-end tiers). Run as root from a clone:
#     ./scripts/test.sh [pytest arguments]
# The end-to-end tier starts its own private dockerd in a network namespace;
# no service is started on the machine, and nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: run as root (the kernel and end-to-end tiers need it)" >&2
    exit 1
fi

packages=(docker.io docker-compose busybox-static iptables iproute2 iputils-ping curl util-linux procps python3 python3-venv git openssl iperf3 debootstrap etcd-server etcd-client)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    # Keep apt from starting the machine's own dockerd: the tests run a private one.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod 755 "$guard"
        trap 'rm -f "$guard"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'

# Lint and types first: what they check fails the run (config in pyproject.toml).
.venv/bin/ruff check --no-cache .
.venv/bin/mypy --cache-dir /dev/null

export PYNET_E2E=required  # the end-to-end tier fails, never skips, when it cannot run
exec .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
