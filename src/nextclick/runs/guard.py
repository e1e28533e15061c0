"""Before a run writes anything: may it write there, and would it destroy or mix with an earlier run?

`open_run` is called by `train` and `bench` after the model, options and split are known and before any
file is written: it finds an output location that cannot be written, an earlier run that would be
replaced silently (refused without --force, continued with --resume), and a --resume under settings
other than those the run was trained with (refused, listing them). Only then are files written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from nextclick import atomic
from nextclick.runs.identity import RESULT_OPTIONS
from nextclick.training.state import EPOCHS_DIR, TRAINING_DIR, training_progress

PARTS = (".", "selection", "refit")  # where a train or bench run keeps its own trainings (and grid/<candidate>/)
# what --force clears before a run starts again: the derived files of the earlier one, so that a run killed
# after it started never shows the earlier run's weights, metrics or state beside its own config
REPLACED = ("metrics.json", "model.safetensors", "train.jsonl", "test_curve.json", TRAINING_DIR, EPOCHS_DIR,
            "selection", "refit", "grid")


class RunDirectoryError(ValueError):
    """An output directory a run must not write into as asked; the message says why and the ways out."""


def earlier_run(directory: Path) -> str | None:
    """What an earlier train or bench run left in `directory`, in words, or None when it holds none (the
    parts of a grid search, --grid-part, write disjoint candidates there and are not checked by it)."""
    if (directory / "metrics.json").is_file():
        return "a finished run"
    saved = [(part, progress) for part in PARTS if (progress := training_progress(directory / part))]
    unfinished = [(part, progress) for part, progress in saved if not progress["finished"]]
    if unfinished:
        part, progress = unfinished[0]
        where = "" if part == "." else f" in {part}/"
        return f"an interrupted run ({progress['epochs_done']} epochs saved{where})"
    if saved:
        return "a trained run (not tested)"
    if (directory / "model.safetensors").is_file():
        return "a trained checkpoint"
    grid = directory / "grid"
    if grid.is_dir() and any(training_progress(candidate) for candidate in grid.iterdir() if candidate.is_dir()):
        return "a grid search begun earlier"
    return None


def run_settings_of(model_name: str, config: Any, options: Any, dataset: str) -> dict:
    """What a run's result depends on, as config.json keeps it: model, dataset, config, training options."""
    settings = {"model": model_name, "dataset": dataset, "config": dataclasses.asdict(config),
                "train_options": {key: getattr(options, key) for key in RESULT_OPTIONS}}
    return json.loads(json.dumps(settings))  # tuples as lists, as read back


def changed_settings(saved: dict, wanted: dict, limits: dict | None = None, dataset_name: str | None = None) -> list[str]:
    """Each setting whose saved value differs from the wanted one, as 'name saved (now wanted)'. A run saved
    before config.json kept its training options is compared on the limits its state recorded."""
    def differs(name: str, before: Any, now: Any) -> str | None:
        return None if before == now else f"{name} {_shown(before)} (now {_shown(now)})"

    changes = [differs("model", saved.get("model"), wanted["model"])]
    if saved.get("dataset") not in (wanted["dataset"], dataset_name):  # an older run kept the split's name only
        changes.append(differs("dataset", saved.get("dataset"), wanted["dataset"]))
    before_config = saved.get("config", {})
    for key in sorted(set(before_config) | set(wanted["config"])):
        changes.append(differs(key, before_config.get(key), wanted["config"].get(key)))
    before_options = saved.get("train_options")
    now_options = wanted["train_options"]
    if before_options is None and limits:  # format 1: only the limits were kept (epochs resolved, not asked)
        before_options = {"epochs": limits["epochs"], "patience": limits["patience"]}
        now_options = {"epochs": now_options["epochs"] or wanted["config"].get("epochs"),
                       "patience": now_options["patience"]}
    if before_options is not None and "precision" not in before_options:  # saved before the option: trained in fp32
        before_options = {**before_options, "precision": "fp32"}
    for key in sorted(before_options or {}):
        changes.append(differs(key, before_options[key], now_options.get(key)))
    return [change for change in changes if change]


def _shown(value: Any) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def open_run(directory: Path, wanted: dict, *, resume: bool, force: bool, dataset_name: str | None = None,
             compare: bool = True, more_outputs: tuple[Path, ...] = ()) -> None:
    """Check that a run may write in `directory` (and `more_outputs`) as asked, then, with `force`, clear
    the earlier run's derived files. Raises RunDirectoryError or OSError with one line; nothing is written
    before all checks pass. With `resume`, each training continues what its last commit saved, or starts
    where nothing was committed yet (runs.select).
    `compare`: check a resumed run's settings against `wanted` (run_settings_of); a grid search's
    config.json holds the chosen candidate, not the settings asked for, so it is not compared."""
    if resume and force:
        raise RunDirectoryError("--resume continues a run and --force replaces it: give one of them")
    for path in (directory, *more_outputs):
        atomic.check_writable(path)
    found = earlier_run(directory)
    if found and not resume and not force:
        raise RunDirectoryError(f"{directory} already holds {found}: continue it with --resume, "
                                "or replace it with --force")
    meta_path = directory / "config.json"
    if resume and compare and found and meta_path.is_file():
        saved = json.loads(meta_path.read_text())
        limits = next((json.loads((directory / part / TRAINING_DIR / "state.json").read_text()).get("limits")
                       for part in PARTS if training_progress(directory / part)), None)
        changes = changed_settings(saved, wanted, limits, dataset_name)
        if changes:
            raise RunDirectoryError(f"{directory} was trained with other settings: {', '.join(changes)}; resume "
                                    "with the settings it was trained with, or start afresh with --force")
    if force and found:
        for name in REPLACED:
            path = directory / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
