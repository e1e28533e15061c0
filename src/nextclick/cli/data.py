"""`nextclick data prepare | stats | bench-prepare`: raw click logs -> split directories, and their counts.

`add_data_commands(subparsers)` registers the `data` command on the main CLI's subparsers; each leaf
sets `func(args) -> exit code`. Bad input raises `DataError` / `ValueError` with a one-line message,
which the main CLI prints as `nextclick: error: ...` with exit code 2.

The library calls behind them: nextclick.data.prepare (run_prepare, split_statistics) and
nextclick.measure.preparation (the preparation speed benchmark).
"""

from __future__ import annotations

import argparse
import json

from nextclick.data.formats import LOG_FORMATS, MAX_BAD_FRACTION, RECIPE_NAMES, SESSION_GAP_SECONDS
from nextclick.cli.common import fraction_text, int_in, positive_number, share

PREPARE_HELP = """\
Turn a raw click log into a split directory (train.txt, test.txt, split.json, stats.json) that every
nextclick command reads, with a paper's preprocessing, step for step:

  srgnn  SR-GNN (AAAI 2019) preprocess.py: drop 1-click sessions, drop items seen < 5 times (counted over
         all data), drop sessions left < 2; test = last 7 days (Diginetica) / last day (Yoochoose);
         Diginetica clicks sorted by timeframe; unseen test clicks removed; every prefix a case.
         --fraction 1/64 or 1/4 keeps the most recent cases (Yoochoose 1/64, 1/4).
  dsan   DSAN (AAAI 2021) Preprocess_dn.py / Preprocess_rr.py: sessions < 3 and items < 5 removed in the
         official order, Diginetica sorted by (eventdate, timeframe), Retailrocket views cut after 30 min
         of inactivity, last week as test (split day dropped), prefixes of length >= 2.
  narm   NARM (CIKM 2017) section 4.1: as srgnn but Diginetica clicks kept in file order ("unsorted").

Formats (--format, default from the file name): diginetica (train-item-views.csv), yoochoose
(yoochoose-clicks.dat), retailrocket (events.csv), csv / parquet (name the columns below).
Malformed rows are skipped and counted in stats.json; more than 1% (or any, with --strict) is an error.

examples:
  nextclick data prepare srgnn --input train-item-views.csv --out data/diginetica
  nextclick data prepare srgnn --input yoochoose-clicks.dat --out data/yoochoose1_64 --fraction 1/64
  nextclick data prepare dsan --input events.csv --out data/retailrocket
  nextclick data prepare srgnn --input log.csv --format csv --user-column user --item-column item \\
      --time-column ts --time-format milliseconds --test-days 7 --out data/mylog
"""


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `data prepare`, `data stats` and `data bench-prepare` on the main CLI's subparsers."""
    data = subparsers.add_parser(
        "data",
        help="prepare raw click logs into splits (srgnn, dsan, narm recipes); show a split's counts",
        description="Raw click logs -> split directories, and their counts.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    commands.required = True

    p = commands.add_parser(
        "prepare",
        help="raw log -> split directory with a paper's recipe",
        description=PREPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", choices=RECIPE_NAMES, help="whose preprocessing to reproduce")
    p.add_argument("--input", "-i", required=True, metavar="FILE", help="the raw click log")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="split directory to write")
    p.add_argument(
        "--format",
        dest="log_format",
        choices=LOG_FORMATS,
        default=None,
        help="log format (default: guessed from the file name)",
    )
    p.add_argument(
        "--fraction",
        type=fraction_text,
        default=None,
        metavar="F",
        help="srgnn/narm: keep the most recent F of the training cases, e.g. 1/64 or 1/4 (Yoochoose)",
    )
    p.add_argument(
        "--test-days",
        type=positive_number,
        default=None,
        metavar="DAYS",
        help="test window in days (default: the paper's: 7 Diginetica/Retailrocket, 1 Yoochoose; "
        "required for csv/parquet logs)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a split already in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    p.add_argument("--streaming", action="store_true",
                   help="for logs larger than memory, every format: read on polars' streaming engine into "
                        "temporary Parquet files beside DIR instead of memory, then group the clicks one slice of "
                        "the sessions (logs cut by inactivity: of the users) at a time; the same split and "
                        "stats.json (docs/data.md, docs/scale.md)")
    generic = p.add_argument_group("csv / parquet logs")
    generic.add_argument(
        "--session-column", default=None, metavar="COLUMN", help="session id column (omit to cut sessions by user)"
    )
    generic.add_argument(
        "--user-column", default=None, metavar="COLUMN", help="user id column, cut into sessions by --gap-minutes"
    )
    generic.add_argument("--item-column", default="item_id", metavar="COLUMN", help="item id column (item_id)")
    generic.add_argument("--time-column", default="timestamp", metavar="COLUMN", help="time column (timestamp)")
    generic.add_argument(
        "--time-format",
        default="seconds",
        help="seconds | milliseconds | a strftime pattern such as '%%Y-%%m-%%d %%H:%%M:%%S' (seconds)",
    )
    generic.add_argument(
        "--gap-minutes",
        type=positive_number,
        default=SESSION_GAP_SECONDS / 60,
        help="inactivity that ends a user's session (30, as GRU4Rec and session-rec)",
    )
    generic.add_argument("--separator", default=",", help="CSV field separator (,)")
    robust = p.add_argument_group("bad input")
    robust.add_argument("--strict", action="store_true", help="fail on the first malformed row instead of skipping it")
    robust.add_argument(
        "--max-bad-fraction",
        type=share,
        default=MAX_BAD_FRACTION,
        help=f"fail if more rows than this share are malformed ({MAX_BAD_FRACTION})",
    )
    robust.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="drop exact duplicate events (default: keep and count them, as the papers did)",
    )
    p.set_defaults(func=cmd_prepare)

    s = commands.add_parser(
        "stats",
        help="counts of a split directory (and the per-step counts of stats.json)",
        description="Print a split directory's counts: sessions, cases, items; and, for a "
        "prepared split, the counts after every recipe step and the skipped rows.",
    )
    s.add_argument("dir", help="split directory (prepared, or ../shared/data/benchmarks/<name>)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_stats)


    b = commands.add_parser(
        "bench-prepare",
        help="time `data prepare srgnn` on a generated 10M-click Yoochoose log",
        description="Generate a deterministic Yoochoose-format log and time its preparation "
        "with the srgnn recipe (seconds, peak memory); write a JSON result.",
    )
    add_bench_arguments(b)
    b.set_defaults(func=cmd_bench_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from nextclick.api import generic_columns
    from nextclick.data.prepare import run_prepare

    columns = generic_columns(args.log_format, args.session_column or None, args.user_column or None,
                              args.item_column, args.time_column, args.time_format, args.gap_minutes,
                              _separator(args.separator))

    split, stats = run_prepare(
        args.input,
        args.recipe,
        args.out,
        log_format=args.log_format,
        columns=columns,
        fraction=args.fraction,
        test_days=args.test_days,
        strict=args.strict,
        max_bad_fraction=args.max_bad_fraction,
        drop_duplicates=args.drop_duplicates,
        force=args.force,
        progress=False if args.quiet else None,
        streaming=args.streaming,
    )
    if not args.quiet:
        result = stats["result"]
        skipped = sum(stats["reader"].get("skipped", {}).values())
        print(
            f"wrote {args.out}: {result['train_sessions']:,} training sessions ({result['train_cases']:,} cases), "
            f"{result['test_cases']:,} test cases, {result['items']:,} items "
            f"[{stats['timings']['total_seconds']:.1f} s]"
        )
        if skipped or stats["reader"].get("duplicate_clicks"):
            print(
                f"  skipped rows: {stats['reader'].get('skipped', {})}; duplicate events kept: "
                f"{stats['reader'].get('duplicate_clicks', 0):,} (see stats.json)"
            )
    return 0


def _separator(text: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ","}
    separator = named.get(text, text)
    if len(separator) != 1:
        raise ValueError(f"--separator must be one character (or 'tab'), not {text!r}")
    return separator




def cmd_stats(args: argparse.Namespace) -> int:
    from nextclick.data.prepare import split_statistics

    summary = split_statistics(args.dir)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    protocol = summary["protocol"]
    print(f"{summary['split']}  (protocol {protocol['name']}, prefixes of length >= {protocol['min_prefix']})")
    for key in (
        "train_sessions",
        "train_clicks",
        "train_cases",
        "test_cases",
        "items",
        "train_items",
        "test_items_unseen_in_train",
    ):
        print(f"  {key.replace('_', ' '):<30}{summary[key]:>12,}")
    recorded = summary.get("stats.json", {})
    try:
        _print_recorded(recorded)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a stats.json edited by hand
        from nextclick.data.benchmarks import DataError

        raise DataError(f"{args.dir}/stats.json does not hold a recipe's record ({type(error).__name__}: {error})") from None
    return 0


def _print_recorded(recorded: dict) -> None:
    """The counts `data prepare` recorded in stats.json: each recipe step, the split, the reader's skips."""
    if "steps" in recorded:
        print(f"recipe {recorded['recipe']} ({recorded['source']}) on {recorded['input']}")
        print(f"  {'step':<66}{'sessions':>11}{'clicks':>12}{'items':>9}")
        for step in recorded["steps"]:
            print(f"  {step['step']:<66}{step['sessions']:>11,}{step['clicks']:>12,}{step['items']:>9,}")
        split_info = recorded.get("split", {})
        print(
            f"  split at {split_info.get('split_time')} ({split_info.get('test_days')} days before the latest "
            f"session); {split_info.get('sessions_at_split_time_dropped', 0):,} sessions at the split dropped; "
            f"{split_info.get('test_clicks_on_unseen_items_removed', 0):,} unseen test clicks removed"
        )
        reader = recorded.get("reader", {})
        print(
            f"  read {reader.get('rows', 0):,} rows; skipped {reader.get('skipped') or 'none'}; "
            f"duplicate events {reader.get('duplicate_clicks', 0):,}; "
            f"clicks out of time order {reader.get('clicks_out_of_time_order', 0):,}"
        )
    elif recorded:
        print(
            "stats.json: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in recorded.items())
        )


DEFAULT_RESULTS = "results/preparation/prepare_yoochoose_10m.json"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clicks", type=int_in(1_000, 1_000_000_000), default=10_000_000,
                        help="clicks to generate (10,000,000)")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="generator seed (0)")
    parser.add_argument("--fraction", type=fraction_text, default=None, help="also keep only the most recent fraction of cases, e.g. 1/64")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="result JSON to write")
    parser.add_argument("--workdir", default=None, help="where the generated log and split go (a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated log and split")


def cmd_bench_prepare(args: argparse.Namespace) -> int:
    from nextclick.measure.preparation import TARGET_SECONDS, run_benchmark

    result = run_benchmark(
        args.results, n_clicks=args.clicks, seed=args.seed, fraction=args.fraction, workdir=args.workdir, keep=args.keep
    )
    verdict = "within" if result["within_targets"] else "OUTSIDE"
    print(
        f"prepared {result['log']['clicks']:,} clicks in {result['seconds']:.1f} s "
        f"(read {result['stage_seconds']['read_seconds']:.1f}, recipe {result['stage_seconds']['recipe_seconds']:.1f}, "
        f"write {result['stage_seconds']['write_seconds']:.1f}), peak memory {result['peak_memory_gib']:.2f} GiB: "
        f"{verdict} the targets (< {TARGET_SECONDS:.0f} s, < 8 GiB); wrote {args.results}"
    )
    return 0
