#!/bin/bash
# Runs the benchmark queue in scripts/bench_queue.txt, each job from a clean worktree of the commit its
# line names, so every result records a committed revision.
#
#   nohup scripts/bench_queue.sh > logs/queue.out 2>&1 &             # one job at a time, all cores
#   LANES=4 nohup scripts/bench_queue.sh > logs/queue.out 2>&1 &     # four jobs side by side (more cores)
#
# A line is `name commit bench-arguments...` ('#' starts a comment), or `name commit calibrate RESULT`
# for `nextclick calibrate` on a run an earlier line finished. The file is read again before each
# job, so lines can be added or reordered while the queue runs. A finished job leaves
# logs/queue/<name>.done and is skipped; an interrupted one (machine restart, kill) continues from its
# checkpoint with --resume on the next start; a failed one leaves <name>.failed and is not retried.
# Progress: logs/queue/queue.log, each job's output in logs/queue/<name>.log, and `nextclick status`.
# LANES=N runs N jobs at once, each with cores/N threads, every lane taking the next job nobody has
# claimed (logs/queue/<name>.claim; start one queue at a time, which clears stale claims). Measured on
# this two-core machine, two one-thread jobs do 16-34% more work per hour than one two-thread job
# (docs/scale.md, "Threads"), but the project's rule here is one heavy job at a time: one lane. Each
# run of several lanes is slower, and its recorded cases/s are those of a shared machine; speed claims
# come from `nextclick speed` with the queue paused.
# WAIT_PID=<pid> WAIT_NAME=<name>: a bench already running outside the queue (or left by a queue that
# was stopped) is claimed and waited for by every lane, and marked done if it wrote its result.
# Only committed files outlive a working session here (runs/, logs/ and the worktrees in /tmp do not): a
# job still running when the session ends starts again from epoch 0 in the next one, so order the file so
# that what the session can finish comes first. A finished job's name is also appended to
# scripts/bench_queue.done, which is committed with its results: on a fresh machine the queue skips every
# name listed there, with no .done files to recreate.
# UNTIL=<date> (anything `date -d` reads, e.g. UNTIL=04:10): when the session ends. A line may give its
# expected length in minutes after its commit (`name commit ~90 bench-arguments...`); a job whose
# minutes no longer fit before UNTIL is passed over for the next one that does (a line without minutes
# counts as UNKNOWN_MINUTES, 120 by default), so the session's last hours go to runs it can finish, not
# to one it would lose.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LANES=${LANES:-1}
THREADS=$(( $(nproc) / LANES )); [ "$THREADS" -lt 1 ] && THREADS=1
mkdir -p logs/queue
rm -rf logs/queue/*.claim
finished() {  # name: mark a job done, here and in the committed list
  touch "logs/queue/$1.done"
  grep -qxF "$1" scripts/bench_queue.done 2>/dev/null || echo "$1" >> scripts/bench_queue.done
}
UNTIL_S=""; [ -n "${UNTIL:-}" ] && { UNTIL_S=$(date -d "$UNTIL" +%s) || exit 2; }
fits() {  # commit-and-rest: 0 without UNTIL, or when the line's minutes end before it
  local minutes
  read -r _ minutes _ <<< "$1"
  [ -z "$UNTIL_S" ] && return 0
  [[ "$minutes" == "~"* ]] || minutes="~${UNKNOWN_MINUTES:-120}"
  [ $(( $(date +%s) + ${minutes#"~"} * 60 )) -le "$UNTIL_S" ]
}
next_job() {  # the first line nobody has finished, failed or claimed that fits; claims it (mkdir is atomic)
  while read -r name rest; do
    case "$name" in ''|\#*) continue;; esac
    [ -e "logs/queue/$name.done" ] || [ -e "logs/queue/$name.failed" ] && continue
    grep -qxF "$name" scripts/bench_queue.done 2>/dev/null && continue
    fits "$rest" || continue
    mkdir "logs/queue/$name.claim" 2>/dev/null || continue
    echo "$name $rest"; return
  done < scripts/bench_queue.txt
}
lane() {
  if [ -n "${WAIT_PID:-}" ]; then  # every lane waits (its threads may use every core); the first marks it
    mkdir -p "logs/queue/$WAIT_NAME.claim"
    while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 20; done
    if [ "$1" -eq 1 ]; then
      grep -q "wrote .*result.json" "logs/queue/$WAIT_NAME.log" && finished "$WAIT_NAME"
      echo "$(date -u +%FT%T) end $WAIT_NAME (waited for)" >> logs/queue/queue.log
    fi
  fi
  while true; do
    job=$(next_job)
    [ -z "$job" ] && break
    read -r name commit args <<< "$job"
    [[ "$args" == "~"* ]] && args=${args#* }  # the expected minutes are the queue's, not the command's
    tree=/tmp/nextclick-$commit
    # one lane at a time makes worktrees (git's own locks, and a tree another lane is still checking out)
    flock logs/queue/worktrees.lock bash -c "[ -d '$tree/src' ] || git worktree add --detach '$tree' '$commit'" \
        > /dev/null 2>&1 || {
      echo "$(date -u +%FT%T) $name: no worktree for $commit" >> logs/queue/queue.log; touch "logs/queue/$name.failed"; continue; }
    resume=""
    [ -e "logs/queue/$name.started" ] && resume="--resume"
    touch "logs/queue/$name.started"
    echo "$(date -u +%FT%T) start $name ($commit, lane $1, $THREADS threads) $args $resume" >> logs/queue/queue.log
    # GLIBC_TUNABLES: what runtime.keep_freed_memory sets since 134a1c8 (large buffers reused, not mapped
    # afresh each step: up to 1.57x faster), for the older commits the queue runs too; no number changes
    # a line whose arguments start with `calibrate` runs `nextclick calibrate RESULT` (a finished run's
    # result folder, its checkpoint under runs/) instead of a bench; it has nothing to resume
    verb=(bench --keep-epochs); [ "${args%% *}" = calibrate ] && { verb=(); resume=""; }
    # shellcheck disable=SC2086  # the arguments are split on purpose
    env PYTHONPATH="$tree/src" GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824 \
        "$ROOT/.venv/bin/python" -m nextclick.cli "${verb[@]}" $args --threads "$THREADS" --quiet \
        --data-dir "${NEXTCLICK_DATA:-$ROOT/../shared/data}" --results-dir "$ROOT/results" $resume > "logs/queue/$name.log" 2>&1
    rc=$?
    echo "$(date -u +%FT%T) end $name rc=$rc" >> logs/queue/queue.log
    if [ $rc -eq 0 ]; then finished "$name"; else touch "logs/queue/$name.failed"; fi
  done
}
for lane_number in $(seq "$LANES"); do
  lane "$lane_number" &
  sleep 2  # the lanes claim their first jobs one after the other
done
wait
