#!/usr/bin/env bash
# Tear down the lab cluster started by up.sh: cancel jobs, stop daemons by
# their pid files (never by process name), undo /etc/hosts and /etc/slurm.
# Usage: down.sh [--keep | --purge]    (jobs are always cancelled)
#   default  remove the lab state (accounting DB, slurmctld state, munge key,
#            configs, env.sh) but keep $LAB/log; next up.sh starts fresh.
#   --keep   keep all of $LAB; next up.sh reuses the DB and munge key.
#   --purge  remove the whole lab dir, logs included.
# Safe to run repeatedly and when nothing is up.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

MODE=clean
case "${1:-}" in
    "") ;;
    --keep) MODE=keep ;;
    --purge) MODE=purge ;;
    *) echo "usage: $0 [--keep|--purge]" >&2; exit 2 ;;
esac

# 1. Cancel all jobs while slurmctld can still do it cleanly.
if daemon_pid slurmctld >/dev/null && scontrol ping >/dev/null 2>&1; then
    squeue -h -o %A | sort -u | xargs -r scancel || true
    deadline=$((SECONDS + 30))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 1
    done
    [ -z "$(squeue -h -o %A 2>/dev/null)" ] || log "warning: queue not empty after 30s"
fi

# 2. Stop the daemons (slurmd first, munged last).
stop_daemons

# 3. Leftover slurmstepd of this cluster (e.g. after a slurmd crash) and the
#    job processes under them. slurmd passes its environment, which has
#    SLURM_CONF=<this lab's conf>, on to every slurmstepd it starts.
descendants() {
    local c
    for c in $(pgrep -P "$1" || true); do
        echo "$c"
        descendants "$c"
    done
}
for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    # Braces so that errors of processes vanishing meanwhile are silenced too.
    cmd="$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" || continue
    case "$cmd" in slurmstepd*) ;; *) continue ;; esac
    if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then
        victims="$pid $(descendants "$pid" | tr '\n' ' ')"
        log "killing leftover slurmstepd $pid and its children: $victims"
        # shellcheck disable=SC2086  # word splitting of the PID list is intended
        kill -KILL $victims 2>/dev/null || true
    fi
done

# 4. Undo host changes (in place: /etc/hosts may be a bind mount).
if grep -qF "$HOSTS_MARKER" /etc/hosts 2>/dev/null; then
    hosts="$(grep -vF "$HOSTS_MARKER" /etc/hosts || true)"
    printf '%s\n' "$hosts" >/etc/hosts
fi
if [ -e "$LINK_RECORD" ]; then
    if [ "$(readlink /etc/slurm/slurm.conf || true)" = "$CONF" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
    rm -f "$LINK_RECORD"
fi

# 5. State.
case "$MODE" in
    keep) ;;
    clean)
        if [ -d "$LAB" ]; then
            find "$LAB" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
        fi
        ;;
    purge) rm -rf "$LAB" ;;
esac
log "down ($MODE): $LAB"
