"""The one training loop for every neural model.

Per epoch: the model's training stream gives the batches (by default every prefix case, shuffled per
epoch with a seed, so a resumed run sees the same order); each is one call `scores, loss =
model(batch, labels)` and an optimizer step; then the validation cases, which come from the last
training sessions and never from test, are evaluated. The best epoch by `select_metric` is kept;
training stops after `patience` epochs without improvement. After every epoch the complete state
(weights, optimizer, scheduler, RNG, history, best weights) is committed in one step
(training/state.py), so `resume=True` continues exactly where a run killed at any instant stopped.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nextclick import atomic, checkpoint
from nextclick.data.batches import Batch
from nextclick.data.sessions import Cases
from nextclick.data.streams import Stream, StreamOptions, shards_by_rank
from nextclick.evaluate import DEFAULT_KS, evaluate, metrics_from_ranks
from nextclick.models.layers import scores_in
from nextclick.runtime import progress_interval, resolve_device
from nextclick.training import distributed
from nextclick.training.distributed import Group
from nextclick.training.state import (EPOCHS_DIR, clear_training_state, committed_tensors_path, epoch_weights_path,
                                      kept_epochs, load_training_state, remove_uncommitted, save_training_state,
                                      training_spent)

# TrainOptions.precision: "fp32", the reference; "bf16": mixed precision, the forward pass under bf16 autocast;
# "bf16-scores": only the losses' products with the whole catalogue in bf16 (models.layers.scores_in)
PRECISIONS = ("fp32", "bf16", "bf16-scores")


@dataclass
class TrainOptions:
    epochs: int | None = None  # None: the model config's `epochs`
    patience: int = 3  # epochs without validation improvement before stopping
    batch_size: int | None = None  # None: the model config's `batch_size`
    seed: int = 1  # DSAN's official code seeds with 1
    select_metric: str = "HR@20"  # the paper codes pick epochs by HR@20 (on test; we use validation)
    ks: tuple[int, ...] = DEFAULT_KS
    eval_batch_size: int = 500
    checkpoint_dir: str | None = None
    resume: bool = False
    progress: bool = True
    quiet: bool = False
    log_path: str | None = None  # default: <checkpoint_dir>/train.jsonl
    length_buckets: int = 0  # >0: group this many batches by prefix length (faster, less random)
    max_batches: int | None = None  # cap per epoch (smoke tests)
    # read by nextclick.runs (not by the loop): which training data selects the epoch, the last 10% of
    # sessions (ours), a random 10% of cases (NARM's and SR-GNN's official codes) or of whole sessions
    # (Split.carve), and whether the selected configuration is then refitted on all training cases
    validation: str = "last-sessions"
    refit: bool = False
    keep_epochs: bool = False  # also keep every epoch's weights in <checkpoint_dir>/epochs/ (for curves)
    # "auto": the GPU when torch sees one, else the CPU; or any torch device name ("cpu", "cuda:1")
    device: str = "auto"
    # "fp32" (the reference); "bf16": each training step's forward pass (scores and loss) under bf16
    # autocast; "bf16-scores": only the losses' products with the catalogue in bf16. Weights, gradients,
    # optimizer state, the losses' normalisers and evaluation stay float32 in both
    precision: str = "fp32"

    def __post_init__(self):
        """Fail now, before any file is written or epoch trained, on a value the loop cannot honour (library
        callers too: `epochs=0` would otherwise save untrained weights as if trained)."""
        from nextclick.data.sessions import VALIDATIONS

        for name, low, optional in _OPTION_LIMITS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}{' or None' if optional else ''}; got {value!r}")
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in self.ks):
            raise ValueError(f"ks must be cut-offs >= 1; got {self.ks!r}")
        metrics = list(metrics_from_ranks(np.ones(1), self.ks))  # the names an evaluation reports, in its order
        if self.select_metric not in metrics:  # fail now, not after the first epoch's training
            raise ValueError(f"cannot select epochs on {self.select_metric!r}: choose one of {', '.join(metrics)}")
        if self.validation not in VALIDATIONS:
            raise ValueError(f"unknown validation {self.validation!r}: choose one of {', '.join(VALIDATIONS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)} "
                             "(fp32 is the reference)")


# (TrainOptions field, smallest value, None allowed): checked by TrainOptions.__post_init__
_OPTION_LIMITS = (
    ("epochs", 1, True),  # None: the model config's
    ("patience", 1, False),  # 0 would stop after the first epoch, whatever it scored
    ("batch_size", 1, True),
    ("seed", 0, False),
    ("eval_batch_size", 1, False),
    ("length_buckets", 0, False),  # 0 = off
    ("max_batches", 1, True),
)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_cases: int = 0

    @property
    def cases_per_second(self) -> float:
        return self.train_cases / self.train_seconds if self.train_seconds else 0.0

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / max(1, len(self.history))


def autocast(device: torch.device, precision: str):
    """The context a training step's forward pass runs in: nothing for fp32; for bf16, torch's autocast,
    which runs matmuls and linear layers in bf16 (their outputs bf16) and leaves the parameters float32.
    The models take bf16 back to float32 where it matters (models.layers.full_precision: entmax, softmax,
    the losses' log-sum-exp). bf16 keeps float32's exponent range, so no loss scaling is needed."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "bf16-scores":  # the encoder in float32, the catalogue products in bf16
        return scores_in(torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def check_precision(model, precision: str) -> None:
    """Refuse, before the first step, a precision the model cannot train in: the repeat/explore decoder
    (models/repeat.py) has no float32 guards yet, and under bf16 autocast it fails at its first batch
    (under bf16-scores its own layers stay float32, and only its normaliser's products are bf16)."""
    if precision == "bf16" and getattr(model.config, "repeat", "off") != "off":
        raise ValueError(f"precision {precision} does not support the repeat decoder yet (repeat="
                         f"{model.config.repeat}): train it with precision fp32 or bf16-scores")


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device,
               precision: str = "fp32") -> torch.Tensor:
    """One optimisation step on one batch, as the trainer and `nextclick speed` both run it; returns the
    loss (detached, still on `device`: reading it is the caller's choice, as it waits for a GPU). With
    `precision="bf16"` the forward pass (scores and loss) runs under bf16 autocast; the backward pass
    follows the forward's dtypes, so the gradients of the float32 weights are float32 and the optimizer
    steps in float32 (mixed precision: the model is never converted to bf16)."""
    batch = batch.to(device)
    with autocast(device, precision):  # `model` may be a DistributedDataParallel wrapper (training/distributed.py)
        _, loss = model(batch, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = getattr(getattr(model, "module", model).config, "max_grad_norm", None)
    if clip is not None:  # STAMP's official code clips the global gradient norm (its max_grad_norm)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.detach()


def stream_options(model, options: TrainOptions, group: Group | None = None) -> StreamOptions:
    """What the model's training stream needs from the run's options and the model's config (and, under
    torchrun, which share of every global batch this process takes)."""
    return StreamOptions(batch_size=options.batch_size or getattr(model.config, "batch_size", 512), seed=options.seed,
                         shuffle=getattr(model.config, "shuffle", True), length_buckets=options.length_buckets,
                         max_batches=options.max_batches, rank=group.rank if group else 0,
                         world_size=group.world_size if group else 1)


def epoch_stream(model, cases: Cases, options: TrainOptions, group: Group | None = None) -> Stream:
    """The batches training draws from, as `nextclick speed` times them too: the model's own stream
    (its `collate`, so its length cap) with the run's batch size, seed, shuffle and length buckets."""
    stream = model.training_stream(cases, stream_options(model, options, group))
    if group is not None and not shards_by_rank(stream):
        raise ValueError(f"{model.name} trains on a stream of its own ({type(stream).__name__}) that does not deal its "
                         "batches out by rank: train it in one process (without torchrun)")
    return stream


def _write_log(path: Path | None, history: list[dict]) -> None:
    """train.jsonl as the committed history says, one line per epoch: rewritten whole (atomically) rather
    than appended, so a kill and a resume leave no epoch twice and none missing."""
    if path is not None:
        atomic.write_text(path, "".join(json.dumps(record) + "\n" for record in history))


def _resumed(directory: Path, model, optimizer, scheduler, log_path: Path | None,
             group: Group | None = None) -> tuple[dict, dict | None]:
    """The last committed state of the run in `directory`, loaded into model, optimizer and scheduler;
    returns its progress and the best epoch's weights. What is derived from the commit (model.safetensors,
    train.jsonl, kept epochs after it) is made to agree with it: a kill may have come before or after
    any of those writes. Under torchrun every process loads the commit (with its own random state) and
    rank 0 alone repairs the files."""
    progress, best = load_training_state(directory, model, optimizer, scheduler, rank=group.rank if group else 0,
                                         world_size=group.world_size if group else 1)
    if group is not None and not group.main:
        return progress, best
    if best is None and (directory / "model.safetensors").exists():  # a format-1 state: its best weights
        best = checkpoint.load_tensors(directory / "model.safetensors")
    elif best is not None and progress["best_epoch"] >= 0:
        checkpoint.atomic_save_tensors(directory / "model.safetensors", best)
    remove_uncommitted(directory, keep=committed_tensors_path(directory).name)
    for folder in (directory, directory / EPOCHS_DIR):  # temporary files of writes a SIGKILL interrupted
        atomic.remove_leftovers(folder)
    for epoch in kept_epochs(directory):
        if epoch > progress["epoch"]:  # trained, then killed before its commit: it will be trained again
            epoch_weights_path(directory, epoch).unlink()
    _write_log(log_path, progress["history"])
    return progress, best


def train_model(model, train: Cases, valid: Cases | None, options: TrainOptions | None = None) -> TrainResult:
    """Train `model` (a NeuralModel) in place; on return it holds the weights of the selected epoch.

    With a checkpoint directory, every epoch ends in one commit (training/state.py): its tensors in a new
    file, then state.json naming them renamed into place; the best weights (model.safetensors), the log
    (train.jsonl) and kept epochs are written around it and repaired from it on resume, so a run killed
    at any instant and resumed ends with the same weights and history as one never interrupted."""
    options = options or TrainOptions()
    epochs = options.epochs if options.epochs is not None else getattr(model.config, "epochs", 30)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}: training no epoch would save untrained weights")
    # under torchrun (training/distributed.py): rank 0 validates, checkpoints and logs; every process trains
    group = distributed.current()
    main = group is None or group.main
    directory = Path(options.checkpoint_dir) if options.checkpoint_dir else None
    log_path = Path(options.log_path) if options.log_path else (directory / "train.jsonl" if directory else None)
    if not main:
        log_path = None
    say = (lambda *a: None) if options.quiet or not main else (lambda *a: tqdm.write(" ".join(map(str, a))))
    device = group.device(options.device) if group else resolve_device(options.device)
    check_precision(model, options.precision)
    model.prepare(train.sessions)
    model.to(device)  # before the optimizer, whose state must live beside the parameters

    optimizer = model.optimizer()
    scheduler = model.scheduler(optimizer)
    progress = {"epoch": -1, "best_epoch": -1, "best_value": -math.inf, "best_valid": {}, "bad_epochs": 0,
                "history": [], "train_seconds": 0.0, "train_cases": 0}
    best_state = None
    if options.resume:
        if directory is None:
            raise ValueError("resume needs a checkpoint directory")
        progress, best_state = _resumed(directory, model, optimizer, scheduler, log_path, group)
        say(f"resumed after epoch {progress['epoch']} (best so far: epoch {progress['best_epoch']})")
    else:
        if directory is not None and main:
            clear_training_state(directory)
            atomic.remove_leftovers(directory)
        if log_path is not None and log_path.exists():
            log_path.unlink()
        if group is not None and not main:  # each process its own dropout; rank 0 draws as one process would
            torch.manual_seed(options.seed + group.rank)
    network = model
    if group is not None:
        progress["world_size"] = group.world_size
        network = distributed.wrap(model)  # every process now holds rank 0's weights
        distributed.barrier(group)  # rank 0 has cleared or repaired the checkpoint directory

    validating = valid is not None and len(valid) > 0
    # what ends this training, saved with its state so `nextclick status` can tell finished from interrupted
    progress["limits"] = {"epochs": epochs, "patience": options.patience,
                          "select_metric": options.select_metric if validating else None}

    stream = epoch_stream(model, train, options, group)
    for epoch in range(progress["epoch"] + 1, epochs):
        if training_spent(epoch, progress["bad_epochs"], epochs, options.patience):
            break
        model.train()
        bar = tqdm(total=stream.cases(epoch), desc=f"epoch {epoch}", unit="case",
                   disable=not options.progress or options.quiet or not main, dynamic_ncols=True, leave=False,
                   mininterval=progress_interval())
        start, cpu_start = time.perf_counter(), time.process_time()
        total_loss, seen = 0.0, 0
        for batch in stream.batches(epoch):
            loss = train_step(network, optimizer, batch, device, options.precision)
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)  # refresh would defeat mininterval
        bar.close()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        if group is not None:  # the epoch's loss and cases over every process's share
            total_loss, seen = distributed.sum_over_processes(group, [total_loss, seen], device)
            seen = int(seen)
        # cpu_seconds: this process's CPU time over all its threads; unlike the wall seconds it does not grow
        # while the process is stopped (a paused benchmark queue) or waits for a busy machine, so a wall
        # figure far above cpu_seconds / threads marks an epoch whose cases/s are not the model's speed
        record = {"epoch": epoch, "loss": total_loss / max(seen, 1), "seconds": round(seconds, 2),
                  "cpu_seconds": round(cpu_seconds, 2), "cases_per_second": round(seen / seconds, 1),
                  "lr": optimizer.param_groups[0]["lr"]}  # this epoch's
        if scheduler is not None:
            scheduler.step()
        progress["train_seconds"] += seconds
        progress["train_cases"] += seen
        if validating and main:
            # always float32, whatever the training precision: full-catalogue ranking counts ties against the
            # model, and bf16 scores (8 bits of mantissa) would tie many items with the target
            evaluation = evaluate(model.score, valid, ks=options.ks, batch_size=options.eval_batch_size,
                                  max_length=model.max_length, progress=options.progress and not options.quiet,
                                  description="validate")
            record["valid"] = {k: round(v, 6) for k, v in evaluation.metrics.items()}
            record["valid_seconds"] = round(evaluation.seconds, 2)
            value = evaluation.metrics[options.select_metric]
        else:
            value = float(epoch)  # no validation (a refit on all training cases): keep the last epoch
        if validating and group is not None:  # rank 0's score: every process keeps or stops alike
            value = distributed.broadcast_value(group, value, device)
        improved = value > progress["best_value"]
        if improved:
            progress.update(best_epoch=epoch, best_value=value, best_valid=record.get("valid", {}), bad_epochs=0)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_tensors().items()}
        else:
            progress["bad_epochs"] += 1
        progress["epoch"] = epoch
        progress["history"].append(record)
        if directory is not None:
            # every process's random state, for rank 0's commit (a collective call: all make it here)
            random_states = distributed.random_states(group, device) if group is not None else None
            if main:
                if options.keep_epochs:  # before the commit: a kill in between trains this epoch again, identically
                    checkpoint.atomic_save_tensors(epoch_weights_path(directory, epoch), model.state_tensors())
                save_training_state(directory, model, optimizer, scheduler, progress, best_state,
                                    random_states)  # the commit
                if improved:
                    checkpoint.save_weights(directory, model)
            distributed.barrier(group)  # the others wait for rank 0's commit
        _write_log(log_path, progress["history"])
        metrics = " ".join(f"{k} {v:.4f}" for k, v in record.get("valid", {}).items() if k.endswith("@20"))
        say(f"epoch {epoch:3d}  loss {record['loss']:.4f}  {seconds:7.1f}s  {record['cases_per_second']:8.1f} cases/s"
            f"  valid {metrics}{'  *' if improved else ''}")

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        best_epoch=progress["best_epoch"],
        best_valid=progress["best_valid"],
        epochs_run=progress["epoch"] + 1,
        history=progress["history"],
        train_seconds=progress["train_seconds"],
        train_cases=progress["train_cases"],
    )
