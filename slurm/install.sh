#!/usr/bin/env bash
# Install the Debian packages for the single-node test cluster (munge, Slurm, slurmdbd on MariaDB).
# Idempotent: does nothing when every package is already installed. Needs root and apt (Debian 12).
# Services are not started by the packages (a temporary policy-rc.d denies it); slurm/start.sh
# starts everything itself under one state directory.
set -euo pipefail

PACKAGES=(munge slurm-wlm slurm-client mariadb-server slurmdbd)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm/install.sh: all packages present (${PACKAGES[*]})"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm/install.sh: need root to install ${missing[*]} (run with sudo)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "slurm/install.sh: apt-get not found; install ${missing[*]} with this system's package manager" >&2
    exit 1
fi

# Keep package scripts from starting daemons with their default configuration.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [[ $made_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "slurm/install.sh: installed ${missing[*]} in $(($(date +%s) - start)) s"
