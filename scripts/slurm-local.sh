#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the test suite and for developers:
# Debian's slurm-wlm + munge, no accounting database, two fake GPUs (GRES on character devices).
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm munge (daemons not auto-started)
#   scripts/slurm-local.sh start     write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh up        install (if needed) + start
#   scripts/slurm-local.sh stop      stop exactly the daemons `start` started (pid files), remove its config
#   scripts/slurm-local.sh status    exit 0 if this script's cluster answers
#
# Needs root (apt-get, /etc/slurm). slurm.conf must sit at the default path: the executor
# plugin's job step strips SLURM_CONF from the environment.
# No slurmdbd: a profile must use `slurm-status-command: squeue` (sacct would hang the run).
set -euo pipefail

STATE=${VLTUNE_SLURM_STATE:-/var/lib/vltune-slurm}
CONF_DIR=/etc/slurm
NODE=$(hostname -s)
GPUS=${VLTUNE_SLURM_GPUS:-2}
PARTITION=${VLTUNE_SLURM_PARTITION:-debug}
DAEMONS=(munged slurmctld slurmd)

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and writes $CONF_DIR)"; }

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; }

install() {
    need_root
    if installed; then log "slurm-wlm and munge already installed"; return; fi
    command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge by hand"
    # Keep the packages' postinst scripts from starting daemons: this script starts its own.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    local pkgs=(slurm-wlm munge)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; then
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
    fi
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    installed || die "slurm-wlm/munge installed but slurmctld, slurmd or munged is not on PATH"
}

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

MARK="# Written by vltune scripts/slurm-local.sh: a one-node test cluster without accounting."

ours() { [ ! -e "$1" ] || head -n 1 "$1" | grep -qxF "$MARK"; }

write_config() {
    ours "$CONF_DIR/slurm.conf" || die "$CONF_DIR/slurm.conf is not this script's: move it aside to run the test cluster"
    mkdir -p "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log" "$STATE/dev" "$CONF_DIR"
    # Fake GPUs: slurmd accepts only character or block devices as GRES files.
    local i
    for ((i = 0; i < GPUS; i++)); do
        [ -c "$STATE/dev/gpu$i" ] || mknod "$STATE/dev/gpu$i" c 1 3 2>/dev/null || ln -sf /dev/null "$STATE/dev/gpu$i"
    done
    local cpus mem
    cpus=$(nproc)
    # RealMemory above `slurmd -C`'s figure makes the node INVAL: stay below it.
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem * 9 / 10))
    cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by vltune scripts/slurm-local.sh: a one-node test cluster without accounting.
ClusterName=vltune
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue shows finished jobs for MinJobAge seconds: the plugin's status checks need >= 3x its
# init delay (300 s is Slurm's default).
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=defer_batch
GresTypes=gpu
DefMemPerCPU=500
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    local last=$((GPUS - 1))
    { echo "$MARK"; echo "Name=gpu File=$STATE/dev/gpu[0-$last]"; } > "$CONF_DIR/gres.conf"
    [ "$GPUS" -gt 1 ] || { echo "$MARK"; echo "Name=gpu File=$STATE/dev/gpu0"; } > "$CONF_DIR/gres.conf"
}

start() {
    need_root
    installed || die "slurm is not installed: run '$0 install' (or '$0 up')"
    if status_ok; then log "already running"; return; fi
    write_config
    # munge: a key, its run directory, then the daemon (as root, hence --force).
    mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown root:root /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    chmod 755 /run/munge
    if ! alive munged; then
        munged --force --pid-file="$STATE/munged.pid" --socket=/run/munge/munge.socket.2 \
            --log-file="$STATE/log/munged.log"
    fi
    alive slurmctld || slurmctld -i
    alive slurmd || slurmd -N "$NODE"
    # Wait for the node to take jobs.
    local i
    for ((i = 0; i < 60; i++)); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^idle'; then
            log "up: node $NODE, partition $PARTITION, $(nproc) CPUs, $GPUS fake GPUs"
            return
        fi
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    die "the node did not become idle in 30 s (logs above)"
}

stop() {
    local d p i
    for d in slurmd slurmctld munged; do
        p=$(pid_of "$d")
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            kill "$p"
            for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$p" 2>/dev/null && kill -9 "$p"
            log "stopped $d ($p)"
        fi
        rm -f "$STATE/$d.pid"
    done
    # A slurm.conf naming a controller that is down makes every `scontrol` wait ~9 s, and the
    # executor plugin calls `scontrol show config` whenever snakemake starts: remove our config.
    local f
    for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"; do
        if [ -e "$f" ] && ours "$f"; then rm -f "$f"; fi
    done
}

status_ok() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
    sinfo -h >/dev/null 2>&1
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    up) install; start ;;
    stop) stop ;;
    status) status_ok ;;
    *) echo "usage: $0 {install|start|up|stop|status}" >&2; exit 2 ;;
esac
