"""Benchmarks: train (or fit) on a named split, select on validation, evaluate once on test, and
write everything a reader needs to trust the number into results/<dataset>/<model>/<run id>/.

How a model is fitted and selected is runs/select.py; a hyper-parameter search is runs/search.py;
where results go is runs/identity.py. This module puts them together and writes the result.
"""

from __future__ import annotations

import io
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick import atomic, checkpoint
from nextclick.atomic import check_writable
from nextclick.data.benchmarks import resolve
from nextclick.evaluate import Evaluation, evaluate
from nextclick.models import build, model_class
from nextclick.models.config import config_from_overrides
from nextclick.runs.guard import open_run, run_settings_of
from nextclick.runs.identity import RANKS_FILE, RESULT_FILE, run_dir, run_id, run_settings
from nextclick.runs.search import check_grid, grid_select, train_grid_in_workers
from nextclick.runs.select import fit_and_select, reused_selection
from nextclick.runtime import git_commit, machine_info, resolve_device, set_threads
from nextclick.training.loop import TrainOptions


def requested_settings(cls: type, requested: Any, options: TrainOptions, grid: dict | None = None) -> dict[str, str]:
    """The run's identity as runs.identity names it: the requested config and the training options that
    differ from their defaults, and the grid."""
    return run_settings(asdict(cls.Config()), asdict(requested), asdict(TrainOptions()), asdict(options), grid)


def default_checkpoint_dir(dataset: str, model_name: str, identity: str) -> Path:
    """runs/<dataset>/<model>/<run id>: where a run nobody named keeps its checkpoints (bench and train)."""
    return Path("runs") / dataset / model_name / identity


