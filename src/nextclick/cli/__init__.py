"""`nextclick` command line: thin — parses, calls the library, prints. One module per verb group:
catalogue (datasets, models), runs (train, bench, calibrate, status, curve, speed, demo), use
(evaluate, recommend, explain), serve (serve, serve-bench, index-bench), data (data prepare | stats |
bench-prepare), report, and reproduce (reproduce: the seed papers' tables and figures; compare).

Every command works on the embedded synthetic dataset when no dataset is named. Bad input gives one
line `nextclick: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

import nextclick

HELP = """Session-based recommendation: train, evaluate and serve next-click models.

Datasets are the published splits under <data dir>/benchmarks (see `nextclick datasets`), a split
directory made by `nextclick data prepare`, or, by default, the embedded synthetic dataset.
"""


def cmd_report(args) -> int:
    from nextclick import report

    return report.run(args)


def build_parser() -> argparse.ArgumentParser:
    from nextclick.cli import catalogue, data, reproduce, runs, serve, use
    from nextclick.report import add_arguments as add_report_arguments

    from nextclick.cli.common import OneLineParser

    # every subcommand's parser is a OneLineParser too (add_parser uses the parent's class)
    parser = OneLineParser(prog="nextclick", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nextclick {nextclick.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    catalogue.register(sub)
    runs.register(sub)
    use.register(sub)
    serve.register(sub)
    p = sub.add_parser("report", help="markdown tables and PNG plots made from results/*/*/*/result.json alone")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)
    data.add_data_commands(sub)
    reproduce.register(sub)
    return parser


def os_error_message(error: OSError) -> str:
    """'No space left on device: runs/x/model.safetensors': errno's words and the path, once."""
    reason = error.strerror or str(error)
    if error.filename and str(error.filename) not in reason:
        return f"{reason}: {error.filename}"
    return reason


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else list(argv)) == ["--version"]:
        # answered before the parser is built: it brings in every verb group, polars among them
        print(f"nextclick {nextclick.__version__}")
        return 0
    from nextclick.cli.common import UsageError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"nextclick: error: {error}", file=sys.stderr)
        return 2
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what a bench records and its grid workers rerun
    if getattr(args, "keeps_freed_memory", True):
        from nextclick.runtime import keep_freed_memory

        keep_freed_memory()  # training and evaluation steps reuse their big buffers (27% of a step)
    try:
        return args.func(args)
    # DataError, ConfigError and CheckpointError are ValueErrors: naming them here would import their modules,
    # torch among them, before the parser even runs (seconds for `--help`)
    except (ValueError, KeyError, FileNotFoundError, ChildProcessError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"nextclick: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return 0
    except OSError as error:  # a full disk, a folder that cannot be written: the reason and the path, one line
        print(f"nextclick: error: {os_error_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nextclick: interrupted (a checkpointed run continues with --resume)", file=sys.stderr)
        return 130
