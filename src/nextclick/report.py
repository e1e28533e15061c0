"""Tables and plots made from results/*.json alone (what `nextclick bench` writes), never from a model.

    from nextclick import report
    results = report.load(["results/diginetica/narm.json", "results/diginetica/sr-iem.json"])
    print(report.length_table(results))                      # markdown, NARM Table 5 / SR-IEM Fig. 2
    report.plot_by_length(results, "docs/figures/diginetica_by_length.png")
    print(report.history_table(results[0]))                  # per-epoch loss, speed, validation

or from the shell:  python -m nextclick.report results/diginetica/*.json --by-length out.png

Per-length metrics are pooled into ranges by case-weighted means, which is exact for HR@K and MRR@K
(both are means over cases).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_METRICS = ("HR@20", "MRR@20")
# Prefix-length ranges: one per length up to 5, then wider ranges (lengths >= 20 are pooled by bench).
DEFAULT_BINS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 9), (10, 19), (20, None))


def read(paths: Iterable[str | Path]) -> list[tuple[Path, object]]:
    """Each file's path and parsed JSON, read once for all the tables made from them."""
    return [(Path(path), json.loads(Path(path).read_text())) for path in paths]


def load(paths: Iterable[str | Path]) -> list[dict]:
    """Read results JSON files; each result gets `_path` and a display `_label`."""
    return bench_results(read(paths))


def bench_results(documents: list[tuple[Path, object]]) -> list[dict]:
    """The `nextclick bench` results among `read` files. `nextclick explain --test` summaries are left to
    `click_weights`; other JSON files a glob may catch (speed measurements, test curves) are skipped
    with a note on stderr."""
    results = []
    for path, result in documents:
        if is_click_weights(result):
            continue
        if not isinstance(result, dict) or "test_by_length" not in result or "test" not in result:
            print(f"skipped {path}: not a `nextclick bench` result", file=sys.stderr)
            continue
        result["_path"] = str(path)
        result["_label"] = label(result)
        if "test_by_repeat" not in result:  # results written before the split existed
            _repeats_from_ranks(result, path)
        results.append(result)
    return results


def is_click_weights(summary) -> bool:
    return isinstance(summary, dict) and "peak_over_uniform" in summary


def click_weights(documents: list[tuple[Path, object]]) -> list[dict]:
    """The `nextclick explain --test` summaries among `read` files (others are ignored)."""
    return [{**summary, "_path": str(path)} for path, summary in documents if is_click_weights(summary)]


def click_weights_table(summaries: Sequence[dict]) -> str:
    """How each attention model spreads its weight over a session's clicks, on the test set."""
    rows = []
    for summary in sorted(summaries, key=lambda s: (s["dataset"], s["_path"])):
        peak = summary["peak_over_uniform"]
        alpha = summary.get("mean_alpha_target")
        rows.append([summary["dataset"], Path(summary["_path"]).name.removesuffix(".click_weights.json"),
                     summary["weights_name"], f"{100 * summary['uniform_share']:.1f}", f"{peak['median']:.2f}",
                     f"{peak['p90']:.2f}", f"{100 * summary['zero_weight_share']:.1f}",
                     f"{summary['last_click_mean_weight']:.3f}", f"{alpha:.3f}" if alpha is not None else "—"])
    return markdown(["dataset", "result", "weights", "uniform % (2+ clicks)", "t x max weight, median", "90th pct.",
                     "clicks at exactly 0 %", "last click's weight", "mean alpha_target"], rows)


def _repeats_from_ranks(result: dict, path: Path) -> None:
    """Fill `test_by_repeat` from the result's per-case ranks (`.ranks.npz`) and its split's test
    cases, when both are at hand; otherwise leave the result as it is."""
    import numpy as np

    from nextclick.evaluate import Evaluation

    ranks_path = path.with_suffix(".ranks.npz")
    if not ranks_path.exists():
        return
    from nextclick.data.benchmarks import DataError

    try:
        test = _test_cases(result.get("dataset"))
    except (DataError, OSError):  # no data directory here: the table simply lacks this result
        return
    ranks = np.load(ranks_path)["ranks"].astype(np.int64)
    if len(ranks) == len(test):
        result["test_by_repeat"] = Evaluation(ranks, test.length, repeats=test.repeats()).by_repeat()


@functools.lru_cache(maxsize=4)
def _test_cases(dataset: str):
    from nextclick.data.benchmarks import resolve

    return resolve(dataset).test


def label(result: dict) -> str:
    name = result.get("model", "?")
    if result.get("variant"):
        name += f"-{result['variant']}"
    return name


def _bucket_start(key: str) -> int:
    return int(key.rstrip("+"))


