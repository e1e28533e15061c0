"""Options and helpers shared by the verb groups of the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nextclick.data.sessions import VALIDATIONS

if TYPE_CHECKING:
    from nextclick.training.loop import TrainOptions


# `recommend` / `explain -k`: the most recommendations one request may ask for. A k beyond the
# catalogue returns the whole catalogue.
MAX_K = 1000


class UsageError(Exception):
    """A command line argparse refuses; `nextclick.cli.main` prints it as one line and exits with 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line, `nextclick: error: argument <option>: <why>`,
    exit code 2, like every other bad input (argparse's default prints the whole usage first)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_in(low: int, high: int | None = None):
    """An argparse `type`: an integer in [low, high] (no upper bound when high is None)."""
    what = f"an integer of at least {low}" if high is None else f"an integer from {low} to {high:,}"

    def parse(text: str) -> int:
        value = _number(text, int, what)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)


def share(text: str) -> float:
    """An argparse `type`: a share, a number in [0, 1]."""
    value = _number(text, float, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """An argparse `type`: a finite number > 0."""
    value = _number(text, float, "a number > 0")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def model_name(text: str) -> str:
    """An argparse `type`: a registered model's name (checked before any data is read or file written)."""
    from nextclick.models import REGISTRY

    if text.lower() not in REGISTRY:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; models: {', '.join(sorted(REGISTRY))}")
    return text


def device_name(text: str) -> str:
    """An argparse `type`: auto, cpu, cuda or cuda:N (whether this machine has that GPU is checked where
    a model is moved there)."""
    kind, colon, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def fraction_text(text: str) -> str:
    """An argparse `type`: a fraction such as 1/64 or 0.25 in (0, 1], kept as written (results record it)."""
    from nextclick.data.recipes import parse_fraction

    try:
        parse_fraction(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--fraction ")) from None
    return text


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument("--threads", type=int_in(1, 1024), default=default,
                        help=f"torch threads ({default})" if default else "torch threads (default: all cores)")


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", "-d", default=None,
                        help="published split name (retailrocket, diginetica, yoochoose1_64), a split directory, "
                             "or 'synthetic' (default)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory holding benchmarks/ (default: $NEXTCLICK_DATA, else ../shared/data)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="auto",
                        help="where neural models train and score: auto (a CUDA GPU when torch sees one, else the "
                             "CPU), cpu, cuda or cuda:N; results record it")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    # training.loop.PRECISIONS, written out: the parser imports no torch (tests/test_precision.py checks they agree)
    parser.add_argument("--precision", choices=("fp32", "bf16", "bf16-scores"), default="fp32",
                        help="training arithmetic: fp32 (default) is the reference; bf16 runs each step's forward "
                             "pass under bf16 autocast; bf16-scores runs only the losses' products with the whole "
                             "catalogue in bf16, the fastest on CPUs (mixed precision: weights, gradients, "
                             "optimizer state, entmax, softmax and loss normalisers stay fp32, and validation and "
                             "test always evaluate in fp32). Either pays only on hardware with bf16 units (CPUs "
                             "with AVX-512 BF16 or AMX, GPUs from NVIDIA Ampere on); elsewhere it is slower. "
                             "Results record it, and such a run has its own run id and speed file name "
                             "(precision=bf16, precision=bf16-scores)")


def add_preset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="start from a named set of config values the model defines (`nextclick models --presets "
                             "MODEL` lists them; GRU4Rec: its authors' best settings per dataset; STAMP: DSAN's "
                             "re-implementation and the official code's Diginetica settings; BERT4Rec: DSAN's "
                             "re-implementation; CoSAN: its per-dataset settings; DANSeR: its ablations); --set "
                             "values win over it")


def model_overrides(args) -> dict[str, object]:
    """The config values a command asks for: the model's `--preset` (if any), then `--set` over it."""
    overrides = parse_overrides(args.set)
    if getattr(args, "preset", None) is None:
        return overrides
    from nextclick.models import model_class

    cls = model_class(args.model)
    if args.preset not in cls.presets:
        known = ", ".join(sorted(cls.presets)) or "none"
        raise ValueError(f"{cls.name} has no preset {args.preset!r}; its presets: {known}")
    return {**cls.presets[args.preset], **overrides}


def add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", "-s", action="append", metavar="KEY=VALUE",
                        help="override a model config value (repeatable); see `nextclick models --config MODEL`")
    add_preset_option(parser)
    parser.add_argument("--epochs", type=int_in(1, 10_000), default=None,
                        help="maximum epochs (default: the model's paper setting)")
    parser.add_argument("--patience", type=int_in(1, 10_000), default=3,
                        help="epochs without validation gain before stopping (3)")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=None,
                        help="training batch size (default: the model's)")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=1, help="random seed (1, as DSAN's official code)")
    parser.add_argument("--select", default="HR@20", metavar="METRIC",
                        help="validation metric that selects the epoch: HR@K or MRR@K for K = 5, 10, 20 (HR@20)")
    add_threads_option(parser)
    add_device_option(parser)
    add_precision_option(parser)
    parser.add_argument("--checkpoint-dir", "-o", default=None, help="where checkpoints go (default runs/<dataset>/<model>/<run id>, the id made of the "
                             "settings that differ from the defaults)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint directory")
    parser.add_argument("--length-buckets", type=non_negative_int, default=0,
                        help="group batches by prefix length within this many batches (speed; 0 = off, faithful)")
    parser.add_argument("--max-batches", type=positive_int, default=None, help="cap batches per epoch (smoke runs)")
    parser.add_argument("--validation", choices=VALIDATIONS, default="last-sessions",
                        help="validation data carved from training: the last 10%% of sessions (default), a "
                             "random 10%% of cases as NARM's and SR-GNN's official codes (leaky: a session's "
                             "prefixes fall on both sides), or a random 10%% of whole sessions")
    parser.add_argument("--refit", action="store_true",
                        help="after selecting the epoch on validation, train afresh on all training cases for that "
                             "many epochs and test the result (the papers' codes train on all training data)")
    parser.add_argument("--keep-epochs", action="store_true",
                        help="keep every epoch's weights under <checkpoint dir>/epochs/ (for `nextclick curve`)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or per-epoch lines")


def train_options(args) -> "TrainOptions":
    from nextclick.training.loop import TrainOptions

    return TrainOptions(
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, seed=args.seed,
        select_metric=args.select, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        progress=not args.quiet, quiet=args.quiet, length_buckets=args.length_buckets, max_batches=args.max_batches,
        keep_epochs=args.keep_epochs, validation=args.validation, refit=args.refit, device=args.device,
        precision=args.precision,
    )


def output_path(out: str, suffix: str) -> Path:
    """`--out` plus a suffix, appended rather than replacing: 'results/dn/narm.weights' must not become
    'results/dn/narm.json' (a benchmark result). A given .png or .json ending is dropped first."""
    base = out.removesuffix(".json") if out.endswith(".json") else out.removesuffix(".png")
    return Path(base + suffix)
