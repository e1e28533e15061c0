"""Which runs a paper's tables and figures need, which of them the results folder holds, and the exact
`nextclick bench` command of each. A run is found by its id (nextclick.runs.identity: the settings that
differ from the defaults, sorted), so results/<dataset>/<model>/<run id>/result.json is where the bench
that the command starts writes it, and where this module looks. Nothing here imports torch.
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from nextclick.runs.identity import RANKS_FILE, RESULT_FILE, format_value, run_dir, run_id

DEFAULT_SEED = 1  # TrainOptions.seed: a seed-1 run carries no seed in its id
# training options that have a flag of their own in `nextclick bench` (the rest of a run's settings are
# config values, given with --set); tests/test_reproduce.py checks every manifest run's command gives
# the run id its entry expects
FLAGS = {"epochs": "--epochs", "patience": "--patience", "select_metric": "--select", "validation": "--validation",
         "length_buckets": "--length-buckets", "max_batches": "--max-batches"}
SWITCHES = {"refit": "--refit"}


@dataclass(frozen=True)
class RunSpec:
    """One run a paper needs: `settings` are its non-default settings but the seed, (key, value) sorted;
    `preset` names the model preset its command starts from (its config values are in `settings` too)."""

    model: str
    dataset: str
    settings: tuple[tuple[str, Any], ...] = ()
    seed: int = DEFAULT_SEED
    preset: str | None = None

    @property
    def identity(self) -> str:
        named = {key: format_value(value) for key, value in self.settings}
        if self.seed != DEFAULT_SEED:
            named["seed"] = format_value(self.seed)
        return run_id(named)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.model}/{self.identity}"

    def folder(self, results_dir: str | Path) -> Path:
        return run_dir(results_dir, self.dataset, self.model, self.identity)

    def result_path(self, results_dir: str | Path) -> Path:
        return self.folder(results_dir) / RESULT_FILE

    def ranks_path(self, results_dir: str | Path) -> Path:
        return self.folder(results_dir) / RANKS_FILE

    def bench_arguments(self) -> list[str]:
        """`nextclick bench` arguments (without the program name) that train this run."""
        arguments = ["bench", self.model, "-d", self.dataset]
        if self.preset:
            arguments += ["--preset", self.preset]
        config = []
        for key, value in self.settings:
            if key in SWITCHES:
                arguments += [SWITCHES[key]] if value else []
            elif key in FLAGS:
                arguments += [FLAGS[key], format_value(value)]
            elif self.preset is None:  # with a preset, its config values come from the preset
                config += ["--set", f"{key}={format_value(value)}"]
        if self.seed != DEFAULT_SEED:
            arguments += ["--seed", str(self.seed)]
        return arguments + config

    def command(self) -> str:
        return shlex.join(["nextclick", *self.bench_arguments()])


def row_on(row: dict, dataset: str) -> dict:
    """A manifest row as it applies to one dataset (its `by_dataset` entry replaces keys)."""
    return {**row, **row.get("by_dataset", {}).get(dataset, {})}


def row_runs(row: dict, dataset: str) -> list[RunSpec]:
    """The runs (one per seed) behind one row's numbers on one dataset; none for a model nextclick lacks."""
    row = row_on(row, dataset)
    if row.get("model") is None:
        return []
    settings = tuple(sorted(row.get("settings", {}).items()))
    return [RunSpec(row["model"], dataset, settings, seed, row.get("preset")) for seed in row.get("seeds", [DEFAULT_SEED])]


def sweep_runs(item: dict) -> tuple[list[tuple[float, list[RunSpec]]], list[RunSpec]]:
    """A sweep's points [(x, runs)] and its reference runs (the setting left at its default)."""
    base = item.get("settings", {})
    points = []
    for x, extra in item["points"]:
        settings = tuple(sorted({**base, **extra}.items()))
        points.append((x, [RunSpec(item["model"], item["dataset"], settings, seed)
                           for seed in item.get("seeds", [DEFAULT_SEED])]))
    reference = item.get("reference")
    seeds = reference.get("seeds", [DEFAULT_SEED]) if reference else []
    return points, [RunSpec(item["model"], item["dataset"], tuple(sorted(base.items())), seed) for seed in seeds]


def item_runs(item: dict) -> Iterator[RunSpec]:
    """Every run an item (a table or figure) needs, in the manifest's order."""
    if item["kind"] == "sweep":
        points, reference = sweep_runs(item)
        for _, runs in points:
            yield from runs
        yield from reference
    elif item["kind"] != "explain":
        for dataset in item["datasets"]:
            for row in item["rows"]:
                yield from row_runs(row, dataset)


def unique(runs) -> list[RunSpec]:
    """Runs once each, first occurrence first (tables share their headline runs)."""
    seen: dict[str, RunSpec] = {}
    for run in runs:
        seen.setdefault(run.name, run)
    return list(seen.values())


def paper_runs(paper: dict, items: list[dict] | None = None) -> list[RunSpec]:
    return unique(run for item in (items if items is not None else paper["items"]) for run in item_runs(item))


def is_table(item: dict) -> bool:
    return item["id"].startswith("table")


def select_items(paper: dict, table: str | None = None, figure: str | None = None) -> list[dict]:
    """The paper's items, or the one table (`2`, `table2`) or figure (`4`, `figure4`, `heatmaps`) asked for."""
    if table is None and figure is None:
        return list(paper["items"])
    wanted, kind = (table, "table") if table is not None else (figure, "figure")
    name = f"{kind}{wanted}" if str(wanted).isdigit() else str(wanted).lower()
    found = [item for item in paper["items"] if item["id"] == name and is_table(item) == (kind == "table")]
    if not found:
        choices = [item["id"] for item in paper["items"] if is_table(item) == (kind == "table")]
        raise ValueError(f"{paper['name']} has no {kind} {wanted!r}; its {kind}s: {', '.join(choices)}")
    return found


