"""One grid search for every model, on validation only.

    best_model, record = grid_select("sr-iem", split, overrides, {"lr": ("0.001", "0.0005")}, options)

Every candidate (the cartesian product of the grid, first values first) is scored on the same carve of
the training data and the best validation `select_metric` wins (ties: the earlier candidate, so list
the paper's values first). Only the chosen one is ever tested, by the caller.
- Neural candidates train with early stopping, each in a checkpoint directory of its own
  (<run>/grid/<candidate>/), so a long search resumes; N processes can share it (`part`, or
  `train_grid_in_workers` on one machine), and each finished candidate leaves a small record from which
  a search continues on another machine.
- Statistical candidates are fitted on the fit part and scored on a fixed validation subset (cheap); a
  model's `search_space` is its grid when its config says `tune=true`.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nextclick import atomic, checkpoint
from nextclick.data.sessions import Split
from nextclick.evaluate import evaluate
from nextclick.models import build, model_class
from nextclick.models.base import Recommender
from nextclick.models.config import config_from_overrides
from nextclick.runs.select import SELECTION_METRIC, VALIDATION_SUBSET, fit_and_select, refit, validation_subset
from nextclick.runs.identity import RESULT_OPTIONS
from nextclick.runs.status import GRID_SPEC, candidate_record_paths, run_status
from nextclick.runtime import git_commit, machine_info, resolve_device
from nextclick.training.loop import TrainOptions
from nextclick.training.state import training_state_path


def grid_candidates(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    """The cartesian product of the grid's values, in order (first values first)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


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


def check_grid(model_name: str, overrides: dict[str, Any], grid: dict[str, tuple]) -> None:
    """Fail now, not hours into a search: a key both searched and fixed, or a value the config refuses."""
    clash = sorted(set(grid) & {key.replace("-", "_") for key in overrides})
    if clash:
        raise ValueError(f"{', '.join(clash)} is both searched (--grid) and fixed (--set)")
    for values in grid_candidates(grid):
        config_from_overrides(model_class(model_name).Config, {**overrides, **values})


def search_statistical(model_name: str, split: Split, overrides: dict[str, Any], grid: dict[str, tuple],
                       options: TrainOptions, max_cases: int = VALIDATION_SUBSET) -> tuple[Any, dict]:
    """Fit every candidate config on the fit part of the carve and score it on (a fixed subset of) the
    validation part; returns (the chosen config, the search record). The chosen config is then fitted,
    validated and refitted like any other (runs.select.fit_and_select)."""
    fit_cases, valid_cases = split.carve(options.validation, 0.1, seed=options.seed)
    cases = validation_subset(valid_cases, max_cases)
    rows, best_index, best_value = [], 0, -np.inf
    for index, values in enumerate(grid_candidates(grid)):
        model = build(model_name, split.n_items, {**overrides, **values})
        start = time.perf_counter()
        model.prepare(fit_cases.sessions)
        model.fit(fit_cases)
        metrics = evaluate(model.score, cases, max_length=model.max_length).metrics
        rows.append({**{key: getattr(model.config, key) for key in values},
                     **{k: round(v, 6) for k, v in metrics.items() if k.endswith("@20")},
                     "seconds": round(time.perf_counter() - start, 2)})
        if metrics[SELECTION_METRIC] > best_value:
            best_index, best_value = index, metrics[SELECTION_METRIC]
    chosen = {key: rows[best_index][key] for key in grid}
    config_class = model_class(model_name).Config
    record = {"metric": SELECTION_METRIC, "valid_cases": len(cases), "valid_cases_available": len(valid_cases),
              "grid": {key: [getattr(config_from_overrides(config_class, {key: v}), key) for v in values]
                       for key, values in grid.items()},
              "candidates": rows, "chosen": chosen}
    return config_from_overrides(config_class, {**overrides, **chosen}), record


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
    without it, the chosen candidate's weights are read from its checkpoint, or trained again.

    A statistical model's candidates are scored by `search_statistical`; the chosen config is then
    fitted, validated and refitted as any statistical run (`part` and `records` do not apply)."""
    if not model_class(model_name).neural:
        config, search = search_statistical(model_name, split, overrides, grid, options)
        torch.manual_seed(options.seed)
        np.random.seed(options.seed)
        model, record = fit_and_select(model_class(model_name)(split.n_items, config), split, options)
        return model, {**record, "grid": search}
    candidates = grid_candidates(grid)
    commit = git_commit()  # the code this process imported, recorded with each candidate it finishes
    root = Path(options.checkpoint_dir)
    (root / "grid").mkdir(parents=True, exist_ok=True)  # the whole search, so `nextclick status` can list what is left
    atomic.write_json(root / "grid" / GRID_SPEC, {
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
    checkpoint.save_meta(directory, model, split.vocab, split.protocol, checkpoint.dataset_reference(split))
    candidate_options = replace(options, checkpoint_dir=str(directory), refit=False,
                                resume=options.resume and training_state_path(directory).exists())
    if announce and not options.quiet:
        print(announce + (" (resumed)" if candidate_options.resume else ""), file=sys.stderr)
    return fit_and_select(model, split, candidate_options)


# the TrainOptions a candidate's validation score depends on: a result's, but refit (candidates never refit);
# precision only where it is not fp32, so that the records of fp32 candidates stay those made before it existed
SETTING_OPTIONS = tuple(option for option in RESULT_OPTIONS if option not in ("refit", "precision"))


def candidate_settings(model: Recommender, split: Split, options: TrainOptions) -> dict:
    """What a grid candidate's validation score depends on, as JSON would hold it: a record made under
    other settings (another config, seed, carve or epoch budget) is not this candidate's."""
    settings = {"model": model.name, "dataset": split.name, "n_items": split.n_items, "config": asdict(model.config),
                **{key: getattr(options, key) for key in SETTING_OPTIONS}}
    if options.precision != "fp32":
        settings["precision"] = options.precision
    return json.loads(json.dumps(settings))  # tuples as lists, as read back from a record


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
            atomic.write_json(path, kept)


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