def write_ranks(path: Path, ranks: np.ndarray) -> None:
    """Per-case test ranks (for paired t-tests), written atomically like every result file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ranks=ranks.astype(np.int32))
    atomic.write_bytes(path, buffer.getvalue())


def run_bench(
    model_name: str,
    dataset: str | None,
    *,
    overrides: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
    results_dir: str | Path = "results",
    data_root: str | None = None,
    threads: int | None = None,
    command: list[str] | None = None,
    grid: dict[str, tuple[str, ...]] | None = None,
    grid_part: tuple[int, int] | None = None,
    grid_workers: int = 1,
    worker_argv: list[str] | None = None,
    grid_records: str | Path | None = None,
    force: bool = False,
    selection_from: str | Path | None = None,
) -> tuple[dict | None, Path]:
    """Train, select on validation, test once; write the result file and return (result, its path).
    With `grid`, the hyper-parameters are searched first (grid_select); with `grid_part`, only that
    share of the search runs and (None, the run directory) comes back; with `grid_workers` > 1, that
    many processes running the bench command line `worker_argv` train the candidates first
    (train_grid_in_workers), and this one picks and tests. `grid_records`: a folder that keeps each
    finished candidate's record as well (grid_select), so a search resumes where only that folder survives.
    `selection_from`: with options.refit, the result folder of a finished run of the same configuration
    whose validation-selected epoch count the refit takes instead of training the selection again
    (runs.select.reused_selection, which refuses a run that differs).

    The result goes to results/<dataset>/<model>/<run id>/result.json (+ ranks.npz), the run id made of
    the settings that differ from the defaults (runs.identity); checkpoints to runs/<dataset>/<model>/<run id>
    unless `options.checkpoint_dir` says otherwise. A statistical model whose config says `tune=true`
    searches its `search_space` (grid_select) before it is fitted.

    Before anything is written, the checkpoint directory and the result folder must be writable, and the
    checkpoint directory must not hold an earlier run unless `options.resume` (same settings, else
    refused) or `force` (cleared first) says what to do with it (runs.guard.open_run)."""
    options = options or TrainOptions()
    threads = set_threads(threads)
    device = resolve_device(options.device)  # a device this machine lacks fails here, before any output
    wall_start = time.perf_counter()
    commit = git_commit()  # the code this process imported; a long run may outlive several commits
    split = resolve(dataset, data_root)
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    overrides = dict(overrides or {})
    cls = model_class(model_name)
    requested = config_from_overrides(cls.Config, overrides)  # fails on a bad --set before any work
    settings = requested_settings(cls, requested, options, grid)
    identity = run_id(settings)
    if not cls.neural and getattr(requested, "tune", False) and not grid:
        grid = dict(cls.search_space)  # the model's own search, the paper's values first
    if grid:
        check_grid(model_name, overrides, grid)
        if not cls.neural and (grid_part is not None or grid_workers > 1 or grid_records is not None):
            raise ValueError(f"{model_name} is statistical: its candidates fit in seconds, so --grid-part, "
                             "--grid-workers and --grid-records do not apply")
    if grid_part is not None and not grid:
        raise ValueError("--grid-part shares a --grid search; give the --grid too")
    if selection_from is not None and (grid or not options.refit or not cls.neural):
        raise ValueError("--selection-from gives a neural model's --refit the epochs a finished run chose; "
                         + ("it does not combine with --grid" if grid else "add --refit" if cls.neural
                            else f"{model_name} is statistical and selects no epochs"))
    # checked before anything is written: a run that differs is refused with no checkpoint directory left
    selection = None if selection_from is None else reused_selection(cls.name, requested, split.name, options, selection_from)
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
    if options.refit and selection_from is None and cls.neural and not grid:
        twin = run_dir(results_dir, split.name, cls.name, run_id({k: v for k, v in settings.items() if k != "refit"}))
        if (twin / RESULT_FILE).is_file():  # its settings but refit are these: only the refit need train
            print(f"note: {twin} holds this configuration's run without --refit; `--selection-from {twin}` would "
                  "reuse its selection and train only the refit", file=sys.stderr)
    if options.checkpoint_dir is None:
        options = replace(options, checkpoint_dir=str(default_checkpoint_dir(split.name, cls.name, identity)))
    directory = Path(options.checkpoint_dir)
    reference = checkpoint.dataset_reference(split)  # a prepared split's directory, so `evaluate RUN` finds it
    wanted = run_settings_of(cls.name, requested, options, reference)
    meta_extra = {"train_options": wanted["train_options"]}
    folder = run_dir(results_dir, split.name, cls.name, identity)
    if grid_part is None:  # the parts of a grid write disjoint candidates; the full call checks the run
        open_run(directory, wanted, resume=options.resume, force=force, dataset_name=split.name, compare=not grid,
                 more_outputs=(folder,))
    else:
        check_writable(directory)
    if grid:
        if grid_workers > 1:
            train_grid_in_workers(worker_argv, grid_workers, threads, directory,
                                  progress=options.progress and not options.quiet)
            options = replace(options, resume=True)  # every candidate has trained: read, pick, test
        selected = grid_select(model_name, split, overrides, grid, options, grid_part, grid_records)
        if selected is None:
            return None, directory
        model, fit_record = selected
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, reference, meta_extra)  # the chosen config
    else:
        model = build(model_name, split.n_items, overrides)
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, reference, meta_extra)
        model, fit_record = fit_and_select(model, split, options, selection=selection)
    checkpoint.save_weights(directory, model)
    test_eval: Evaluation = evaluate(model.score, split.test, ks=options.ks, batch_size=options.eval_batch_size,
                                     max_length=model.max_length, progress=options.progress and not options.quiet,
                                     description="test")
    result = {
        "model": model.name,
        "run_id": identity,
        "settings": settings,  # the run's identity in full (an id over MAX_LENGTH keeps only a head and a hash)
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
    atomic.write_json(directory / "metrics.json", {"valid": fit_record.get("valid"), "test": result["test"]})
    write_ranks(folder / RANKS_FILE, test_eval.ranks)
    path = folder / RESULT_FILE
    atomic.write_json(path, result)  # last: a result file always has its ranks beside it
    return result, path
