#!/usr/bin/env bash
# Start a single-node Slurm cluster with accounting, for the tests and for trying hpc-unet on one machine.
#
#   slurm/start.sh            start whatever is not running (munged, mariadbd, slurmdbd, slurmctld, slurmd)
#
# The cluster: node "$(hostname -s)" declaring 8 CPUs and four fake A40 GPUs (character devices made with
# mknod), partition a40 (default, PriorityTier=1, preemptable with REQUEUE + the user signal and a
# GraceTime) and partition urgent (PriorityTier=10, preempts a40), JobRequeue=1, cred_expire=10 (a
# requeued job restarts after ~11 s instead of ~121 s), accounting through slurmdbd on MariaDB.
# All state (logs, spool, database, PID files, fake devices) lives under $HPC_UNET_SLURM_DIR
# (default /tmp/hpc-unet-slurm); the config goes to /etc/slurm where the Debian binaries look for it.
# Idempotent: with everything up it only checks and prints. Stop with slurm/stop.sh.
#
# Settings (environment): HPC_UNET_SLURM_DIR, HPC_UNET_SLURM_CPUS (8), HPC_UNET_SLURM_GPUS (4),
# HPC_UNET_SLURM_MAX_ARRAY_SIZE (1001), HPC_UNET_SLURM_GRACE (30 s), HPC_UNET_SLURM_DB_PORT (3307),
# HPC_UNET_SLURM_JOB_REQUEUE (1; 0 = a site where jobs are not requeueable unless submitted with --requeue),
# HPC_UNET_SLURM_ACCOUNTING (1; 0 = no accounting: no MariaDB/slurmdbd, sacct has nothing).
# Changing a setting while the cluster runs: the config is rewritten and slurmctld + slurmd restart
# (running jobs survive: their state is saved; slurmd keeps the steps).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

t0=$(date +%s.%N)
need_root
for bin in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacct sacctmgr; do
    command -v "$bin" >/dev/null || command -v "/usr/sbin/$bin" >/dev/null \
        || die "$bin not found; run slurm/install.sh first"
done
export PATH="$PATH:/usr/sbin:/sbin"

CPUS=${HPC_UNET_SLURM_CPUS:-8}
GPUS=${HPC_UNET_SLURM_GPUS:-4}
MAX_ARRAY=${HPC_UNET_SLURM_MAX_ARRAY_SIZE:-1001}
GRACE=${HPC_UNET_SLURM_GRACE:-30}
DB_PORT=${HPC_UNET_SLURM_DB_PORT:-3307}
JOB_REQUEUE=${HPC_UNET_SLURM_JOB_REQUEUE:-1}
ACCOUNTING=${HPC_UNET_SLURM_ACCOUNTING:-1}
[[ $JOB_REQUEUE == 0 || $JOB_REQUEUE == 1 ]] || die "HPC_UNET_SLURM_JOB_REQUEUE must be 0 or 1"
[[ $ACCOUNTING == 0 || $ACCOUNTING == 1 ]] || die "HPC_UNET_SLURM_ACCOUNTING must be 0 or 1"
if [[ $ACCOUNTING == 1 ]]; then
    ACCOUNTING_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu"
else
    ACCOUNTING_LINES="AccountingStorageType=accounting_storage/none"
    DAEMONS=(munged slurmctld slurmd)
fi
NODE=$(hostname -s)
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$((MEM_TOTAL_MB * 3 / 4))
DB_PASS=hpc-unet-slurmdbd


started=()
mkdir -p "$STATE"/{log,run,spool/slurmctld,spool/slurmd,dev,munge,mysql,mysqld}
chmod 755 "$STATE"

# --- config (rewritten on every start; identical content while the settings are unchanged) ---
mkdir -p /etc/slurm
for i in $(seq 0 $((GPUS - 1))); do
    [[ -c $STATE/dev/nvidia$i ]] || { rm -f "$STATE/dev/nvidia$i"; mknod -m 666 "$STATE/dev/nvidia$i" c 1 3; }
