"""Tables and plots made from result files alone (what `nextclick bench` writes), never from a model
or a dataset.

    from nextclick import report
    results = report.load(["results/diginetica/narm"])       # every run's result.json under a folder
    print(report.length_table(results))                      # markdown, NARM Table 5 / SR-IEM Fig. 2
    report.plot_by_length(results, "docs/figures/diginetica_by_length.png")
    print(report.history_table(results[0]))                  # per-epoch loss, speed, validation

or from the shell:  nextclick report results/diginetica --by-length out.png --index results/INDEX.md

load.py reads (results, click-weight summaries, the manifest), tables.py and plots.py draw, index.py
writes results/INDEX.md. Nothing here imports torch or scipy: a report runs where only the files are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nextclick import atomic
from nextclick.report.index import ManifestError, headlines, index_markdown
from nextclick.report.load import (MANIFEST_FILE, bench_results, click_weights, is_click_weights, label, load,
                                   read, read_manifest, result_files, run_name, without_seed)
from nextclick.report.plots import plot_by_length, plot_history
from nextclick.report.tables import (DEFAULT_BINS, DEFAULT_METRICS, click_weights_table, comparison_table,
                                     computed_on, grid_table, history_table, length_table, markdown, pool,
                                     repeat_table, seed_table, summary_table, typical_epoch)

__all__ = ["DEFAULT_BINS", "DEFAULT_METRICS", "ManifestError", "add_arguments", "bench_results", "click_weights",
           "click_weights_table", "comparison_table", "computed_on", "grid_table", "headlines", "history_table",
           "index_markdown", "is_click_weights", "label", "length_table", "load", "main", "markdown",
           "plot_by_length", "plot_history", "pool", "read", "read_manifest", "repeat_table", "result_files",
           "run", "run_name", "seed_table", "summary_table", "typical_epoch", "without_seed"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+",
                        help="result.json / click_weights.json files, or folders holding them (results/)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated (HR@20,MRR@20)")
    parser.add_argument("--by-length", metavar="PNG", default=None,
                        help="also plot metrics by prefix length, one PNG per dataset: PNG's name + _<dataset>")
    parser.add_argument("--history", metavar="PNG", default=None, help="also plot validation curves")
    parser.add_argument("--every-length", action="store_true", help="table rows per length, not pooled ranges")
    parser.add_argument("--index", metavar="MD", default=None,
                        help="also write the index of runs (headline and every run, with links) to MD "
                             "(results/INDEX.md)")
    parser.add_argument("--manifest", metavar="JSON", default=None,
                        help=f"headline runs for --index (default: {MANIFEST_FILE} beside the index)")


def write_index(results: list[dict], index: str | Path, manifest: str | Path | None) -> Path:
    index = Path(index)
    manifest_path = Path(manifest) if manifest else index.with_name(MANIFEST_FILE)
    chosen = read_manifest(manifest_path) if manifest_path.exists() else {}
    atomic.write_text(index, index_markdown(results, chosen, index))  # a reader never finds half an index
    return index


def run(args: argparse.Namespace) -> int:
    metrics = tuple(args.metrics.split(","))
    documents = read(args.results)
    results = bench_results(documents)
    if not results:
        raise ValueError("no `nextclick bench` result among the given files")
    if getattr(args, "index", None):  # first: a manifest naming a missing run stops the report here
        print(f"wrote {write_index(results, args.index, getattr(args, 'manifest', None))}", file=sys.stderr)
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
            print(f"{result.get('dataset', '?')}, {result['_label']}: grid searched on validation "
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
