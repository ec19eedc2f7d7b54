#!/usr/bin/env bash
# local_slurm.sh: a real one-node SLURM cluster, with accounting, on this machine.
#
# Why: tests that drive Hydra's submitit launcher (sbatch, squeue, sacct, scontrol requeue,
# --signal=USR2@N) need a scheduler that behaves like a real cluster. This script installs the
# Debian 12 packages (slurm-wlm 22.05, munge, mariadb, slurmdbd) and starts every daemon by hand,
# since these machines (CI containers included) have no systemd. Run as root.
#
#   bash scripts/local_slurm.sh            install, then start (what CI runs before pytest)
#   bash scripts/local_slurm.sh install    apt-get install what is missing
#   bash scripts/local_slurm.sh start      write configs, start munged, mariadb, slurmdbd,
#                                          slurmctld, slurmd; wait until `srun hostname` works.
#                                          Safe to rerun: live daemons are left alone, dead ones
#                                          (stale pid files, zombies) are started again.
#   bash scripts/local_slurm.sh stop       stop the daemons (running jobs' slurmstepd stay)
#   bash scripts/local_slurm.sh status     exit 0 when sinfo shows the node usable and sacct answers
#
# For tests: call `status` and skip when it fails. Jobs go to partition "debug" (the default),
# as root; there are no GPUs/GRES, so ask for none. Memory is only a scheduling number (nothing
# enforces it): DefMemPerCPU = RealMemory / CPUs, so a job without --mem takes its CPUs' share,
# not the whole node. Jobs that can never fit are refused at submission, not left pending.
# A requeued job may start again AuthInfo=cred_expire seconds later (5 here, the least SLURM
# accepts; default 120), and the 1 s scheduler loop starts it then: about 6 s in all.
# slurmctld checks time limits and --signal deadlines only every 30 s, so a signal comes up to
# 30 s before its due time (or later, if the job started just after a check) and a job may
# outlive its limit by up to 30 s. The signal goes to job steps (srun, as submitit uses), not to
# a bare batch script.
set -Eeuo pipefail

CLUSTER=${LOCAL_SLURM_CLUSTER:-hat}
CRED_EXPIRE=${LOCAL_SLURM_CRED_EXPIRE:-5}      # seconds; SLURM refuses less than 5
MEM_MARGIN_MB=${LOCAL_SLURM_MEM_MARGIN_MB:-3072}
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurmdbd-local

ETC=/etc/slurm
LOGDIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MYSQL_RUN=/run/mysqld
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
MYSQL_PID=$MYSQL_RUN/mysqld.pid
MYSQL_LOG=/var/log/mysql/local_slurm.err

PACKAGES=(munge slurm-wlm slurmdbd mariadb-server)

now_ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(now_ms)
PHASE_T=$T0

log() { echo "local_slurm: $*"; }

# fail MESSAGE [LOGFILE]: one line saying what failed, then the end of the daemon's log.
fail() {
    echo "local_slurm: FAILED: $1" >&2
    if [[ -n ${2:-} && -f $2 ]]; then
        echo "--- last lines of $2:" >&2
        tail -n 25 "$2" >&2 || true
    fi
    exit 1
}
trap 'fail "command \"$BASH_COMMAND\" (line $LINENO) exited with $?"' ERR

# phase NAME: print how long the phase that just ended took.
phase() {
    local now ms
    now=$(now_ms)
    ms=$((now - PHASE_T))
    log "$(printf '%-22s %3d.%02d s' "$1" $((ms / 1000)) $((ms % 1000 / 10)))"
    PHASE_T=$now
}