def pool(by_length: dict, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
         metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict]:
    """{range name: {"cases", metric...}} from a `test_by_length` dict ({"1": {...}, ..., "20+": {...}}).
    A bin (lo, hi) takes lengths lo..hi (hi None = open); empty bins are left out."""
    pooled = {}
    for lo, hi in bins:
        chosen = [v for k, v in by_length.items() if _bucket_start(k) >= lo and (hi is None or _bucket_start(k) <= hi)]
        cases = sum(v["cases"] for v in chosen)
        if not cases:
            continue
        name = str(lo) if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        pooled[name] = {"cases": cases, **{m: sum(v[m] * v["cases"] for v in chosen) / cases for m in metrics}}
    return pooled


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: header, rule, one line per row of cells."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def length_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS,
                 bins: Sequence[tuple[int, int | None]] | None = DEFAULT_BINS, percent: bool = True) -> str:
    """Markdown table: one row per prefix-length range, columns `<model> <metric>` for each result
    (all results must share a dataset to share the case counts column)."""
    if not results:
        return ""
    pooled = [pool(r["test_by_length"], bins, metrics) if bins else r["test_by_length"] for r in results]
    rows = list(pooled[0])
    scale = 100.0 if percent else 1.0
    header = ["prefix length", "cases"] + [f"{r['_label'] if '_label' in r else label(r)} {m}" for r in results for m in metrics]
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
    header = (["dataset", "model"] + list(metrics)
              + ["selected epoch", "fit s", "train cases/s (median epoch)", "s/epoch (median)", "test s", "computed on"])
    body = []

    def number(value, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    for r in results:
        cells = [r.get("dataset", "?"), r.get("_label", label(r))]
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
    header = ["model", "repeat share"] + [f"{m} {group}" for m in metrics for group in ("repeat", "new")]
    body = []
    for r in rows:
        split = r["test_by_repeat"]
        cells = [r.get("_label", label(r)), f"{split['repeat']['share'] * 100:.1f}"]
        cells += [f"{split[group][m] * 100:.2f}" for m in metrics for group in ("repeat", "new")]
        body.append(cells)
    return markdown(header, body)


def comparison_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Markdown: ours next to the published number on the same split (nextclick.published), with the
    gap in points; results without a published row are left out ("" when none has one)."""
    from nextclick.published import published

    header = ["dataset", "model"] + [f"{m} {w}" for m in metrics for w in ("ours", "published", "gap")] + ["source"]
    body = []
    for r in results:
        row = published(r.get("dataset", ""), r.get("model", ""))
        if row is None:
            continue
        cells = [r["dataset"], r.get("_label", label(r))]
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


def plot_by_length(results: Sequence[dict], path: str | Path, metrics: Sequence[str] = DEFAULT_METRICS,
                   title: str | None = None) -> Path:
    """PNG: one panel per metric, one line per result over prefix lengths 1..19 and 20+, with the
    number of test cases per length as grey bars on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(results[0]["test_by_length"], key=_bucket_start)
    positions = list(range(len(keys)))
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        counts = axis.twinx()
        counts.bar(positions, [results[0]["test_by_length"][k]["cases"] for k in keys], color="0.88", zorder=0)
        counts.set_ylabel("test cases", color="0.5")
        counts.tick_params(axis="y", colors="0.5")
        axis.set_zorder(counts.get_zorder() + 1)
        axis.patch.set_visible(False)
        for result in results:
            table = result["test_by_length"]
            axis.plot(positions, [100 * table[k][metric] if k in table else float("nan") for k in keys],
                      marker="o", markersize=3, label=result.get("_label", label(result)))
        ticks = [i for i, k in enumerate(keys) if k.endswith("+") or _bucket_start(k) in (1, 5, 10, 15)]
        axis.set_xticks(ticks)
        axis.set_xticklabels([keys[i] for i in ticks])
        axis.set_xlabel("prefix length (clicks before the target)")
        axis.set_ylabel(f"{metric} (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    dataset = results[0].get("dataset", "")
    figure.suptitle(title or f"{dataset}: test {', '.join(metrics)} by prefix length")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_history(results: Sequence[dict], path: str | Path, metric: str = "HR@20") -> Path:
    """PNG: validation `metric` per epoch for each result (selected epoch marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        history = [h for h in result.get("history", []) if metric in h.get("valid", {})]
        line, = axis.plot([h["epoch"] for h in history], [100 * h["valid"][metric] for h in history], marker="o",
                          markersize=3, label=f"{result.get('_label', label(result))} ({result.get('dataset', '')})")
        chosen = [h for h in history if h["epoch"] == result.get("selected_epoch")]
        if chosen:
            axis.plot([chosen[0]["epoch"]], [100 * chosen[0]["valid"][metric]], marker="*", markersize=12,
                      color=line.get_color())
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation {metric} (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# train options that say where and how a run was kept, not what it computed
_BOOKKEEPING = {"seed", "checkpoint_dir", "resume", "log_path", "keep_epochs", "eval_batch_size", "device",
                "progress", "quiet"}


def _same_run_but_the_seed(result: dict) -> str:
    options = {k: v for k, v in (result.get("train_options") or {}).items() if k not in _BOOKKEEPING}
    return json.dumps([result.get("dataset"), result.get("model"), result.get("config"), options], sort_keys=True)


def _one_per_seed(group: list[dict]) -> list[dict] | None:
    """`group` with each seed once; None where two runs of one seed scored differently (no single
    number for that seed). Runs of one seed with the same scores are one run reproduced (a grid search
    that chose a configuration run before, say): counting it twice would weigh that seed double. Of a
    reproduced run, the first by label stands for it. Timings may differ between reproductions."""
    def scores(r: dict) -> tuple:
        return tuple(sorted((key, value) for key, value in r["test"].items() if "@" in key))

    by_seed: dict[int, list[dict]] = {}
    for r in sorted(group, key=lambda r: r.get("_label", label(r))):
        by_seed.setdefault(r["seed"], []).append(r)
    if any(len({scores(r) for r in runs}) > 1 for runs in by_seed.values()):
        return None
    return [by_seed[seed][0] for seed in sorted(by_seed)]


def seed_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Markdown: mean and spread (max - min) over seeds of every group of results that differ in the
    seed alone (same dataset, model, config and training options), as protocols.md asks where numbers
    are close ("" when no group has two seeds); a reproduced run counts once (_one_per_seed)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if "seed" in r:
            groups.setdefault(_same_run_but_the_seed(r), []).append(r)
    header = ["dataset", "model", "seeds"] + [f"{m} {w}" for m in metrics for w in ("mean", "spread")]
    body = []
    for runs in groups.values():
        group = _one_per_seed(runs)
        if group is None or len(group) < 2:  # one seed, or one seed tested two ways (not a seed spread)
            continue
        seeds = [r["seed"] for r in group]
        first = group[0]
        name = re.sub(r"-seed\d+$", "", first.get("_label", label(first)))
        cells = [first.get("dataset", "?"), name, ", ".join(map(str, seeds))]
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results JSON files (same dataset for --by-length)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated (HR@20,MRR@20)")
    parser.add_argument("--by-length", metavar="PNG", default=None,
                        help="also plot metrics by prefix length, one PNG per dataset: PNG's name + _<dataset>")
    parser.add_argument("--history", metavar="PNG", default=None, help="also plot validation curves")
    parser.add_argument("--every-length", action="store_true", help="table rows per length, not pooled ranges")


def run(args: argparse.Namespace) -> int:
    metrics = tuple(args.metrics.split(","))
    documents = read(args.results)
    results = bench_results(documents)
    if not results:
        raise ValueError("no `nextclick bench` result among the given files")
    print(summary_table(results))
    print()
    comparison = comparison_table(results, metrics)
    if comparison:
        print(comparison)
        print()
    seeds = seed_table(results, metrics)
    if seeds:
        print("Over seeds (results that differ in the seed alone; spread = max - min)\n")
        print(seeds)
        print()
    for result in results:
        if "grid" in result:
            print(f"{result.get('dataset', '?')}, {result.get('_label', label(result))}: grid searched on validation "
                  f"{result['grid']['metric']} (chosen in bold; only it was tested)\n")
            print(grid_table(result))
            print()
    weights = click_weights(documents)
    if weights:
        print("What the attention models weigh (`nextclick explain --test`; t x max weight = 1 when a session's\n"
              "clicks weigh the same, t when one click takes all)\n")
        print(click_weights_table(weights))
        print()
    by_dataset: dict[str, list[dict]] = {}
    for result in results:
        by_dataset.setdefault(result.get("dataset", "?"), []).append(result)
    for dataset, group in by_dataset.items():
        print(f"{dataset}: test by prefix length\n")
        print(length_table(group, metrics, bins=None if args.every_length else DEFAULT_BINS))
        print()
        repeats = repeat_table(group, metrics)
        if repeats:
            print(f"{dataset}: test on repeat targets (already in the prefix) and new ones\n")
            print(repeats)
            print()
        if args.by_length:
            target = Path(args.by_length)  # one figure per dataset: <name>_<dataset>.png
            target = target.with_name(f"{target.stem}_{dataset}{target.suffix}")
            print(f"wrote {plot_by_length(group, target, metrics)}", file=sys.stderr)
    if args.history:
        print(f"wrote {plot_history(results, args.history, metrics[0])}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nextclick.report", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
