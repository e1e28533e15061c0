"""`nextclick reproduce dsan|sriem|narm`: the seed papers' tables and figures from the result files."""

from __future__ import annotations

import argparse
import sys

from nextclick.cli.common import add_device_option, add_threads_option

DESCRIPTION = """Every table and figure of a seed paper (DSAN, SR-IEM, NARM), ours beside the published
numbers: mean ± std over seeds, a mark where a paired t-test against the paper's model is significant,
and the state of each (reproduced / within noise / short). Without --run nothing is trained: the runs
present in the results folder are drawn (markdown and PNG under <out>/reproduction/<paper>/, the states
of all three papers in <out>/reproduction.md) and each missing run is listed with its bench command."""


def cmd_reproduce(args) -> int:
    from nextclick import reproduce

    paper = reproduce.paper(args.paper)
    items = reproduce.select_items(paper, args.table, args.figure)
    print(reproduce.listing(paper, items, args.results_dir))
    if args.list:
        return 0
    if args.run:
        missing = reproduce.missing_runs(reproduce.paper_runs(paper, items), args.results_dir)
        print()
        print(reproduce.train_plan(missing, args.results_dir))
        extra = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
        extra += ["--data-dir", args.data_dir] if args.data_dir else []
        extra += ["--keep-epochs"] if args.keep_epochs else []
        code = reproduce.run_missing(missing, args.results_dir, extra)
        if code:
            return code
    chosen = None if args.table is None and args.figure is None else items
    for path in reproduce.render(args.paper, args.results_dir, args.out, chosen):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="a seed paper's tables and figures beside ours (list, render, --run the missing runs)",
                       description=DESCRIPTION)
    p.add_argument("paper", choices=("dsan", "sriem", "narm"), help="the paper")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--table", metavar="T", default=None, help="only this table (2 or table2)")
    which.add_argument("--figure", metavar="F", default=None,
                       help="only this figure (4 or figure4; heatmaps for DSAN's appendix, attention for NARM's)")
    p.add_argument("--list", action="store_true", help="only list present and missing runs (with their bench commands)")
    p.add_argument("--run", action="store_true",
                   help="print the plan, then train the missing runs one at a time (`nextclick bench ... --resume`, "
                        "so an interrupted run continues), then render")
    p.add_argument("--results-dir", default="results", help="where results/<dataset>/<model>/<run id>/ are (results)")
    p.add_argument("--out", default="docs", help="where reproduction/<paper>/ and reproduction.md go (docs)")
    p.add_argument("--data-dir", default=None, help="--run: data directory holding benchmarks/ (as bench's)")
    p.add_argument("--keep-epochs", action="store_true", help="--run: keep every epoch's weights (for `nextclick curve`)")
    add_threads_option(p)
    add_device_option(p)
    p.set_defaults(func=cmd_reproduce)
