"""Markdown tables made from loaded results (nextclick.report.load): what was run, how fast, beside
the published numbers, by prefix length, by repeat and new targets, over seeds, and a grid's candidates.

Per-length metrics are pooled into ranges by case-weighted means, which is exact for HR@K and MRR@K
(both are means over cases).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable, Sequence

from nextclick.report.load import CLICK_WEIGHTS_FILE, label, run_name, without_seed

DEFAULT_METRICS = ("HR@20", "MRR@20")
# Prefix-length ranges: one per length up to 5, then wider ranges (lengths >= 20 are pooled by bench).
DEFAULT_BINS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 9), (10, 19), (20, None))


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: header, rule, one line per row of cells."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def _label(result: dict) -> str:
    return result.get("_label") or label(result)


def bucket_start(key: str) -> int:
    return int(key.rstrip("+"))


def pool(by_length: dict, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
         metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict]:
    """{range name: {"cases", metric...}} from a `test_by_length` dict ({"1": {...}, ..., "20+": {...}}).
    A bin (lo, hi) takes lengths lo..hi (hi None = open); empty bins are left out."""
    pooled = {}
    for lo, hi in bins:
        chosen = [v for k, v in by_length.items() if bucket_start(k) >= lo and (hi is None or bucket_start(k) <= hi)]
        cases = sum(v["cases"] for v in chosen)
        if not cases:
            continue
        name = str(lo) if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        pooled[name] = {"cases": cases, **{m: sum(v[m] * v["cases"] for v in chosen) / cases for m in metrics}}
    return pooled


def length_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS,
                 bins: Sequence[tuple[int, int | None]] | None = DEFAULT_BINS, percent: bool = True) -> str:
    """Markdown table: one row per prefix-length range, columns `<model> <run id> <metric>` for each
    result (all results must share a dataset to share the case counts column)."""
    if not results:
        return ""
    pooled = [pool(r["test_by_length"], bins, metrics) if bins else r["test_by_length"] for r in results]
    rows = list(pooled[0])
    scale = 100.0 if percent else 1.0
    header = ["prefix length", "cases"] + [f"{_label(r)} {m}" for r in results for m in metrics]
    body = []
    for row in rows:
        cells = [row, f"{pooled[0][row]['cases']:,}"]
        for table in pooled:
            for metric in metrics:
                value = table.get(row, {}).get(metric)
                cells.append("" if value is None else f"{value * scale:.2f}")
        body.append(cells)
    overall = ["all", f"{results[0]['test']['cases']:,}"] + [
        f"{r['test'][m] * scale:.2f}" for r in results for m in metrics
    ]
    return markdown(header, body + [overall])


def typical_epoch(result: dict) -> tuple[float | None, float | None]:
    """(training cases/s, seconds) of the median epoch in the result's history, else the run's averages.
    The median, because a long run shares the machine with other jobs now and then (or is paused and
    resumed), and the mean would charge one such epoch to the model's speed."""
    epochs = [e for e in result.get("history") or [] if "cases_per_second" in e and "seconds" in e]
    if not epochs:
        return result.get("train_cases_per_second"), result.get("seconds_per_epoch")
    return (statistics.median(e["cases_per_second"] for e in epochs),
            statistics.median(e["seconds"] for e in epochs))


def computed_on(result: dict) -> str:
    """Where a result's numbers were computed ("CPU, 2 threads", "NVIDIA H100 80GB HBM3"): speeds are
    comparable only between rows that say the same."""
    machine = result.get("machine", {})
    device = machine.get("device", "cpu")
    if device != "cpu":
        return device
    threads = machine.get("threads")
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}" if threads else "CPU"


