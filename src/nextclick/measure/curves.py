"""Test metrics of every epoch a `keep_epochs` run kept, beside its validation metrics: `nextclick curve`.

For reading only: it shows how far validation-based selection lands from the best epoch on test (what
the papers' codes report). Nothing here feeds back into selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nextclick import checkpoint
from nextclick.data.benchmarks import resolve
from nextclick.evaluate import evaluate
from nextclick.runtime import git_commit, machine_info, resolve_device, set_threads
from nextclick.training.state import epoch_weights_path, kept_epochs, training_state_path


def epoch_test_curve(run_dir: str | Path, dataset: str | None = None, *, data_root: str | None = None,
                     threads: int | None = None, progress: bool = True, device_name: str = "auto") -> dict:
    """Test metrics of every epoch a `keep_epochs` run kept, beside that epoch's validation metrics.

    For reading only: it shows how far validation-based selection lands from the best epoch on test
    (what the papers' codes report). Nothing here feeds back into selection."""
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
