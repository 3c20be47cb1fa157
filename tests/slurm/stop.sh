#!/usr/bin/env bash
# Stop the test SLURM cluster that tests/slurm/start.sh started.
#
#   tests/slurm/stop.sh
#
# Cancels the cluster's jobs, then stops each daemon by the pid start.sh
# recorded in $MNIST_SAFETY_SLURM_STATE/pids (default /tmp/mnist-safety-slurm),
# newest first. A pid whose process no longer has the daemon's name is left
# alone: it was reused by something else. Logs stay in the state folder.
#
# Then, once none of the cluster's daemons runs, the config files start.sh wrote
# for this state folder leave /etc/slurm (for $STATE/etc, to read later) and any
# that start.sh found there and saved come back. Left behind, a config whose
# controller is gone makes every SLURM client tool wait about 9 s for it, and so
# every Snakemake start: the SLURM executor plugin runs `scontrol show config`
# when it loads. MNIST_SAFETY_SLURM_ETC (default /etc/slurm) names another folder
# (the tests use it).
set -uo pipefail

STATE=${MNIST_SAFETY_SLURM_STATE:-/tmp/mnist-safety-slurm}
ETC=${MNIST_SAFETY_SLURM_ETC:-/etc/slurm}
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

# --- config -----------------------------------------------------------------
for d in "${DAEMONS[@]}"; do
    if pid_of "$d" >/dev/null; then
        log "$d still runs; the config stays in $ETC"
        exit 0
    fi
done
# start.sh's slurm.conf names this state folder; a config for another one (another
# cluster of these tests, or a real one) is not ours to move
ours=no
grep -qx "StateSaveLocation=$STATE/ctld" "$ETC/slurm.conf" 2>/dev/null && ours=yes
for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ "$ours" = yes ] && [ -f "$ETC/$f" ] && head -1 "$ETC/$f" | grep -q '^# Written by tests/slurm/start.sh'; then
        mkdir -p "$STATE/etc"
        mv -f "$ETC/$f" "$STATE/etc/$f"
        log "moved $ETC/$f to $STATE/etc/"
    fi
    if [ -f "$STATE/etc-saved/$f" ] && [ ! -e "$ETC/$f" ]; then
        mv "$STATE/etc-saved/$f" "$ETC/$f"
        log "put back the $ETC/$f that start.sh had found"
    fi
done
