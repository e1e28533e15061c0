#!/bin/bash
# Runs lines of the benchmark queue (scripts/bench_queue.txt) on a lent GPU machine (the `device` tool),
# where a run takes minutes instead of hours, and brings their results back. Three steps:
#
#   scripts/device_queue.sh prepare           here: the splits, the entmax wheel and the commit that travel
#   device run, carry [".devdata", ".whl", ".devcommit"], timeout_s 600, command:
#       LANES=4 bash scripts/device_queue.sh run 540 sriem-dn-seed2 narm-yc-seed2 ...
#   scripts/device_queue.sh collect FILES_AT  here: results into results/, the jobs marked done
#
# On the device the working tree that travelled runs (not each line's own commit): `prepare` refuses a
# tree with uncommitted changes under src/ and records HEAD, which every result names as its commit
# (NEXTCLICK_GIT_COMMIT). `run` keeps LANES jobs running side by side (default 1; each with
# nproc/LANES threads), every lane taking the next job of the list nobody has taken; one GPU is mostly
# idle under one of these models (a step is hundreds of small kernel launches), so four lanes finish about
# four jobs in the time of one. A job starts only while at least a minute of the budget is left, and each
# finished job's results are packed into $OUT/results-<name>.tar at once, so a call stopped at its limit
# still brings back every job it finished. An unfinished job keeps its checkpoints under runs/ (ignored,
# so kept on the machine while it stays warm) and every job runs with --resume: the same `run` called
# again at once, before the machine is handed back, continues it from its last epoch. Otherwise it stays
# in the CPU queue. The machine's Python already holds torch, numpy, scipy, safetensors and tqdm; entmax
# travels as a wheel; polars is not needed to train on a prepared split.
set -u
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  if [ -n "$(git status --porcelain -- src)" ]; then
    echo "uncommitted changes under src/: commit them first (the device runs this tree and names HEAD)" >&2
    exit 1
  fi
  mkdir -p .git/info
  for path in /.devdata/ /.whl/ /.devcommit; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
  done
  rm -rf .devdata && mkdir -p .devdata
  cp -r "${NEXTCLICK_DATA:-../shared/data}/benchmarks" .devdata/
  mkdir -p .whl
  ls .whl/entmax-*.whl > /dev/null 2>&1 || .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
      -d .whl "entmax==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("entmax"))')"
  git rev-parse HEAD > .devcommit
  echo "ready at $(cat .devcommit): $(du -sh .devdata .whl | tr '\n' ' ')"
  ;;
run)
  budget=$2; shift 2
  deadline=$((SECONDS + budget))
  python=${PYTHON:-python3} device=${DEVICE:-cuda}  # PYTHON=.venv/bin/python DEVICE=cpu: a dry run here
  lanes=${LANES:-1}
  threads=$(( $(nproc) / lanes )); [ "$threads" -lt 1 ] && threads=1
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD/src:/tmp/site" NEXTCLICK_GIT_COMMIT
  NEXTCLICK_GIT_COMMIT=$(cat .devcommit)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2> /dev/null
  claims=$(mktemp -d)
  lane() {
    for name in "$@"; do
      mkdir "$claims/$name" 2> /dev/null || continue  # another lane has it
      left=$((deadline - SECONDS))
      if [ "$left" -lt 60 ]; then echo "$name: not started, ${left}s left"; continue; fi
      line=$(grep -m1 "^$name " "${QUEUE:-scripts/bench_queue.txt}") || { echo "$name: no such queue line"; continue; }
      read -r _ _ args <<< "$line"
      [[ "$args" == "~"* ]] && args=${args#* }  # the minutes a line expects on the CPU queue
      rm -rf "/tmp/job-results-$name"
      echo "$(date -u +%T) start $name: $args (${left}s left, $threads threads)"
      # shellcheck disable=SC2086  # the arguments are split on purpose
      if timeout "$left" $python -m nextclick.cli bench $args --device "$device" --threads "$threads" --keep-epochs \
          --quiet --resume --data-dir .devdata --results-dir "/tmp/job-results-$name" > "/tmp/$name.log" 2>&1; then
        tar -cf "$OUT/results-$name.tar" -C "/tmp/job-results-$name" .
        echo "$name" >> "$OUT/done.txt"
        echo "$(date -u +%T) done $name: $(tail -3 "/tmp/$name.log" | head -1)"
      else
        echo "$(date -u +%T) $name stopped or failed (its checkpoints stay under runs/ for a resume):"
        tail -5 "/tmp/$name.log"
      fi
    done
  }
  for _ in $(seq "$lanes"); do lane "$@" & sleep 1; done
  wait
  ;;
collect)
  from=$2
  [ -f "$from/done.txt" ] || { echo "no finished job in $from"; exit 0; }
  for tarball in "$from"/results*.tar; do
    tar -xf "$tarball" -C results --skip-old-files  # a result already here is kept
  done
  mkdir -p logs/queue
  while read -r name; do
    touch "logs/queue/$name.done"
    grep -qxF "$name" scripts/bench_queue.done 2>/dev/null || echo "$name" >> scripts/bench_queue.done
    echo "collected $name"
  done < "$from/done.txt"
  echo "commit the new files under results/ and scripts/bench_queue.done (git status)"
  ;;
*)
  sed -n '2,16p' "$0"
  exit 2
  ;;
esac
