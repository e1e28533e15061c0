"""Training speed, measured the way the trainer runs: `nextclick speed`.

Training cases/s over the batches training itself draws (`training.loop.epoch_stream`: the model's own
stream and `collate`, so its length cap, at the model's batch size, seed and shuffle unless told
otherwise): batch building, forward, backward, optimizer step (`training.loop.train_step`), after a
warm-up, in the precision training would use (fp32, or bf16 mixed precision: `TrainOptions.precision`);
optionally also in the official DSAN code's layout (every batch padded to the longest training prefix)
for the speed-up against it. Every measurement records the machine, threads, device, precision, torch
version and load average.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from nextclick.data.benchmarks import resolve
from nextclick.data.sessions import Split
from nextclick.models import build, model_class
from nextclick.models.config import config_from_overrides
from nextclick.runs.identity import run_id, run_settings
from nextclick.runtime import git_commit, machine_info, resolve_device, set_threads
from nextclick.training.loop import TrainOptions, check_precision, epoch_stream, train_step

DEFAULT_BATCH_SIZE = 512  # for a model whose config names no batch size (training's default too)


def operator_calls(run: Callable[[], object]) -> int:
    """The torch operator calls `run` makes, nested ones not counted again. Each costs dispatch time
    on the CPU and, on a GPU, at least one kernel launch: a small model on a GPU is bound by this count,
    not by its arithmetic (DSAN's bisection-based alpha-entmax makes thousands per step)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()

    def nested(event) -> bool:
        return event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")

    return sum(1 for event in profile.events() if event.name.startswith("aten::") and not nested(event))


def measure_training_speed(
    model_name: str,
    dataset: str | Split | None,
    *,
    overrides: dict[str, Any] | None = None,
    batches: int = 30,
    batch_size: int | None = None,
    warmup: int = 3,
    reference_batches: int = 0,
    threads: int | None = None,
    seed: int = 1,
    data_root: str | None = None,
    command: list[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
) -> dict:
    """Training cases/s over `batches` real batches of `batch_size` (None: the model's own, as training)
    after `warmup`, from the stream training draws its batches from (`epoch_stream`; for GRU4Rec,
    session-parallel steps: predicted clicks/s), measured the way the trainer runs them: batch building,
    forward, backward, optimizer step, with the forward pass in `precision` (train_step's). With `reference_batches`,
    the same is timed for the model with `group_by_length=false` and `max_length=None` batches padded
    to the longest training prefix, which is the official DSAN code's layout."""
    for name, value, low in (("batches", batches, 1), ("batch_size", batch_size, 1), ("warmup", warmup, 0),
                             ("reference_batches", reference_batches, 0)):
        if name == "batch_size" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    threads = set_threads(threads)
    device = resolve_device(device)
    split = dataset if isinstance(dataset, Split) else resolve(dataset, data_root)  # a Split: read once by the caller
    cases = split.train_cases()
    configured = config_from_overrides(model_class(model_name).Config, overrides)
    batch_size = batch_size or getattr(configured, "batch_size", DEFAULT_BATCH_SIZE)  # as training's default
    # the run's options as `nextclick train --batch-size B --seed S` would give them: the same stream
    options = TrainOptions(batch_size=batch_size, seed=seed, progress=False, quiet=True, precision=precision)
    # every timed step is a full batch of distinct cases from one epoch of the stream, and one more batch
    # is run to count operator calls: a step past the epoch's end would have no batch to time
    needed = (warmup + max(batches, reference_batches) + 1) * batch_size
    if needed > len(cases):
        raise ValueError(f"{warmup} warm-up + {max(batches, reference_batches)} timed batches + 1 counted batch of "
                         f"{batch_size} need "
                         f"{needed:,} training cases; {split.name} has {len(cases):,}: ask for fewer --batches "
                         f"or a smaller --batch-size")

    def timed(model, n, pad_to=None) -> dict:
        model.prepare(cases.sessions)
        model.to(device)
        optimizer = model.optimizer()
        model.train()
        # the batches of training's first epoch (random prefix batches capped at the model's max_length for
        # most models, session-parallel steps for GRU4Rec), built by the trainer's own call: batch building
        # is part of what is timed
        stream_batches = epoch_stream(model, cases, options).batches(0)

        def timed_step(step: int) -> int:
            batch = next(stream_batches)
            if pad_to is not None:
                extra = pad_to - batch.items.shape[1]
                batch = dataclasses.replace(batch, items=torch.nn.functional.pad(batch.items, (extra, 0)))
            train_step(model, optimizer, batch, device, options.precision)
            if device.type == "cuda":  # GPU work is asynchronous: the step ends when the GPU is done
                torch.cuda.synchronize(device)
            return len(batch)

        seen, seconds, cpu_seconds = 0, 0.0, 0.0
        for step in range(warmup + n):
            start, cpu_start = time.perf_counter(), time.process_time()
            size = timed_step(step)
            if step >= warmup:
                seconds += time.perf_counter() - start
                cpu_seconds += time.process_time() - cpu_start
                seen += size
        # CPU time of the process (every thread) over the same steps: with one thread, a measure of the work
        # that other processes on a shared machine inflate far less than the wall time
        return {"batches": n, "cases": seen, "seconds": round(seconds, 3), "cases_per_second": round(seen / seconds, 1),
                "cpu_seconds": round(cpu_seconds, 3), "cases_per_cpu_second": round(seen / cpu_seconds, 1),
                "operator_calls_per_step": operator_calls(lambda: timed_step(warmup))}

    torch.manual_seed(seed)
    model = build(model_name, split.n_items, overrides)
    check_precision(model, precision)
    result = {
        "model": model.name,
        "dataset": split.name,
        "what": f"training cases/s: batch building + forward + backward + optimizer step, batch {batch_size}, "
                f"the batches of training's first epoch (training.loop.epoch_stream), {precision}",
        "batch_size": batch_size,
        "precision": precision,
        "config": asdict(model.config),
        # what was asked for (the config may hold values the code resolved, such as DSAN's length groups)
        "requested_config": asdict(configured),
        "epoch_cases": len(cases),  # training cases of an epoch on the whole training split
        "fast_path": timed(model, batches),
    }
    if reference_batches:
        torch.manual_seed(seed)
        reference = build(model_name, split.n_items, {**(overrides or {}), "group_by_length": False})
        longest = int(cases.length.max())
        result["reference_path"] = {"padded_to": longest, **timed(reference, reference_batches, pad_to=longest)}
        result["speedup"] = round(result["fast_path"]["cases_per_second"] / result["reference_path"]["cases_per_second"], 1)
    result.update(provenance(threads, device, command))
    return result


def provenance(threads: int, device: torch.device, command: list[str] | None) -> dict:
    """The machine, the revision and the command line a speed result was measured with."""
    return {"machine": machine_info(threads, device), "git_commit": git_commit(),
            "command": shlex.join(command if command is not None else sys.argv)}


def speed_path(results_dir: str | Path, result: dict) -> Path:
    """results/speed/<dataset>/<model>/<settings>.json: named, like a run, by what differs from the defaults
    (config overrides, a batch size other than the model's own, device, bf16 precision, the reference layout)."""
    requested = result.get("requested_config", result["config"])
    settings = run_settings(asdict(model_class(result["model"]).Config()), requested, {}, {})
    if result.get("measure") == "evaluation":  # evaluation=true[,batch_size=B]: the evaluation batch is 500
        settings["evaluation"] = "true"
        if result["batch_size"] != 500:
            settings["batch_size"] = str(result["batch_size"])
    elif result["batch_size"] != requested.get("batch_size", DEFAULT_BATCH_SIZE):
        settings["batch_size"] = str(result["batch_size"])
    if result["machine"]["device"] != "cpu":
        settings["device"] = "cuda"
    if result.get("precision", "fp32") != "fp32":
        settings["precision"] = result["precision"]
    if "reference_path" in result:
        settings["reference"] = "true"
    return Path(results_dir) / "speed" / result["dataset"] / result["model"] / f"{run_id(settings)}.json"


EVALUATION_CASES = 10_000  # test cases timed by default: a seeded sample, in file order


def measure_evaluation_speed(
    model_name: str,
    dataset: str | None,
    *,
    overrides: dict[str, Any] | None = None,
    cases: int = EVALUATION_CASES,
    batch_size: int = 500,
    threads: int | None = None,
    seed: int = 1,
    data_root: str | None = None,
    command: list[str] | None = None,
    device: str = "auto",
) -> dict:
    """Full-ranking evaluation throughput, test cases/s: `evaluate` (nextclick.evaluate, the call every
    bench, validation and `nextclick evaluate` makes) over `cases` test cases drawn by a fixed seed, each
    label ranked against the whole catalogue, in batches of `batch_size` (the trainer's evaluation batch),
    after one warm-up batch. The model is freshly initialised: the work of scoring does not depend on
    the weights' values."""
    import numpy as np

    from nextclick.evaluate import evaluate

    for name, value in (("cases", cases), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    threads = set_threads(threads)
    device = resolve_device(device)
    split = resolve(dataset, data_root)
    torch.manual_seed(seed)
    model = build(model_name, split.n_items, overrides)
    if not model.neural:
        raise ValueError(f"{model_name} is not a neural model: its evaluation speed is its bench's")
    model.prepare(split.train)
    model.to(device)
    model.eval()
    test = split.test
    chosen = np.arange(len(test))
    if cases < len(test):
        chosen = np.sort(np.random.default_rng(seed).choice(len(test), size=cases, replace=False))
    sample = test.select(chosen)
    evaluate(model.score, sample.select(np.arange(min(batch_size, len(sample)))), batch_size=batch_size,
             max_length=model.max_length)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    evaluation = evaluate(model.score, sample, batch_size=batch_size, max_length=model.max_length)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "model": model.name,
        "dataset": split.name,
        "what": f"evaluation test cases/s: full-ranking (every label against all {split.n_items:,} items), "
                f"batch {batch_size}, {len(sample):,} of {len(test):,} test cases drawn with seed {seed}",
        "measure": "evaluation",
        "batch_size": batch_size,
        "config": asdict(model.config),
        "requested_config": asdict(config_from_overrides(model_class(model_name).Config, overrides)),
        "evaluation": {"cases": len(sample), "test_cases": len(test), "seconds": round(seconds, 3),
                       "cases_per_second": round(len(sample) / seconds, 1)},
        **provenance(threads, device, command),
    }