elapsed() {
    local ms=$(($(now_ms) - T0))
    printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# A pid counts as running only if /proc has it and it is not a zombie: a stopped daemon stays a
# zombie until PID 1 reaps it, and `kill -0` still succeeds on a zombie.
alive() {
    local pid=$1 state
    [[ -n $pid && $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# daemon_pid NAME PIDFILE: print the pid of the live daemon (pid file first, then by exact
# process name, for a daemon whose pid file was lost); nothing if none runs.
daemon_pid() {
    local name=$1 pidfile=$2 pid
    if [[ -f $pidfile ]]; then
        pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)
        if alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]]; then
            echo "$pid"
            return 0
        fi
        rm -f "$pidfile"   # stale: the process is gone or is a zombie
    fi
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
        if alive "$pid"; then
            echo "$pid"
            return 0
        fi
    done
    return 0
}

# stop_daemon NAME PIDFILE: TERM, wait up to 15 s, then KILL.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    pid=$(daemon_pid "$name" "$pidfile")
    [[ -z $pid ]] && return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name (pid $pid) ignored TERM for 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    log "stopped $name (pid $pid)"
}

# wait_for SECONDS DESCRIPTION LOGFILE COMMAND...: retry COMMAND every 0.2 s.
wait_for() {
    local secs=$1 what=$2 logfile=$3 deadline
    shift 3
    deadline=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || fail "$what (waited ${secs} s)" "$logfile"
        sleep 0.2
    done
}

need_root() { [[ $(id -u) == 0 ]] || fail "must run as root (it installs packages and starts daemons)"; }

# ---------------------------------------------------------------------------------------------
do_install() {
    need_root
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # pgrep comes with procps.
    command -v pgrep >/dev/null || missing+=(procps)
    if ((${#missing[@]} == 0)); then
        log "install: everything already installed"
        return 0
    fi
    log "install: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=300 >/tmp/local_slurm_apt.log 2>&1 || fail "apt-get update" /tmp/local_slurm_apt.log
    # policy-rc.d keeps the package scripts from trying to start services themselves.
    local policy_made=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_made=1
    fi
    if ! apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >>/tmp/local_slurm_apt.log 2>&1; then
        ((policy_made)) && rm -f /usr/sbin/policy-rc.d
        fail "apt-get install ${missing[*]}" /tmp/local_slurm_apt.log
    fi
    ((policy_made)) && rm -f /usr/sbin/policy-rc.d
    phase "install packages"
}

# ---------------------------------------------------------------------------------------------
# write_if_changed FILE MODE: write stdin to FILE; return 0 if the content changed.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        chmod "$mode" "$file"
        return 1
    fi
    install -m "$mode" -o root -g root "$tmp" "$file"
    rm -f "$tmp"
    return 0
}

SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0

write_configs() {
    local host node_line cpus realmem usable defmem
    host=$(hostname -s)
    node_line=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ $node_line == NodeName=* ]] || fail "slurmd -C did not describe this node: '$node_line'"
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
    realmem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
    [[ -n $cpus && -n $realmem ]] || fail "could not read CPUs/RealMemory from: $node_line"
    usable=$((realmem - MEM_MARGIN_MB))
    ((usable > 1024)) || usable=$((realmem * 3 / 4))
    defmem=$((usable / cpus))
    # Keep the hardware layout slurmd reports (sockets, cores, threads) but our own memory.
    node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" \
        -e "s/ RealMemory=[0-9]*/ RealMemory=$usable/" <<<"$node_line")
    mkdir -p "$ETC" "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd

    if write_if_changed "$ETC/slurm.conf" 644 <<EOF; then SLURM_CONF_CHANGED=1; fi
# Written by scripts/local_slurm.sh: a one-node cluster for tests. Edits here are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job must wait cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=$CRED_EXPIRE
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
# Reject at sbatch time a job the node can never run (too many CPUs or nodes) instead of
# leaving it pending forever.
EnforcePartLimits=ALL
SchedulerType=sched/backfill
# Nothing wakes the scheduler when a requeued job's begin time passes: only the periodic main
# loop (default every 60 s) starts it. A tiny queue makes a 1 s loop cheap.
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    if write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF; then DBD_CONF_CHANGED=1; fi
# Written by scripts/local_slurm.sh: slurmdbd keeps job accounting (sacct) in local MariaDB.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOGDIR/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    log "config: node $host CPUs=$cpus RealMemory=$usable DefMemPerCPU=$defmem cred_expire=$CRED_EXPIRE"
}

