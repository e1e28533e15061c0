"""Benchmarks: train (or fit) on a named split, select on validation, evaluate once on test, and
write everything a reader needs to trust the number into results/<dataset>/<model>[-variant].json.

Neural models train on the first 90% of training sessions and stop early on the last 10%.
Statistical models (POP, kNN, ...) are fitted on the first 90%, measured on validation (where their
hyper-parameters are chosen), then refitted on all training sessions for the test evaluation,
since they have no epochs to select.

A neural model's hyper-parameters can be searched the same way (`grid`): every candidate config trains
with early stopping on the same validation split, the best validation score picks one, and only that
one is tested (after a `refit` when asked).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nextclick import checkpoint
from nextclick.data.batches import Batch, make_batch
from nextclick.data.benchmarks import resolve
from nextclick.data.sessions import Split
from nextclick.evaluate import Evaluation, evaluate
from nextclick.models import build
from nextclick.models.base import Recommender, config_from_overrides
from nextclick.train import (TrainOptions, TrainResult, resolve_device, set_threads, train_model, train_step,
                             training_progress, training_state_path)
from nextclick.tune import grid_candidates


def machine_info(threads: int | None = None, device: torch.device | str = "cpu") -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
        # other work on the machine slows a run down: record it so numbers can be read fairly
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    device = torch.device(device)
    if device.type == "cuda":  # the device the run computed on, not merely one the machine has
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def git_commit() -> str | None:
    """HEAD (with -dirty for uncommitted changes), or $NEXTCLICK_GIT_COMMIT where it is set: a copy of
    the tree run elsewhere (a container, a remote GPU machine) may carry no .git, or a stale one."""
    if os.environ.get("NEXTCLICK_GIT_COMMIT"):
        return os.environ["NEXTCLICK_GIT_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def result_path(results_dir: str | Path, dataset: str, model: str, variant: str | None) -> Path:
    name = model + (f"-{variant}" if variant else "")
    return Path(results_dir) / dataset / f"{name}.json"


def fit_and_select(
    model: Recommender, split: Split, options: TrainOptions, valid_fraction: float = 0.1
) -> tuple[Recommender, dict]:
    """Train with validation-based selection; returns the model to test and a record of the fit."""
    fit_cases, valid_cases = split.carve(options.validation, valid_fraction, seed=options.seed)
    record: dict[str, Any] = {"fit_cases": len(fit_cases), "valid_cases": len(valid_cases),
                              "validation": options.validation}
    if model.neural:
        selection_options = options
        if options.refit and options.checkpoint_dir:  # the validation-selected model lives in selection/
            selection_options = replace(options, checkpoint_dir=str(Path(options.checkpoint_dir) / "selection"))
            checkpoint.save_meta(Path(selection_options.checkpoint_dir), model, split.vocab, split.protocol, split.name)
        result: TrainResult = train_model(model, fit_cases, valid_cases, selection_options)
        record.update(
            selected_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            valid=result.best_valid,
            history=result.history,
            train_seconds=round(result.train_seconds, 2),
            seconds_per_epoch=round(result.seconds_per_epoch, 2),
            train_cases_per_second=round(result.cases_per_second, 1),
        )
        if options.refit:
            model, record["refit"] = refit(model, split, options, epochs=result.best_epoch + 1)
        return model, record
    start = time.perf_counter()
    model.fit(fit_cases, valid_cases, progress=options.progress and not options.quiet)
    record["fit_seconds_validation_run"] = round(time.perf_counter() - start, 3)
    record.update(getattr(model, "fit_record", None) or {})  # what fit chose on validation (search, epochs)
    valid_eval = evaluate(model.score, valid_cases, ks=options.ks, batch_size=options.eval_batch_size,
                          max_length=model.max_length)
    record["valid"] = {k: round(v, 6) for k, v in valid_eval.metrics.items()}
    record["selected_config"] = asdict(model.config)
    start = time.perf_counter()
    model.fit(split.train_cases(), None, progress=options.progress and not options.quiet)
    record["fit_seconds"] = round(time.perf_counter() - start, 3)
    record["refit_on_all_training_sessions"] = True
    return model, record


def refit(selected: Recommender, split: Split, options: TrainOptions, epochs: int) -> tuple[Recommender, dict]:
    """Train a fresh copy of `selected`'s model (same config and seed) on *all* training cases for the
    number of epochs validation chose, and keep the last epoch. The papers' codes train on all
    training data; this gives the validation-selected model the same data without looking at test."""
    torch.manual_seed(options.seed)  # the same initial weights as the selection run, resumed or not
    model = type(selected)(selected.n_items, selected.config)
    directory = Path(options.checkpoint_dir) / "refit" if options.checkpoint_dir else None
    refit_options = replace(options, epochs=epochs, patience=epochs + 1,
                            checkpoint_dir=str(directory) if directory else None,
                            resume=options.resume and directory is not None and training_state_path(directory).exists())
    if directory is not None:  # a checkpoint of its own, so `nextclick curve <run>/refit` can read kept epochs
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, split.name)
    cases = split.train_cases()
    result = train_model(model, cases, None, refit_options)
    return model, {"epochs": epochs, "cases": len(cases), "history": result.history,
                   "train_seconds": round(result.train_seconds, 2),
                   "train_cases_per_second": round(result.cases_per_second, 1)}


GRID_SPEC = "search.json"  # in <run>/grid/, beside the candidate directories
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._+-]+$")  # grid values name candidate directories


def parse_grid(specs: list[str] | None) -> dict[str, tuple[str, ...]]:
    """`["lr=0.001,0.0005", "weight_decay=1e-5"]` -> {"lr": ("0.001", "0.0005"), ...}; values stay strings
    (the model's config coerces and checks them, as it does for --set)."""
    grid: dict[str, tuple[str, ...]] = {}
    for spec in specs or []:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        parsed = tuple(value.strip() for value in values.split(","))
        if not sep or not key or not all(parsed):
            raise ValueError(f"--grid expects key=value1,value2,..., got {spec!r}")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--grid {key} repeats a value: {spec!r}")
        if not all(SAFE_VALUE.match(value) for value in parsed):
            raise ValueError(f"--grid {key}: values may hold letters, digits and . _ + - only, got {spec!r}")
        grid[key] = parsed
    return grid


def parse_grid_part(text: str | None) -> tuple[int, int] | None:
    """"2/5" -> (2, 5): the second of five processes sharing a grid search."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ValueError(f"--grid-part expects K/N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def candidate_name(values: dict[str, str]) -> str:
    """The directory of one grid candidate under <run>/grid/, e.g. `lr=0.001,weight_decay=1e-05`."""
    return ",".join(f"{key}={value}" for key, value in values.items())


def grid_select(
    model_name: str, split: Split, overrides: dict[str, Any], grid: dict[str, tuple[str, ...]], options: TrainOptions,
    part: tuple[int, int] | None = None, records: str | Path | None = None,
) -> tuple[Recommender, dict] | None:
    """Train every candidate of `grid` (the cartesian product, first values first) on the same fit /
    validation carve, each from the same seed and in a checkpoint directory of its own
    (<run>/grid/<candidate>/), and keep the one with the best validation `select_metric` (ties: the
    earlier candidate, so list the paper's values first). Returns the chosen model, holding its best
    epoch's weights (or, with `refit`, retrained on all training cases) and the fit record with a
    `grid` entry listing every candidate's validation scores.

    `part=(k, n)` trains only candidates k, k+n, k+2n, ... (1-based k) and returns None: n processes
    (on n machines, or lanes of one GPU) share a search; the full call with `resume` then finds their
    trainings finished, picks and tests. Interrupted candidates continue from their checkpoints.

    A finished candidate leaves a small record (its fit record and the settings it trained under) in
    <run>/grid/<candidate>/candidate.json and, with `records`, in <records>/<candidate>.json too. With
    `resume`, a candidate with a record is not trained again, even where its checkpoint is gone: a
    search can so go on across machines that keep only the records (a committed folder, shared
    storage). With `refit` the records alone decide (the chosen one is retrained on all cases);
    without it, the chosen candidate's weights are read from its checkpoint, or trained again."""
    candidates = grid_candidates(grid)
    commit = git_commit()  # the code this process imported, recorded with each candidate it finishes
    root = Path(options.checkpoint_dir)
    (root / "grid").mkdir(parents=True, exist_ok=True)  # the whole search, so `nextclick status` can list what is left
    checkpoint.atomic_write_json(root / "grid" / GRID_SPEC, {
        "metric": options.select_metric, "candidates": [candidate_name(v) for v in candidates],
        "records": str(records) if records is not None else None})
    best: tuple[float, Recommender | None, dict, dict] | None = None
    rows = []
    for index, values in enumerate(candidates):
        if part is not None and index % part[1] != part[0] - 1:
            continue
        name = candidate_name(values)
        model: Recommender | None = build_candidate(model_name, split, overrides, values, options.seed)
        settings = candidate_settings(model, split, options)
        record_paths = candidate_record_paths(root, name, records)
        found = read_candidate_record(record_paths, settings) if options.resume else None
        if found is not None:
            kept, path = found
            model, record, trained_here = None, kept["record"], False  # weights only if chosen without refit (below)
            if not options.quiet:
                print(f"grid candidate {index + 1} of {len(candidates)}: {name} (finished earlier: its record "
                      f"is kept in {path})", file=sys.stderr)
        else:
            model, record = train_candidate(model, split, options, root / "grid" / name,
                                            f"grid candidate {index + 1} of {len(candidates)}: {name}")
            trained_here = True
            kept = {"candidate": name, "values": values, "settings": settings, "record": record,
                    "machine": machine_info(device=resolve_device(options.device)),
                    "git_commit": commit, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_candidate_record(record_paths, kept, trained_here=trained_here)
        value = record["valid"][options.select_metric]
        rows.append({**values, "selected_epoch": record["selected_epoch"], "epochs_run": record["epochs_run"],
                     **{key: metric for key, metric in record["valid"].items()
                        if key.endswith("@20") or key == options.select_metric},
                     "train_seconds": record["train_seconds"]})
        if best is None or value > best[0]:
            best = (value, model, record, values)
    if part is not None:
        return None
    assert best is not None
    _, model, record, chosen = best
    if model is None:  # chosen from its record alone
        model = build_candidate(model_name, split, overrides, chosen, options.seed)
        if not options.refit:  # the test needs its selected weights: from its checkpoint, or trained again
            model, _ = train_candidate(model, split, replace(options, resume=True),
                                       root / "grid" / candidate_name(chosen), None)
    record["grid"] = {"metric": options.select_metric, "grid": {key: list(v) for key, v in grid.items()},
                      "candidates": rows, "chosen": chosen, "directory": str(root / "grid" / candidate_name(chosen))}
    if options.refit:
        model, record["refit"] = refit(model, split, options, epochs=record["selected_epoch"] + 1)
    return model, record


def build_candidate(model_name: str, split: Split, overrides: dict[str, Any], values: dict[str, str], seed: int) -> Recommender:
    """A fresh model of one grid candidate's config, seeded as a plain bench run of that config would be."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return build(model_name, split.n_items, {**overrides, **values})


def train_candidate(model: Recommender, split: Split, options: TrainOptions, directory: Path,
                    announce: str | None) -> tuple[Recommender, dict]:
    """Train (or, with `resume`, continue from its checkpoint) one grid candidate in `directory`, selected
    on validation; says `announce` on stderr first unless quiet."""
    checkpoint.save_meta(directory, model, split.vocab, split.protocol, split.name)
    candidate_options = replace(options, checkpoint_dir=str(directory), refit=False,
                                resume=options.resume and training_state_path(directory).exists())
    if announce and not options.quiet:
        print(announce + (" (resumed)" if candidate_options.resume else ""), file=sys.stderr)
    return fit_and_select(model, split, candidate_options)


CANDIDATE_RECORD = "candidate.json"  # in <run>/grid/<candidate>/ once the candidate has finished
SETTING_OPTIONS = ("epochs", "patience", "batch_size", "seed", "select_metric", "validation", "length_buckets",
                   "max_batches")  # the TrainOptions a candidate's validation score depends on


def candidate_settings(model: Recommender, split: Split, options: TrainOptions) -> dict:
    """What a grid candidate's validation score depends on, as JSON would hold it: a record made under
    other settings (another config, seed, carve or epoch budget) is not this candidate's."""
    settings = {"model": model.name, "dataset": split.name, "n_items": split.n_items, "config": asdict(model.config),
                **{key: getattr(options, key) for key in SETTING_OPTIONS}}
    return json.loads(json.dumps(settings))  # tuples as lists, as read back from a record


def candidate_record_paths(root: Path, name: str, records: str | Path | None) -> list[Path]:
    """Where a candidate's record lives: its own directory, and the shared `records` folder if given."""
    return [root / "grid" / name / CANDIDATE_RECORD] + ([Path(records) / f"{name}.json"] if records is not None else [])


def read_candidate_record(paths: list[Path], settings: dict) -> tuple[dict, Path] | None:
    """The first record found at `paths` and where it was, None if there is none. A record
    made under other settings is an error, not a miss: silently training again would overwrite it."""
    for path in paths:
        if not path.is_file():
            continue
        kept = json.loads(path.read_text())
        theirs = kept.get("settings") or {}
        if theirs != settings:
            differ = sorted(key for key in set(settings) | set(theirs) if theirs.get(key) != settings.get(key))
            raise ValueError(f"{path} records a grid candidate trained under other settings ({', '.join(differ)} "
                             "differ); give the settings it was trained with, another --grid-records folder, "
                             "or move the record away")
        return kept, path
    return None


def write_candidate_record(paths: list[Path], kept: dict, *, trained_here: bool) -> None:
    """Store `kept` at `paths`: all of them for a candidate just trained here; for one read from a record,
    wherever none is stored yet (copied to the other places; one already there stays as it is)."""
    for path in paths:
        if trained_here or not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_json(path, kept)


def record_progress(path: Path) -> dict | None:
    """A finished candidate's progress (as train.training_progress gives it) read from its record alone,
    for a candidate whose checkpoint is gone."""
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    record, settings = kept["record"], kept["settings"]
    return {"epochs_done": record["epochs_run"], "best_epoch": record["selected_epoch"],
            "select_metric": settings["select_metric"], "best_valid": record["valid"],
            "epochs_without_gain": record["epochs_run"] - record["selected_epoch"] - 1,
            "patience": settings["patience"], "max_epochs": settings["epochs"] or settings["config"].get("epochs"),
            "finished": True, "train_seconds": record.get("train_seconds", 0.0), "saved_at": path.stat().st_mtime,
            "record": str(path)}


def train_grid_in_workers(argv: list[str], workers: int, threads: int, run_dir: Path, *, progress: bool = True) -> None:
    """Share a grid search among `workers` processes on this machine (lanes of one GPU, or groups of
    cores): worker k runs the same bench command line `argv` with `--grid-part k/workers`, `threads //
    workers` torch threads and `--resume` (a candidate interrupted earlier continues), its output in
    <run>/grid/worker-k.log. Returns when all have finished; raises naming the logs of any that failed
    (what they trained is kept: the same command resumes it). The caller then picks and tests."""
    log_dir = run_dir / "grid"
    log_dir.mkdir(parents=True, exist_ok=True)
    per_worker = max(1, threads // workers)
    processes = []
    try:
        for k in range(1, workers + 1):
            # later flags win in argparse, so appending overrides what argv says for these
            command = [sys.executable, "-m", "nextclick.cli", *argv, "--grid-part", f"{k}/{workers}",
                       "--grid-workers", "1", "--threads", str(per_worker), "--resume", "--quiet"]
            log = open(log_dir / f"worker-{k}.log", "a")
            processes.append((k, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL), log))
        if progress:
            print(f"grid: {workers} workers, {per_worker} threads each; logs {log_dir}/worker-K.log; "
                  f"`nextclick status {run_dir}` shows each candidate", file=sys.stderr)
        bar = _grid_bar(run_dir, progress)
        while any(process.poll() is None for _, process, _ in processes):
            time.sleep(2)
            bar()
        bar(close=True)
    finally:
        for _, process, log in processes:
            if process.poll() is None:  # interrupted: stop the others too (each resumes from its checkpoint)
                process.terminate()
                process.wait()
            log.close()
    failed = [(k, process.returncode) for k, process, _ in processes if process.returncode != 0]
    if failed:
        raise ChildProcessError("grid workers failed: " + ", ".join(
            f"worker {k} (exit {code}, log {log_dir / f'worker-{k}.log'})" for k, code in failed)
            + "; what finished is kept: run the same command again to resume")


def _grid_bar(run_dir: Path, progress: bool) -> Callable[..., None]:
    """A progress bar over the grid's finished candidates, read from the run directory."""
    from tqdm.auto import tqdm

    bar = tqdm(desc="grid candidates", unit="candidate", disable=not progress, leave=False)

    def update(close: bool = False) -> None:
        if not progress:
            return
        status = run_status(run_dir) if (run_dir / "grid" / GRID_SPEC).is_file() else None
        if status is not None:
            bar.total = status["grid_candidates"]
            bar.n = sum(1 for part in status["parts"] if part["part"].startswith("grid/")
                        and part["progress"] and part["progress"]["finished"])
            bar.refresh()
        if close:
            bar.close()

    return update


def run_status(run_dir: str | Path) -> dict:
    """How far a bench or train run got, from its checkpoint directory alone: each training in it (the
    run itself, or its `selection` and `refit`, and every grid candidate, with those a grid has not
    begun) with its progress (train.training_progress), and the test scores once it has been tested.
    For long runs resumed across sessions: what is done, what is left, the best validation so far."""
    root = Path(run_dir)
    if not any((root / name).exists() for name in ("config.json", "grid", "selection")):
        raise FileNotFoundError(f"{root} is not a run directory (no config.json); give the -o / --checkpoint-dir "
                                "of a bench or train run")
    parts = []
    spec_path = root / "grid" / GRID_SPEC
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    begun = sorted(path.name for path in (root / "grid").iterdir() if path.is_dir()) if (root / "grid").is_dir() else []
    names = spec["candidates"] + sorted(set(begun) - set(spec["candidates"])) if spec else begun
    for name in names:
        progress = training_progress(root / "grid" / name)
        if progress is None or not progress["finished"]:  # its checkpoint gone or behind: a record may hold it
            paths = candidate_record_paths(root, name, spec.get("records") if spec else None)
            progress = next(filter(None, map(record_progress, paths)), progress)
        parts.append({"part": f"grid/{name}", "progress": progress})
    for name in ("selection", "refit"):
        if (root / name).is_dir():
            parts.append({"part": name, "progress": training_progress(root / name)})
    own = training_progress(root)  # a run without selection/refit/grid trains in its own directory
    if not parts or own is not None:
        parts.insert(0, {"part": ".", "progress": own})
    metrics = root / "metrics.json"
    tested = json.loads(metrics.read_text())["test"] if metrics.is_file() else None
    for part in parts:
        if tested and part["progress"] and part["progress"]["finished"] is None:
            part["progress"]["finished"] = True  # an old state without its limits: testing came after it
    return {"run": str(root), "parts": parts, "grid": bool(names), "grid_candidates": len(spec["candidates"]) if spec else None,
            "grid_metric": spec["metric"] if spec else None, "tested": tested}


def run_bench(
    model_name: str,
    dataset: str | None,
    *,
    overrides: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
    variant: str | None = None,
    results_dir: str | Path = "results",
    data_root: str | None = None,
    threads: int | None = None,
    command: list[str] | None = None,
    grid: dict[str, tuple[str, ...]] | None = None,
    grid_part: tuple[int, int] | None = None,
    grid_workers: int = 1,
    worker_argv: list[str] | None = None,
    grid_records: str | Path | None = None,
) -> tuple[dict | None, Path]:
    """Train, select on validation, test once; write the result file and return (result, its path).
    With `grid`, the hyper-parameters are searched first (grid_select); with `grid_part`, only that
    share of the search runs and (None, the run directory) comes back; with `grid_workers` > 1, that
    many processes running the bench command line `worker_argv` train the candidates first
    (train_grid_in_workers), and this one picks and tests. `grid_records`: a folder that keeps each
    finished candidate's record as well (grid_select), so a search resumes where only that folder survives."""
    options = options or TrainOptions()
    threads = set_threads(threads)
    device = resolve_device(options.device)  # a device this machine lacks fails here, before any output
    wall_start = time.perf_counter()
    commit = git_commit()  # the code this process imported; a long run may outlive several commits
    split = resolve(dataset, data_root)
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    overrides = dict(overrides or {})
    model = build(model_name, split.n_items, overrides)
    if grid:
        if not model.neural:
            raise ValueError(f"--grid searches a neural model's config; {model_name} is statistical "
                             "(those that search their own grid take --set tune=true)")
        clash = sorted(set(grid) & {key.replace("-", "_") for key in overrides})
        if clash:
            raise ValueError(f"{', '.join(clash)} is both searched (--grid) and fixed (--set)")
        for values in grid_candidates(grid):  # a bad value fails now, not hours into the search
            config_from_overrides(type(model).Config, {**overrides, **values})
    if grid_part is not None and not grid:
        raise ValueError("--grid-part shares a --grid search; give the --grid too")
    if grid_workers < 1:
        raise ValueError(f"--grid-workers must be at least 1, got {grid_workers}")
    if grid_workers > 1 and not grid:
        raise ValueError("--grid-workers shares a --grid search; give the --grid too")
    if grid_workers > 1 and grid_part is not None:
        raise ValueError("--grid-workers and --grid-part exclude each other: the workers take the parts themselves")
    if grid_records is not None and not grid:
        raise ValueError("--grid-records keeps a --grid search's candidates; give the --grid too")
    if grid_records is not None and not options.resume:
        held = sorted(path.name for path in Path(grid_records).glob("*.json")) if Path(grid_records).is_dir() else []
        if held:
            raise ValueError(f"{grid_records} already holds {len(held)} candidate records ({held[0]}, ...): add --resume "
                             "to continue that search, or give another --grid-records folder")
    if grid_workers > 1 and worker_argv is None:
        raise ValueError("grid_workers needs the bench command line the workers run (worker_argv)")
    if options.checkpoint_dir is None:
        options = replace(options, checkpoint_dir=str(Path("runs") / split.name / (model.name + (f"-{variant}" if variant else ""))))
    directory = Path(options.checkpoint_dir)
    if grid:
        if grid_workers > 1:
            train_grid_in_workers(worker_argv, grid_workers, threads, directory,
                                  progress=options.progress and not options.quiet)
            options = replace(options, resume=True)  # every candidate has trained: read, pick, test
        selected = grid_select(model_name, split, overrides, grid, options, grid_part, grid_records)
        if selected is None:
            return None, directory
        model, fit_record = selected
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, split.name)  # the chosen config
    else:
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, split.name)
        model, fit_record = fit_and_select(model, split, options)
    checkpoint.save_weights(directory, model)
    test_eval: Evaluation = evaluate(model.score, split.test, ks=options.ks, batch_size=options.eval_batch_size,
                                     max_length=model.max_length, progress=options.progress and not options.quiet,
                                     description="test")
    result = {
        "model": model.name,
        "variant": variant,
        "dataset": split.name,
        "protocol": split.protocol.to_dict(),
        "split": split.stats(),
        "test": test_eval.summary(),
        "test_by_length": test_eval.by_length(),
        "test_by_repeat": test_eval.by_repeat(),
        **fit_record,
        "config": asdict(model.config),
        "train_options": {k: v for k, v in asdict(options).items() if k not in ("progress", "quiet")},
        "seed": options.seed,
        "wall_seconds": round(time.perf_counter() - wall_start, 2),
        "machine": machine_info(threads, device if model.neural else "cpu"),
        "git_commit": commit,
        "command": shlex.join(command if command is not None else sys.argv),
        "citation": model.citation,
    }
    checkpoint.atomic_write_json(directory / "metrics.json", {"valid": fit_record.get("valid"), "test": result["test"]})
    path = result_path(results_dir, split.name, model.name, variant)
    checkpoint.atomic_write_json(path, result)
    np.savez_compressed(path.with_suffix(".ranks.npz"), ranks=test_eval.ranks.astype(np.int32))
    return result, path


def operator_calls(run: Callable[[], object]) -> int:
    """The torch operator calls `run` makes, nested ones not counted again. Each costs dispatch time
    on the CPU and, on a GPU, at least one kernel launch: a small model on a GPU is bound by this count,
    not by its arithmetic (DSAN's bisection-based alpha-entmax makes thousands per step)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()

    def nested(event) -> bool:
        return event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")

    return sum(1 for event in profile.events() if event.name.startswith("aten::") and not nested(event))


def measure_training_speed(
    model_name: str,
    dataset: str | None,
    *,
    overrides: dict[str, Any] | None = None,
    batches: int = 30,
    batch_size: int = 512,
    warmup: int = 3,
    reference_batches: int = 0,
    threads: int | None = None,
    seed: int = 1,
    data_root: str | None = None,
    command: list[str] | None = None,
    device: str = "auto",
) -> dict:
    """Training cases/s over `batches` real random batches of `batch_size` (after `warmup`), measured the way the
    trainer runs them: batch building, forward, backward, optimizer step. With `reference_batches`,
    the same is timed for the model with `group_by_length=false` and `max_length=None` batches padded
    to the longest training prefix, which is the official DSAN code's layout."""
    threads = set_threads(threads)
    device = resolve_device(device)
    split = resolve(dataset, data_root)
    cases = split.train_cases()
    order = np.random.default_rng(seed).permutation(len(cases))

    def timed(model, n, pad_to=None) -> dict:
        model.to(device)
        optimizer = model.optimizer()
        model.train()

        def timed_step(step: int) -> int:
            batch = make_batch(cases, order[step * batch_size : (step + 1) * batch_size])
            if pad_to is not None:
                extra = pad_to - batch.items.shape[1]
                batch = Batch(torch.nn.functional.pad(batch.items, (extra, 0)), batch.lengths, batch.labels, batch.full_lengths)
            train_step(model, optimizer, batch, device)
            if device.type == "cuda":  # GPU work is asynchronous: the step ends when the GPU is done
                torch.cuda.synchronize(device)
            return len(batch)

        seen, seconds = 0, 0.0
        for step in range(warmup + n):
            start = time.perf_counter()
            size = timed_step(step)
            if step >= warmup:
                seconds += time.perf_counter() - start
                seen += size
        return {"batches": n, "cases": seen, "seconds": round(seconds, 3), "cases_per_second": round(seen / seconds, 1),
                "operator_calls_per_step": operator_calls(lambda: timed_step(warmup))}

    torch.manual_seed(seed)
    model = build(model_name, split.n_items, overrides)
    result = {
        "model": model.name,
        "dataset": split.name,
        "what": f"training cases/s: batch building + forward + backward + optimizer step, batch {batch_size}, random batches",
        "batch_size": batch_size,
        "config": asdict(model.config),
        "fast_path": timed(model, batches),
    }
    if reference_batches:
        torch.manual_seed(seed)
        reference = build(model_name, split.n_items, {**(overrides or {}), "group_by_length": False})
        longest = int(cases.length.max())
        result["reference_path"] = {"padded_to": longest, **timed(reference, reference_batches, pad_to=longest)}
        result["speedup"] = round(result["fast_path"]["cases_per_second"] / result["reference_path"]["cases_per_second"], 1)
    result.update(machine=machine_info(threads, device), git_commit=git_commit(),
                  command=shlex.join(command if command is not None else sys.argv))
    return result


def epoch_test_curve(run_dir: str | Path, dataset: str | None = None, *, data_root: str | None = None,
                     threads: int | None = None, progress: bool = True, device_name: str = "auto") -> dict:
    """Test metrics of every epoch a `keep_epochs` run kept, beside that epoch's validation metrics.

    For reading only: it shows how far validation-based selection lands from the best epoch on test
    (what the papers' codes report). Nothing here feeds back into selection."""
    from nextclick.train import epoch_weights_path, kept_epochs

    threads = set_threads(threads)
    run_dir = Path(run_dir)
    epochs = kept_epochs(run_dir)
    if not epochs:
        parts = [run_dir / part for part in ("selection", "refit") if kept_epochs(run_dir / part)]
        if parts:  # a --refit bench keeps its two trainings apart
            raise FileNotFoundError(f"{run_dir} is a --refit run: its epochs are in "
                                    + " and ".join(str(part) for part in parts) + "; curve one of those")
        raise FileNotFoundError(f"{run_dir} kept no epoch weights (train or bench with --keep-epochs)")
    model, _, meta = checkpoint.load(run_dir, weights=epoch_weights_path(run_dir, epochs[0]))
    device = torch.device("cpu")  # statistical models score on the CPU
    if model.neural:
        device = resolve_device(device_name)
        model.to(device)
    split = resolve(dataset or meta.get("dataset"), data_root)
    if split.n_items != model.n_items:
        raise ValueError(f"{run_dir} has {model.n_items} items but {split.name} has {split.n_items}")
    log, state = run_dir / "train.jsonl", training_state_path(run_dir)
    valid_by_epoch = {}
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            valid_by_epoch[record["epoch"]] = record.get("valid", {})
    has_validation = any(valid_by_epoch.values())
    rows = []
    for epoch in epochs:
        model.load_state_tensors(checkpoint.load_tensors(epoch_weights_path(run_dir, epoch)))
        model.eval()
        evaluation = evaluate(model.score, split.test, batch_size=500, max_length=model.max_length,
                              progress=progress, description=f"test, epoch {epoch}")
        rows.append({"epoch": epoch, "valid": valid_by_epoch.get(epoch, {}),
                     "test": {k: round(v, 6) for k, v in evaluation.metrics.items()}})
    return {
        "what": "test metrics of every kept epoch, for reading only: results use the epoch selected on validation",
        "model": meta["model"],
        "dataset": split.name,
        "run": str(run_dir),
        # the trainer's own choice (its state records it); a run without validation selected nothing
        "selected_on_validation": json.loads(state.read_text())["best_epoch"] if has_validation and state.exists() else None,
        "best_on_test": {m: max(rows, key=lambda r: r["test"][m])["epoch"] for m in ("HR@20", "MRR@20")},
        "epochs": rows,
        "machine": machine_info(threads, device),
        "git_commit": git_commit(),
    }
