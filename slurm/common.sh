# Shared by start.sh and stop.sh (sourced, not run).
# shellcheck shell=bash
STATE=${HPC_UNET_SLURM_DIR:-/tmp/hpc-unet-slurm}
CLUSTER=hpcunet
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop in reverse

die() { echo "slurm: $*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (the daemons, /etc/slurm and mknod need it)"; }

pidfile() {
    case $1 in
        munged) echo "$STATE/munge/munged.pid" ;;
        mariadbd) echo "$STATE/mysqld/mariadbd.pid" ;;
        *) echo "$STATE/run/$1.pid" ;;
    esac
}

# PID of a running daemon from its PID file (checked against /proc so a reused PID does not count).
daemon_pid() {
    local file pid
    file=$(pidfile "$1")
    [[ -f $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

alive() { daemon_pid "$1" >/dev/null; }

all_up() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
}

# wait_for SECONDS WHAT COMMAND...: poll every 0.2 s; on timeout name the log to read.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${limit}s waiting for $what; logs in $STATE/log and $STATE/munge"
        fi
        sleep 0.2
    done
}
