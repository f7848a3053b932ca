#!/usr/bin/env bash
# Stop the single-node cluster started by slurm/start.sh, by the PIDs in its PID files.
#
#   slurm/stop.sh                 stop everything (slurmd, slurmctld, slurmdbd, mariadbd, munged)
#   slurm/stop.sh slurmdbd        stop only the named daemons (e.g. to test status without sacct);
#                                 slurm/start.sh starts them again
#
# Idempotent: a daemon that is not running is skipped. State (jobs, accounting) stays in
# $HPC_UNET_SLURM_DIR for the next start; remove that directory to start from nothing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
need_root

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=()
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do targets+=("${DAEMONS[$i]}"); done
fi

for name in "${targets[@]}"; do
    case " ${DAEMONS[*]} " in
        *" $name "*) ;;
        *) die "unknown daemon '$name'; choose from ${DAEMONS[*]}" ;;
    esac
done

# Stop in phases (compute daemons, then accounting, then database and munge); the daemons of one
# phase stop in parallel. Each gets SIGTERM, and SIGKILL after 15 s.
stopped=()
stop_group() {
    local name pid pids=() names=()
    for name in "$@"; do
        [[ " ${targets[*]} " == *" $name "* ]] || continue
        if pid=$(daemon_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
        rm -f "$(pidfile "$name")"
    done
    [[ ${#pids[@]} -gt 0 ]] || return 0
    for _ in $(seq 1 150); do
        local left=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        [[ $left -eq 1 ]] || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            echo "slurm: pid $pid ignored SIGTERM for 15 s; killed" >&2
        fi
    done
    stopped+=("${names[@]}")
}
stop_group slurmd slurmctld
stop_group slurmdbd
stop_group mariadbd munged
if [[ ${#stopped[@]} -eq 0 ]]; then
    echo "slurm: nothing to stop (${targets[*]} not running)"
else
    echo "slurm: stopped ${stopped[*]}"
fi
