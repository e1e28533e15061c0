"""Move results from hand-named files to one folder per run, named by the run's settings.

    results/<dataset>/<model>[-variant].json (+ .ranks.npz, .test_curve.json, ...)
 -> results/<dataset>/<model>/<run id>/result.json (+ ranks.npz, test_curve.json, ...)

    .venv/bin/python scripts/migrate_results.py            # migrate results/ in place
    .venv/bin/python scripts/migrate_results.py --dry-run  # print the plan, touch nothing

A run's id comes from nextclick.runs.identity alone, computed from the settings the run was *asked
for*: its model's default config updated with the `--set` values of its recorded command (the recorded
`config` may hold a statistical model's tuned choices, so it stands in only where no command was
recorded), the training options it recorded (or, for options recorded before they existed, its
command's flags) and its grid. The hand-typed `--variant` contributes nothing. Two old results that
come to the same id stop the migration before anything moves: they would be one run.

Each moved result gains `migrated_from` (its old path). Results written before `test_by_repeat` existed
get it computed here, once, from their ranks and the split's test cases (which needs the data
directory), so that the report never has to load a dataset. Speed measurements move to
results/speed/<dataset>/<model>/<settings>.json (named like a run, as nextclick.measure.speed names
them), data preparation measurements to results/preparation/<name>.json. Files are written at the new
place and removed from the old one (what `git mv` does; git sees the renames). Run again on a migrated
tree, it finds nothing to move.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextclick.runs.identity import RANKS_FILE, RESULT_FILE, run_dir, run_id, run_settings

# a result's side files: old suffix after `<model>[-variant]` -> name inside the run's folder
SIDE_FILES = {
    ".ranks.npz": RANKS_FILE,
    ".test_curve.json": "test_curve.json",
    ".selection.test_curve.json": "selection.test_curve.json",
    ".refit.test_curve.json": "refit.test_curve.json",
    ".click_weights.json": "click_weights.json",
    ".candidates": "candidates",  # a grid search's candidate records (a folder)
}
SPEED_SUFFIX = ".speed.json"
OLD_PREPARATION_DIR = "data"  # results/data/ held preparation measurements, not a dataset
REPEAT_SOURCE = "computed at migration from ranks.npz and the split's test cases"

# bench's training flags that change what is learned or selected -> TrainOptions field
TRAIN_FLAGS = {"--epochs": "epochs", "--patience": "patience", "--batch-size": "batch_size", "--seed": "seed",
               "--select": "select_metric", "--validation": "validation", "--refit": "refit",
               "--length-buckets": "length_buckets", "--max-batches": "max_batches"}
INTEGER_OPTIONS = {"epochs", "patience", "batch_size", "seed", "length_buckets", "max_batches"}


class MigrationError(RuntimeError):
    """Something the migration will not guess about: it stops before moving anything."""


@dataclass(frozen=True)
class Move:
    source: Path
    target: Path
    result: bool = False  # a bench result: rewritten with `migrated_from` (and test_by_repeat if missing)


def default_train_options() -> dict[str, Any]:
    """TrainOptions' defaults, wherever the package keeps the class now."""
    try:
        from nextclick.training.loop import TrainOptions
    except ImportError:
        from nextclick.train import TrainOptions
    return dataclasses.asdict(TrainOptions())


def command_arguments(command: str) -> tuple[dict[str, str], dict[str, Any]]:
    """({config key: value} of the `--set`s, {train option: value} of the training flags) a recorded
    bench command line gave; options it did not give are absent."""
    words = shlex.split(command)
    overrides: dict[str, str] = {}
    options: dict[str, Any] = {}
    index = 0
    while index < len(words):
        word = words[index]
        flag, inline, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag in ("--set", "-s"):
            pair = value if inline else words[index + 1]
            index += 0 if inline else 1
            key, _, setting = pair.partition("=")
            overrides[key.strip()] = setting.strip()
        elif flag == "--refit":
            options["refit"] = True
        elif flag in TRAIN_FLAGS:
            text = value if inline else words[index + 1]
            index += 0 if inline else 1
            name = TRAIN_FLAGS[flag]
            options[name] = int(text) if name in INTEGER_OPTIONS else text
        index += 1
    return overrides, options


