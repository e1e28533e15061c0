"""`nextclick reproduce dsan|sriem|narm`: the seed papers' tables and figures from the result files;
`nextclick compare`: the paired t-test between any two sets of results."""

from __future__ import annotations

import argparse
import sys

from nextclick.cli.common import add_device_option, add_threads_option, int_in

DESCRIPTION = """Every table and figure of a seed paper (DSAN, SR-IEM, NARM), ours beside the published
numbers: mean ± std over seeds, a mark where a paired t-test against the paper's model is significant,
and the state of each (reproduced / within noise / short). Without --run nothing is trained: the runs
present in the results folder are drawn (markdown and PNG under <out>/reproduction/<paper>/, the states
of all three papers in <out>/reproduction.md) and each missing run is listed with its bench command and
its likely CPU time (the median of the committed CPU runs of its model on its dataset)."""


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
    if args.time:
        from nextclick.reproduce.timing import measure_item

        timed = [item for item in items if item["kind"] == "speed"]
        if not timed:
            tables = [item["id"] for item in paper["items"] if item["kind"] == "speed"]
            raise ValueError(f"--time measures time tables, and none was chosen; {args.paper}'s: "
                             f"{', '.join(tables) or 'none'}")
        for item in timed:
            measure_item(paper, item, args.results_dir, batches=args.batches, threads=args.threads,
                         data_root=args.data_dir, device=args.device, progress=lambda line: print(line, file=sys.stderr))
    chosen = None if args.table is None and args.figure is None else items
    for path in reproduce.render(args.paper, args.results_dir, args.out, chosen):
        print(f"wrote {path}", file=sys.stderr)
    return 0


COMPARE_DESCRIPTION = """Paired two-sided t-tests of one model's test results against another's on the same test
cases, from the ranks.npz beside each result.json (the test the DSAN and SR-IEM papers report). Each side
is one or more result folders (seeds of one configuration): a case's hit and reciprocal rank are averaged
over a side's seeds first. Nothing is trained or loaded but the result files (and, with --by-repeat, the
split, to tell repeat targets from new ones).

  nextclick compare results/diginetica/sr-iem/<run with repeat=mix> --against results/diginetica/sr-iem/<run>"""


def cmd_compare(args) -> int:
    from nextclick import atomic
    from nextclick.reproduce.significance import compare_sides, comparison_markdown, read_ranks

    sides = [[read_ranks(path) for path in paths] for paths in (args.runs, args.against)]
    datasets = sorted({result["dataset"] for side in sides for _, result, _ in side})
    if len(datasets) > 1:
        raise ValueError(f"the runs are on different datasets ({', '.join(datasets)}): a paired test needs the same test cases")
    groups = None
    if args.by_repeat:
        from nextclick.data.benchmarks import resolve

        test = resolve(datasets[0], args.data_dir).test
        if len(test) != len(sides[0][0][2]):
            raise ValueError(f"{datasets[0]} has {len(test):,} test cases here, the results {len(sides[0][0][2]):,}: "
                             "not the split they were tested on")
        repeats = test.repeats()
        groups = {"repeat targets": repeats, "new targets": ~repeats}
    rows = compare_sides([ranks for _, _, ranks in sides[0]], [ranks for _, _, ranks in sides[1]], args.k, groups)
    # <dataset>/<model>/<run id>, as the results layout names a run
    labels = [", ".join("/".join(folder.parts[-3:]) for folder, _, _ in side) for side in sides]
    print(comparison_markdown(rows, *labels))
    if args.json:
        atomic.write_json(args.json, {"a": labels[0], "b": labels[1], "k": args.k, "rows": rows})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired t-tests of one set of results against another on the same test cases",
                       description=COMPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RESULT", help="side A: result folders (or their result.json), one per seed")
    p.add_argument("--against", nargs="+", required=True, metavar="RESULT", help="side B, the same way")
    p.add_argument("--k", type=int_in(1), default=20, help="the cut-off of HR@K and MRR@K (20)")
    p.add_argument("--by-repeat", action="store_true",
                   help="also test repeat targets (already clicked in the session) and new ones apart (reads the split)")
    p.add_argument("--data-dir", default=None, help="with --by-repeat: data directory holding benchmarks/")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows to FILE as JSON")
    p.set_defaults(func=cmd_compare)

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
    p.add_argument("--time", action="store_true",
                   help="time the training epoch of every row of the chosen time tables (SR-IEM's Table 3) one "
                        "after the other in this process, write results/speed/<dataset>/<paper>-<table>.json, "
                        "then render (minutes: pause other work on the machine first)")
    p.add_argument("--batches", type=int_in(1), default=40, help="--time: timed batches per row (40)")
    p.add_argument("--results-dir", default="results", help="where results/<dataset>/<model>/<run id>/ are (results)")
    p.add_argument("--out", default="docs", help="where reproduction/<paper>/ and reproduction.md go (docs)")
    p.add_argument("--data-dir", default=None, help="--run, --time: data directory holding benchmarks/ (as bench's)")
    p.add_argument("--keep-epochs", action="store_true", help="--run: keep every epoch's weights (for `nextclick curve`)")
    add_threads_option(p)
    add_device_option(p)
    p.set_defaults(func=cmd_reproduce)
