#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and CI (Debian: apt-get install slurm-wlm munge).
#
#   scripts/local_slurm.sh up       # start munged, slurmctld, slurmd; prints `export SLURM_CONF=... PATH=...`
#   scripts/local_slurm.sh status   # which daemons run, and sinfo; exit 0 when the cluster answers
#   scripts/local_slurm.sh down     # cancel its jobs, stop the daemons it started (by pid), keep the logs
#   eval "$(scripts/local_slurm.sh up)" && sbatch --wrap hostname
#
# Everything (slurm.conf, munge key and socket, state, logs, pid files) lives in one folder,
# $GPUNET_SLURM_DIR (default ${TMPDIR:-/tmp}/gpunet-slurm); nothing under /etc or /run is touched, so
# clients need SLURM_CONF=$GPUNET_SLURM_DIR/slurm.conf (the tests find the default folder by
# themselves). The node is this host with its CPUs and memory (slurmd -C), controller and compute
# node at once, so jobs see the same filesystem and, since sbatch exports the submitting
# environment by default, the same Python. `up` is idempotent (a running cluster is left as it is),
# ports are picked free when the folder is (re)configured, and `down` stops only the processes
# whose pid files are in the folder and whose command line names it. Must run as root (the
# daemons and SlurmUser are root). There is no accounting database (slurmdbd): $DIR/bin/sacct
# stands in for sacct, answering from slurmctld's memory, so that submitit learns when a job ended
# without leaving a result (cancelled, killed, out of time); the PATH that `up` prints puts it
# first. Without it submitit waits for such a job forever (the real sacct only says "Slurm
# accounting storage is disabled").
set -euo pipefail

DIR="${GPUNET_SLURM_DIR:-${TMPDIR:-/tmp}/gpunet-slurm}"
CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
DAEMONS=(slurmd slurmctld munged)  # the stop order

say() { echo "local_slurm: $*" >&2; }
die() { say "$*"; exit 1; }

pidfile() { echo "$DIR/run/$1.pid"; }

# The pid of one of our daemons if it is alive and really ours (its command line names $DIR).
our_pid() {
    local file pid
    file="$(pidfile "$1")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc 0-9 <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR" || return 1
    echo "$pid"
}

answers() {  # the controller answers and the node is usable
    local state
    state="$(SLURM_CONF="$CONF" timeout 10 sinfo -h -o %T 2>/dev/null | head -1)" || return 1
    [[ "$state" =~ ^(idle|mixed|allocated|completing) ]]
}

wait_for() {  # wait_for <seconds> <what> <command...>
    local seconds="$1" what="$2" start=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - start < seconds)) || die "$what did not come up within ${seconds}s (logs in $DIR/log)"
        sleep 0.2
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

configure() {
    local node cpus mem ctld_port d_port
    mkdir -p "$DIR"/{munge,state/ctld,state/d,log,run}
    chmod 700 "$DIR" "$DIR/munge"
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$DIR/munge/munge.key"
    node="$(hostname -s)"
    cpus="$(nproc)"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mem=$(( ${mem:-1024} * 9 / 10 ))  # a margin: slurmd drains a node that has less than configured
    ctld_port="$(free_port)"
    d_port="$(free_port)"
    while [[ "$d_port" == "$ctld_port" ]]; do d_port="$(free_port)"; done
    cat >"$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on this host, everything under $DIR.
ClusterName=gpunet
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# schedule every 2 s (defaults: 60 s main loop, 30 s backfill), so a requeued job restarts at once
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# a requeued or cancelled job gets SIGTERM, then SIGKILL after KillWait seconds (default 30)
KillWait=5
# jobs are requeueable unless they say --no-requeue (Slurm's default, spelled out)
JobRequeue=1
InactiveLimit=0
MinJobAge=3600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_sacct() {  # a stand-in for sacct, which needs slurmdbd and a database
    mkdir -p "$DIR/bin"
    cat >"$DIR/bin/sacct" <<'EOS'
#!/usr/bin/env bash
# sacct for scripts/local_slurm.sh's cluster, which has no accounting database (slurmdbd): answers
# `sacct [-o|--format FIELDS] [-P|--parsable2] [-n|--noheader] [-j|--jobs IDS]...` (what submitit
# asks to learn whether a job that left no result has ended) from slurmctld's memory (`scontrol
# show job`), which keeps a finished job MinJobAge seconds. Fields: JobID, JobIDRaw, JobName,
# State, ExitCode, NodeList, Partition; the output is always parsable2 (|-separated).
set -euo pipefail
fields="JobID,JobName,Partition,State,ExitCode" header=1 jobs=()
while (($#)); do
    case "$1" in
        -o|--format) fields="$2"; shift ;;
        --format=*) fields="${1#*=}" ;;
        -j|--jobs) IFS=, read -ra more <<<"$2"; jobs+=("${more[@]}"); shift ;;
        --jobs=*) IFS=, read -ra more <<<"${1#*=}"; jobs+=("${more[@]}") ;;
        -n|--noheader) header=0 ;;
        -P|--parsable2|-p|--parsable|-X|--allocations) ;;
        *) echo "sacct (local_slurm stand-in): unsupported option $1" >&2; exit 1 ;;
    esac
    shift
