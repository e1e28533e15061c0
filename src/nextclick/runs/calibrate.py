"""`nextclick calibrate RESULT`: fit a repeat calibration (models/calibration.py: its features and how it
moves scores) on a finished bench run's validation cases (`fit_repeat_calibration`, here) and test the
calibrated model once, as a run of its own.

    nextclick calibrate results/yoochoose1_64/sr-iem/<run id>

The run's checkpoint (train_options.checkpoint_dir of its result.json, or --checkpoint) must be on this
machine. The weights are fitted with the model validation selected, on the validation cases it never
trained on, carved as the run carved them (its validation, seed, fraction 0.1): with --refit that model
is the checkpoint's selection/, and the fitted weights then go onto the refitted model, which has seen
those cases. A refit that took its selection from a finished run (`bench --refit --selection-from`) is
fitted with that run's model; where that model is no longer on the machine (runs/ is not kept between
working sessions here, results/ is) but the run's own calibration is committed beside it, the weights
that calibration fitted are taken: the same model, cases and fit would give them again. The test set
is read once, to test. Before that, the run's own test ranks are recomputed from the checkpoint and
must equal its committed ranks.npz: the calibration is compared with exactly the model it calibrates (a
paired t-test against it is in the result).

Writes results/<dataset>/<model>/<run id + calibration=repeats>/ (result.json, with the weights, and
ranks.npz). With `save` (--save) the weights also go beside the checkpoint (checkpoint.CALIBRATION_FILE,
tied to its weights by their SHA-256), and from then on `recommend`, `evaluate`, `explain`, `serve` and
the Python API's `load` rank that run calibrated; without it the checkpoint is left as it was.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextclick import atomic, checkpoint
from nextclick.data.batches import iterate_batches
from nextclick.data.benchmarks import resolve
from nextclick.evaluate import DEFAULT_KS, evaluate, metrics_from_ranks, paired_test, ranks_from_scores
from nextclick.models import model_class
from nextclick.models.calibration import FEATURES, RepeatCalibration, repeat_features
from nextclick.runs.bench import write_ranks
from nextclick.runs.identity import RANKS_FILE, RESULT_FILE, run_dir, run_id
from nextclick.runs.select import VALID_FRACTION
from nextclick.runtime import git_commit, machine_info, set_threads

FITTED_WITH_ITS_MODEL = "the run's model"  # a run without --refit: validation selected the model it tests
FIT_RECORD = ("cases", "cases_skipped", "valid_cross_entropy_before", "valid_cross_entropy_after", "temperature",
              "valid_plain", "valid_cross_entropy_by_temperature")  # what fit_repeat_calibration records
TEMPERATURES = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # steps of sqrt(2) around the model's own scale


@dataclass
class _ValidationTerms:
    """What the fit needs of each validation case: at each of TEMPERATURES the log-sum-exp of the
    model's scaled scores over the items that get no bonus (the catalogue less the session's window),
    the target's score, and per distinct session item its score, features and whether it is the target."""

    ranks: torch.Tensor  # (C,) the target's rank under the model's own scores (evaluate.ranks_from_scores)
    rest_log_normaliser: torch.Tensor  # (C, len(TEMPERATURES))
    target_score: torch.Tensor  # (C,)
    item_scores: torch.Tensor  # (C, W), -inf where no distinct item
    features: torch.Tensor  # (C, W, F)
    is_target: torch.Tensor  # (C, W) bool

    def map(self, change) -> _ValidationTerms:
        return _ValidationTerms(*(change(getattr(self, name)) for name in self.__dataclass_fields__))


def _terms(score, batches) -> _ValidationTerms:
    parts = []
    for batch in batches:
        scores = score(batch).float()
        window, distinct, features = repeat_features(batch.items.to(scores.device), scores)
        labels = batch.labels.to(scores.device)
        rest = scores.clone()
        rest[:, 0] = -torch.inf  # padding never counts
        rest.scatter_(1, window, -torch.inf)  # the window's items (padding's 0 included) are summed apart
        parts.append((ranks_from_scores(scores, labels),
                      torch.stack([torch.logsumexp(t * rest, dim=1) for t in TEMPERATURES], dim=1),
                      scores.gather(1, labels.unsqueeze(1)).squeeze(1),
                      scores.gather(1, window).masked_fill(~distinct, -torch.inf), features,
                      distinct & (window == labels.unsqueeze(1))))
    return _ValidationTerms(*(torch.cat(columns) for columns in zip(*parts)))


