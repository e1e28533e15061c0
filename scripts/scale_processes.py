"""Data-parallel scaling (issue 41, item 3): the same short training of a model on a published split in
1, 2, 4, ... torchrun processes with the same global batch, and its training cases/s against one process.

    .venv/bin/python scripts/scale_processes.py --models narm dsan --processes 1 2 4 --threads 4 \\
        --device cpu --out results/scale/processes/<machine>.json

Each run is the ordinary `nextclick train MODEL -d DATASET --max-batches B --epochs 1` (under
`torch.distributed.run --standalone --nproc_per_node P` when P > 1), every process with `--threads T`,
so P processes use P x T cores; the figure is the epoch's `cases_per_second` of train.jsonl (training
only, summed over the processes; validation is timed apart). With `--device cuda` every process takes
its own GPU (cuda:LOCAL_RANK), so P cannot exceed the GPUs present: a run that fails is recorded with
the end of its output, not dropped. The machine's facts and the commit go into the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nextclick import atomic  # noqa: E402
from nextclick.runtime import git_commit, machine_info  # noqa: E402


def command(model: str, processes: int, args: argparse.Namespace, out: Path) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    train = ["-m", "nextclick.cli", "train", model, "-d", args.dataset, "--data-dir", args.data_dir,
             "--max-batches", str(args.max_batches), "--epochs", "1", "--threads", str(args.threads),
             "--device", args.device, "-q", "-o", str(out)]
    return (launcher if processes > 1 else [sys.executable]) + train


def measure(model: str, processes: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": str(args.threads)}
        started = time.perf_counter()
        try:
            done = subprocess.run(command(model, processes, args, out), env=env, capture_output=True, text=True,
                                  timeout=args.timeout)
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as expired:
            code, output = "timeout", str(expired.stdout or "") + str(expired.stderr or "")
        row = {"model": model, "processes": processes, "threads_per_process": args.threads,
               "wall_seconds": round(time.perf_counter() - started, 1), "exit": code}
        if code != 0:
            return {**row, "output_tail": output[-1500:]}
        epoch = json.loads((out / "train.jsonl").read_text().splitlines()[0])
        return {**row, **{k: epoch[k] for k in ("cases_per_second", "seconds", "valid_seconds", "loss")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["narm", "dsan"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=4, help="torch threads of every process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="retailrocket")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--max-batches", type=int, default=40, help="global batches of the one epoch timed")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed to each run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rows = []
    for model in args.models:
        for processes in args.processes:
            row = measure(model, processes, args)
            alone = next((r for r in rows if r["model"] == model and r["processes"] == 1 and "cases_per_second" in r), None)
            if alone and "cases_per_second" in row:
                row["speedup"] = round(row["cases_per_second"] / alone["cases_per_second"], 2)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "output_tail"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out, {
        "what": "training cases/s of one short epoch in 1..N torchrun processes, the same global batch",
        "command": " ".join(sys.argv), "commit": os.environ.get("NEXTCLICK_GIT_COMMIT") or git_commit(),
        "dataset": args.dataset, "max_batches": args.max_batches, "device": args.device,
        "machine": machine_info(args.threads, args.device), "cpu_count": os.cpu_count(), "runs": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
