#!/usr/bin/env bash
# A single-node SLURM cluster on loopback, from Debian's packages (munge, slurmctld, slurmd,
# slurm-client; Debian 12 ships Slurm 22.05), for tests/integration/test_cluster.py and by hand.
#
#   slurm_single_node.sh install     apt-get install the packages unless present (needs root)
#   slurm_single_node.sh start DIR   write DIR/slurm.conf, start munged, slurmctld and slurmd
#                                    (as root), wait until the node accepts jobs
#   slurm_single_node.sh stop DIR    cancel the cluster's jobs, stop the daemons that `start DIR`
#                                    started (by their pid files); safe to repeat
#   slurm_single_node.sh status DIR  daemons, node and queue
#
# By hand (as root):
#   tests/integration/slurm_single_node.sh install
#   tests/integration/slurm_single_node.sh start /tmp/slurm
#   PATH="$PWD/.venv/bin:$PATH" snakemake --profile configs/profiles/slurm -j 4 \
#       --max-threads 2 --slurm-status-command squeue
#   tests/integration/slurm_single_node.sh stop /tmp/slurm && rm -rf /tmp/slurm
#
# Everything the cluster writes lives in DIR: slurm.conf, the munge key, socket and seed,
# controller state, slurmd spool, pid files and logs (DIR/log: munged.log, slurmctld.log,
# slurmd.log, jobcomp.log = one line per finished job); the ports are free ones picked at start.
# The one file outside DIR: while the cluster runs, /etc/slurm/slurm.conf is a symlink to
# DIR/slurm.conf (removed by stop): Slurm commands read SLURM_CONF or else that default path,
# and the executor plugin's job step (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes
# SLURM_CONF from the environment of the srun it calls inside each job, so srun must find the
# config where the commands of a real cluster find theirs. start refuses to replace a regular
# file there or the link of another running cluster. Debian's /etc/munge/munge.key is unused.
#
# The node has SLURM_TEST_CPUS CPUs (default 2); CPUs are the only consumable resource.
# Memory requests are checked against the declared RealMemory (SLURM_TEST_MEM_MB, default the
# larger of the machine's memory and 16000 MB) but not enforced. No accounting database: job
# states come from slurmctld (squeue), which keeps finished jobs for MinJobAge = 1 h;
# jobcomp.log keeps one line per finished job.
set -Eeuo pipefail

NODE=ltemnode
ETC_CONF=/etc/slurm/slurm.conf
PACKAGES=(munge slurmctld slurmd slurm-client)

die() {
    echo "slurm_single_node: $*" >&2
    exit 1
}

usage() {
    sed -n '2,11p' "$0" >&2
    exit 2
}

