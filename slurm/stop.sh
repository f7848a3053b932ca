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

stopped=()
for name in "${targets[@]}"; do
    case " ${DAEMONS[*]} " in
        *" $name "*) ;;
        *) die "unknown daemon '$name'; choose from ${DAEMONS[*]}" ;;
    esac
    pid=$(daemon_pid "$name") || { rm -f "$(pidfile "$name")"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        echo "slurm: $name (pid $pid) ignored SIGTERM for 15 s; killed" >&2
    fi
    rm -f "$(pidfile "$name")"
    stopped+=("$name")
done
if [[ ${#stopped[@]} -eq 0 ]]; then
    echo "slurm: nothing to stop (${targets[*]} not running)"
else
    echo "slurm: stopped ${stopped[*]}"
fi