def requested_config(result: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model's default config, the config the run was asked for), both as plain dicts."""
    from nextclick.models import config_from_overrides, model_class

    config_class = model_class(result["model"]).Config
    default = dataclasses.asdict(config_class())
    if not result.get("command"):  # nothing says what was asked: the recorded config is all there is
        return default, dict(result["config"])
    overrides, _ = command_arguments(result["command"])
    return default, dataclasses.asdict(config_from_overrides(config_class, overrides))


def requested_options(result: dict) -> dict[str, Any]:
    """The training options the run used: as recorded, and from its command for those recorded
    before `train_options` held them (validation, refit)."""
    recorded = dict(result.get("train_options") or {})
    _, from_command = command_arguments(result.get("command") or "")
    return {**from_command, **recorded}


def identity(result: dict, default_options: dict[str, Any]) -> str:
    default_config, config = requested_config(result)
    grid = (result.get("grid") or {}).get("grid")
    return run_id(run_settings(default_config, config, default_options, requested_options(result), grid))


def is_bench_result(document: Any) -> bool:
    return isinstance(document, dict) and "test" in document and "test_by_length" in document


def old_results(results: Path) -> list[Path]:
    """The result files of the old layout: JSON right under results/<dataset>/ that bench wrote."""
    paths = []
    for path in sorted(results.glob("*/*.json")):
        if path.parent.name == OLD_PREPARATION_DIR or path.name.endswith(SPEED_SUFFIX):
            continue
        if any(path.name.endswith(suffix) for suffix in SIDE_FILES if suffix.endswith(".json")):
            continue
        if is_bench_result(json.loads(path.read_text())):
            paths.append(path)
    return paths


SPEED_BATCH_SIZE = 512  # `nextclick speed`'s default batch (nextclick.measure.speed.DEFAULT_BATCH_SIZE)


def speed_name(measurement: dict) -> str:
    """A speed measurement's name, made as nextclick.measure.speed makes it: the settings it asked for
    that differ from the defaults (config `--set`s, batch size, a GPU, the reference layout). The config
    comes from its command, as a run's does: the recorded one holds values the code of its day resolved
    (DSAN's group_by_length, then on by default)."""
    default_config, config = requested_config(measurement)
    settings = run_settings(default_config, config, {}, {})
    _, options = command_arguments(measurement.get("command") or "")
    if options.get("batch_size", SPEED_BATCH_SIZE) != SPEED_BATCH_SIZE:
        settings["batch_size"] = str(options["batch_size"])
    if measurement.get("machine", {}).get("device", "cpu") != "cpu":
        settings["device"] = "cuda"
    if "reference_path" in measurement:
        settings["reference"] = "true"
    return run_id(settings)


def plan(results: Path, default_options: dict[str, Any]) -> list[Move]:
    """Every move, checked: no two results on one id, no target already there, no old file left over."""
    moves: list[Move] = []
    claimed: dict[Path, Path] = {}  # run folder -> the old result that takes it
    for path in old_results(results):
        result = json.loads(path.read_text())
        folder = run_dir(results, path.parent.name, result["model"], identity(result, default_options))
        if folder in claimed:
            raise MigrationError(f"{claimed[folder]} and {path} are the same run ({folder}): "
                                 "two results of one run cannot both move")
        claimed[folder] = path
        stem = path.name.removesuffix(".json")
        moves.append(Move(path, folder / RESULT_FILE, result=True))
        for suffix, name in SIDE_FILES.items():
            side = path.with_name(stem + suffix)
            if side.exists():
                moves.append(Move(side, folder / name))
    for path in sorted(results.glob(f"*/*{SPEED_SUFFIX}")):
        measurement = json.loads(path.read_text())
        name = speed_name(measurement)
        moves.append(Move(path, results / "speed" / path.parent.name / measurement["model"] / f"{name}.json"))
    for path in sorted((results / OLD_PREPARATION_DIR).glob("*.json")):
        moves.append(Move(path, results / "preparation" / path.name))  # where measure.preparation writes it
    check(results, moves)
    return moves


def check(results: Path, moves: list[Move]) -> None:
    targets = [move.target for move in moves]
    twice = sorted({str(t) for t in targets if targets.count(t) > 1})
    if twice:
        raise MigrationError(f"two files would move to {', '.join(twice)}")
    there = [str(t) for t in targets if t.exists()]
    if there:
        raise MigrationError(f"already there, not overwritten: {', '.join(there)}")
    moving = {move.source for move in moves}
    old_layout = [p for p in results.glob("*/*") if p.parent.name in (*datasets(results), OLD_PREPARATION_DIR)
                  and (p.is_file() or p.name.endswith(".candidates"))]
    left = sorted(str(p) for p in old_layout if p not in moving)
    if left:
        raise MigrationError(f"files of the old layout that belong to no result: {', '.join(left)}")


def datasets(results: Path) -> list[str]:
    """The dataset folders (not speed/ or preparation/ of the new layout, nor data/ of the old)."""
    return sorted(p.name for p in results.iterdir() if p.is_dir() and p.name not in ("speed", "preparation", OLD_PREPARATION_DIR))


def with_repeats(result: dict, ranks_path: Path) -> dict:
    """`result` with `test_by_repeat` from its per-case ranks and its split's test cases, inserted
    after `test_by_length` as bench writes it. The ranks must give back the recorded test metrics:
    that proves they are in the order of the test cases the repeats are read from."""
    import numpy as np

    from nextclick.evaluate import Evaluation

    test = test_cases(result["dataset"])
    ranks = np.load(ranks_path)["ranks"].astype(np.int64)
    if len(ranks) != len(test):
        raise MigrationError(f"{ranks_path}: {len(ranks)} ranks for {len(test)} test cases of {result['dataset']}")
    ks = tuple((result.get("train_options") or {}).get("ks") or (5, 10, 20))
    evaluation = Evaluation(ranks, test.length, ks=ks, repeats=test.repeats())
    recomputed = {k: v for k, v in evaluation.summary().items() if "@" in k}
    recorded = {k: v for k, v in result["test"].items() if "@" in k}
    if recomputed != recorded:
        raise MigrationError(f"{ranks_path} does not give back its result's test metrics: {recomputed} != {recorded}")
    out = {}
    for key, value in result.items():
        out[key] = value
        if key == "test_by_length":
            out["test_by_repeat"] = evaluation.by_repeat()
            out["test_by_repeat_source"] = REPEAT_SOURCE
    return out


_TEST_CASES: dict[str, Any] = {}


def test_cases(dataset: str):
    if dataset not in _TEST_CASES:
        from nextclick.data.benchmarks import resolve

        _TEST_CASES[dataset] = resolve(dataset).test
    return _TEST_CASES[dataset]


def migrated(move: Move, results_root: Path) -> bytes:
    """The bytes to write at the move's target: a result gains `migrated_from` (and, where it lacks
    it, `test_by_repeat`); every other file moves unchanged."""
    result = json.loads(move.source.read_text())
    if "test_by_repeat" not in result:
        result = with_repeats(result, move.source.with_name(move.source.name.removesuffix(".json") + ".ranks.npz"))
    result["migrated_from"] = move.source.relative_to(results_root.parent).as_posix()
    return (json.dumps(result, indent=1) + "\n").encode()  # bench's own format (nextclick.atomic.write_json)


def apply(moves: list[Move], results: Path) -> None:
    """Write every new result first (where a computation can still fail), then move the rest."""
    contents = {move.target: migrated(move, results) for move in moves if move.result}
    for move in moves:
        move.target.parent.mkdir(parents=True, exist_ok=True)
        if move.result:
            move.target.write_bytes(contents[move.target])
            move.source.unlink()
        else:
            shutil.move(move.source, move.target)
    for folder in sorted((p for p in results.glob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # results/data/ once its measurement has moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the results folder (results/)")
    parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = parser.parse_args(argv)
    results = Path(args.results)
    try:
        moves = plan(results, default_train_options())
    except MigrationError as error:
        print(f"migrate_results: {error}", file=sys.stderr)
        return 1
    if not moves:
        print(f"nothing to migrate under {results}/")
        return 0
    for move in moves:
        print(f"{move.source} -> {move.target}")
    if not args.dry_run:
        try:
            apply(moves, results)
        except MigrationError as error:
            print(f"migrate_results: {error}", file=sys.stderr)
            return 1
    count = sum(move.result for move in moves)
    print(f"{'would move' if args.dry_run else 'moved'} {count} results and {len(moves) - count} other files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
