# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts
# Shared settings and helpers for up.sh / down.sh (sourced, not executed).
# Everything of one lab cluster lives under $LAB, so several checkouts can
# share a machine as long as they use different dirs and port bases.

LAB="${HPCFT_SLURMLAB_DIR:-/tmp/hpcft-slurmlab}"
# Slurm config files cannot quote paths, so the lab dir itself may not
# contain whitespace (the repository path may; it never reaches a config).
case "$LAB" in
    /*) ;;
    *) LAB="$PWD/$LAB" ;;
esac
if [[ "$LAB" =~ [[:space:]] ]]; then
    echo "slurmlab: HPCFT_SLURMLAB_DIR must not contain whitespace: '$LAB'" >&2
    exit 2
fi

PORT_BASE="${HPCFT_SLURMLAB_PORT_BASE:-17000}"
NODES=(node1 node2 node3 node4)        # slurmd ports: PORT_BASE+1..4
CTLD_PORT=$((PORT_BASE + 10))
DBD_PORT=$((PORT_BASE + 11))
MYSQL_PORT=$((PORT_BASE + 12))

CONF="$LAB/etc/slurm.conf"
MUNGE_SOCK="$LAB/munge/munged.sock"
HOSTS_MARKER="# hpcft-slurmlab $LAB"
LINK_RECORD="$LAB/etc-slurm-link.created"   # exists iff we made /etc/slurm/slurm.conf
# Daemon names in stop order; the pid file is $LAB/run/<name>.pid and the
# binary (checked against /proc/<pid>/comm) is the name up to the first '-'.
DAEMONS=(slurmd-node1 slurmd-node2 slurmd-node3 slurmd-node4 slurmctld slurmdbd mariadbd munged)

export SLURM_CONF="$CONF"

log() { echo "slurmlab: $*"; }

# Print the PID of daemon $1 if its pid file names a live process running the
# expected binary (guards against stale pid files and recycled PIDs).
daemon_pid() {
    local name="$1" pidfile="$LAB/run/$1.pid" pid comm
    [ -r "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [ "$comm" = "${name%%-*}" ] || return 1
    # A killed daemon may linger as a zombie until init reaps it.
    case "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" in Z | X | "") return 1 ;; esac
    echo "$pid"
}

# Count how many of the lab daemons are running.
count_running() {
    local n=0 d
    for d in "${DAEMONS[@]}"; do
        if daemon_pid "$d" >/dev/null; then n=$((n + 1)); fi
    done
    echo "$n"
}

# SIGTERM the given daemons (by pid file), SIGKILL any still alive after 10 s.
stop() {
    local d pid pids=()
    for d in "$@"; do
        if pid="$(daemon_pid "$d")"; then pids+=("$pid"); fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 10)) alive
    while [ "$SECONDS" -lt "$deadline" ]; do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" -eq 1 ] || return 0
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "SIGKILL $pid ($*)"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
# Stop all lab daemons in dependency order (slurm daemons while slurmdbd can
# still take slurmctld's final accounting, MariaDB and munged last), in three
# parallel groups since each daemon takes 1-3 s to exit. Running jobs'
# slurmstepd are left alone: a restarted slurmd reattaches to them.
stop_daemons() {
    stop slurmd-node1 slurmd-node2 slurmd-node3 slurmd-node4 slurmctld
    stop slurmdbd
    stop mariadbd munged
}