def _cross_entropy(terms: _ValidationTerms, temperature: int, weights: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the softmax of T * s + w . f (T = TEMPERATURES[temperature]): the
    normaliser is the log-sum-exp of the rest of the catalogue's and the session items' terms, each
    computed apart, so no mass is ever subtracted (no cancellation however much the session holds)."""
    scale = TEMPERATURES[temperature]
    logits = (scale * terms.item_scores + terms.features @ weights)  # (C, W), -inf where no distinct item
    log_normaliser = torch.logsumexp(torch.cat([terms.rest_log_normaliser[:, temperature:temperature + 1], logits],
                                               dim=1), dim=1)
    in_window = terms.is_target.any(dim=1)
    target = torch.where(in_window, logits.masked_fill(~terms.is_target, 0.0).sum(dim=1), scale * terms.target_score)
    return (log_normaliser - target).mean()


def fit_repeat_calibration(score, batches, max_iterations: int = 200,
                           ks: tuple[int, ...] = DEFAULT_KS) -> tuple[RepeatCalibration, dict]:
    """Fit on validation `batches` (Batch objects with labels) scored by `score` (a frozen model's
    `score`); returns the calibration and a record of the fit (cases, cross-entropy before and after, the
    temperature chosen, and `valid_plain`: HR/MRR@ks of the model as it is on every one of those cases,
    from the same pass). For each of TEMPERATURES, w minimises the cross-entropy of softmax(T s + w . f)
    (L-BFGS from w = 0, float64); the pair with the lowest cross-entropy is kept as w / T, which ranks
    every session as T s + w . f does. The temperature lets the bonus be measured against scores on the
    scale held-out data wants (a model trained to sharp or flat scores), not on the training scale."""
    with torch.inference_mode():
        terms = _terms(score, batches)
    terms = terms.map(lambda t: t.clone().double() if t.is_floating_point() else t.clone())  # out of inference mode
    valid_plain = {k: round(v, 6) for k, v in metrics_from_ranks(terms.ranks.numpy(), ks).items()}
    known = torch.isfinite(terms.target_score)  # a target the model gives -inf cannot be fitted
    terms = terms.map(lambda t: t[known])
    if not len(terms.target_score):
        raise ValueError("no validation case with a finite target score to fit a repeat calibration on")
    plain = TEMPERATURES.index(1.0)
    with torch.no_grad():
        before = float(_cross_entropy(terms, plain, torch.zeros(len(FEATURES), dtype=torch.float64)))
    fits = {}
    for temperature, scale in enumerate(TEMPERATURES):
        weights = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=max_iterations, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = _cross_entropy(terms, temperature, weights)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            loss = float(_cross_entropy(terms, temperature, weights))
        if np.isfinite(loss) and torch.isfinite(weights).all():
            fits[scale] = (loss, weights.detach() / scale)
    scale = min(fits, key=lambda t: fits[t][0]) if fits else 1.0
    after, weights = fits.get(scale, (before, None))
    if after > before or weights is None:  # never worse than the model as it is
        scale, after, weights = 1.0, before, torch.zeros(len(FEATURES), dtype=torch.float64)
    calibration = RepeatCalibration(tuple(float(w) for w in weights))
    return calibration, {"cases": int(known.sum()), "cases_skipped": int((~known).sum()),
                         "valid_cross_entropy_before": round(before, 6), "valid_cross_entropy_after": round(after, 6),
                         "temperature": scale, "valid_plain": valid_plain,
                         "valid_cross_entropy_by_temperature": {str(t): round(fit[0], 6) for t, fit in fits.items()}}


def _calibrated(calibration: RepeatCalibration, model):
    return lambda batch: calibration.apply(model.score(batch), batch.items)


def read_result(folder: Path) -> dict:
    path = folder / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULT_FILE} in {folder}: give a result folder that `nextclick bench` wrote")
    result = json.loads(path.read_text())
    if "calibration" in result:
        raise ValueError(f"{folder} is a calibrated run already; give the run it calibrated ({result['calibration']['base_run']})")
    if not model_class(result["model"]).neural:
        raise ValueError(f"{result['model']} is a statistical model: its scores are counts and similarities, not "
                         "logits a softmax reads, so a repeat calibration does not apply")
    return result


def selection_fit(selection_from: dict) -> tuple[dict, Path] | None:
    """The calibration already fitted with the model whose selection a refit reused, when that run was
    calibrated itself (`nextclick calibrate` of its result, a folder beside it): the same weights as a
    fit now would give (the same model, validation cases and fit), as its committed result records
    them. None where that result is absent or calibrated another model."""
    folder = Path(selection_from["result"])
    if not (folder / RESULT_FILE).is_file():
        return None
    selection = json.loads((folder / RESULT_FILE).read_text())
    path = folder.parent / run_id({**selection["settings"], "calibration": "repeats"}) / RESULT_FILE
    if selection.get("run_id") != selection_from.get("run") or not path.is_file():
        return None
    record = json.loads(path.read_text()).get("calibration", {})
    if record.get("base_run") != selection["run_id"] or record.get("fitted_with") != FITTED_WITH_ITS_MODEL:
        return None
    return record, path.parent


def checkpoint_dir_of(selection_from: dict) -> str:
    """The checkpoint of the run whose selection a refit reused (what `nextclick calibrate` fits with)."""
    directory = selection_from.get("checkpoint_dir")
    if not directory or not (Path(directory) / "model.safetensors").is_file():
        raise FileNotFoundError(f"this refit reused the selection of {selection_from['result']}, whose validation-"
                                f"selected model ({directory}) is not on this machine, nor is a calibration of that "
                                f"run (`nextclick calibrate {selection_from['result']}`, written beside it): "
                                "calibrate needs one of them")
    return directory


def calibrate_run(folder: str | Path, *, checkpoint_dir: str | Path | None = None, results_dir: str | Path = "results",
                  data_root: str | None = None, threads: int | None = None, batch_size: int = 500,
                  progress: bool = False, command: list[str] | None = None, save: bool = False) -> tuple[dict, Path]:
    """Fit, test and write as the module says; returns (the new result, its path)."""
    wall_start = time.perf_counter()
    commit = git_commit()  # the code this process imported
    threads = set_threads(threads)
    folder = Path(folder)
    base = read_result(folder)
    options = base["train_options"]
    directory = Path(checkpoint_dir or options["checkpoint_dir"])
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"the run's checkpoint is not on this machine ({directory}); give it with --checkpoint")
    final, _, meta = checkpoint.load(directory, calibrated=False)  # the model as trained, whatever was saved before
    selection_dir, fitted_with = (directory / "selection", "selection/") if options.get("refit") else (directory, FITTED_WITH_ITS_MODEL)
    earlier_fit = None
    if "selection_from" in base:  # a refit that reused a finished run's selection: that run's model was selected
        reused = base["selection_from"]
        fitted_with = str(reused.get("checkpoint_dir"))
        try:
            selection_dir = Path(checkpoint_dir_of(reused))
        except FileNotFoundError:
            earlier_fit = selection_fit(reused)
            if earlier_fit is None:
                raise
    split = resolve(meta["dataset"], data_root)
    if split.name != base["dataset"]:
        raise ValueError(f"{directory} holds a model of {split.name}, the result is on {base['dataset']}")
    ks = tuple(options.get("ks", DEFAULT_KS))

    if earlier_fit is None:
        selected = checkpoint.load(selection_dir, calibrated=False)[0] if selection_dir != directory else final
        _, valid_cases = split.carve(options["validation"], VALID_FRACTION, seed=options["seed"])
        calibration, fit = fit_repeat_calibration(selected.score, iterate_batches(valid_cases, batch_size, selected.max_length),
                                                  ks=ks)  # with the plain model's validation metrics, from the same pass
        fit["valid_calibrated"] = {k: round(v, 6) for k, v in evaluate(
            _calibrated(calibration, selected), valid_cases, ks=ks, batch_size=batch_size, max_length=selected.max_length,
            progress=progress, description="validation, calibrated").metrics.items()}
    else:  # that model is gone, but its calibration is committed: the fit it records is the one made here
        record, earlier = earlier_fit
        calibration = RepeatCalibration.from_dict(record)
        fit = {key: record[key] for key in (*FIT_RECORD, "valid_calibrated")}
        fit["fit_from"] = str(earlier)
        if progress:
            print(f"{fitted_with} is not on this machine; its calibration {earlier} holds the weights fitted with it")
    plain = evaluate(final.score, split.test, ks=ks, batch_size=batch_size, max_length=final.max_length,
                     progress=progress, description="test, as committed")
    committed = np.load(folder / RANKS_FILE)["ranks"]
    if not np.array_equal(plain.ranks, committed):
        raise ValueError(f"the checkpoint in {directory} does not reproduce {folder / RANKS_FILE} "
                         f"({int((plain.ranks != committed).sum())} of {len(committed)} ranks differ): it is not the "
                         "model of that result, so a calibration of it would not be compared with that result")
    calibrated = evaluate(_calibrated(calibration, final), split.test, ks=ks,
                          batch_size=batch_size, max_length=final.max_length, progress=progress,
                          description="test, calibrated")

    settings = {**base["settings"], "calibration": "repeats"}
    identity = run_id(settings)
    record = {**fit, **calibration.to_dict(),
              "base_run": base["run_id"], "base_test": base["test"],
              "fitted_with": fitted_with,
              "paired_test_against_base": paired_test(calibrated.ranks, plain.ranks)}
    if save:
        record["saved_to"] = str(checkpoint.save_calibration(directory, calibration, identity))
    result = {
        **base,
        "run_id": identity,
        "settings": settings,
        "test": calibrated.summary(),
        "test_by_length": calibrated.by_length(),
        "test_by_repeat": calibrated.by_repeat(),
        "calibration": record,
        "wall_seconds": round(time.perf_counter() - wall_start, 2),  # the calibration's own; training: base
        "machine": machine_info(threads, str(final.device)),
        "git_commit": commit,
        "command": shlex.join(command if command is not None else sys.argv),
    }
    out = run_dir(results_dir, split.name, base["model"], identity)
    write_ranks(out / RANKS_FILE, calibrated.ranks)
    path = out / RESULT_FILE
    atomic.write_json(path, result)
    return result, path
