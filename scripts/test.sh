#!/usr/bin/env bash
# The whole test suite, from nothing: environment, local Slurm cluster, tests, tear-down.
#   bash scripts/test.sh [pytest args]
# The cluster is torn down on exit only if this script started it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${HPCFT_VENV:-$REPO/.venv}"

bash scripts/setup.sh
bash scripts/slurmlab/install.sh
LAB="${HPCFT_SLURMLAB_DIR:-/tmp/hpcft-slurmlab}"
started_cluster=0
if ! SLURM_CONF="$LAB/etc/slurm.conf" sinfo >/dev/null 2>&1; then
    bash scripts/slurmlab/up.sh
    started_cluster=1
fi
# shellcheck source=/dev/null
. "$LAB/env.sh"
cleanup() { [ "$started_cluster" = 1 ] && bash scripts/slurmlab/down.sh || true; }
trap cleanup EXIT

echo "== lint and types"
"$VENV/bin/ruff" check hpcft hydra_plugins scripts tests benchmarks
"$VENV/bin/ruff" format --check hpcft hydra_plugins scripts tests benchmarks
"$VENV/bin/mypy"
echo "== tests"
"$VENV/bin/python" -m pytest "$@"
