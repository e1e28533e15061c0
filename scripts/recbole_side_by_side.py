"""A nextclick model against RecBole 1.2.1's, alternating in one run on this machine: NARM (issue 41, item 7),
STAMP, SR-GNN and GC-SAN (issue 34's speed check), `--model`.

Each round times nextclick's model (`nextclick speed MODEL`, the batches training draws, in a child process),
then RecBole's (a child process run by a separate Python that has RecBole), then RecBole's again
with glibc's malloc keeping freed memory (the policy nextclick's own processes set: without it RecBole's
(512, N) logits are mapped afresh every step), each for the same number of batches of 512 from the same
433,648 Retailrocket training cases, at matched sizes (MODELS: embedding 100, NARM's hidden size RecBole's
128, one graph step, one single-head attention block with a 100-wide feed-forward layer), the last 50
clicks, full-catalogue cross-entropy, Adam, 2 threads. Both
count training cases per second over the timed batches after 3 warm-up batches, each batch timed from
fetching it (batch building: nextclick's collate, RecBole's DataLoader) to the end of the optimizer step.
RecBole's step is its Trainer._train_epoch's (to device, zero_grad, calculate_loss, loss.item(),
backward, optimizer.step); its time without the batch fetch is recorded too.
The result goes to results/scale/recbole/retailrocket/<model>.json: every round, the medians, their ratios,
the machine, the git commit (and which tracked files were uncommitted) and the commands.

RecBole is no dependency of nextclick; set it up in a virtual environment of its own, outside the repo:

    python3 -m venv /work/recbole-venv
    /work/recbole-venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /work/recbole-venv/bin/pip install recbole==1.2.1 "numpy<2" "pandas<2.3" "scipy<1.14"

(numpy < 2: RecBole 1.2.1's Config aliases np.float_ and friends, gone in numpy 2; pandas and scipy
are held to releases that still support numpy 1.) Then, from the repository root:

    .venv/bin/python scripts/recbole_side_by_side.py --recbole-python /work/recbole-venv/bin/python [--model stamp]

The training cases are written once as RecBole atomic files (benchmark files: one row per case with its
last 50 prefix clicks and its label; `--recbole-data`, outside the repo) from nextclick's own
`train_cases()`, so both train on the same cases with the same clicks. `--pause-queue` stops the
background benchmark queue (`python -m nextclick.cli bench`) during each round, resumes it between rounds
(`--gap` seconds) and always on exit; it waits while another holder's note is in /tmp/queue_paused_by.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "retailrocket"
RECBOLE_NAME = "retailrocket_nextclick"  # the RecBole dataset name (folder and file prefix)
EMBEDDING_SIZE = 100  # RecBole's sizes, as issue 41 item 7 quotes them
HIDDEN_SIZE = 128  # RecBole 1.2.1's NARM.yaml hidden_size
MAX_LENGTH = 50  # RecBole's MAX_ITEM_LIST_LENGTH default
# each model: RecBole's class, the RecBole settings, and the nextclick settings that give both the same sizes
# (nextclick's own sizes where RecBole's default differs: embedding 100, not RecBole's 64; no dropout)
MODELS = {
    "narm": ("NARM", {"embedding_size": EMBEDDING_SIZE, "hidden_size": HIDDEN_SIZE},
             {"embedding_size": EMBEDDING_SIZE, "hidden_size": HIDDEN_SIZE, "max_length": MAX_LENGTH}),
    "stamp": ("STAMP", {"embedding_size": EMBEDDING_SIZE},
              {"embedding_size": EMBEDDING_SIZE, "max_length": MAX_LENGTH}),
    "sr-gnn": ("SRGNN", {"embedding_size": EMBEDDING_SIZE, "step": 1},
               {"hidden_size": EMBEDDING_SIZE, "steps": 1, "max_length": MAX_LENGTH}),
    "gc-san": ("GCSAN", {"hidden_size": EMBEDDING_SIZE, "inner_size": EMBEDDING_SIZE, "n_layers": 1, "n_heads": 1,
                         "step": 1, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
               {"hidden_size": EMBEDDING_SIZE, "steps": 1, "blocks": 1, "dropout": 0.0, "max_length": MAX_LENGTH}),
}
BATCH_SIZE = 512
WARMUP = 3  # nextclick speed's warm-up batches; the RecBole worker takes as many
QUEUE_PATTERN = "python -m nextclick.cli bench"
# RecBole's second run in each round: glibc's malloc keeps freed memory, the policy every nextclick command
# sets for itself (nextclick.runtime.keep_freed_memory): RecBole's (512, N) logits are a fresh mmap per step
# otherwise. The same thresholds, through glibc's environment variables.
KEEP_FREED_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
PAUSE_NOTE = Path("/tmp/queue_paused_by")


# --- RecBole atomic files, from nextclick's training cases (run by the repo's Python) ---

def write_recbole_files(data_dir: str | None, out_root: Path) -> dict:
    """<out_root>/<RECBOLE_NAME>/<RECBOLE_NAME>.{train,valid,test}.inter: the training cases (session index,
    the last MAX_LENGTH prefix clicks, label) and, as valid and test, the test cases (RecBole's benchmark
    split needs all three; they put no new item in the vocabulary). Written only when missing."""
    import numpy as np

    from nextclick.data.benchmarks import resolve
    from nextclick.data.padded import pad_cases

    folder = out_root / RECBOLE_NAME
    split = resolve(DATASET, data_dir)
    cases = split.train_cases()
    summary = {"folder": str(folder), "training_cases": len(cases), "n_items": split.n_items,
               "max_item_list_length": MAX_LENGTH}
    if (folder / f"{RECBOLE_NAME}.train.inter").exists():
        return summary
    folder.mkdir(parents=True, exist_ok=True)
    header = "session_id:token\titem_id_list:token_seq\titem_id:token\n"

    def write(path: Path, session: np.ndarray, padded) -> None:
        with open(path.with_suffix(".tmp"), "w") as out:
            out.write(header)
            for start in range(0, len(session), 50_000):
                rows = slice(start, start + 50_000)
                for s, items, label in zip(session[rows], padded.items[rows], padded.labels[rows]):
                    out.write(f"{s}\t{' '.join(map(str, items[items > 0]))}\t{label}\n")
        path.with_suffix(".tmp").rename(path)

    write(folder / f"{RECBOLE_NAME}.train.inter", cases.session, pad_cases(cases, max_length=MAX_LENGTH))
    test = split.test
    for name in ("valid", "test"):
        write(folder / f"{RECBOLE_NAME}.{name}.inter", test.session + len(cases.sessions.lengths),
              pad_cases(test, max_length=MAX_LENGTH))
    return summary


# --- the RecBole worker (run by the RecBole venv's Python: imports nothing from nextclick) ---

def recbole_worker(model_name: str, data_root: str, batches: int, warmup: int, threads: int, seed: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas 2.2 on RecBole 1.2.1's dataset code
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model import sequential_recommender
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    import recbole

    recbole_class, sizes, _ = MODELS[model_name]
    config = Config(model=recbole_class, dataset=RECBOLE_NAME, config_dict={
        "data_path": data_root, "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "session_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "load_col": {"inter": ["session_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": MAX_LENGTH, **sizes,
        "loss_type": "CE", "train_neg_sample_args": None, "train_batch_size": BATCH_SIZE,
        "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "mode": "full", "group_by": None},
        "use_gpu": False, "device": "cpu", "seed": seed, "reproducibility": True, "show_progress": False,
        "state": "WARNING", "worker": 0,
        # RecBole's own cache of the processed dataset (a pickle it writes and reads), so that later rounds
        # skip parsing the atomic files; the load is not timed either way
        "checkpoint_dir": str(Path(data_root) / "saved"), "save_dataset": True,
    })
    torch.set_num_threads(threads)
    init_seed(config["seed"], config["reproducibility"])
    started = time.perf_counter()
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    load_seconds = time.perf_counter() - started
    init_seed(config["seed"], config["reproducibility"])
    model = getattr(sequential_recommender, recbole_class)(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)  # builds RecBole's optimizer (Adam, lr 0.001)
    optimizer, device = trainer.optimizer, trainer.device
    model.train()
    total_loss = 0.0
    iterator = iter(train_data)
    seen, seconds, step_seconds, cpu_seconds = 0, 0.0, 0.0, 0.0
    lengths = []
    for step in range(warmup + batches):
        start, cpu_start = time.perf_counter(), time.process_time()
        interaction = next(iterator)
        fetched = time.perf_counter()
        # Trainer._train_epoch's step (amp and the grad scaler off, as configured; no gradient clipping)
        interaction = interaction.to(device)
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        total_loss += loss.item()
        trainer._check_nan(loss)
        loss.backward()
        optimizer.step()
        end = time.perf_counter()
        if step >= warmup:
            seconds += end - start
            step_seconds += end - fetched
            cpu_seconds += time.process_time() - cpu_start
            seen += len(interaction)
            lengths.append(float(interaction[model.ITEM_SEQ_LEN].float().mean()))
    return {"batches": batches, "cases": seen, "seconds": round(seconds, 3),
            "cases_per_second": round(seen / seconds, 1),
            "step_seconds": round(step_seconds, 3), "step_cases_per_second": round(seen / step_seconds, 1),
            "cpu_seconds": round(cpu_seconds, 3), "cases_per_cpu_second": round(seen / cpu_seconds, 1),
            "mean_prefix_length": round(statistics.fmean(lengths), 2),
            "batch_width": int(interaction[model.ITEM_SEQ].shape[1]),
            "training_cases": len(train_data.dataset), "n_items": int(train_data.dataset.item_num),
            "load_seconds": round(load_seconds, 1), "recbole": recbole.__version__, "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model": recbole_class,
            "config": {key: config[key] for key in (*sizes, "embedding_size", "hidden_size", "n_layers", "dropout_probs",
                                                    "loss_type", "MAX_ITEM_LIST_LENGTH", "train_batch_size",
                                                    "learner", "learning_rate", "weight_decay")}}


# --- the alternating run (the repo's Python) ---

class QueuePause:
    """Stops the background benchmark queue's process for the run (SIGSTOP) and always resumes it
    (SIGCONT), unless another holder's note is in /tmp/queue_paused_by (then waits for it to go)."""

    def __init__(self, name: str):
        self.name, self.pids = name, []

    def __enter__(self):
        while True:
            try:  # created only if absent, so two holders cannot both take it
                with open(PAUSE_NOTE, "x") as note:
                    note.write(self.name + "\n")
                break
            except FileExistsError:
                print("the queue is paused by another holder (/tmp/queue_paused_by); waiting", file=sys.stderr)
                time.sleep(20)
        found = subprocess.run(["pgrep", "-f", QUEUE_PATTERN], capture_output=True, text=True).stdout.split()
        self.pids = [int(pid) for pid in found if int(pid) != os.getpid()]
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._interrupted)
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3)  # the load of the queue's last moments drains
        return self

    def _interrupted(self, signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    def __exit__(self, *exc):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            if PAUSE_NOTE.read_text().strip() == self.name:  # never another holder's note
                PAUSE_NOTE.unlink()
        except FileNotFoundError:
            pass
        return False


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_nextclick(model_name: str, batches: int, threads: int, data_dir: str | None, results_dir: Path
                  ) -> tuple[dict, list[str]]:
    settings = [part for key, value in MODELS[model_name][2].items() for part in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "nextclick.cli", "speed", model_name, "-d", DATASET, "--threads", str(threads),
               *settings, "--batch-size", str(BATCH_SIZE), "--batches", str(batches),
               "--results-dir", str(results_dir)]
    if data_dir:
        command += ["--data-dir", data_dir]
    printed = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = next(line.split("wrote ", 1)[1].strip() for line in printed.splitlines() if line.startswith("wrote "))
    result = json.loads(Path(path).read_text())
    return result, command


def run_recbole(model_name: str, python: str, data_root: Path, batches: int, threads: int, seed: int,
                environment: dict[str, str]) -> tuple[dict, list[str]]:
    command = [python, str(Path(__file__).resolve()), "--recbole-worker", "--model", model_name,
               "--recbole-data", str(data_root),
               "--batches", str(batches), "--threads", str(threads), "--seed", str(seed)]
    printed = subprocess.run(command, cwd=tempfile.gettempdir(), check=True, capture_output=True, text=True,
                             env={**os.environ, **environment}).stdout
    return json.loads(printed.strip().splitlines()[-1]), [*(f"{k}={v}" for k, v in environment.items()), *command]


def dirty_files() -> list[str]:
    """Tracked files with uncommitted changes (git_commit() then ends in -dirty): they name whose they are."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    return [line[3:] for line in status.splitlines()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbole-python", default="/work/recbole-venv/bin/python",
                        help="a Python with recbole==1.2.1 and torch (see above)")
    parser.add_argument("--recbole-data", default="/work/recbole-data",
                        help="where the RecBole atomic files are written (outside the repo)")
    parser.add_argument("--data-dir", default=None, help="nextclick's data directory (default: its own)")
    parser.add_argument("--model", choices=sorted(MODELS), default="narm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30, help="timed batches of 512 per model and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pause-queue", action="store_true",
                        help=f"stop the background benchmark queue ('{QUEUE_PATTERN}') during the run")
    parser.add_argument("--no-keep-freed-variant", action="store_true",
                        help="run RecBole only as installed (not also with glibc keeping freed memory)")
    parser.add_argument("--gap", type=float, default=20.0,
                        help="seconds the queue runs between rounds (with --pause-queue)")
    parser.add_argument("--out", default=None, help="default: results/scale/recbole/retailrocket/<model>.json")
    parser.add_argument("--recbole-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.recbole_worker:  # a child: one RecBole measurement, printed as JSON
        result = recbole_worker(args.model, args.recbole_data, args.batches, WARMUP, args.threads, args.seed)
        print(json.dumps(result))
        return

    sys.path.insert(0, str(ROOT / "src"))
    from nextclick.runtime import git_commit, machine_info

    import torch

    data = write_recbole_files(args.data_dir, Path(args.recbole_data))
    variants = {"recbole": {}}
    if not args.no_keep_freed_variant:
        variants["recbole_keep_freed_memory"] = KEEP_FREED_ENVIRONMENT
    rounds, commands = [], {}
    scratch = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    started = time.time()
    for index in range(args.rounds):
        # the queue (with --pause-queue) is stopped one round at a time and runs between rounds
        pause = QueuePause(f"{args.model} side by side (scripts/recbole_side_by_side.py)") if args.pause_queue else None
        if pause:
            pause.__enter__()
        try:
            record = {"round": index, "load_average_before": load_average()}
            ours, commands["nextclick"] = run_nextclick(args.model, args.batches, args.threads, args.data_dir,
                                                        scratch / f"round-{index}")
            record["nextclick"] = dict(ours["fast_path"])
            for name, environment in variants.items():
                record[f"load_average_before_{name}"] = load_average()
                record[name], commands[name] = run_recbole(args.model, args.recbole_python, Path(args.recbole_data),
                                                           args.batches, args.threads, args.seed, environment)
            record["load_average_after"] = load_average()
        finally:
            if pause:
                pause.__exit__(None, None, None)
        rounds.append(record)
        print(f"round {index}: nextclick {record['nextclick']['cases_per_second']:,.1f} cases/s, "
              + ", ".join(f"{name} {record[name]['cases_per_second']:,.1f}" for name in variants), flush=True)
        if index + 1 < args.rounds and pause:
            time.sleep(args.gap)
    medians = {"nextclick": statistics.median(r["nextclick"]["cases_per_second"] for r in rounds)}
    for name in variants:
        medians[name] = statistics.median(r[name]["cases_per_second"] for r in rounds)
        medians[f"{name}_steps_only"] = statistics.median(r[name]["step_cases_per_second"] for r in rounds)
    result = {
        "what": f"training cases/s of {args.model}, nextclick against RecBole 1.2.1, alternating in one run: each round "
                f"{args.batches} timed batches of {BATCH_SIZE} (after {WARMUP} warm-up batches) of nextclick, then "
                "of RecBole as installed, then (recbole_keep_freed_memory) of RecBole with glibc's malloc keeping "
                "freed memory as nextclick's own process does; each in a child process, timed from fetching the "
                "batch to the end of the optimizer step (steps_only: RecBole without its batch fetch)",
        "dataset": DATASET,
        "model": args.model,
        "sizes": {"recbole": MODELS[args.model][1], "nextclick": MODELS[args.model][2], "max_length": MAX_LENGTH,
                  "batch_size": BATCH_SIZE, "loss": "full-catalogue cross-entropy", "optimizer": "Adam, lr 0.001"},
        "data": data,
        "rounds": rounds,
        "median_cases_per_second": medians,
        "ratio": round(medians["nextclick"] / medians["recbole"], 2),
        "ratios": {name: round(medians["nextclick"] / medians[name], 2) for name in medians if name != "nextclick"},
        "nextclick_config": ours["config"],
        "recbole_config": rounds[-1]["recbole"]["config"],
        "recbole_environments": variants,
        "queue_paused": bool(args.pause_queue),
        "seconds": round(time.time() - started, 1),
        "machine": machine_info(args.threads, torch.device("cpu")),
        "git_commit": git_commit(),
        "dirty_files": dirty_files(),
        "commands": {name: " ".join(command) for name, command in commands.items()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    out = Path(args.out or ROOT / f"results/scale/recbole/retailrocket/{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"medians {medians}; nextclick / RecBole {result['ratio']}x; wrote {out}")


if __name__ == "__main__":
    main()
