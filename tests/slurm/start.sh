#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on 127.0.0.1 with fake GPUs, for the tests.
#
#   sudo tests/slurm/start.sh      # installs Debian's packages if missing, starts
#                                  # munged, mariadbd, slurmdbd, slurmctld, slurmd
#   tests/slurm/stop.sh            # stops every daemon this script started, by pid,
#                                  # and takes its config out of /etc/slurm
#
# Idempotent: when every daemon it started is still alive it only checks that
# the node takes jobs. Pids, logs and spool folders live in $MNIST_SAFETY_SLURM_STATE
# (default /tmp/mnist-safety-slurm). The partition is called "debug"; the test
# overlay profile tests/slurm/profile/config.yaml names it.
#
# Each GPU is a character device made with mknod (c 1 3, what /dev/null is):
# slurmd only needs a device file to hand out; a job then sees
# CUDA_VISIBLE_DEVICES=<its GPU's index> and runs on the CPU. There are two, so
# that two GPU jobs run side by side and the tiny study's eight take half the
# time; MNIST_SAFETY_SLURM_GPUS sets another count.
set -euo pipefail

STATE=${MNIST_SAFETY_SLURM_STATE:-/tmp/mnist-safety-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=mnistsafety
PARTITION=debug
ACCOUNT=root
GPUS=${MNIST_SAFETY_SLURM_GPUS:-2}
[[ "$GPUS" =~ ^[1-9][0-9]?$ ]] || { echo "start.sh: error: MNIST_SAFETY_SLURM_GPUS=$GPUS is not a count from 1 to 99" >&2; exit 1; }
NODE=$(hostname -s)
# Daemons in start order; stop.sh stops them in the reverse order.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { echo "start.sh: $*" >&2; }
die() { echo "start.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

pid_alive() {  # pid_alive NAME: the pid recorded for NAME runs a process named NAME
    local pidfile=$STATE/pids/$1.pid pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$1" ]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.5 s
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "$what did not happen within ${seconds}s; logs are in $STATE/log/"
        fi
        sleep 0.5
    done
}

node_idle() { sinfo -h -n "$NODE" -o %t | grep -qx idle; }
# Up and taking jobs: idle, or busy with jobs a test already submitted.
node_serving() { sinfo -h -n "$NODE" -o %t | grep -qxE 'idle|mix|alloc|comp'; }

all_up=yes
any_up=no
for d in "${DAEMONS[@]}"; do
    if pid_alive "$d"; then any_up=yes; else all_up=no; fi
done
if [ "$all_up" = yes ]; then
    wait_for 60 "node $NODE taking jobs" node_serving
    log "cluster already up (state in $STATE)"
    exit 0
fi
if [ "$any_up" = yes ]; then
    log "cluster half up; stopping what is left before starting again"
    "$HERE/stop.sh"
fi

mkdir -p "$STATE"/{pids,log,ctld,slurmd}

# --- packages ---------------------------------------------------------------
missing=no
for tool in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db; do
    command -v "$tool" >/dev/null || missing=yes
done
if [ "$missing" = yes ]; then
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is not available"
    log "installing slurm-wlm munge slurmdbd mariadb-server from Debian"
    # Keep the packages' init scripts from starting daemons we would not own:
    # a policy-rc.d that says 101 ("action forbidden") while apt runs.
    own_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=yes
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Another apt run (a CI step, unattended upgrades) may hold the lock a while.
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        slurm-wlm munge slurmdbd mariadb-server >"$STATE/log/apt.log" 2>&1 \
        || { tail -20 "$STATE/log/apt.log" >&2; die "apt-get install failed (log: $STATE/log/apt.log)"; }
    [ "$own_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
fi

# --- folders and config -----------------------------------------------------
mkdir -p /etc/slurm /run/munge /var/log/munge /var/lib/munge /run/mysqld
# munged refuses to start unless its folders belong to the munge user;
# mariadbd needs its socket folder to belong to mysql.
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
chown mysql:mysql /run/mysqld
for ((i = 0; i < GPUS; i++)); do
    [ -c "$STATE/fakegpu$i" ] || { rm -f "$STATE/fakegpu$i"; mknod "$STATE/fakegpu$i" c 1 3; }
done

# A slurm.conf, gres.conf or slurmdbd.conf that this script did not write (a real
# cluster's) is saved once to $STATE/etc-saved before it is overwritten; stop.sh
# puts it back.
mkdir -p "$STATE/etc-saved"
for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -f "/etc/slurm/$f" ] && [ ! -e "$STATE/etc-saved/$f" ] \
        && ! head -1 "/etc/slurm/$f" | grep -q '^# Written by tests/slurm/start.sh'; then
        cp -p "/etc/slurm/$f" "$STATE/etc-saved/$f"
        log "saved the existing /etc/slurm/$f to $STATE/etc-saved/ (stop.sh restores it)"
    fi
done

# ProctrackType: proctrack/pgid, not linuxproc: linuxproc finds a job's processes by
# their parent links, so when scancel's SIGTERM ends the batch shell first, the
# job's Snakemake (reparented to init, slow to exit on SIGTERM) is no longer found
# and outlives the job; pgid signals the whole process group.
# TaskPlugin: task/affinity binds each job step to the cores SLURM gave it, as real
# clusters do (with cgroups or affinity), so a job sees as many usable cores as it
# asked for and the tests can check that its threads match them.
write_slurm_conf() {  # write_slurm_conf "NODE HARDWARE": the node line's CPUs, memory...
    cat > /etc/slurm/slurm.conf <<EOF
# Written by tests/slurm/start.sh: one node on 127.0.0.1 with $GPUS fake GPU(s).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
MinJobAge=600
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
NodeName=$1 Gres=gpu:$GPUS NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}
# Every SLURM tool reads /etc/slurm/slurm.conf first and, without it, looks for a
# controller through DNS; so a placeholder goes in before `slurmd -C` runs.
write_slurm_conf "$NODE CPUs=1"
hardware=$(slurmd -C | head -1 | sed 's/^NodeName=//')
[ -n "$hardware" ] || die "slurmd -C printed nothing"
write_slurm_conf "$hardware"

cat > /etc/slurm/gres.conf <<EOF
# Written by tests/slurm/start.sh: fake GPUs (character devices).
AutoDetect=off
Name=gpu File=$STATE/fakegpu[0-$((GPUS - 1))]
EOF

cat > /etc/slurm/slurmdbd.conf <<EOF
# Written by tests/slurm/start.sh.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf  # slurmdbd refuses a readable config

[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; }
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed (log: $STATE/log/mariadb-install.log)"
fi

# --- daemons ----------------------------------------------------------------
start() {  # start NAME COMMAND...: run COMMAND in the foreground of its own session
    local name=$1
    shift
    setsid "$@" </dev/null >"$STATE/log/$name.out" 2>&1 &
    echo $! > "$STATE/pids/$name.pid"
}

# setpriv switches to the munge user and execs, so the recorded pid is munged's.
start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
wait_for 10 "munge answering" bash -c 'munge -n | unmunge'

# No TCP port: slurmdbd talks to it over the socket in /run/mysqld. It runs as
# mysql, so its own pid file goes there too; its log is its stderr.
start mariadbd mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
    --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mariadbd.pid
wait_for 30 "mariadbd answering" mariadb-admin --socket=/run/mysqld/mysqld.sock ping

start slurmdbd slurmdbd -D
wait_for 60 "slurmdbd answering" sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

start slurmctld slurmctld -D
start slurmd slurmd -D
wait_for 60 "node $NODE becoming idle" node_idle
log "cluster up: partition $PARTITION, node $NODE with gres gpu:$GPUS, account $ACCOUNT (state in $STATE)"
