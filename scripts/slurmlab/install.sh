#!/usr/bin/env bash
# Install the Debian packages the lab cluster needs (Slurm, munge, slurmdbd,
# MariaDB). Installing starts no services here (no systemd); up.sh runs them.
set -euo pipefail

PKGS=(slurm-wlm munge slurmdbd mariadb-server)

# Fast path: nothing to do when every package is already installed.
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "slurmlab: packages already installed: ${PKGS[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "slurmlab: install.sh must run as root (missing: ${missing[*]})" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Only refresh package lists when they are absent (fresh container image);
# an install failure below is retried once after an update, for stale lists.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -print -quit 2>/dev/null)" ]; then
    apt-get update
fi
install() { apt-get install -y --no-install-recommends "${missing[@]}"; }
if ! install; then
    apt-get update
    install
fi
echo "slurmlab: installed ${missing[*]}"
