#!/usr/bin/env bash
# A one-node SLURM on 127.0.0.1, to run epgkit's Dask workers as SLURM jobs on this machine
# (gin/clusters/slurm.gin; tests/test_slurm.py).
#
#   scripts/slurm-local.sh start    # installs slurm-wlm and munge if missing (apt-get, as root)
#   export SLURM_CONF=/tmp/epgkit-slurm/slurm.conf   # start prints this line
#   sbatch / squeue / epgkit evolve ... gin/clusters/slurm.gin
#   scripts/slurm-local.sh status
#   scripts/slurm-local.sh stop     # stops the daemons it started and removes its folder
#
# Everything lives in $EPGKIT_SLURM_DIR (default /tmp/epgkit-slurm): slurm.conf, munge's key and
# socket, state, logs, pid files. Nothing under /etc is written. The node has this machine's
# CPUs and most of its memory. Runs as root without systemd (Debian's slurm-wlm 22.05).
set -euo pipefail

DIR=${EPGKIT_SLURM_DIR:-/tmp/epgkit-slurm}
CONF=$DIR/slurm.conf

die() { echo "slurm-local: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root to run slurmd and munged (and to apt-get install); run it as root"
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurmctld, slurmd or munged is missing and there is no apt-get to install them"
    echo "slurm-local: installing slurm-wlm and munge (apt-get, about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$DIR/apt.log" 2>&1; } \
        || die "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$CONF" <<CONF
# Written by scripts/slurm-local.sh: one node on 127.0.0.1 with this machine's CPUs.
ClusterName=epgkit-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

running() {  # the daemon of a pid file is alive
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
    need_root
    mkdir -p "$DIR"/{munge,state,spool,log}
    install
    if running "$DIR/slurmctld.pid"; then
        echo "slurm-local: already running (export SLURM_CONF=$CONF)"
        return
    fi
    write_conf
    # munge: a key of our own, the daemon's socket in our folder.
    [ -f "$DIR/munge/munge.key" ] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    chmod 700 "$DIR/munge" && chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" || die "munged did not start (see $DIR/log/munged.log)"
    export SLURM_CONF=$CONF
    slurmctld -i || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
    slurmd -N localhost || die "slurmd did not start (see $DIR/log/slurmd.log)"
    for _ in $(seq 60); do
        if sinfo -h -N -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "slurm-local: one node ($(nproc) CPUs) on 127.0.0.1 is up; export SLURM_CONF=$CONF"
            return
        fi
        sleep 1
    done
    die "the node did not become idle within 60 s (see $DIR/log/)"
}

stop() {
    export SLURM_CONF=$CONF
    if [ -f "$CONF" ] && running "$DIR/slurmctld.pid"; then
        scancel --full --quiet -u "$(id -un)" 2>/dev/null || true  # jobs first: their workers stop
    fi
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 20); do running "$pidfile" || break; sleep 0.5; done
        fi
    done
    rm -rf "$DIR"
    echo "slurm-local: stopped"
}

status() {
    running "$DIR/slurmctld.pid" || { echo "slurm-local: not running"; exit 1; }
    SLURM_CONF=$CONF sinfo
    SLURM_CONF=$CONF squeue
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
