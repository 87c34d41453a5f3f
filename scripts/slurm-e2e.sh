#!/usr/bin/env bash
# End-to-end test of clbench on a real Slurm cluster: a one-node cluster (munged, slurmctld,
# slurmd from Debian's packages, run as root without systemd, everything under one temporary
# directory, on ports of its own) runs the array scripts `clbench slurm` writes for
# configs/quickstart.yaml, and the results are held to a local `clbench run` of the same config:
#
#   1. one shared results directory, 3 array tasks: every planned run present exactly once, each
#      run's accuracy.csv and the whole report byte-identical to the local run's;
#   2. one results directory per array task (--separate-outs), merged by `clbench report`;
#   3. an array task cancelled mid-run (scancel), then the same script resubmitted: the store
#      ends complete, nothing lost or duplicated, and again byte-identical;
#   4. `#` in the working and output folders and a quote in the experiment's name, values that
#      sbatch parses itself: kept whole.
#
# Uses $CLBENCH_BIN when set, else builds the release binary. Stops the daemons it started (by
# their pids) on exit. Installs slurmctld, slurmd, slurm-client and munge with apt if missing
# (needs root, as the daemons do).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
config=configs/quickstart.yaml
say() { echo "slurm e2e: $*" >&2; }
fail() {
    echo "slurm e2e: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (the Slurm daemons run as root here)"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

if [ -n "${CLBENCH_BIN:-}" ]; then
    bin=$(realpath "$CLBENCH_BIN")
else
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/clbench"
fi
[ -x "$bin" ] || fail "no clbench binary at $bin"

work=$(mktemp -d /tmp/clbench-slurm-e2e.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" != 0 ]; then
        say "daemon logs kept in $work/log"
        tail -n 20 "$work"/log/*.log >&2 || true
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- the cluster -------------------------------------------------------------------------------
mkdir -p "$work"/{munge,state,spool,log}
chmod 755 "$work/munge"
head -c 1024 /dev/urandom >"$work/munge/munge.key"
chmod 600 "$work/munge/munge.key"
munged --foreground --force --key-file="$work/munge/munge.key" \
    --socket="$work/munge/munge.socket" --pid-file="$work/munge/munged.pid" \
    --log-file="$work/log/munged.log" --seed-file="$work/munge/munged.seed" \
    >"$work/log/munged.out" 2>&1 &
pids+=($!)

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
port=$((20000 + $$ % 20000))
export SLURM_CONF="$work/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=clbench-e2e
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$work/jobcomp.txt
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=e2e Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
for _ in $(seq 50); do [ -S "$work/munge/munge.socket" ] && break; sleep 0.1; done
slurmctld -D -f "$SLURM_CONF" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/log/slurmd.out" 2>&1 &
pids+=($!)
for i in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    [ "$i" = 60 ] && fail "the node did not come up (sinfo: '$state')"
    sleep 1
done
say "cluster up: node $host, $cpus CPUs, slurmctld on port $port ($(sinfo --version))"

# Waits until array job $1 has left the queue (at most $2 seconds).
wait_array() {
    local job=$1 limit=$2 t=0
    while [ -n "$(squeue -h -j "$job" 2>/dev/null)" ]; do
        t=$((t + 2))
        [ "$t" -le "$limit" ] || fail "array $job still queued after $limit s: $(squeue -j "$job")"
        sleep 2
    done
}

# The final states of array job $1's tasks, one per line (task id and state).
task_states() {
    grep "ArrayJobId=$1 " "$work/jobcomp.txt" |
        sed -E 's/.*JobState=([A-Z_]+).*ArrayTaskId=([0-9]+).*/\2 \1/' | sort -n
}

submit() {
    sbatch --parsable "$1" | cut -d';' -f1
}

# --- the reference: a local run --------------------------------------------------------------
"$bin" run "$config" --out "$work/local" --threads 1 -q >/dev/null
runs=$(find "$work/local/runs" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$runs" -gt 0 ] || fail "the local run stored nothing"
say "local reference: $runs runs"

# Every run of the local store is complete in store $1 exactly once, with the same
# accuracy.csv, nothing half-written is left, and its report equals the local one.
check_store() {
    local dir=$1 what=$2
    local line
    line=$("$bin" run "$config" --out "$dir" --dry-run 2>&1 | tail -n 1)
    [[ "$line" == "$runs runs: $runs complete, 0 to run"* ]] || fail "$what: $line"
    local stored
    stored=$(find "$dir/runs" -mindepth 1 -maxdepth 1 | wc -l)
    [ "$stored" = "$runs" ] || fail "$what: $stored entries in runs/, expected $runs: $(ls -a "$dir/runs")"
    for run in "$work"/local/runs/*/; do
        id=$(basename "$run")
        cmp -s "$run/accuracy.csv" "$dir/runs/$id/accuracy.csv" ||
            fail "$what: $id/accuracy.csv differs from the local run's"
    done
    "$bin" report "$dir" -q >/dev/null
    compare_reports "$dir" "$what"
}

# The tables, figures and summaries of report $1 equal the local run's (timing aside).
compare_reports() {
    diff -r -q -x 'timing.*' -x runs -x slurm -x .locks -x experiment.yaml \
        "$work/local" "$1" >&2 || fail "$2: the report differs from the local run's"
}

# --- 1. one shared store ---------------------------------------------------------------------
"$bin" slurm "$config" --shards 3 --cpus-per-task 1 --time 00:20:00 --bin "$bin" \
    --out "$work/shared" --script "$work/shared.sh" 2>/dev/null
job=$(submit "$work/shared.sh")
wait_array "$job" 900
states=$(task_states "$job")
[ "$(grep -c COMPLETED <<<"$states")" = 3 ] || fail "shared store: task states $states"
check_store "$work/shared" "shared store"
say "1/4 shared store: 3 array tasks completed, $runs of $runs runs present once, byte-identical"

# --- 2. one store per array task, merged -----------------------------------------------------
"$bin" slurm "$config" --shards 3 --cpus-per-task 1 --time 00:20:00 --bin "$bin" \
    --separate-outs --out "$work/separate" --script "$work/separate.sh" 2>/dev/null
job=$(submit "$work/separate.sh")
wait_array "$job" 900
ids=$(find "$work"/separate/shard-*/runs -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
[ "$(wc -l <<<"$ids")" = "$runs" ] && [ -z "$(uniq -d <<<"$ids")" ] ||
    fail "separate stores: runs $(tr '\n' ' ' <<<"$ids")"
for id in $ids; do
    cmp -s "$work/local/runs/$id/accuracy.csv" "$work"/separate/shard-*/runs/"$id"/accuracy.csv ||
        fail "separate stores: $id/accuracy.csv differs from the local run's"
done
"$bin" report "$work"/separate/shard-* --out "$work/merged" -q >/dev/null
compare_reports "$work/merged" "separate stores merged"
say "2/4 separate stores: $runs runs across 3 stores, each once, merged report identical"

# --- 3. a task cancelled mid-run, then the script resubmitted --------------------------------
"$bin" slurm "$config" --shards 2 --cpus-per-task 1 --time 00:20:00 --bin "$bin" \
    --out "$work/cancel" --script "$work/cancel.sh" 2>/dev/null
job=$(submit "$work/cancel.sh")
for i in $(seq 300); do
    [ "$(squeue -h -j "${job}_1" -o %T 2>/dev/null)" = RUNNING ] && break
    [ "$i" = 300 ] && fail "task ${job}_1 never started"
    sleep 0.2
done
sleep 4 # into its first run
scancel "${job}_1"
wait_array "$job" 900
states=$(task_states "$job")
grep -q "^1 CANCELLED" <<<"$states" || fail "cancel: task states $states"
line=$("$bin" run "$config" --out "$work/cancel" --dry-run 2>&1 | tail -n 1)
[[ "$line" != "$runs runs: $runs complete"* ]] || fail "cancel: the cancelled task had already finished ($line)"
say "cancelled task 1 mid-run: $line"
job=$(submit "$work/cancel.sh")
wait_array "$job" 900
check_store "$work/cancel" "after resubmission"
say "3/4 cancelled task resubmitted: store complete"

# --- 4. values sbatch parses itself: `#` in the paths, a quote in the job name -----------------
# sbatch reads #SBATCH lines without a shell: an unquoted `#` starts a comment and an unmatched
# `'` stops it. A one-run experiment named `it's`, submitted from a folder `exp #1`, results into
# `out #2`: the job must run there, under that name, and store its run there.
odd="$work/exp #1"
mkdir -p "$odd"
cat >"$odd/odd.yaml" <<YAML
name: "it's"
stream: $repo/tasks/permuted-mnist-5.yaml
model: {kind: mlp, hidden: [16]}
methods:
  - name: sgd
    optimizer: {name: sgd, lr: 0.01}
training: {batch_size: 16, iterations: 2}
seeds: [0]
YAML
(cd "$odd" && "$bin" slurm odd.yaml --cpus-per-task 1 --time 00:05:00 --bin "$bin" \
    --out "out #2" --script odd.sh 2>/dev/null)
job=$(cd "$odd" && submit odd.sh)
info=$(scontrol show job "$job" 2>/dev/null || true)
grep -q "JobName=clbench-it's" <<<"$info" || fail "odd names: job name not kept: $info"
grep -qF "WorkDir=$odd" <<<"$info" || fail "odd names: working directory cut short: $info"
wait_array "$job" 300
states=$(task_states "$job")
grep -q "^0 COMPLETED" <<<"$states" || fail "odd names: task states $states"
[ "$(find "$odd/out #2/runs" -name complete.json | wc -l)" = 1 ] ||
    fail "odd names: no complete run under '$odd/out #2'"
ls "$odd/out #2/slurm/"*.out >/dev/null || fail "odd names: no log under '$odd/out #2/slurm'"
say "4/4 '#' in the working and output folders and a quote in the job name: kept by sbatch"

say "$runs of $runs runs present once, byte-identical to a local run (shared store, separate stores merged, cancelled task resubmitted, odd names)"