cmd_install() {
    local missing=()
    for tool in munged slurmctld slurmd sbatch squeue scontrol; do
        command -v "$tool" > /dev/null || missing+=("$tool")
    done
    if ((${#missing[@]} == 0)); then
        echo "slurm_single_node: munge and slurm already installed"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; installing ${PACKAGES[*]} needs root"
    echo "slurm_single_node: apt-get install ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

# A random TCP port in 20000-39999 that nothing listens on (per /proc/net/tcp and tcp6).
free_port() {
    local listening="" hex port
    while read -r hex; do
        listening+="$((16#$hex))"$'\n'
    done < <(awk 'NR > 1 && $4 == "0A" {split($2, a, ":"); print a[2]}' \
        /proc/net/tcp /proc/net/tcp6 2> /dev/null)
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        grep -qx "$port" <<< "$listening" || {
            echo "$port"
            return 0
        }
    done
    die "no free TCP port found"
}

memory_mb() {
    local kb
    kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    local mb=$((kb / 1024))
    ((mb > 16000)) || mb=16000
    echo "$mb"
}

# The pid in DIR/PIDFILE if that process is alive and is PROGRAM started for DIR (its command
# line names DIR), else nothing: only daemons that `start DIR` started are ever signalled.
live_pid() {
    local dir=$1 pidfile=$1/$2 program=$3 pid cmdline
    [[ -s $pidfile ]] || return 0
    pid=$(< "$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 0
    cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline")
    [[ $cmdline == *"$program"*" $dir/"* ]] || return 0
    echo "$pid"
}

stop_daemon() {
    local dir=$1 pidfile=$1/$2 program=$3 pid
    pid=$(live_pid "$dir" "$2" "$program")
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 100); do
            [[ -e /proc/$pid ]] || break
            sleep 0.2
        done
        if [[ -e /proc/$pid ]]; then
            echo "slurm_single_node: $program ($pid) ignored SIGTERM; killing it" >&2
            kill -KILL "$pid" 2> /dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

write_config() {
    local dir=$1 cpus=$2 mem_mb=$3 ctld_port=$4 slurmd_port=$5
    cat > "$dir/slurm.conf.new" << EOF
# Single-node test cluster written by $0 (state under $dir).
ClusterName=ltemfactory-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
# No cgroups (containers, CI): processes tracked through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# No accounting database; one line per finished job in jobcomp.log, finished jobs stay
# visible to squeue/scontrol for an hour.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$dir/slurm.conf.new" "$dir/slurm.conf"
    : > "$dir/plugstack.conf"
}

# Refuse to touch /etc/slurm/slurm.conf when a real config or another running test cluster
# owns it.
check_config_link() {
    local dir=$1 target
    if [[ -L $ETC_CONF ]]; then
        target=$(readlink "$ETC_CONF")
        if [[ $target != "$dir/slurm.conf" \
            && -n $(live_pid "$(dirname "$target")" slurmctld.pid slurmctld) ]]; then
            die "$ETC_CONF links to the running test cluster of $(dirname "$target"); stop it first"
        fi
    elif [[ -e $ETC_CONF ]]; then
        die "$ETC_CONF exists and was not written by this script; not replacing it"
    fi
}

unlink_config() {
    local dir=$1
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$dir/slurm.conf" ]]; then
        rm -f "$ETC_CONF"
    fi
}

wait_for_node() {
    local dir=$1 state=""
    for _ in $(seq 120); do
        state=$(SLURM_CONF=$dir/slurm.conf sinfo -h -n "$NODE" -o %T 2> /dev/null || true)
        [[ $state == idle ]] && return 0
        sleep 0.5
    done
    echo "slurm_single_node: node $NODE is '${state:-unreachable}', not idle, after 60 s" >&2
    return 1
}

show_logs() {
    local dir=$1
    for log in "$dir"/log/*.log; do
        [[ -f $log ]] || continue
        echo "--- $log (last 20 lines) ---" >&2
        tail -n 20 "$log" >&2
    done
}

cmd_start() {
    local dir
    [[ $(id -u) == 0 ]] || die "start needs root (slurmd runs jobs as their submitting user)"
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" > /dev/null || die "$tool not found; run '$0 install' first"
    done
    dir=$1
    # A previous start in the same directory: stop it first (re-runnable).
    cmd_stop "$dir" > /dev/null
    check_config_link "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    chmod 700 "$dir/munge"
    trap 'echo "slurm_single_node: start failed" >&2; show_logs "$dir"; cmd_stop "$dir" >&2' ERR

    [[ -s $dir/munge/munge.key ]] || mungekey --create --keyfile "$dir/munge/munge.key"
    chmod 600 "$dir/munge/munge.key"
    # --force: munged wants a socket directory that every user can enter; this one (with the
    # key) is root's only, so only root can submit jobs to this cluster.
    munged --force --socket "$dir/munge/munge.socket" --key-file "$dir/munge/munge.key" \
        --pid-file "$dir/munge/munged.pid" --seed-file "$dir/munge/munged.seed" \
        --log-file "$dir/log/munged.log"
    munge -n -S "$dir/munge/munge.socket" | unmunge -S "$dir/munge/munge.socket" > /dev/null

    local cpus=${SLURM_TEST_CPUS:-2} mem_mb=${SLURM_TEST_MEM_MB:-$(memory_mb)}
    write_config "$dir" "$cpus" "$mem_mb" "$(free_port)" "$(free_port)"
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$dir/slurm.conf" "$ETC_CONF"
    # -c: cold start, no jobs or node state from an earlier run in this directory.
    slurmctld -c -f "$dir/slurm.conf"
    slurmd -c -f "$dir/slurm.conf" -N "$NODE"
    wait_for_node "$dir"
    trap - ERR
    echo "slurm_single_node: node $NODE up ($cpus CPUs, RealMemory $mem_mb MB); state in $dir"
    echo "slurm_single_node: $ETC_CONF -> $dir/slurm.conf"
}

cmd_stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    if [[ -f $dir/slurm.conf && -n $(live_pid "$dir" slurmctld.pid slurmctld) ]]; then
        local jobs
        jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING \
            -o %i 2> /dev/null || true)
        if [[ -n $jobs ]]; then
            echo "slurm_single_node: cancelling jobs ${jobs//$'\n'/ }"
            # shellcheck disable=SC2086
            SLURM_CONF=$dir/slurm.conf scancel $jobs || true
            for _ in $(seq 60); do
                jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -t RUNNING,COMPLETING -o %i \
                    2> /dev/null || true)
                [[ -z $jobs ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemon "$dir" slurmd.pid slurmd
    stop_daemon "$dir" slurmctld.pid slurmctld
    stop_daemon "$dir" munge/munged.pid munged
    unlink_config "$dir"
    echo "slurm_single_node: stopped the daemons of $dir"
}

cmd_status() {
    local dir=$1 rc=0
    for pair in slurmd.pid:slurmd slurmctld.pid:slurmctld munge/munged.pid:munged; do
        local pid
        pid=$(live_pid "$dir" "${pair%%:*}" "${pair#*:}")
        if [[ -n $pid ]]; then
            echo "${pair#*:}: running (pid $pid)"
        else
            echo "${pair#*:}: not running"
            rc=1
        fi
    done
    if ((rc == 0)); then
        SLURM_CONF=$dir/slurm.conf sinfo
        SLURM_CONF=$dir/slurm.conf squeue
    fi
    return "$rc"
}

# DIR as an absolute physical path: the daemons' command lines and pid checks use it.
abs_dir() {
    if [[ -d $1 ]]; then
        (cd "$1" && pwd -P)
    else
        echo "$1"
    fi
}

case ${1:-} in
    install) (($# == 1)) || usage && cmd_install ;;
    start) (($# == 2)) || usage && mkdir -p "$2" && cmd_start "$(abs_dir "$2")" ;;
    stop) (($# == 2)) || usage && cmd_stop "$(abs_dir "$2")" ;;
    status) (($# == 2)) || usage && cmd_status "$(abs_dir "$2")" ;;
    *) usage ;;
esac
