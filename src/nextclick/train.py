"""The generic training loop for every neural model.

Per epoch: shuffle the training cases (seeded per epoch, so a resumed run sees the same order), take
Adam steps on the model's loss (full-catalogue cross-entropy unless the model says otherwise), then
evaluate on the validation cases, which come from the last training sessions, never from test.
The best epoch by `select_metric` is kept; training stops after `patience` epochs without
improvement. After every epoch the complete state (weights, optimizer, scheduler, RNG, history) is
written atomically, so `resume=True` continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nextclick import checkpoint
from nextclick.data.batches import Batch, iterate_batches
from nextclick.data.sessions import Cases
from nextclick.evaluate import DEFAULT_KS, evaluate, metrics_from_ranks

TRAINING_DIR = "training"
EPOCHS_DIR = "epochs"


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
    # which training data selects the epoch: the last 10% of sessions (ours), a random 10% of
    # cases (NARM's and SR-GNN's official codes) or of whole sessions; see Split.carve_*
    validation: str = "last-sessions"
    # bench only: after selection, train afresh on all training cases for the selected number of
    # epochs and test that model (bench.refit)
    refit: bool = False
    keep_epochs: bool = False  # also keep every epoch's weights in <checkpoint_dir>/epochs/ (for curves)
    # "auto": the GPU when torch sees one, else the CPU; or any torch device name ("cpu", "cuda:1")
    device: str = "auto"

    def __post_init__(self):
        metrics = list(metrics_from_ranks(np.ones(1), self.ks))  # the names an evaluation reports, in its order
        if self.select_metric not in metrics:  # fail now, not after the first epoch's training
            raise ValueError(f"cannot select epochs on {self.select_metric!r}: choose one of {', '.join(metrics)}")


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


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device) -> torch.Tensor:
    """One optimisation step on one batch, as the trainer and `nextclick speed` both run it; returns the
    loss (detached, still on `device`: reading it is the caller's choice, as it waits for a GPU)."""
    loss = model.loss(batch.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; other names must be devices this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def progress_interval() -> float:
    """Seconds between progress-bar refreshes: lively on a terminal, sparse in a log file."""
    import sys

    return 0.5 if sys.stderr.isatty() else 60.0


def epoch_order(n_cases: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n_cases)
    return np.random.default_rng([seed, epoch]).permutation(n_cases)


def bucket_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, group: int, seed: int, epoch: int) -> np.ndarray:
    """Within chunks of `group` batches, sort by prefix length so batches pad little; then shuffle
    the batches. Every case is still seen once per epoch."""
    chunk = batch_size * group
    pieces = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        pieces.append(part[np.argsort(lengths[part], kind="stable")])
    sorted_order = np.concatenate(pieces)
    batches = [sorted_order[i : i + batch_size] for i in range(0, len(sorted_order), batch_size)]
    rng = np.random.default_rng([seed, epoch, 1])
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return tensors, {"param_groups": state["param_groups"]}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_training_state(directory: Path, model, optimizer, scheduler, progress: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_tensors().items()}
    optim_tensors, optim_json = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout on a GPU draws from the GPU's generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    checkpoint.atomic_save_tensors(directory / TRAINING_DIR / "state.safetensors", tensors)
    checkpoint.atomic_write_json(
        training_state_path(directory),
        {**progress, "optimizer": optim_json, "scheduler": scheduler.state_dict() if scheduler else None},
    )


def training_state_path(directory: str | Path) -> Path:
    """The JSON half of a run's resumable state (progress: epoch, best epoch, history, ...)."""
    return Path(directory) / TRAINING_DIR / "state.json"


def training_spent(epochs_done: int, epochs_without_gain: int, epochs: int | None, patience: int) -> bool:
    """The trainer's stopping rule: patience used up, or the epoch budget (when known) spent."""
    return epochs_without_gain >= patience or (epochs is not None and epochs_done >= epochs)


def training_progress(directory: str | Path) -> dict | None:
    """How far the training checkpointed in `directory` got, read from its state.json alone (no
    tensors): epochs done, the best epoch and its validation scores, and whether it has finished
    (patience or the epoch budget spent) or would continue with `resume`. None when nothing was saved.
    States saved before they recorded their limits are read with the defaults (patience 3, the
    config's epochs) and the metric whose score equals the best value; `finished` is None where
    those defaults cannot tell (--epochs or --patience may have been given)."""
    path = training_state_path(directory)
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    limits = state.get("limits")
    best_valid = state.get("best_valid") or {}
    saved = limits is not None
    if not saved:
        meta = Path(directory) / "config.json"
        config = json.loads(meta.read_text()).get("config", {}) if meta.is_file() else {}
        validated = bool(best_valid)  # a refit validates nothing; its epoch budget was not saved
        limits = {"epochs": config.get("epochs") if validated else None, "patience": TrainOptions.patience,
                  "select_metric": next((k for k, v in best_valid.items()
                                         if math.isclose(v, state["best_value"], abs_tol=1e-6)), None)}
    done = state["epoch"] + 1
    finished: bool | None = training_spent(done, state["bad_epochs"], limits["epochs"], limits["patience"])
    if not finished and not saved:
        finished = None  # unknown: --epochs or --patience may have ended it sooner than the defaults
    return {
        "epochs_done": done,
        "best_epoch": state["best_epoch"],
        "select_metric": limits["select_metric"],
        "best_valid": best_valid,
        "epochs_without_gain": state["bad_epochs"],
        "patience": limits["patience"],
        "max_epochs": limits["epochs"],
        "finished": finished,
        "train_seconds": round(state.get("train_seconds", 0.0), 1),
        "saved_at": path.stat().st_mtime,
    }


def load_training_state(directory: Path, model, optimizer, scheduler) -> dict:
    folder = directory / TRAINING_DIR
    state_json = training_state_path(directory)
    if not state_json.is_file():
        raise checkpoint.CheckpointError(f"nothing to resume in {directory} (no {TRAINING_DIR}/state.json)")
    progress = json.loads(state_json.read_text())
    tensors = checkpoint.load_tensors(folder / "state.safetensors")
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer(optimizer, tensors, progress.pop("optimizer"))
    scheduler_state = progress.pop("scheduler")
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return progress


def _log(path: Path | None, record: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def train_model(model, train: Cases, valid: Cases | None, options: TrainOptions | None = None) -> TrainResult:
    """Train `model` (a NeuralModel) in place; on return it holds the weights of the selected epoch."""
    options = options or TrainOptions()
    config = model.config
    epochs = options.epochs if options.epochs is not None else getattr(config, "epochs", 30)
    batch_size = options.batch_size or getattr(config, "batch_size", 512)
    shuffle = getattr(config, "shuffle", True)
    directory = Path(options.checkpoint_dir) if options.checkpoint_dir else None
    log_path = Path(options.log_path) if options.log_path else (directory / "train.jsonl" if directory else None)
    say = (lambda *a: None) if options.quiet else (lambda *a: tqdm.write(" ".join(map(str, a))))
    device = resolve_device(options.device)
    model.to(device)  # before the optimizer, whose state must live beside the parameters

    optimizer = model.optimizer()
    scheduler = model.scheduler(optimizer)
    progress = {"epoch": -1, "best_epoch": -1, "best_value": -math.inf, "best_valid": {}, "bad_epochs": 0,
                "history": [], "train_seconds": 0.0, "train_cases": 0}
    if options.resume:
        if directory is None:
            raise ValueError("resume needs a checkpoint directory")
        progress = load_training_state(directory, model, optimizer, scheduler)
        say(f"resumed after epoch {progress['epoch']} (best so far: epoch {progress['best_epoch']})")
    elif log_path is not None and log_path.exists():
        log_path.unlink()

    validating = valid is not None and len(valid) > 0
    # what ends this training, saved with its state so `nextclick status` can tell finished from interrupted
    progress["limits"] = {"epochs": epochs, "patience": options.patience,
                          "select_metric": options.select_metric if validating else None}
    best_state = None
    if options.resume and directory is not None and (directory / "model.safetensors").exists():
        best_state = checkpoint.load_tensors(directory / "model.safetensors")

    lengths = train.length
    for epoch in range(progress["epoch"] + 1, epochs):
        if training_spent(epoch, progress["bad_epochs"], epochs, options.patience):
            break
        model.train()
        order = epoch_order(len(train), options.seed, epoch, shuffle)
        if options.length_buckets:
            order = bucket_by_length(order, lengths, batch_size, options.length_buckets, options.seed, epoch)
        n_batches = math.ceil(len(order) / batch_size)
        if options.max_batches:
            n_batches = min(n_batches, options.max_batches)
            order = order[: n_batches * batch_size]
        bar = tqdm(total=len(order), desc=f"epoch {epoch}", unit="case", disable=not options.progress or options.quiet,
                   dynamic_ncols=True, leave=False, mininterval=progress_interval())
        start = time.perf_counter()
        total_loss, seen = 0.0, 0
        for batch in iterate_batches(train, batch_size, model.max_length, order):
            loss = train_step(model, optimizer, batch, device)
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)  # refresh would defeat mininterval
        bar.close()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "loss": total_loss / max(seen, 1), "seconds": round(seconds, 2),
                  "cases_per_second": round(seen / seconds, 1), "lr": optimizer.param_groups[0]["lr"]}  # this epoch's
        if scheduler is not None:
            scheduler.step()
        progress["train_seconds"] += seconds
        progress["train_cases"] += seen
        if validating:
            evaluation = evaluate(model.score, valid, ks=options.ks, batch_size=options.eval_batch_size,
                                  max_length=model.max_length, progress=options.progress and not options.quiet,
                                  description="validate")
            record["valid"] = {k: round(v, 6) for k, v in evaluation.metrics.items()}
            record["valid_seconds"] = round(evaluation.seconds, 2)
            value = evaluation.metrics[options.select_metric]
        else:
            value = float(epoch)  # no validation (a refit on all training cases): keep the last epoch
        improved = value > progress["best_value"]
        if improved:
            progress.update(best_epoch=epoch, best_value=value, best_valid=record.get("valid", {}), bad_epochs=0)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if directory is not None:
                checkpoint.save_weights(directory, model)
        else:
            progress["bad_epochs"] += 1
        progress["epoch"] = epoch
        progress["history"].append(record)
        if directory is not None and options.keep_epochs:
            checkpoint.atomic_save_tensors(epoch_weights_path(directory, epoch), model.state_tensors())
        if directory is not None:
            save_training_state(directory, model, optimizer, scheduler, progress)
        _log(log_path, record)
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


def epoch_weights_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / EPOCHS_DIR / f"epoch_{epoch}.safetensors"


def kept_epochs(directory: str | Path) -> list[int]:
    """The epochs whose weights a `keep_epochs` run left in `directory`, in order."""
    numbers = (path.stem.removeprefix("epoch_") for path in Path(directory, EPOCHS_DIR).glob("epoch_*.safetensors"))
    return sorted(int(number) for number in numbers if number.isdigit())


def set_threads(threads: int | None = None) -> int:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def options_dict(options: TrainOptions) -> dict:
    return asdict(options)
