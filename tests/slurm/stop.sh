#!/usr/bin/env bash
# Stop the test SLURM cluster that tests/slurm/start.sh started.
#
#   tests/slurm/stop.sh
#
# Cancels the cluster's jobs, then stops each daemon by the pid start.sh
# recorded in $MNIST_SAFETY_SLURM_STATE/pids (default /tmp/mnist-safety-slurm),
# newest first. A pid whose process no longer has the daemon's name is left
# alone: it was reused by something else. Logs stay in the state folder.
set -uo pipefail

STATE=${MNIST_SAFETY_SLURM_STATE:-/tmp/mnist-safety-slurm}
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

log() { echo "stop.sh: $*" >&2; }

pid_of() {  # pid_of NAME: prints the recorded pid if it still runs NAME
    local pidfile=$STATE/pids/$1.pid pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$1" ] && echo "$pid"
}

# Running jobs would keep slurmstepd processes (and their children) alive after
# slurmd is gone.
if pid_of slurmctld >/dev/null; then
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        squeue -h -o %i | xargs -r scancel --full
        for _ in $(seq 20); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

for d in "${DAEMONS[@]}"; do
    pid=$(pid_of "$d") || { rm -f "$STATE/pids/$d.pid"; continue; }
    kill -TERM "$pid"
    for _ in $(seq 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$d (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$STATE/pids/$d.pid"
    log "stopped $d (pid $pid)"
done