def summary_table(results: Sequence[dict], metrics: Sequence[str] = ("HR@10", "HR@20", "MRR@10", "MRR@20"),
                  percent: bool = True) -> str:
    """Markdown: one row per result with test metrics, the selected epoch (neural models), the time to
    fit (training for neural models, refit on all training sessions for statistical ones), training
    cases/s and seconds of the median epoch where there are epochs, the seconds to score the test set, and
    the device all of it ran on."""
    scale = 100.0 if percent else 1.0
    header = (["dataset", "model", "run"] + list(metrics)
              + ["selected epoch", "fit s", "train cases/s (median epoch)", "s/epoch (median)", "test s", "computed on"])
    body = []

    def number(value, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    for r in results:
        cells = [r.get("dataset", "?"), r.get("model", "?"), run_name(r)]
        cells += [f"{r['test'][m] * scale:.2f}" for m in metrics]
        fit = r.get("train_seconds", r.get("fit_seconds"))
        cases_per_second, seconds = typical_epoch(r)
        cells += [str(r.get("selected_epoch", "—")), number(fit, 1), number(cases_per_second),
                  number(seconds), number(r["test"].get("seconds"), 1), computed_on(r)]
        body.append(cells)
    return markdown(header, body)


def repeat_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Markdown: metrics on repeat targets (already clicked in the prefix) and on new ones, for the
    results that carry `test_by_repeat` ("" when none does)."""
    rows = [r for r in results if r.get("test_by_repeat")]
    if not rows:
        return ""
    header = ["model", "run", "repeat share"] + [f"{m} {group}" for m in metrics for group in ("repeat", "new")]
    body = []
    for r in rows:
        split = r["test_by_repeat"]
        cells = [r.get("model", "?"), run_name(r), f"{split['repeat']['share'] * 100:.1f}"]
        cells += [f"{split[group][m] * 100:.2f}" for m in metrics for group in ("repeat", "new")]
        body.append(cells)
    return markdown(header, body)


def comparison_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Markdown: ours next to the published number on the same split (nextclick.published), with the
    gap in points; results without a published row are left out ("" when none has one)."""
    from nextclick.published import published

    header = ["dataset", "model", "run"] + [f"{m} {w}" for m in metrics for w in ("ours", "published", "gap")] + ["source"]
    body = []
    for r in results:
        row = published(r.get("dataset", ""), r.get("model", ""))
        if row is None:
            continue
        cells = [r["dataset"], r["model"], run_name(r)]
        for metric in metrics:
            ours, theirs = r["test"][metric] * 100, row[metric] * 100
            cells += [f"{ours:.2f}", f"{theirs:.2f}", f"{ours - theirs:+.2f}"]
        body.append(cells + [row["source"]])
    return markdown(header, body) if body else ""


def history_table(result: dict, metrics: Sequence[str] = DEFAULT_METRICS, percent: bool = True) -> str:
    """Markdown: the per-epoch training record of one result (loss, seconds, cases/s, lr, validation)."""
    scale = 100.0 if percent else 1.0
    header = ["epoch", "loss", "seconds", "cases/s", "lr"] + [f"valid {m}" for m in metrics]
    body = []
    selected = result.get("selected_epoch")
    for record in result.get("history", []):
        valid = record.get("valid", {})
        mark = " *" if record["epoch"] == selected else ""
        cells = [f"{record['epoch']}{mark}", f"{record['loss']:.4f}", f"{record['seconds']:.0f}",
                 f"{record['cases_per_second']:,.0f}", f"{record.get('lr', float('nan')):g}"]
        cells += [f"{valid[m] * scale:.2f}" if m in valid else "" for m in metrics]
        body.append(cells)
    return markdown(header, body)


def _one_per_seed(group: list[dict]) -> list[dict] | None:
    """`group` with each seed once; None where two runs of one seed scored differently (no single
    number for that seed). Runs of one seed with the same scores are one run reproduced (the same run
    handed in twice, say): counting it twice would weigh that seed double. Of a reproduced run, the
    first by label stands for it. Timings may differ between reproductions."""
    def scores(r: dict) -> tuple:
        return tuple(sorted((key, value) for key, value in r["test"].items() if "@" in key))

    by_seed: dict[int, list[dict]] = {}
    for r in sorted(group, key=_label):
        by_seed.setdefault(r["seed"], []).append(r)
    if any(len({scores(r) for r in runs}) > 1 for runs in by_seed.values()):
        return None
    return [by_seed[seed][0] for seed in sorted(by_seed)]


def seed_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Markdown: mean and spread (max - min) over seeds of every group of results that differ in the
    seed alone (same dataset, model, and run id but for its `seed=N`), as protocols.md asks where
    numbers are close ("" when no group has two seeds); a reproduced run counts once (_one_per_seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "seed" in r:
            groups.setdefault((r.get("dataset"), r.get("model"), without_seed(run_name(r))), []).append(r)
    header = ["dataset", "model", "run (any seed)", "seeds"] + [f"{m} {w}" for m in metrics for w in ("mean", "spread")]
    body = []
    for (dataset, model, run), runs in groups.items():
        group = _one_per_seed(runs)
        if group is None or len(group) < 2:  # one seed, or one seed tested two ways (not a seed spread)
            continue
        cells = [dataset or "?", model or "?", run, ", ".join(str(r["seed"]) for r in group)]
        for metric in metrics:
            values = [r["test"][metric] * 100 for r in group]
            cells += [f"{statistics.fmean(values):.2f}", f"{max(values) - min(values):.2f}"]
        body.append(cells)
    return markdown(header, body) if body else ""


def grid_table(result: dict) -> str:
    """Markdown: every candidate of a `bench --grid` search with its validation scores (percent) and
    selected epoch; the chosen one in bold. Test numbers exist for the chosen candidate alone."""
    search = result["grid"]
    keys = list(search["grid"])
    metrics = [m for m in dict.fromkeys((search["metric"], "HR@20", "MRR@20"))  # the selecting one first
               if all(m in row for row in search["candidates"])]
    header = keys + [f"valid {m}" for m in metrics] + ["selected epoch", "epochs run"]
    body = []
    for row in search["candidates"]:
        chosen = all(row[k] == search["chosen"][k] for k in keys)
        cells = [str(row[k]) for k in keys] + [f"{row[m] * 100:.2f}" for m in metrics]
        cells += [str(row["selected_epoch"]), str(row["epochs_run"])]
        body.append([f"**{cell}**" for cell in cells] if chosen else cells)
    return markdown(header, body)


def click_weights_table(summaries: Sequence[dict]) -> str:
    """How each attention model spreads its weight over a session's clicks, on the test set. A summary
    in a run's folder is that run's model; one elsewhere is named by its file."""
    def run_of(summary: dict) -> str:
        path = Path(summary["_path"])
        if path.name == CLICK_WEIGHTS_FILE:
            return run_name(summary)
        return path.name.removesuffix(".click_weights.json").removesuffix(".json")

    rows = []
    for summary in sorted(summaries, key=lambda s: (s["dataset"], s["_path"])):
        peak = summary["peak_over_uniform"]
        alpha = summary.get("mean_alpha_target")
        rows.append([summary["dataset"], summary.get("model", "?"), run_of(summary),
                     summary["weights_name"], f"{100 * summary['uniform_share']:.1f}", f"{peak['median']:.2f}",
                     f"{peak['p90']:.2f}", f"{100 * summary['zero_weight_share']:.1f}",
                     f"{summary['last_click_mean_weight']:.3f}", f"{alpha:.3f}" if alpha is not None else "—"])
    return markdown(["dataset", "model", "run", "weights", "uniform % (2+ clicks)", "t x max weight, median",
                     "90th pct.", "clicks at exactly 0 %", "last click's weight", "mean alpha_target"], rows)
