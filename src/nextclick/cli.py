"""`nextclick` command line: thin — parses, calls the library, prints.

Every command works on the embedded synthetic dataset when no dataset is named.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nextclick.data.sessions import VALIDATIONS

if TYPE_CHECKING:
    from nextclick.train import TrainOptions

HELP = """Session-based recommendation: train, evaluate and serve next-click models.

Datasets are the published splits under <data dir>/benchmarks (see `nextclick datasets`), a split
directory made by `nextclick data prepare`, or, by default, the embedded synthetic dataset.
"""


def _parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", "-d", default=None,
                        help="published split name (retailrocket, diginetica, yoochoose1_64), a split directory, "
                             "or 'synthetic' (default)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory holding benchmarks/ (default: $NEXTCLICK_DATA, else ../shared/data)")


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="where neural models train and score: auto (a CUDA GPU when torch sees one, else the "
                             "CPU), cpu, cuda or cuda:N; results record it")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", "-s", action="append", metavar="KEY=VALUE",
                        help="override a model config value (repeatable); see `nextclick models --config MODEL`")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the model's paper setting)")
    parser.add_argument("--patience", type=int, default=3, help="epochs without validation gain before stopping (3)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the model's)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1, as DSAN's official code)")
    parser.add_argument("--select", default="HR@20", metavar="METRIC",
                        help="validation metric that selects the epoch: HR@K or MRR@K for K = 5, 10, 20 (HR@20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    _add_device_option(parser)
    parser.add_argument("--checkpoint-dir", "-o", default=None, help="where checkpoints go (default runs/<dataset>/<model>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint directory")
    parser.add_argument("--length-buckets", type=int, default=0,
                        help="group batches by prefix length within this many batches (speed; 0 = off, faithful)")
    parser.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (smoke runs)")
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


def _train_options(args) -> "TrainOptions":
    from nextclick.train import TrainOptions

    return TrainOptions(
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, seed=args.seed,
        select_metric=args.select, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        progress=not args.quiet, quiet=args.quiet, length_buckets=args.length_buckets, max_batches=args.max_batches,
        keep_epochs=args.keep_epochs, validation=args.validation, refit=args.refit, device=args.device,
    )


def cmd_datasets(args) -> int:
    from nextclick.data.benchmarks import available, data_dir, load_split

    root = data_dir(args.data_dir)
    print(f"data directory: {root if root else '(none: set $NEXTCLICK_DATA or --data-dir)'}")
    rows = [("synthetic", None)] + list(available(args.data_dir).items())
    print(f"{'name':<16}{'protocol':<10}{'train sessions':>15}{'train cases':>13}{'test cases':>12}{'items':>9}")
    from nextclick.data.benchmarks import resolve

    for name, path in rows:
        split = resolve(name) if path is None else load_split(path, name)
        s = split.stats()
        print(f"{name:<16}{s['protocol']['name']:<10}{s['train_sessions']:>15,}{s['train_cases']:>13,}"
              f"{s['test_cases']:>12,}{s['items']:>9,}")
    return 0


def cmd_models(args) -> int:
    from dataclasses import asdict

    from nextclick.models import REGISTRY, model_class

    if args.config:
        cls = model_class(args.config)
        print(json.dumps(asdict(cls.Config()), indent=1))
        return 0
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        print(f"{name:<12}{'neural' if cls.neural else 'statistical':<13}{cls.citation}")
    return 0


def cmd_train(args) -> int:
    from nextclick import checkpoint
    from nextclick.bench import fit_and_select
    from nextclick.data.benchmarks import resolve
    from nextclick.models import build
    from nextclick.train import set_threads

    import torch

    set_threads(args.threads)
    options = _train_options(args)
    split = resolve(args.dataset, args.data_dir)
    torch.manual_seed(options.seed)
    model = build(args.model, split.n_items, _parse_overrides(args.set))
    directory = Path(options.checkpoint_dir or Path("runs") / split.name / model.name)
    options.checkpoint_dir = str(directory)
    checkpoint.save_meta(directory, model, split.vocab, split.protocol, split.name)
    if not args.quiet:
        print(f"training {model.name} on {split.name} ({len(split.train):,} sessions, {split.n_items:,} items)")
        print("config:", json.dumps(__import__("dataclasses").asdict(model.config)))
    model, record = fit_and_select(model, split, options)
    checkpoint.save_weights(directory, model)
    checkpoint.atomic_write_json(directory / "metrics.json", {"valid": record.get("valid")})
    valid = record.get("valid", {})
    print(f"checkpoint: {directory}")
    print("validation " + "  ".join(f"{k} {v:.4f}" for k, v in valid.items()))
    return 0


def _checkpoint_and_split(args):
    """The checkpoint's model and metadata, and the split it is read against: --dataset, else the
    dataset it was trained on; the two must share a catalogue."""
    from nextclick import checkpoint
    from nextclick.data.benchmarks import resolve

    model, _, meta = checkpoint.load(args.checkpoint)
    split = resolve(args.dataset or meta.get("dataset"), args.data_dir)
    if split.n_items != model.n_items:
        raise ValueError(f"checkpoint has {model.n_items} items but {split.name} has {split.n_items}")
    return model, meta, split


def cmd_evaluate(args) -> int:
    from nextclick.evaluate import evaluate
    from nextclick.train import set_threads

    set_threads(args.threads)
    model, meta, split = _checkpoint_and_split(args)
    result = evaluate(model.score, split.test, batch_size=args.batch_size, max_length=model.max_length,
                      progress=not args.quiet, description="test")
    summary = result.summary()
    if args.by_length:
        summary["by_length"] = result.by_length()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{meta['model']} on {split.name} test ({summary['cases']:,} cases):")
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    return 0


def cmd_recommend(args) -> int:
    import numpy as np

    from nextclick import checkpoint

    if not args.items:
        raise ValueError("an empty session has nothing to recommend from: give at least one item id")
    model, vocab, _ = checkpoint.load(args.checkpoint)
    try:
        indices = vocab.encode([int(i) for i in args.items])
    except ValueError:
        raise ValueError(f"item ids must be integers, got {' '.join(args.items)}") from None
    top, scores = model.recommend([np.asarray(indices)], k=args.k)
    ids = vocab.decode(top[0])
    if args.json:
        print(json.dumps([{"item": int(i), "score": float(s)} for i, s in zip(ids, scores[0])]))
    else:
        for rank, (item, score) in enumerate(zip(ids, scores[0]), 1):
            print(f"{rank:3d}  {int(item):>10}  {float(score):.6f}")
    return 0


def _output_path(out: str, suffix: str) -> Path:
    """`--out` plus a suffix, appended rather than replacing: 'results/dn/narm.weights' must not become
    'results/dn/narm.json' (a benchmark result). A given .png or .json ending is dropped first."""
    base = out.removesuffix(".json") if out.endswith(".json") else out.removesuffix(".png")
    return Path(base + suffix)


def cmd_explain(args) -> int:
    from nextclick import checkpoint
    from nextclick.explain import explain, plot

    if args.test:
        return _explain_test_set(args)
    if not args.items:
        raise ValueError("an empty session has nothing to explain: give at least one item id (or --test)")
    try:
        items = [int(i) for i in args.items]
    except ValueError:
        raise ValueError(f"item ids must be integers, got {' '.join(args.items)}") from None
    model, vocab, _ = checkpoint.load(args.checkpoint)
    explanation = explain(model, vocab, items, k=args.k)
    png, path = _output_path(args.out, ".png"), _output_path(args.out, ".json")
    plot(explanation, png)
    path.write_text(json.dumps(explanation.to_dict(), indent=1) + "\n")
    if explanation.scalars:
        print("   ".join(f"{name} {value:.4f}" for name, value in explanation.scalars.items()))
    print(f"click        {explanation.weights_name}")
    for item, weight in zip(explanation.items, explanation.weights):
        print(f"{item:>10}   {weight:.4f}{'   (exactly zero)' if weight == 0 else ''}")
    print("top recommendations: " + ", ".join(str(r["item"]) for r in explanation.recommendations))
    print(f"wrote {png} and {path}")
    return 0


def _explain_test_set(args) -> int:
    from nextclick.bench import machine_info
    from nextclick.explain import summarise
    from nextclick.train import set_threads

    if args.items:
        raise ValueError("--test reads every test case: give item ids or --test, not both")
    threads = set_threads(args.threads)
    model, meta, split = _checkpoint_and_split(args)
    summary = {"checkpoint": str(args.checkpoint), "dataset": split.name, "config": meta.get("config"),
               **summarise(model, split.test, progress=not args.quiet),
               "machine": machine_info(threads), "command": shlex.join(["nextclick", *args.argv])}
    out = _output_path(args.out, ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    peak = summary["peak_over_uniform"]
    print(f"{summary['model']} on {split.name} test ({summary['cases']:,} cases): {summary['weights_name']}")
    print(f"  uniform (within 1e-6 of 1/t) in {100 * summary['uniform_share']:.1f}% of sessions of 2+ clicks;"
          f" largest distance from 1/t {summary['largest_distance_from_uniform']:.4f}")
    print(f"  t x largest weight: median {peak['median']}, 90th percentile {peak['p90']}, max {peak['max']}")
    print(f"  clicks with weight exactly 0: {100 * summary['zero_weight_share']:.2f}%;"
          f" mean weight of the last click (2+ clicks) {summary['last_click_mean_weight']:.4f}")
    print(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    from nextclick.bench import parse_grid, parse_grid_part, run_bench

    part = parse_grid_part(args.grid_part)
    result, path = run_bench(
        args.model, args.dataset, overrides=_parse_overrides(args.set), options=_train_options(args),
        variant=args.variant, results_dir=args.results_dir, data_root=args.data_dir, threads=args.threads,
        command=["nextclick", *args.argv], grid=parse_grid(args.grid), grid_part=part,
        grid_workers=args.grid_workers, worker_argv=args.argv, grid_records=args.grid_records,
    )
    if result is None:
        print(f"grid part {part[0]}/{part[1]} trained under {path / 'grid'}; once every part is done, the same "
              "command without --grid-part and with --resume picks on validation and tests")
        return 0
    if "grid" in result:
        grid = result["grid"]
        print(f"grid: {len(grid['candidates'])} candidates, chosen on validation {grid['metric']}: "
              + ", ".join(f"{k}={v}" for k, v in grid["chosen"].items()))
    test = result["test"]
    machine = result["machine"]
    print(f"{result['model']}{'-' + args.variant if args.variant else ''} on {result['dataset']}: "
          + "  ".join(f"{k} {test[k]:.4f}" for k in test if k.startswith(("HR@", "MRR@"))))
    print(f"machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}, device {machine['device']}")
    print(f"wrote {path}")
    return 0


def cmd_speed(args) -> int:
    from nextclick import checkpoint
    from nextclick.bench import measure_training_speed, result_path

    result = measure_training_speed(
        args.model, args.dataset, overrides=_parse_overrides(args.set), batches=args.batches,
        batch_size=args.batch_size, reference_batches=args.reference_batches, threads=args.threads, data_root=args.data_dir,
        command=["nextclick", *args.argv], device=args.device,
    )
    path = result_path(args.results_dir, result["dataset"], result["model"], args.variant).with_suffix(".speed.json")
    checkpoint.atomic_write_json(path, result)
    fast = result["fast_path"]
    print(f"{result['model']} on {result['dataset']}: {fast['cases_per_second']:.0f} training cases/s, "
          f"{fast['operator_calls_per_step']:,} torch operator calls per step "
          f"({result['machine']['device']}, {result['machine']['threads']} threads, load {result['machine']['load_average_1m']})")
    if "reference_path" in result:
        ref = result["reference_path"]
        print(f"reference layout (padded to {ref['padded_to']}): {ref['cases_per_second']:.1f} cases/s; "
              f"speed-up x{result['speedup']}")
    print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from nextclick import report

    return report.run(args)


def cmd_curve(args) -> int:
    from nextclick import checkpoint
    from nextclick.bench import epoch_test_curve

    curve = epoch_test_curve(args.run, args.dataset, data_root=args.data_dir, threads=args.threads,
                             progress=not args.quiet, device_name=args.device)
    out = Path(args.out) if args.out else Path(args.run) / "test_curve.json"
    checkpoint.atomic_write_json(out, curve)
    print(f"{'epoch':>5}  {'valid HR@20':>11}  {'valid MRR@20':>12}  {'test HR@20':>10}  {'test MRR@20':>11}")
    for row in curve["epochs"]:
        valid, test = row["valid"], row["test"]
        mark = "  <- selected on validation" if row["epoch"] == curve["selected_on_validation"] else ""
        print(f"{row['epoch']:>5}  {valid.get('HR@20', float('nan')):>11.4f}  {valid.get('MRR@20', float('nan')):>12.4f}"
              f"  {test['HR@20']:>10.4f}  {test['MRR@20']:>11.4f}{mark}")
    print(f"wrote {out} (for reading only: results use the validation-selected epoch)")
    return 0


def _ago(timestamp: float) -> str:
    import time

    minutes = (time.time() - timestamp) / 60
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"


def _part_state(progress: dict | None) -> str:
    if progress is None:
        return "not begun"
    if progress["finished"]:
        if progress["select_metric"] is None:
            return f"finished ({progress['epochs_done']} epochs)"
        source = f"; from its record {progress['record']}" if progress.get("record") else ""
        return f"finished ({progress['epochs_without_gain']} epochs without gain{source})"
    budget = "" if progress["finished"] is False else " (an old state: its limits were not saved)"
    return f"stopped or running{budget}: last epoch saved {_ago(progress['saved_at'])}, continues with --resume"


def cmd_status(args) -> int:
    from nextclick.bench import run_status

    status = run_status(args.run)
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    parts = status["parts"]
    metric = status["grid_metric"] or next((p["progress"]["select_metric"] for p in parts
                                            if p["progress"] and p["progress"]["select_metric"]), "HR@20")
    columns = ["HR@20", "MRR@20"] + ([metric] if metric not in ("HR@20", "MRR@20") else [])
    scored = [p for p in parts if p["progress"] and metric in p["progress"]["best_valid"]]
    best = max(scored, key=lambda p: p["progress"]["best_valid"][metric], default=None) if status["grid"] else None
    if status["grid"]:
        counts = {state: sum(1 for p in parts if p["part"].startswith("grid/") and test(p["progress"]))
                  for state, test in (("finished", lambda g: g is not None and g["finished"]),
                                      ("not finished", lambda g: g is not None and not g["finished"]),
                                      ("not begun", lambda g: g is None))}
        total = f"{status['grid_candidates']} candidates" if status["grid_candidates"] else "candidates begun so far"
        print(f"{status['run']}: grid search on validation {metric}, {total}: "
              + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    else:
        print(f"{status['run']}:")
    width = max(len("part"), *(len(p["part"]) for p in parts))
    print(f"  {'part':<{width}}  {'epochs':>7}  {'best':>4}  " + "  ".join(f"{c:>7}" for c in columns) + "  state")
    for p in parts:
        g = p["progress"]
        epochs = "-" if g is None else f"{g['epochs_done']}" + (f"/{g['max_epochs']}" if g["max_epochs"] else "")
        scores = "  ".join(f"{g['best_valid'][c] * 100:>7.2f}" if g and c in g["best_valid"] else f"{'':>7}" for c in columns)
        best_epoch = "" if g is None or g["best_epoch"] < 0 or not g["best_valid"] else str(g["best_epoch"])
        mark = "  <- best so far" if p is best else ""
        print(f"  {p['part']:<{width}}  {epochs:>7}  {best_epoch:>4}  {scores}  {_part_state(g)}{mark}")
    print("validation scores (%) at each part's best epoch; " + (
        "tested: " + "  ".join(f"{k} {v * 100:.2f}" for k, v in status["tested"].items() if k in columns)
        if status["tested"] else "not tested yet"))
    return 0


def cmd_demo(args) -> int:
    """Train DSAN briefly on the synthetic data and report test metrics next to S-POP."""
    from nextclick.train import set_threads

    # the synthetic model is small: one thread is nearly as fast as two, and far faster than two
    # threads fighting other work for the cores
    set_threads(args.threads)
    from nextclick.bench import run_bench
    from nextclick.train import TrainOptions

    lines = []
    for model, overrides, epochs in (("s-pop", {}, None), (args.model, {}, args.epochs)):
        options = TrainOptions(epochs=epochs, patience=2, progress=not args.quiet, quiet=args.quiet,
                               checkpoint_dir=str(Path(args.out) / model))
        result, _ = run_bench(model, "synthetic", overrides=overrides, options=options, results_dir=args.out,
                              threads=args.threads, command=["nextclick", "demo"])
        test = result["test"]
        lines.append(f"{model:<8} test HR@20 {test['HR@20']:.4f}  MRR@20 {test['MRR@20']:.4f}  ({test['cases']:,} cases)")
    print("\n".join(lines))
    print(f"checkpoints under {args.out}/ — next: nextclick recommend {args.out}/{args.model} 1 2 3 ; "
          f"nextclick explain {args.out}/{args.model} 1 2 3")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextclick", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("datasets", help="list available splits with their counts")
    p.add_argument("--data-dir", default=None, help="data directory (default: $NEXTCLICK_DATA, else ../shared/data)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list registered models, or print one model's default config")
    p.add_argument("--config", metavar="MODEL", help="print this model's config with its defaults")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model (validation-selected) and save a checkpoint")
    p.add_argument("model", help="model name (see `nextclick models`)")
    _add_data_options(p)
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a test set (full ranking, HR@K and MRR@K)")
    p.add_argument("checkpoint", help="checkpoint directory")
    _add_data_options(p)
    p.add_argument("--batch-size", type=int, default=500, help="cases per scoring batch (bounds memory)")
    p.add_argument("--by-length", action="store_true", help="also break metrics down by prefix length")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-K next items for a session: checkpoint + item ids in click order")
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument("items", nargs="*", help="the session's item ids (external ids), oldest first")
    p.add_argument("-k", type=int, default=20, help="how many items to return (20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("explain", help="what an attention model weighed in one session (dsan, narm, sr-iem), as PNG heatmap and JSON",
                       description="The weight of each click in the session representation (DSAN: target attention, "
                                   "SR-IEM: importance, NARM: local attention), DSAN's self-attention and alphas, "
                                   "SR-IEM's affinity matrix, and the top recommendations.")
    p.add_argument("checkpoint", help="checkpoint directory of an attention model (dsan, narm with a local or hybrid encoder, sr-iem)")
    p.add_argument("items", nargs="*", help="the session's item ids (external ids), oldest first")
    p.add_argument("--out", default="explanation", help="output path without suffix (writes .png and .json)")
    p.add_argument("-k", type=int, default=10, help="recommendations to list (10)")
    p.add_argument("--test", action="store_true",
                   help="instead of one session, summarise the weights over every test case of the checkpoint's "
                        "dataset (or --dataset): how far from uniform, how much on the last click, how many "
                        "exactly zero; writes <out>.json")
    _add_data_options(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (--test)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("bench", help="train + validate + test on a split; write results/<dataset>/<model>.json")
    p.add_argument("model", help="model name (see `nextclick models`)")
    _add_data_options(p)
    _add_train_options(p)
    p.add_argument("--variant", default=None, help="name suffix for a non-default configuration (results/<d>/<model>-<variant>.json)")
    p.add_argument("--results-dir", default="results", help="where result JSON files go (results/)")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                   help="search these config values (repeatable; neural models): every combination trains with "
                        "early stopping on the validation split, the best --select score picks one, only it is tested "
                        "(after --refit if given). List the paper's value first: ties go to the earlier candidate")
    p.add_argument("--grid-part", default=None, metavar="K/N",
                   help="train only candidates K, K+N, K+2N, ... of the --grid and stop (N processes share a search); "
                        "then the same command without --grid-part, with --resume, picks and tests")
    p.add_argument("--grid-workers", type=int, default=1, metavar="N",
                   help="train the --grid's candidates in N processes on this machine (lanes of one GPU, or groups "
                        "of cores; each gets --threads / N threads and logs to <run>/grid/worker-K.log), then pick "
                        "and test here (1: one process). Interrupted, the same command resumes")
    p.add_argument("--grid-records", default=None, metavar="DIR",
                   help="also keep each finished --grid candidate's record (its validation scores and the settings "
                        "it trained under, a few KB) in DIR/<candidate>.json; with --resume a candidate recorded there "
                        "is not trained again, even on a machine without its checkpoint (commit or share DIR to "
                        "continue a search elsewhere; with --refit the records alone decide)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("speed", help="measure training cases/s on real batches; writes results/<d>/<model>.speed.json")
    p.add_argument("model", help="model name")
    _add_data_options(p)
    p.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a model config value")
    p.add_argument("--batches", type=int, default=30, help="timed batches (30)")
    p.add_argument("--batch-size", type=int, default=512,
                   help="cases per timed batch (512, DSAN's batch; a model's own batch size shows what its training sees)")
    p.add_argument("--reference-batches", type=int, default=0,
                   help="also time this many batches in the official code's layout (padded to the longest prefix)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    _add_device_option(p)
    p.add_argument("--variant", default=None, help="name suffix for the result file")
    p.add_argument("--results-dir", default="results", help="where result JSON files go (results/)")
    p.set_defaults(func=cmd_speed)

    p = sub.add_parser("demo", help="the README's first command: train on the synthetic data and print test metrics")
    p.add_argument("--model", default="dsan", help="model to train next to S-POP (dsan)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs for the demo (5: about a minute)")
    p.add_argument("--out", default="runs/demo", help="where the demo writes its checkpoints and results")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_demo)

    from nextclick.report import add_arguments as add_report_arguments

    p = sub.add_parser("report", help="markdown tables and PNG plots made from results/*.json alone")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("curve", help="test metrics of every epoch a --keep-epochs run kept, beside validation "
                                     "(for reading; selection stays on validation)")
    p.add_argument("run", help="checkpoint directory of a run trained with --keep-epochs")
    _add_data_options(p)
    p.add_argument("--out", default=None, help="JSON output (default: <run>/test_curve.json)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    _add_device_option(p)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("status", help="how far a checkpointed run got: epochs, best validation, finished or "
                                      "resumable, for each part (selection, refit, grid candidates)")
    p.add_argument("run", help="checkpoint directory of a bench or train run (its -o / --checkpoint-dir)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)

    for register in _extension_commands():
        register(sub)
    return parser


def _extension_commands():
    """Commands that live next to their library code (data preparation, explanations, serving)."""
    registrars = []
    try:
        from nextclick.data.prepare_cli import add_data_commands

        registrars.append(add_data_commands)
    except ImportError:
        pass
    return registrars


def main(argv: list[str] | None = None) -> int:
    from nextclick.checkpoint import CheckpointError
    from nextclick.data.benchmarks import DataError
    from nextclick.models.base import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what a bench records and its grid workers rerun
    try:
        return args.func(args)
    except (DataError, ConfigError, CheckpointError, ValueError, KeyError, FileNotFoundError,
            ChildProcessError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"nextclick: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("nextclick: interrupted (a checkpointed run continues with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
