#!/usr/bin/env bash
# The whole test suite, from nothing: environment, local Slurm cluster, tests, tear-down.
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh --quick    # unit tests + a few canary integration tests (inner loop)
#   bash scripts/test.sh [--quick] -- [pytest args]   # e.g. -- -k sweep
# The cluster is torn down on exit only if this script started it. Ends with a table of
# where the time went (set-up, lint, the unit tests and types with the integration tests
# begun beside them, the rest of the integration tests; how busy the CPU was in each) and
# the 10 slowest tests.
# Env: HPCFT_TEST_WORKERS (integration tests side by side; default 4).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${HPCFT_VENV:-$REPO/.venv}"
quick=0
if [ "${1:-}" = --quick ]; then quick=1; shift; fi
[ "${1:-}" = -- ] && shift
WORKERS="${HPCFT_TEST_WORKERS:-4}"
REPORTS="$(mktemp -d /tmp/hpcft-test-reports.XXXXXX)"
PHASES="$REPORTS/phases.tsv"

# The machine's busy and total CPU ticks so far (/proc/stat; empty where there is none): a
# phase's busy share says whether CPU or waiting set its pace.
cpu_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat 2>/dev/null || true; }
# Where that CPU went, in ticks: this script's finished children (pytest, its workers and
# everything they waited for: CLI runs, sacct polls, servers) and the cluster's daemons (their
# jobs' CPU is read per test from sacct). cat, not awk, reads the /proc files: a process may
# exit between the glob and the read.
DAEMONS='slurmctld|slurmdbd|slurmd|slurmstepd|mariadbd|munged'
own_ticks() {
    awk '{print $16 + $17}' "/proc/$$/stat" 2>/dev/null || true
    # shellcheck disable=SC2002  # see above
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v re="^[(]($DAEMONS)[)]$" \
        '$2 ~ re {t += $14 + $15} END {print t + 0}' || true
}
phase_start=$SECONDS
phase_ticks="$(cpu_ticks)"
phase_own="$(own_ticks)"
step() { echo "== $* (at $((SECONDS / 60))m$((SECONDS % 60))s)"; }
# phase NAME: close the phase that ran since the last call, under NAME, with its busy share.
phase() {
    local now busy=""
    now="$(cpu_ticks)"
    if [ -n "$now" ] && [ -n "$phase_ticks" ]; then
        # shellcheck disable=SC2086  # two numbers each
        busy="$(echo $phase_ticks $now | awk '{d=$4-$2; if (d>0) printf "%d", 100*($3-$1)/d}')"
    fi
    local own spent
    own="$(own_ticks)"
    # shellcheck disable=SC2086  # two numbers each
    spent="$(echo $phase_own $own | awk -v hz="$(getconf CLK_TCK)" \
        'NF == 4 {printf "%.0f\t%.0f", ($3 - $1) / hz, ($4 - $2) / hz}')"
    printf '%s\t%s\t%s\t%s\n' "$1" "$((SECONDS - phase_start))" "$busy" "$spent" >> "$PHASES"
    phase_start=$SECONDS phase_ticks="$now" phase_own="$own"
}

# The venvs are kept between runs, as uv's cache and mypy's are: in a store keyed by what
# installs them (scripts/setup.sh), so a fresh clone re-points their hpcft at itself instead
# of installing again. One run at a time may use the store (another's would test its clone):
# while one holds it, this clone installs venvs of its own, as HPCFT_VENV_STORE= (empty) asks.
if [ -z "${HPCFT_VENV:-}" ]; then
    export HPCFT_VENV_STORE="${HPCFT_VENV_STORE-${HPCFT_HOME:-$HOME/.cache/hpcft}/venvs}"
fi
if [ -n "${HPCFT_VENV_STORE:-}" ]; then
    mkdir -p "$HPCFT_VENV_STORE"
    exec 9> "$HPCFT_VENV_STORE/.in-use"
    if ! flock -n 9; then
        echo "test: another test run holds the venvs kept in $HPCFT_VENV_STORE: this clone installs its own"
        exec 9>&-
        HPCFT_VENV_STORE=""
        for link in .venv .venv-serve; do [ ! -L "$link" ] || rm "$link"; done  # links into the store
    fi
fi
step "environment (scripts/setup.sh, with vLLM for the deploy stage)"
HPCFT_SETUP_SERVE=1 bash scripts/setup.sh
# Their real paths: the jobs run the interpreter the tests run, and DeepSpeed's JIT-built op
# is kept only while its venv's path stays the same.
VENV="$(cd "$VENV" && pwd -P)"
HPCFT_SERVE_VENV="$(cd "${HPCFT_SERVE_VENV:-$REPO/.venv-serve}" && pwd -P)"
export HPCFT_SERVE_VENV
# torch keeps JIT-built ops in one folder per user and rebuilds one whose venv path changed
# (its build file names the venv): a run of another venv between two runs of this one cost
# the next 45 s of CPU. Each venv gets its own, and the jobs (which inherit it) use it.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$VENV/torch_extensions}"
step "Slurm packages (scripts/slurmlab/install.sh)"
bash scripts/slurmlab/install.sh
LAB="${HPCFT_SLURMLAB_DIR:-/tmp/hpcft-slurmlab}"
started_cluster=0
if [ ! -f "$LAB/etc/slurm.conf" ] || ! SLURM_CONF="$LAB/etc/slurm.conf" timeout 10 sinfo >/dev/null 2>&1; then
    step "starting the local 4-node Slurm cluster (scripts/slurmlab/up.sh)"
    bash scripts/slurmlab/up.sh 9>&-  # the daemons outlive this run: not its lock
    started_cluster=1