start_munge() {
    [[ -n $(daemon_pid munged "$MUNGE_PID") ]] && return 0
    [[ -f /etc/munge/munge.key ]] || {
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 || fail "mungekey --create"
    }
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PID"
    runuser -u munge -- munged --force >/dev/null 2>&1 9>&- || fail "munged did not start" /var/log/munge/munged.log
    wait_for 10 "munge -n | unmunge" /var/log/munge/munged.log bash -c 'munge -n | unmunge'
    log "started munged"
}

mysql_up() { mariadb --protocol=socket -S "$MYSQL_SOCK" -e 'select 1'; }

start_mariadb() {
    if [[ -z $(daemon_pid mariadbd "$MYSQL_PID") ]]; then
        install -d -o mysql -g mysql -m 0755 "$MYSQL_RUN"
        install -d -o mysql -g adm -m 2750 /var/log/mysql
        rm -f "$MYSQL_SOCK" "$MYSQL_SOCK.lock" "$MYSQL_PID"
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/tmp/local_slurm_mysql_init.log 2>&1 ||
                fail "mariadb-install-db" /tmp/local_slurm_mysql_init.log
        fi
        # Only the unix socket (no TCP port to collide with); small buffers, lazy flushing:
        # it is a scratch database for test jobs.
        setsid mariadbd --user=mysql --skip-networking --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
            --log-error="$MYSQL_LOG" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
            --innodb-flush-log-at-trx-commit=0 --skip-log-bin </dev/null >>"$MYSQL_LOG" 2>&1 9>&- &
        wait_for 60 "mariadb did not answer on $MYSQL_SOCK" "$MYSQL_LOG" mysql_up
        log "started mariadb"
    fi
    mariadb -S "$MYSQL_SOCK" <<EOF || fail "creating the slurmdbd database and user" "$MYSQL_LOG"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
}

start_slurmdbd() {
    local pid
    pid=$(daemon_pid slurmdbd "$DBD_PID")
    if [[ -n $pid ]] && ((DBD_CONF_CHANGED)); then
        stop_daemon slurmdbd "$DBD_PID"
        pid=
    fi
    if [[ -z $pid ]]; then
        slurmdbd >>"$LOGDIR/slurmdbd.log" 2>&1 9>&- || fail "slurmdbd did not start" "$LOGDIR/slurmdbd.log"
        log "started slurmdbd"
    fi
    wait_for 60 "slurmdbd did not answer (sacctmgr list cluster)" "$LOGDIR/slurmdbd.log" \
        sacctmgr -n list cluster
    # Register the cluster before slurmctld first connects. Adding a cluster also makes the
    # root account and root's association, which is all that root's jobs need.
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr add cluster $CLUSTER" "$LOGDIR/slurmdbd.log"
        log "registered cluster $CLUSTER in slurmdbd"
    fi
    local user
    user=${SUDO_USER:-root}
    if [[ $user != root ]] && ! sacctmgr -n -P list assoc cluster="$CLUSTER" user="$user" format=user | grep -q .; then
        sacctmgr -i add user "$user" account=root cluster="$CLUSTER" >/dev/null ||
            fail "sacctmgr add user $user" "$LOGDIR/slurmdbd.log"
    fi
}

start_slurmctld() {
    local pid
    pid=$(daemon_pid slurmctld "$CTLD_PID")
    if [[ -n $pid ]] && ((SLURM_CONF_CHANGED)); then
        # A changed node line or plugin needs a fresh start, not just `scontrol reconfigure`.
        stop_daemon slurmctld "$CTLD_PID"
        pid=
    fi
    if [[ -z $pid ]]; then
        # slurmctld refuses a state directory saved under another ClusterName; this is a scratch
        # cluster, so its old state may go.
        local saved=/var/spool/slurmctld/clustername
        if [[ -f $saved && $(cat "$saved") != "$CLUSTER" ]]; then
            log "state in /var/spool/slurmctld was cluster '$(cat "$saved")', not '$CLUSTER': dropping it"
            rm -f "$saved"
        fi
        slurmctld >>"$LOGDIR/slurmctld.log" 2>&1 9>&- || fail "slurmctld did not start" "$LOGDIR/slurmctld.log"
        log "started slurmctld"
    fi
    wait_for 30 "slurmctld did not answer (scontrol ping)" "$LOGDIR/slurmctld.log" \
        bash -c 'scontrol ping | grep -q UP'
}