def missing_runs(runs: list[RunSpec], results_dir: str | Path) -> list[RunSpec]:
    return [run for run in runs if not run.result_path(results_dir).is_file()]


@dataclass(frozen=True)
class Cost:
    """What a missing run is likely to take: the median training time of `runs` committed CPU runs like it,
    doubled where those ran without the refit the run has (`from_other_refit`: a refit trains twice)."""

    seconds: float
    runs: int
    from_other_refit: bool = False

    def __str__(self) -> str:
        like = f"{self.runs} committed CPU run{'s' * (self.runs > 1)}"
        return (f"about {_duration(self.seconds)} on a CPU (median of {like}"
                f"{' without refit, doubled' if self.from_other_refit else ''})")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"


def _training_seconds(result: dict) -> float:
    """A run's epochs, validation passes and refit epochs, summed from its records (a resumed run's wall
    time is only its last process's)."""
    history = result.get("history") or []
    seconds = sum(entry.get("seconds", 0.0) + entry.get("valid_seconds", 0.0) for entry in history)
    seconds = seconds or result.get("train_seconds") or result.get("wall_seconds") or 0.0
    refit = result.get("refit")
    return float(seconds + (refit.get("train_seconds", 0.0) if isinstance(refit, dict) else 0.0))


@lru_cache(maxsize=None)
def _cpu_times(results_dir: str, dataset: str, model: str) -> tuple[tuple[bool, float], ...]:
    """(refit, training seconds) of every committed CPU training run of `model` on `dataset`: calibrations
    and refits that reused another run's selection (each trained only a part) and runs on a GPU left out."""
    found = []
    for path in sorted(Path(results_dir, dataset, model).glob(f"*/{RESULT_FILE}")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        seconds = _training_seconds(result)
        partial = "calibration" in result or "selection_from" in result
        if partial or result.get("machine", {}).get("device") != "cpu" or not seconds:
            continue
        refit = result.get("settings", {}).get("refit") or result.get("train_options", {}).get("refit")  # older: no settings
        found.append((bool(refit), seconds))
    return tuple(found)


def run_cost(run: RunSpec, results_dir: str | Path) -> Cost | None:
    """The median training time of the committed CPU runs of the same model on the same dataset with the
    same refit choice; without one, of those with the other choice, doubled or halved; None where there is
    no CPU run of the model on the dataset. Other settings are not matched: an estimate to plan by, at the
    pace this machine's runs had (their threads, the work beside them)."""
    refit = bool(dict(run.settings).get("refit"))
    times = _cpu_times(str(results_dir), run.dataset, run.model)
    same = [seconds for was_refit, seconds in times if was_refit == refit]
    if same:
        return Cost(statistics.median(same), len(same))
    other = [seconds for was_refit, seconds in times if was_refit != refit]
    if other and refit:
        return Cost(2 * statistics.median(other), len(other), from_other_refit=True)
    return None


def cost_text(run: RunSpec, results_dir: str | Path) -> str:
    """A missing run's estimate (`run_cost`) as one line of a listing or plan."""
    return str(run_cost(run, results_dir) or "no committed CPU run like it to estimate its time from")


def cost_summary(runs: list[RunSpec], results_dir: str | Path, label: str = "missing runs") -> str:
    """One line, starting with `label`: the runs' estimated CPU time in all, and how many have no estimate."""
    costs = [run_cost(run, results_dir) for run in runs]
    known = [cost.seconds for cost in costs if cost is not None]
    unknown = len(costs) - len(known)
    if not known:
        return f"{label}: no committed CPU run like any of the {unknown} to estimate their time from"
    text = f"{label}: {_duration(sum(known))} of CPU time at the pace of the committed runs like them"
    return text + (f" ({unknown} with no such run to estimate from)" if unknown else "")


def listing(paper: dict, items: list[dict], results_dir: str | Path) -> str:
    """What each item needs, present or missing, with the bench command and an estimated CPU time
    (`run_cost`) of each missing run."""
    _cpu_times.cache_clear()  # results land between calls
    lines = [paper["title"], ""]
    for item in items:
        lines.append(f"{item['id']}: {item['title']}")
        if item["kind"] == "explain":
            for path in item["files"]:
                lines.append(f"  {'present' if Path(path).is_file() else 'missing'}  {path}")
            if not all(Path(path).is_file() for path in item["files"]):
                lines.append(f"      {item['command']}")
        for dataset in item.get("datasets", []):
            for row in item["rows"]:
                if row_on(row, dataset).get("model") is None:
                    lines.append(f"  n/a      {dataset} {row['label']}: not in nextclick (published value only)")
        for run in unique(item_runs(item)):
            present = run.result_path(results_dir).is_file()
            lines.append(f"  {'present' if present else 'missing'}  {run.name}")
            if not present:
                lines.append(f"      {run.command()}")
                lines.append(f"      {cost_text(run, results_dir)}")
        lines.append("")
    runs = paper_runs(paper, items)
    missing = missing_runs(runs, results_dir)
    lines.append(f"{len(runs)} runs needed: {len(runs) - len(missing)} present, {len(missing)} missing "
                 f"(results folder: {results_dir})")
    if missing:
        lines.append(cost_summary(missing, results_dir))
    return "\n".join(lines)