done
if ((header)); then echo "${fields//,/|}"; fi
if ((${#jobs[@]} == 0)); then jobs=(""); fi
for job in "${jobs[@]}"; do
    scontrol -o show job ${job:+"${job%%_*}"} 2>/dev/null || true
done | awk -v fields="$fields" '
    { delete f
      for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v } }
    !("JobId" in f) || seen[f["JobId"]]++ { next }
    { id = f["JobId"]
      if (f["ArrayJobId"] != "" && f["ArrayTaskId"] != "")
          id = f["ArrayJobId"] "_" (f["ArrayTaskId"] ~ /^[0-9]+$/ ? f["ArrayTaskId"] : "[" f["ArrayTaskId"] "]")
      n = split(fields, names, ","); line = ""
      for (i = 1; i <= n; i++) {
          name = tolower(names[i]); v = ""
          if (name == "jobid") v = id
          else if (name == "jobidraw") v = f["JobId"]
          else if (name == "jobname") v = f["JobName"]
          else if (name == "state") v = f["JobState"]
          else if (name == "exitcode") v = f["ExitCode"]
          else if (name == "nodelist") v = f["NodeList"]
          else if (name == "partition") v = f["Partition"]
          line = line (i > 1 ? "|" : "") v
      }
      print line }'
EOS
    chmod 755 "$DIR/bin/sacct"
}

up() {
    [[ "$(id -u)" == 0 ]] || die "run me as root (the daemons and SlurmUser are root)"
    local missing=()
    for cmd in munged slurmctld slurmd sinfo; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
    ((${#missing[@]} == 0)) || die "not installed: ${missing[*]} (apt-get install -y slurm-wlm munge)"
    write_sacct
    if our_pid slurmctld >/dev/null && our_pid slurmd >/dev/null && our_pid munged >/dev/null \
        && answers; then
        say "already up ($CONF)"
        echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH"
        return 0
    fi
    if ! our_pid slurmctld >/dev/null && ! our_pid slurmd >/dev/null && ! our_pid munged >/dev/null; then
        configure  # nothing of ours runs: fresh ports, fresh config
    fi
    local start=$SECONDS
    if ! our_pid munged >/dev/null; then
        munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
            --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed"
        wait_for 15 munged test -S "$MUNGE_SOCKET"
    fi
    export SLURM_CONF="$CONF"
    if ! our_pid slurmctld >/dev/null; then
        slurmctld -c -f "$CONF"  # -c: a fresh controller forgets jobs of an earlier run
        wait_for 30 slurmctld sh -c "SLURM_CONF='$CONF' scontrol ping 2>/dev/null | grep -q UP"
    fi
    if ! our_pid slurmd >/dev/null; then
        slurmd -f "$CONF" -N "$(hostname -s)"
    fi
    wait_for 60 "the node" answers
    say "up in $((SECONDS - start))s: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
    echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH"  # PATH: the sacct stand-in
}

stop_pid() {  # stop_pid <name>
    local pid
    pid="$(our_pid "$1")" || { rm -f "$(pidfile "$1")"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$1 ($pid) ignored SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$1")"
    say "stopped $1 ($pid)"
}

down() {
    if our_pid slurmctld >/dev/null && [[ -f "$CONF" ]]; then
        export SLURM_CONF="$CONF"
        local jobs
        jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')" || jobs=""
        if [[ -n "${jobs// /}" ]]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 100); do  # their processes end before slurmd does
                [[ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ]] && break
                sleep 0.2
            done
        fi
    fi
    for daemon in "${DAEMONS[@]}"; do stop_pid "$daemon"; done
}

status() {
    local rc=0
    for daemon in munged slurmctld slurmd; do
        if pid="$(our_pid "$daemon")"; then
            echo "$daemon: running (pid $pid)"
        else
            echo "$daemon: not running"
            rc=3
        fi
    done
    if [[ $rc == 0 ]] && answers; then
        echo "SLURM_CONF=$CONF"
        SLURM_CONF="$CONF" sinfo
    else
        rc=3
    fi
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status   (folder: $DIR)" >&2; exit 2 ;;
esac