done
changed=0
write_if_changed() {  # path mode content
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    printf '%s\n' "$3" >"$tmp"
    chmod "$2" "$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; changed=1; fi
}
write_if_changed /etc/slurm/slurm.conf 644 "# Written by hpc-unet slurm/start.sh; state in $STATE
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
SlurmctldParameters=preempt_send_user_signal
DefMemPerCPU=1024
JobRequeue=$JOB_REQUEUE
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MaxArraySize=$MAX_ARRAY
MaxJobCount=100000
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$ACCOUNTING_LINES
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB Gres=gpu:a40:$GPUS State=UNKNOWN
PartitionName=a40 Nodes=$NODE Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE MaxTime=INFINITE State=UP
PartitionName=urgent Nodes=$NODE Default=NO PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP"
write_if_changed /etc/slurm/gres.conf 644 "# Written by hpc-unet slurm/start.sh: fake GPUs (character devices)
NodeName=$NODE Name=gpu Type=a40 File=$STATE/dev/nvidia[0-$((GPUS - 1))]"
write_if_changed /etc/slurm/slurmdbd.conf 600 "# Written by hpc-unet slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db"
if ((changed)) && { alive slurmctld || alive slurmd; }; then
    # a new setting (JobRequeue, accounting, ...): restart the Slurm daemons so that they read it
    bash "$HERE/stop.sh" slurmd slurmctld >/dev/null
fi
if all_up && sinfo -h >/dev/null 2>&1; then
    echo "slurm: already running ($(sinfo -h -N -o '%N %T' | head -1), JobRequeue=$JOB_REQUEUE, accounting=$ACCOUNTING, state in $STATE)"
    exit 0
fi

# --- munged ---
if ! alive munged; then
    [[ -f /etc/munge/munge.key ]] || { mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge
    chown munge:munge /run/munge "$STATE/munge"
    chmod 755 /run/munge
    chmod 700 "$STATE/munge"
    started+=(munged)
    runuser -u munge -- munged --force --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 10 "munged" bash -c 'munge -n </dev/null | unmunge >/dev/null 2>&1'
fi

# --- MariaDB ---
if [[ $ACCOUNTING == 1 ]] && ! alive mariadbd; then
    chown mysql:mysql "$STATE/mysql" "$STATE/mysqld"
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
    fi
    touch "$STATE/log/mariadb.log"
    chown mysql:mysql "$STATE/log/mariadb.log"
    rm -f "$STATE/mysqld/mysqld.sock"
    # mariadbd runs in the foreground; setsid keeps it out of this script's process group.
    started+=(mariadbd)
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$STATE/mysqld/mysqld.sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$STATE/mysqld/mariadbd.pid" \
        --log-error="$STATE/log/mariadb.log" --innodb-buffer-pool-size=64M --skip-name-resolve \
        </dev/null >/dev/null 2>&1 &
    wait_for 30 "mariadbd" mariadb-admin --socket="$STATE/mysqld/mysqld.sock" ping
    mariadb --socket="$STATE/mysqld/mysqld.sock" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
fi

# --- slurmdbd ---
if [[ $ACCOUNTING == 1 ]]; then
    if ! alive slurmdbd; then
        started+=(slurmdbd)
        slurmdbd
        wait_for 30 "slurmdbd" sacctmgr -n list cluster
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
fi

# --- slurmctld, slurmd ---
if ! alive slurmctld; then
    started+=(slurmctld)
    slurmctld
    wait_for 30 "slurmctld" scontrol ping
fi
if ! alive slurmd; then
    started+=(slurmd)
    slurmd
fi
node_ready() {
    local state
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1)
    case $state in
        idle | mixed | allocated | completing) return 0 ;;
        drained* | draining | down*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}
wait_for 30 "node $NODE to become idle" node_ready
if [[ $ACCOUNTING == 1 ]]; then
    wait_for 30 "sacct" sacct -n -X -S now
    accounting="slurmdbd on MariaDB 127.0.0.1:$DB_PORT"
else
    accounting="no accounting"
fi
t1=$(date +%s.%N)
printf 'slurm: started %s: cluster %s: node %s (%s CPUs, %s MB, gpu:a40:%s), partitions a40 (default) + urgent (preempts a40, GraceTime=%s s), MaxArraySize=%s, JobRequeue=%s, %s, state in %s [%.1f s]\n' \
    "${started[*]:-nothing}" "$CLUSTER" "$NODE" "$CPUS" "$REAL_MB" "$GPUS" "$GRACE" "$MAX_ARRAY" "$JOB_REQUEUE" "$accounting" "$STATE" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
