#!/bin/bash
# Runs the benchmark queue in scripts/bench_queue.txt one job at a time (two cores: one heavy job), each
# from a clean worktree of the commit its line names, so every result records a committed revision.
#
#   nohup scripts/bench_queue.sh > logs/queue.out 2>&1 &
#
# A line is `name commit bench-arguments...` ('#' starts a comment). The file is read again before each
# job, so lines can be added or reordered while the queue runs. A finished job leaves
# logs/queue/<name>.done and is skipped; an interrupted one (machine restart, kill) continues from its
# checkpoint with --resume on the next start; a failed one leaves <name>.failed and is not retried.
# Progress: logs/queue/queue.log, each job's output in logs/queue/<name>.log, and `nextclick status`.
# WAIT_PID=<pid> WAIT_NAME=<name>: first wait for a bench already running outside the queue.
# Only committed files outlive a working session here (runs/, logs/ and the worktrees in /tmp do not): a
# job still running when the session ends starts again from epoch 0 in the next one, so order the file so
# that what the session can finish comes first. A finished job's name is also appended to
# scripts/bench_queue.done, which is committed with its results: on a fresh machine the queue skips every
# name listed there, with no .done files to recreate.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mkdir -p logs/queue
if [ -n "${WAIT_PID:-}" ]; then
  while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 20; done
  grep -q "wrote .*result.json" "logs/queue/$WAIT_NAME.log" && touch "logs/queue/$WAIT_NAME.done"
fi
next_job() {
  while read -r name rest; do
    case "$name" in ''|\#*) continue;; esac
    [ -e "logs/queue/$name.done" ] || [ -e "logs/queue/$name.failed" ] && continue
    grep -qxF "$name" scripts/bench_queue.done 2>/dev/null && continue
    echo "$name $rest"; return
  done < scripts/bench_queue.txt
}
while true; do
  job=$(next_job)
  [ -z "$job" ] && break
  read -r name commit args <<< "$job"
  tree=/tmp/nextclick-$commit
  [ -d "$tree/src" ] || git worktree add --detach "$tree" "$commit" > /dev/null 2>&1 || {
    echo "$(date -u +%FT%T) $name: no worktree for $commit" >> logs/queue/queue.log; touch "logs/queue/$name.failed"; continue; }
  resume=""
  [ -e "logs/queue/$name.started" ] && resume="--resume"
  touch "logs/queue/$name.started"
  echo "$(date -u +%FT%T) start $name ($commit) $args $resume" >> logs/queue/queue.log
  # GLIBC_TUNABLES: what runtime.keep_freed_memory sets since 134a1c8 (large buffers reused, not mapped
  # afresh each step: up to 1.57x faster), for the older commits the queue runs too; no number changes
  # shellcheck disable=SC2086  # the arguments are split on purpose
  env PYTHONPATH="$tree/src" GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824 \
      "$ROOT/.venv/bin/python" -m nextclick.cli bench $args --threads 2 --keep-epochs --quiet \
      --data-dir "${NEXTCLICK_DATA:-$ROOT/../shared/data}" --results-dir "$ROOT/results" $resume > "logs/queue/$name.log" 2>&1
  rc=$?
  echo "$(date -u +%FT%T) end $name rc=$rc" >> logs/queue/queue.log
  if [ $rc -eq 0 ]; then touch "logs/queue/$name.done"; echo "$name" >> scripts/bench_queue.done
  else touch "logs/queue/$name.failed"; fi
done