fi
# shellcheck source=/dev/null
. "$LAB/env.sh"
integration=""  # the integration tests' shell, while it runs beside the unit tests
cleanup() {
    # shellcheck disable=SC2015  # pkill finding nothing is not a failure here
    [ -n "$integration" ] && pkill -TERM -P "$integration" 2>/dev/null && kill "$integration" 2>/dev/null || true
    [ "$started_cluster" = 1 ] && bash scripts/slurmlab/down.sh || true
}
trap cleanup EXIT
# The venvs' packages were compiled when installed; hpcft's own modules (an editable install)
# and pytest's rewritten tests were not. Where PYTHONDONTWRITEBYTECODE is set (this machine's
# environment sets it, and ci-like inherits it) no process kept what it compiled: every CLI
# call, pytest worker and job step compiled hpcft again (0.3 s of a 0.8 s dry run) and every
# worker rewrote the tests (2.5 s).
# Compiled once here, and kept by whichever process compiles something first.
unset PYTHONDONTWRITEBYTECODE
"$VENV/bin/python" -m compileall -q -j 0 hpcft hydra_plugins tests scripts benchmarks > /dev/null
phase "set-up (environment, Slurm)"

step "lint"
"$VENV/bin/ruff" check hpcft hydra_plugins scripts tests benchmarks
"$VENV/bin/ruff" format --check hpcft hydra_plugins scripts tests benchmarks
phase "lint"

PYTEST=("$VENV/bin/python" -m pytest -p no:cacheprovider)
status=0
# The integration tests mostly wait on Slurm, job start-up and servers, the unit tests on
# their subprocesses: run one after the other, neither kept both cores busy. So the
# integration tests start with the unit tests: first the one that kills a node, with the
# cluster to itself, then $WORKERS side by side, each wait a poll with a deadline on the
# state it needs. Their output follows once the unit tests end. A failed lone test does not
# keep the others from running: the suite fails after them.
integration_tests() {
    local lone=0 code=0
    "${PYTEST[@]}" tests/integration -m alone --junitxml="$REPORTS/alone.xml" "$@" || lone=$?
    "${PYTEST[@]}" -n "$WORKERS" --dist loadgroup tests/integration -m "not alone" \
        --junitxml="$REPORTS/integration.xml" "$@" || code=$?
    [ "$lone" = 0 ] || [ "$lone" = 5 ] || code=1  # 5: none selected (-k)
    return "$code"
}
if [ "$quick" = 0 ]; then
    step "integration tests, beside the unit tests (the lone test first, then $WORKERS side by side)"
    integration_tests "$@" > "$REPORTS/integration.txt" 2>&1 &
    integration=$!
fi
step "unit tests (no Slurm; both cores), types (mypy) beside them"
# Its cache beside the models' (kept between runs as the uv cache is): mypy re-checks what
# changed, by content hash, so a fresh clone costs ~1 s of CPU instead of ~43 s.
"$VENV/bin/mypy" --cache-dir "${HPCFT_HOME:-$HOME/.cache/hpcft}/mypy" > "$REPORTS/mypy.txt" 2>&1 &
types=$!
"${PYTEST[@]}" -n 2 --dist loadgroup tests --ignore=tests/integration --junitxml="$REPORTS/unit.xml" "$@" || status=$?
types_status=0
wait "$types" || types_status=$?
echo "== types (mypy)"
cat "$REPORTS/mypy.txt"
[ "$types_status" = 0 ] || exit "$types_status"  # a type error still stops the suite here
if [ "$quick" = 1 ]; then
    phase "unit tests and types"
    step "canary integration tests (--quick)"
    "${PYTEST[@]}" -n 2 tests/integration -m canary --junitxml="$REPORTS/canary.xml" "$@" || status=$?
    phase "integration: canaries"
else
    phase "unit tests, types; integration beside"
    step "integration tests (begun beside the unit tests; their output so far, then as it comes)"
    tail -n +1 -f --pid="$integration" "$REPORTS/integration.txt"
    integration_status=0
    wait "$integration" || integration_status=$?
    integration=""
    [ "$integration_status" = 0 ] || status=1
    phase "integration: the rest of them"
fi
"$VENV/bin/python" scripts/test_timing.py "$PHASES" "$REPORTS"/*.xml
exit "$status"
