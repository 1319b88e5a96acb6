#!/usr/bin/env bash
# Install everything the tests need on Debian/Ubuntu, then run every layer of the suite:
# unit, real validators (tools), network-namespace lab (lab) and qemu boots (vm).
# Quick local run without root layers:  .venv/bin/python -m pytest -m "not lab and not vm"
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# Debian packages: validators (cloud-init, nft, shellcheck, packer, wg), the lab (wireguard-go,
# iproute2, ncat, socat), ISO reading (xorriso), the VM test (qemu, debootstrap, vde2), `wgkube graph`
# (graphviz: dot), reading QR codes back (zbar-tools: zbarimg) and the local API endpoint
# (haproxy: its config checked, and run for real in the lab).
APT_PACKAGES=(
    python3 python3-venv python3-pip openssl ca-certificates
    cloud-init nftables shellcheck packer wireguard-tools wireguard-go xorriso
    iproute2 iputils-ping ncat socat util-linux kmod procps
    qemu-system-x86 qemu-utils debootstrap vde2
    graphviz zbar-tools haproxy
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# kubectl (tests/test_addons.py compares the dockerconfigjson with kubectl's own): Debian ships
# it as kubernetes-client; skipped when some kubectl is already installed (another package
# owning /usr/bin/kubectl, e.g. Google Cloud SDK's, would conflict with it).
if ! command -v kubectl >/dev/null 2>&1 && ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
    missing+=(kubernetes-client)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The project and its test dependencies in a virtual environment of its own.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,age]'

exec .venv/bin/python -m pytest -p no:cacheprovider --durations=15 "$@"