start_slurmd() {
    local pid
    pid=$(daemon_pid slurmd "$SLURMD_PID")
    if [[ -n $pid ]] && ((SLURM_CONF_CHANGED)); then
        stop_daemon slurmd "$SLURMD_PID"
        pid=
    fi
    if [[ -z $pid ]]; then
        slurmd >>"$LOGDIR/slurmd.log" 2>&1 9>&- || fail "slurmd did not start" "$LOGDIR/slurmd.log"
        log "started slurmd"
    fi
}

node_state() { { sinfo -h -N -n "$(hostname -s)" -o '%T' 2>/dev/null || true; } | head -n 1; }

node_usable() {
    case $(node_state) in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

wait_node() {
    local host state deadline
    host=$(hostname -s)
    deadline=$(($(date +%s) + 30))
    while ! node_usable; do
        state=$(node_state)
        # A node left down or drained by an earlier run (killed jobs, lost daemons) is put back.
        if [[ $state == down* || $state == drain* || $state == *drain* || $state == *fail* ]]; then
            scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        fi
        (($(date +%s) < deadline)) || fail "node $host is '$state', not idle" "$LOGDIR/slurmd.log"
        sleep 0.2
    done
}

do_start() {
    need_root
    command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null ||
        fail "SLURM is not installed: run 'bash scripts/local_slurm.sh install' first"
    write_configs
    phase "write configs"
    start_munge
    phase "munged"
    start_mariadb
    phase "mariadb"
    start_slurmdbd
    phase "slurmdbd"
    start_slurmctld
    phase "slurmctld"
    start_slurmd
    wait_node
    phase "slurmd, node idle"
    # A job proves the whole chain (munge, slurmctld, slurmd, slurmstepd). When jobs already fill
    # the node (start rerun during a test run) srun would queue behind them; they are the proof.
    if [[ $(node_state) == idle ]]; then
        timeout 60 srun -t 1 -J local_slurm_check hostname >/tmp/local_slurm_srun.log 2>&1 ||
            fail "srun -t 1 hostname" /tmp/local_slurm_srun.log
    fi
    sacct -n -X -S now-1hours >/dev/null 2>&1 || fail "sacct" "$LOGDIR/slurmdbd.log"
    phase "srun hostname, sacct"
    log "SLURM is up: cluster $CLUSTER, node $(hostname -s) $(node_state), partition debug ($(elapsed) s)"
}

do_stop() {
    need_root
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon slurmdbd "$DBD_PID"
    stop_daemon mariadbd "$MYSQL_PID"
    stop_daemon munged "$MUNGE_PID"
    log "stopped ($(elapsed) s)"
}

do_status() {
    command -v sinfo >/dev/null || { echo "local_slurm: not installed" >&2; exit 1; }
    local state
    state=$(node_state)
    case $state in
        idle | mixed | allocated | completing) ;;
        "") echo "local_slurm: sinfo got no answer from slurmctld" >&2; exit 1 ;;
        *) echo "local_slurm: node $(hostname -s) is '$state'" >&2; exit 1 ;;
    esac
    sacct -n -X -S now-1hours >/dev/null 2>&1 || { echo "local_slurm: sacct does not answer (slurmdbd)" >&2; exit 1; }
    echo "local_slurm: up, node $(hostname -s) $state"
}

# Two callers at once (say, two test sessions) take turns rather than starting daemons twice. The
# daemons are started with fd 9 closed: one that inherited it would hold the lock for its lifetime,
# and every later call (a second .ci/run, `stop`) would wait 300 s for it and fail.
lock() {
    exec 9>/tmp/local_slurm.lock
    flock -w 300 9 || fail "another local_slurm.sh held /tmp/local_slurm.lock for 300 s"
}

case ${1:-all} in
    install | start | stop | all) lock ;;
esac
case ${1:-all} in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    all)
        do_install
        do_start
        ;;
    *)
        echo "usage: $0 [install|start|stop|status]" >&2
        exit 2
        ;;
esac
