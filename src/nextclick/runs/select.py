"""Fit on the training data, select on validation, refit: how every benchmark number is made.

Neural models train on the fit part of the carve (the first 90% of training sessions by default) and
stop early on its validation part; the selected epoch's weights are tested, or, with `refit`, a fresh
model trained on all training cases for that many epochs. Statistical models are fitted on the fit
part and measured on validation (models that train in epochs, BPR-MF and FPMC, have their number of
epochs chosen there), then refitted on all training sessions, since they have no epochs to select.
The test set is never looked at here.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick import checkpoint
from nextclick.data.sessions import Cases, Split
from nextclick.evaluate import evaluate
from nextclick.models.base import Recommender
from nextclick.training.loop import TrainOptions, TrainResult, train_model
from nextclick.training.state import training_state_path

SELECTION_METRIC = "HR@20"  # statistical models' epochs and searches: the paper codes' metric
VALIDATION_SUBSET = 20_000  # validation cases per statistical candidate or epoch: enough to separate them, cheap on 2 cores


def validation_subset(cases: Cases, max_cases: int = VALIDATION_SUBSET, seed: int = 0) -> Cases:
    """At most `max_cases` validation cases, drawn without replacement by a fixed seed, in file order."""
    if len(cases) <= max_cases:
        return cases
    chosen = np.sort(np.random.default_rng(seed).choice(len(cases), size=max_cases, replace=False))
    return cases.select(chosen)


VALID_FRACTION = 0.1  # the share of training carved for validation (every carve of Split.carve)


# what a finished run's selection must share with a refit that reuses it (its result's train_options)
SELECTION_OPTIONS = ("epochs", "patience", "batch_size", "seed", "select_metric", "validation", "length_buckets",
                     "max_batches", "precision")
# the parts of a result that record its selection, which a refit reusing it copies
SELECTION_RECORD = ("fit_cases", "valid_cases", "validation", "selected_epoch", "epochs_run", "valid", "history",
                    "train_seconds", "seconds_per_epoch", "train_cases_per_second")


def reused_selection(model_name: str, config: Any, dataset: str, options: TrainOptions, result_folder: str | Path) -> dict:
    """The selection record of a finished bench run (its result folder) that trained `config` of
    `model_name` on `dataset` with the same selection options, for a refit that would otherwise train that
    selection again: same config, seed, validation carve, epoch budget, patience, batches and precision
    give the same validation curve, up to the nondeterminism of threads (a run and its twin chose the same
    epoch here). A config value or training option the run's result lacks (one added since) counts as its
    default. Refuses, naming what differs, anything else. The record says where it came from
    (`selection_from`: the run, its commit, its checkpoint, which `nextclick calibrate` reads as the
    selected model)."""
    path = Path(result_folder)
    path = path if path.name == "result.json" else path / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"no result.json at {path.parent}: --selection-from takes the result folder of a "
                                "finished `nextclick bench` run")
    base = json.loads(path.read_text())
    if "calibration" in base:
        raise ValueError(f"{path.parent} is a calibration of {base['calibration']['base_run']}; give that run")
    if "selected_epoch" not in base:
        raise ValueError(f"{path.parent} selected no epoch on validation ({base.get('model')} is not a neural run)")
    as_stored = lambda config: json.loads(json.dumps(asdict(config)))  # as JSON stores it: tuples are lists
    # a value the run's code did not have yet is that option's default (its code ran as the default does)
    held_config = {**as_stored(type(config)()), **(base.get("config") or {})}
    held_options = {**asdict(TrainOptions()), **base.get("train_options", {})}
    wanted = {"model": model_name, "dataset": dataset, **{f"config.{k}": v for k, v in as_stored(config).items()},
              **{f"train_options.{name}": getattr(options, name) for name in SELECTION_OPTIONS}}
    held = {"model": base.get("model"), "dataset": base.get("dataset"), **{f"config.{k}": v for k, v in held_config.items()},
            **{f"train_options.{name}": held_options[name] for name in SELECTION_OPTIONS}}
    differ = [name for name in {**held, **wanted} if wanted.get(name) != held.get(name)]
    if differ:
        raise ValueError(f"{path.parent} is not this run's selection: it differs in "
                         + ", ".join(f"{name} ({held.get(name)!r}, here {wanted.get(name)!r})" for name in differ))
    record = {key: base[key] for key in SELECTION_RECORD if key in base}
    record["selection_from"] = {"run": base["run_id"], "result": str(path.parent), "git_commit": base.get("git_commit"),
                                "checkpoint_dir": base.get("train_options", {}).get("checkpoint_dir")}
    return record


def fit_and_select(model: Recommender, split: Split, options: TrainOptions,
                   valid_fraction: float = VALID_FRACTION, selection: dict | None = None
                   ) -> tuple[Recommender, dict]:
    """Train with validation-based selection; returns the model to test and a record of the fit. With
    `selection`, a finished run's selection record (`reused_selection`, for a neural model's refit), only
    the refit trains."""
    if selection is not None:
        model, refitted = refit(model, split, options, epochs=selection["selected_epoch"] + 1)
        return model, {**selection, "refit": refitted}
    fit_cases, valid_cases = split.carve(options.validation, valid_fraction, seed=options.seed)
    record: dict[str, Any] = {"fit_cases": len(fit_cases), "valid_cases": len(valid_cases),
                              "validation": options.validation}
    if model.neural:
        selection_options = options
        if options.refit and options.checkpoint_dir:  # the validation-selected model lives in selection/
            selection_options = replace(options, checkpoint_dir=str(Path(options.checkpoint_dir) / "selection"))
            checkpoint.save_meta(Path(selection_options.checkpoint_dir), model, split.vocab, split.protocol,
                                 checkpoint.dataset_reference(split))
        if selection_options.checkpoint_dir:  # continue what was committed; killed before a first commit: start
            selection_options = replace(selection_options, resume=options.resume
                                        and training_state_path(selection_options.checkpoint_dir).exists())
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
    progress = options.progress and not options.quiet
    start = time.perf_counter()
    model.prepare(fit_cases.sessions)
    if getattr(model, "trains_in_epochs", False):
        record.update(select_epochs(model, fit_cases, valid_cases, progress))
    else:
        model.fit(fit_cases, progress=progress)
    record["fit_seconds_validation_run"] = round(time.perf_counter() - start, 3)
    valid_eval = evaluate(model.score, valid_cases, ks=options.ks, batch_size=options.eval_batch_size,
                          max_length=model.max_length)
    record["valid"] = {k: round(v, 6) for k, v in valid_eval.metrics.items()}
    record["selected_config"] = asdict(model.config)
    start = time.perf_counter()
    cases = split.train_cases()
    model.prepare(cases.sessions)
    model.fit(cases, progress=progress)
    record["fit_seconds"] = round(time.perf_counter() - start, 3)
    record["refit_on_all_training_sessions"] = True
    return model, record


def select_epochs(model: Recommender, fit_cases: Cases, valid_cases: Cases, progress: bool = False,
                  metric: str = SELECTION_METRIC) -> dict:
    """Fit a statistical model that trains in epochs (config `epochs`, `patience`), evaluating each epoch
    on a validation subset; stop after `patience` epochs without gain, keep the best epoch's state and
    write its number into the config (so a refit trains as long). Returns the record of the choice."""
    cases = validation_subset(valid_cases)
    history: list[dict] = []
    best: dict[str, Any] = {"value": -np.inf, "epoch": 0, "state": None}

    def epoch_end(epoch: int, entry: dict) -> bool:
        metrics = evaluate(model.score, cases).metrics
        entry.update({k: round(v, 6) for k, v in metrics.items() if k.endswith("@20")})
        if metrics[metric] > best["value"]:
            best.update(value=metrics[metric], epoch=epoch, state=copy.deepcopy(model.state_tensors()))
        history.append(entry)
        return epoch - best["epoch"] >= model.config.patience

    model.fit(fit_cases, progress=progress, epoch_end=epoch_end)
    model.load_state_tensors(best["state"])
    model.config = replace(model.config, epochs=best["epoch"])
    return {"epoch_selection": {"metric": metric, "valid_cases": len(cases), "selected_epochs": best["epoch"],
                                "history": history}}


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
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, checkpoint.dataset_reference(split))
    cases = split.train_cases()
    result = train_model(model, cases, None, refit_options)
    return model, {"epochs": epochs, "cases": len(cases), "history": result.history,
                   "train_seconds": round(result.train_seconds, 2),
                   "train_cases_per_second": round(result.cases_per_second, 1)}
