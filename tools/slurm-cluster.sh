#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for biofa's SLURM tests (`make test-slurm`).
#
#   tools/slurm-cluster.sh start    install slurm-wlm + munge if missing (apt, needs root), write a
#                                   minimal slurm.conf, start munged, slurmctld and slurmd, and wait
#                                   until the node accepts jobs
#   tools/slurm-cluster.sh stop     stop the daemons this script started
#   tools/slurm-cluster.sh status   sinfo, or exit 1 when no cluster answers
#
# One node with this machine's CPUs and memory, one partition (BIOFA_SLURM_PARTITION, default
# "debug"). Process tracking by /proc and no task plugin, so it runs without cgroups (containers,
# CI). State and spool folders live under BIOFA_SLURM_DIR (default /tmp/biofa-slurm). Everything runs
# as root: this is a test fixture, not a production setup.
set -euo pipefail

DIR=${BIOFA_SLURM_DIR:-/tmp/biofa-slurm}
PARTITION=${BIOFA_SLURM_PARTITION:-debug}
CONF=/etc/slurm/slurm.conf

die() { echo "slurm-cluster: $*" >&2; exit 2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: install them (apt-get install slurm-wlm munge) or run as root"
    echo "slurm-cluster: installing slurm-wlm and munge (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

write_config() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # RealMemory in MB, a little below the total so slurmd does not drain the node.
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" /etc/slurm
    cat >"$CONF" <<CONFIG
# Written by biofa's tools/slurm-cluster.sh: a one-node test cluster.
ClusterName=biofa
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Short intervals so tests see state changes (time limits, kills) within seconds.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
OverTimeLimit=0
MessageTimeout=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONFIG
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
    else
        /usr/sbin/munged --force
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install_packages
    if sinfo -h >/dev/null 2>&1 && running "$DIR/slurmctld.pid"; then
        echo "slurm-cluster: already running"; sinfo; return 0
    fi
    write_config
    start_munge
    running "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -c   # -c: a clean state, no old jobs
    running "$DIR/slurmd.pid" || /usr/sbin/slurmd
    for _ in $(seq 150); do
        if sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
            echo "slurm-cluster: up"; sinfo; return 0
        fi
        sleep 0.2
    done
    echo "--- slurmctld.log"; tail -20 "$DIR/log/slurmctld.log" >&2 || true
    echo "--- slurmd.log"; tail -20 "$DIR/log/slurmd.log" >&2 || true
    die "the node did not become idle within 30 s"
}

stop() {
    scancel --user="$(id -un)" 2>/dev/null || true
    for daemon in slurmd slurmctld; do
        if running "$DIR/$daemon.pid"; then kill "$(cat "$DIR/$daemon.pid")" || true; fi
    done
    for _ in $(seq 50); do
        running "$DIR/slurmd.pid" || running "$DIR/slurmctld.pid" || break
        sleep 0.2
    done
    echo "slurm-cluster: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
