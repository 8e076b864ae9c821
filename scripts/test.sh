#!/usr/bin/env bash
# The whole test suite, from nothing: environment, local Slurm cluster, tests, tear-down.
#   bash scripts/test.sh [pytest args]
# The cluster is torn down on exit only if this script started it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${HPCFT_VENV:-$REPO/.venv}"

step() { echo "== $* (at $((SECONDS / 60))m$((SECONDS % 60))s)"; }
step "environment (scripts/setup.sh, with vLLM for the deploy stage)"
HPCFT_SETUP_SERVE=1 bash scripts/setup.sh
step "Slurm packages (scripts/slurmlab/install.sh)"
bash scripts/slurmlab/install.sh
LAB="${HPCFT_SLURMLAB_DIR:-/tmp/hpcft-slurmlab}"
started_cluster=0
if [ ! -f "$LAB/etc/slurm.conf" ] || ! SLURM_CONF="$LAB/etc/slurm.conf" timeout 10 sinfo >/dev/null 2>&1; then
    step "starting the local 4-node Slurm cluster (scripts/slurmlab/up.sh)"
    bash scripts/slurmlab/up.sh
    started_cluster=1
fi
# shellcheck source=/dev/null
. "$LAB/env.sh"
cleanup() { [ "$started_cluster" = 1 ] && bash scripts/slurmlab/down.sh || true; }
trap cleanup EXIT

step "lint and types"
"$VENV/bin/ruff" check hpcft hydra_plugins scripts tests benchmarks
"$VENV/bin/ruff" format --check hpcft hydra_plugins scripts tests benchmarks
"$VENV/bin/mypy"
step "tests (integration tests take minutes each; --durations lists the slowest)"
"$VENV/bin/python" -m pytest "$@"
