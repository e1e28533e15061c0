"""Training and measuring: `nextclick train`, `bench`, `status`, `curve`, `speed` and `demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nextclick.cli.common import (add_data_options, add_device_option, add_precision_option, add_preset_option,
                                  add_threads_option, add_train_options, int_in, model_name, model_overrides,
                                  train_options)


def cmd_train(args) -> int:
    from nextclick import atomic, checkpoint
    from nextclick.runs.bench import default_checkpoint_dir, requested_settings
    from nextclick.runs.guard import open_run, run_settings_of
    from nextclick.runs.identity import run_id
    from nextclick.runs.select import fit_and_select
    from nextclick.data.benchmarks import resolve
    from nextclick.models import build
    from nextclick.runtime import set_threads

    import torch

    from nextclick.training import distributed

    # under torchrun: join the process group; rank 0 alone checks and writes the run (docs/scale.md)
    group = distributed.start(args.device)
    main = group is None or group.main
    args.quiet = args.quiet or not main
    set_threads(args.threads or (group.threads() if group else None))
    options = train_options(args)
    split = resolve(args.dataset, args.data_dir)
    torch.manual_seed(options.seed)
    model = build(args.model, split.n_items, model_overrides(args))
    if options.checkpoint_dir is None:  # a run nobody named goes where bench would put it
        identity = run_id(requested_settings(type(model), model.config, options))
        options.checkpoint_dir = str(default_checkpoint_dir(split.name, model.name, identity))
    directory = Path(options.checkpoint_dir)
    reference = checkpoint.dataset_reference(split)  # a prepared split's directory, so `evaluate RUN` finds it
    settings = run_settings_of(model.name, model.config, options, reference)
    if main:
        # every check before the first write: a refused run leaves the directory as it was
        open_run(directory, settings, resume=options.resume, force=args.force, dataset_name=split.name)
        checkpoint.save_meta(directory, model, split.vocab, split.protocol, reference,
                             {"train_options": settings["train_options"]})
    if not args.quiet:
        print(f"training {model.name} on {split.name} ({len(split.train):,} sessions, {split.n_items:,} items)"
              + (f" in {group.world_size} processes" if group else ""))
        print("config:", json.dumps(__import__("dataclasses").asdict(model.config)))
    finished = False
    try:
        model, record = fit_and_select(model, split, options)
        finished = True
    finally:
        distributed.stop(finished)
    if not main:
        return 0
    checkpoint.save_weights(directory, model)
    atomic.write_json(directory / "metrics.json", {"valid": record.get("valid")})
    valid = record.get("valid", {})
    print(f"checkpoint: {directory}")
    print("validation " + "  ".join(f"{k} {v:.4f}" for k, v in valid.items()))
    return 0


def cmd_bench(args) -> int:
    from nextclick.models import model_class
    from nextclick.runs.bench import run_bench
    from nextclick.runs.search import parse_grid, parse_grid_part

    part = parse_grid_part(args.grid_part)
    if args.calibrate and not model_class(args.model).neural:
        raise ValueError(f"--calibrate: {args.model} is a statistical model, whose scores are counts and similarities "
                         "that a repeat calibration does not apply to")
    result, path = run_bench(
        args.model, args.dataset, overrides=model_overrides(args), options=train_options(args),
        results_dir=args.results_dir, data_root=args.data_dir, threads=args.threads,
        command=["nextclick", *args.argv], grid=parse_grid(args.grid), grid_part=part,
        grid_workers=args.grid_workers, worker_argv=args.argv, grid_records=args.grid_records, force=args.force,
        selection_from=args.selection_from,
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
    print(f"{result['model']} ({result['run_id']}) on {result['dataset']}: "
          + "  ".join(f"{k} {test[k]:.4f}" for k in test if k.startswith(("HR@", "MRR@"))))
    print(f"machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}, device {machine['device']}")
    print(f"wrote {path}")
    if args.calibrate:  # the run just written, calibrated as `nextclick calibrate` would
        from nextclick.runs.calibrate import calibrate_run

        calibrated, calibrated_path = calibrate_run(
            path.parent, checkpoint_dir=result["train_options"]["checkpoint_dir"], results_dir=args.results_dir,
            data_root=args.data_dir, threads=args.threads, progress=not args.quiet,
            command=["nextclick", *args.argv])
        _print_calibration(calibrated, calibrated_path)
    return 0


def cmd_calibrate(args) -> int:
    from nextclick.runs.calibrate import calibrate_run

    result, path = calibrate_run(args.result, checkpoint_dir=args.checkpoint, results_dir=args.results_dir,
                                 data_root=args.data_dir, threads=args.threads, batch_size=args.batch_size,
                                 progress=not args.quiet, command=["nextclick", *args.argv], save=args.save)
    _print_calibration(result, path)
    return 0


def _print_calibration(result: dict, path) -> None:
    record, test = result["calibration"], result["test"]
    base = record["base_test"]
    print(f"validation cross-entropy {record['valid_cross_entropy_before']:.4f} -> {record['valid_cross_entropy_after']:.4f} "
          f"on {record['cases']:,} cases; weights " + ", ".join(f"{n} {w:+.3f}" for n, w in zip(record["features"], record["weights"])))
    for k in ("HR@20", "MRR@20"):
        paired = record["paired_test_against_base"][k]
        print(f"test {k}: {100 * base[k]:.2f} -> {100 * test[k]:.2f} (paired t-test p = {paired['p']:.2g})")
    if "saved_to" in record:
        print(f"saved {record['saved_to']}: recommend, evaluate, explain and serve now rank this run calibrated")
    print(f"wrote {path}")


def cmd_speed(args) -> int:
    from nextclick import atomic
    from nextclick.measure.speed import measure_evaluation_speed, measure_training_speed, speed_path

    common = dict(overrides=model_overrides(args), threads=args.threads, data_root=args.data_dir,
                  command=["nextclick", *args.argv], device=args.device)
    if args.evaluation:
        if args.precision != "fp32":
            raise ValueError("--precision applies to training: --evaluation times full-ranking evaluation, which "
                             "always runs in fp32")
        result = measure_evaluation_speed(args.model, args.dataset, cases=args.cases,
                                          batch_size=args.batch_size or 500, **common)
    else:
        result = measure_training_speed(args.model, args.dataset, batches=args.batches, batch_size=args.batch_size,
                                        reference_batches=args.reference_batches, precision=args.precision, **common)
    path = speed_path(args.results_dir, result)
    atomic.write_json(path, result)
    machine = f"{result['machine']['device']}, {result['machine']['threads']} threads, load {result['machine']['load_average_1m']}"
    if args.evaluation:
        timed = result["evaluation"]
        print(f"{result['model']} on {result['dataset']}: {timed['cases_per_second']:.0f} test cases/s, full ranking "
              f"({timed['cases']:,} cases; {machine})")
    else:
        fast = result["fast_path"]
        print(f"{result['model']} on {result['dataset']}: {fast['cases_per_second']:.0f} training cases/s in "
              f"{result['precision']}, {fast['operator_calls_per_step']:,} torch operator calls per step ({machine})")
    if "reference_path" in result:
        ref = result["reference_path"]
        print(f"reference layout (padded to {ref['padded_to']}): {ref['cases_per_second']:.1f} cases/s; "
              f"speed-up x{result['speedup']}")
    print(f"wrote {path}")
    return 0


def cmd_curve(args) -> int:
    from nextclick import atomic
    from nextclick.measure.curves import epoch_test_curve

    curve = epoch_test_curve(args.run, args.dataset, data_root=args.data_dir, threads=args.threads,
                             progress=not args.quiet, device_name=args.device)
    out = Path(args.out) if args.out else Path(args.run) / "test_curve.json"
    atomic.write_json(out, curve)
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
        if progress["epochs_without_gain"] < progress["patience"]:  # stopped by its epoch budget, not by patience
            return f"finished (its budget of {progress['epochs_done']} epochs{source})"
        return f"finished ({progress['epochs_without_gain']} epochs without gain{source})"
    budget = "" if progress["finished"] is False else " (an old state: its limits were not saved)"
    return f"stopped or running{budget}: last epoch saved {_ago(progress['saved_at'])}, continues with --resume"


def cmd_status(args) -> int:
    from nextclick.runs.status import run_status

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
        state = "fitted (a statistical model: no epochs)" if p.get("fitted") else _part_state(g)
        print(f"  {p['part']:<{width}}  {epochs:>7}  {best_epoch:>4}  {scores}  {state}{mark}")
    print("validation scores (%) at each part's best epoch; " + (
        "tested: " + "  ".join(f"{k} {v * 100:.2f}" for k, v in status["tested"].items() if k in columns)
        if status["tested"] else "not tested yet"))
    return 0


def cmd_demo(args) -> int:
    """Train DSAN briefly on the synthetic data and report test metrics next to S-POP."""
    from nextclick.runtime import set_threads

    # the synthetic model is small: one thread is nearly as fast as two, and far faster than two
    # threads fighting other work for the cores
    set_threads(args.threads)
    from nextclick.runs.bench import run_bench
    from nextclick.training.loop import TrainOptions

    lines = []
    for model, overrides, epochs in (("s-pop", {}, None), (args.model, {}, args.epochs)):
        options = TrainOptions(epochs=epochs, patience=2, progress=not args.quiet, quiet=args.quiet,
                               checkpoint_dir=str(Path(args.out) / model))
        # force: the demo's own folder, remade each time the README's first command is run again
        result, _ = run_bench(model, "synthetic", overrides=overrides, options=options, results_dir=args.out,
                              threads=args.threads, command=["nextclick", "demo"], force=True)
        test = result["test"]
        lines.append(f"{model:<8} test HR@20 {test['HR@20']:.4f}  MRR@20 {test['MRR@20']:.4f}  ({test['cases']:,} cases)")
    print("\n".join(lines))
    print(f"checkpoints under {args.out}/ — next: nextclick recommend {args.out}/{args.model} 1 2 3 ; "
          f"nextclick explain {args.out}/{args.model} 1 2 3")
    return 0



def add_force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier run in the checkpoint directory (without it, a directory holding a "
                             "run is refused; --resume continues it)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (validation-selected) and save a checkpoint")
    p.add_argument("model", type=model_name, help="model name (see `nextclick models`)")
    add_data_options(p)
    add_train_options(p)
    add_force_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="train + validate + test on a split; write results/<dataset>/<model>/<run id>/result.json",
                       description="Train (or fit), select on validation, test once. The run id is made of the settings "
                                   "that differ from the defaults (e.g. refit=true,seed=2): nobody names a run.")
    p.add_argument("model", type=model_name, help="model name (see `nextclick models`)")
    add_data_options(p)
    add_train_options(p)
    add_force_option(p)
    p.add_argument("--results-dir", default="results", help="where result JSON files go (results/)")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                   help="search these config values (repeatable; any model): every combination is scored on the validation "
                        "split (neural: trained with early stopping; statistical: fitted), the best --select score "
                        "picks one, only it is tested (after --refit if given). List the paper's value first: ties go "
                        "to the earlier candidate. Statistical models with --set tune=true search their own grid")
    p.add_argument("--grid-part", default=None, metavar="K/N",
                   help="train only candidates K, K+N, K+2N, ... of the --grid and stop (N processes share a search); "
                        "then the same command without --grid-part, with --resume, picks and tests")
    p.add_argument("--grid-workers", type=int_in(1), default=1, metavar="N",
                   help="train the --grid's candidates in N processes on this machine (lanes of one GPU, or groups "
                        "of cores; each gets --threads / N threads and logs to <run>/grid/worker-K.log), then pick "
                        "and test here (1: one process). Interrupted, the same command resumes")
    p.add_argument("--grid-records", default=None, metavar="DIR",
                   help="also keep each finished --grid candidate's record (its validation scores and the settings "
                        "it trained under, a few KB) in DIR/<candidate>.json; with --resume a candidate recorded there "
                        "is not trained again, even on a machine without its checkpoint (commit or share DIR to "
                        "continue a search elsewhere; with --refit the records alone decide)")
    p.add_argument("--selection-from", default=None, metavar="RESULT",
                   help="with --refit: take the epochs validation chose from RESULT, the result folder of a finished "
                        "bench run of the same model, config, seed, validation and epoch budget, instead of training "
                        "that selection again (refused, naming the difference, if RESULT differs); only the refit "
                        "trains, and the result records where its selection came from")
    p.add_argument("--calibrate", action="store_true",
                   help="neural models: after the test, also fit a repeat calibration on the run's validation cases "
                        "and test it, as `nextclick calibrate` does (a second result folder, its id plus "
                        "calibration=repeats; docs/repeat.md)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("calibrate", help="fit a repeat calibration on a bench run's validation cases, test it once; "
                                         "writes results/<dataset>/<model>/<run id>,calibration=repeats/",
                       description="A few weights, fitted on the run's validation cases with the model validation "
                                   "selected (frozen), move the scores of each session's own items by the session's "
                                   "click counts, recency and repetitiveness (models/calibration.py, docs/repeat.md). "
                                   "Needs the run's checkpoint on this machine (for a refit that reused a finished "
                                   "run's selection, that run's checkpoint too, or its committed calibration); "
                                   "recomputes the run's test ranks first and refuses a checkpoint that does not "
                                   "give its committed ranks.")
    p.add_argument("result", help="the run's result folder, results/<dataset>/<model>/<run id>")
    p.add_argument("--checkpoint", default=None,
                   help="the run's checkpoint directory (default: the one its result.json names)")
    p.add_argument("--data-dir", default=None,
                   help="data directory holding benchmarks/ (default: $NEXTCLICK_DATA, else ../shared/data)")
    p.add_argument("--results-dir", default="results", help="where the calibrated run's folder goes (results/)")
    p.add_argument("--batch-size", type=int_in(1, 65_536), default=500, help="cases per scoring batch (500)")
    p.add_argument("--save", action="store_true",
                   help="also write the weights beside the checkpoint (calibration.json), so that recommend, evaluate, "
                        "explain and serve rank that run calibrated (without it the checkpoint is left as it was)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_option(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("speed", help="measure training cases/s on real batches; writes results/speed/<dataset>/<model>/<settings>.json")
    p.add_argument("model", type=model_name, help="model name")
    add_data_options(p)
    p.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a model config value")
    add_preset_option(p)
    p.add_argument("--batches", type=int_in(1, 100_000), default=30, help="timed batches (30)")
    p.add_argument("--batch-size", type=int_in(1, 65_536), default=None,
                   help="cases per timed batch (default: the model's own, as `nextclick train`; the batches are "
                        "training's own: its stream, collate and length cap)")
    p.add_argument("--reference-batches", type=int_in(0, 100_000), default=0,
                   help="also time this many batches in the official code's layout (padded to the longest prefix)")
    p.add_argument("--evaluation", action="store_true",
                   help="time full-ranking evaluation instead (test cases/s, batches of --batch-size, default 500); "
                        "writes .../<model>/evaluation=true.json")
    p.add_argument("--cases", type=int_in(1, 10_000_000), default=10_000,
                   help="with --evaluation: test cases timed, drawn by a fixed seed (10,000)")
    add_threads_option(p)
    add_device_option(p)
    add_precision_option(p)
    p.add_argument("--results-dir", default="results", help="where result JSON files go (results/)")
    p.set_defaults(func=cmd_speed)

    p = sub.add_parser("demo", help="the README's first command: train on the synthetic data and print test metrics")
    p.add_argument("--model", type=model_name, default="dsan", help="model to train next to S-POP (dsan)")
    p.add_argument("--epochs", type=int_in(1, 1000), default=5, help="training epochs for the demo (5: about a minute)")
    p.add_argument("--out", default="runs/demo", help="where the demo writes its checkpoints and results")
    add_threads_option(p, default=1)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("curve", help="test metrics of every epoch a --keep-epochs run kept, beside validation "
                                     "(for reading; selection stays on validation)")
    p.add_argument("run", help="checkpoint directory of a run trained with --keep-epochs")
    add_data_options(p)
    p.add_argument("--out", default=None, help="JSON output (default: <run>/test_curve.json)")
    add_threads_option(p)
    add_device_option(p)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("status", help="how far a checkpointed run got: epochs, best validation, finished or "
                                      "resumable, for each part (selection, refit, grid candidates)")
    p.add_argument("run", help="checkpoint directory of a bench or train run (its -o / --checkpoint-dir)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)
