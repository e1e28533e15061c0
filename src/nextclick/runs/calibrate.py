"""`nextclick calibrate RESULT`: fit a repeat calibration (models/calibration.py) on a finished bench
run's validation cases and test the calibrated model once, as a run of its own.

    nextclick calibrate results/yoochoose1_64/sr-iem/<run id>

The run's checkpoint (train_options.checkpoint_dir of its result.json, or --checkpoint) must be on this
machine. The weights are fitted with the model validation selected, on the validation cases it never
trained on, carved as the run carved them (its validation, seed, fraction 0.1): with --refit that model
is the checkpoint's selection/, and the fitted weights then go onto the refitted model, which has seen
those cases. The test set is read once, to test. Before that, the run's own test ranks are recomputed
from the checkpoint and must equal its committed ranks.npz: the calibration is compared with exactly the
model it calibrates (a paired t-test against it is in the result).

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
from pathlib import Path

import numpy as np

from nextclick import atomic, checkpoint
from nextclick.data.batches import iterate_batches
from nextclick.data.benchmarks import resolve
from nextclick.evaluate import evaluate, paired_test
from nextclick.models import model_class
from nextclick.models.calibration import fit_repeat_calibration
from nextclick.runs.bench import write_ranks
from nextclick.runs.identity import RANKS_FILE, RESULT_FILE, run_dir, run_id
from nextclick.runtime import git_commit, machine_info, set_threads

VALID_FRACTION = 0.1  # runs.select.fit_and_select's


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
    selection_dir = directory / "selection" if options.get("refit") else directory
    selected = checkpoint.load(selection_dir, calibrated=False)[0] if selection_dir != directory else final
    split = resolve(meta["dataset"], data_root)
    if split.name != base["dataset"]:
        raise ValueError(f"{directory} holds a model of {split.name}, the result is on {base['dataset']}")
    _, valid_cases = split.carve(options["validation"], VALID_FRACTION, seed=options["seed"])

    calibration, fit = fit_repeat_calibration(selected.score, iterate_batches(valid_cases, batch_size, selected.max_length))
    ks = tuple(options.get("ks", (5, 10, 20)))
    valid = {name: evaluate(scorer, valid_cases, ks=ks, batch_size=batch_size, max_length=selected.max_length,
                            progress=progress, description=f"validation, {name}").metrics
             for name, scorer in (("plain", selected.score),
                                  ("calibrated", lambda batch: calibration.apply(selected.score(batch), batch.items)))}
    plain = evaluate(final.score, split.test, ks=ks, batch_size=batch_size, max_length=final.max_length,
                     progress=progress, description="test, as committed")
    committed = np.load(folder / RANKS_FILE)["ranks"]
    if not np.array_equal(plain.ranks, committed):
        raise ValueError(f"the checkpoint in {directory} does not reproduce {folder / RANKS_FILE} "
                         f"({int((plain.ranks != committed).sum())} of {len(committed)} ranks differ): it is not the "
                         "model of that result, so a calibration of it would not be compared with that result")
    calibrated = evaluate(lambda batch: calibration.apply(final.score(batch), batch.items), split.test, ks=ks,
                          batch_size=batch_size, max_length=final.max_length, progress=progress,
                          description="test, calibrated")

    settings = {**base["settings"], "calibration": "repeats"}
    identity = run_id(settings)
    record = {**fit, **calibration.to_dict(),
              "valid_plain": {k: round(v, 6) for k, v in valid["plain"].items()},
              "valid_calibrated": {k: round(v, 6) for k, v in valid["calibrated"].items()}, "base_run": base["run_id"], "base_test": base["test"],
              "fitted_with": "selection/" if selection_dir != directory else "the run's model",
              "paired_test_against_base": paired_test(calibrated.ranks, plain.ranks)}
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
    if save:
        record["saved_to"] = str(checkpoint.save_calibration(directory, calibration, identity))
    out = run_dir(results_dir, split.name, base["model"], identity)
    write_ranks(out / RANKS_FILE, calibrated.ranks)
    path = out / RESULT_FILE
    atomic.write_json(path, result)
    return result, path
