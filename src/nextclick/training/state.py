"""A training run's resumable state, committed in one step so that a kill at any instant resumes exactly.

    <run>/training/state.json                    the commit: epoch, best epoch, history, limits, optimizer
                                                 groups, scheduler, and the name of the tensors file below
    <run>/training/state-<epoch>.safetensors     that epoch's model, optimizer and RNG tensors, and the best
                                                 epoch's weights (`best.*`) when they are not the model's own
    <run>/model.safetensors                      the best epoch's weights (derived: rewritten on resume)
    <run>/train.jsonl                            one line per committed epoch (derived: rewritten on resume)
    <run>/epochs/epoch_<n>.safetensors           every epoch's weights (keep_epochs), for test curves

An epoch is committed by writing its tensors into a new file named by the epoch, then renaming
state.json into place (nextclick.atomic): before that rename the previous epoch's state is whole and
named, after it the new one is. Files the commit does not name (an epoch killed before its commit, an
older epoch) are removed after each commit and on resume. Runs saved before the commit named its
tensors (state.json + state.safetensors, format 1) still resume and report their progress.

`training_progress` reads how far a run got from state.json alone (no tensors), for `nextclick status`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from nextclick import atomic, checkpoint

TRAINING_DIR = "training"
EPOCHS_DIR = "epochs"
STATE_FORMAT = 2  # 1: state.json + state.safetensors written one after the other (not one commit)
OLD_TENSORS = "state.safetensors"  # format 1's tensors file
DEFAULT_PATIENCE = 3  # TrainOptions.patience: what a state saved before it recorded its limits ran with


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


def tensors_name(epoch: int) -> str:
    """The file holding the tensors of the state committed after `epoch`."""
    return f"state-{epoch:06d}.safetensors"


def save_training_state(directory: Path, model, optimizer, scheduler, progress: dict,
                        best: dict[str, torch.Tensor] | None, random_states: dict[str, torch.Tensor] | None = None) -> None:
    """Commit the state after `progress["epoch"]`: its tensors into a new file, then state.json naming it
    renamed into place (the commit), then the files no commit names removed. `best`: the best epoch's
    weights, stored only when they are not the model's current ones. `random_states`: under torchrun, the
    other processes' generators (`rng.torch.rank<r>`, training/distributed.py), committed with the rest."""
    folder = Path(directory) / TRAINING_DIR
    name = tensors_name(progress["epoch"])
    tensors = {f"model.{k}": v for k, v in model.state_tensors().items()}
    optim_tensors, optim_json = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout on a GPU draws from the GPU's generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if best is not None and progress["best_epoch"] != progress["epoch"]:
        tensors.update({f"best.{k}": v.detach().cpu() for k, v in best.items()})
    tensors.update(random_states or {})
    checkpoint.atomic_save_tensors(folder / name, tensors)
    atomic.write_json(training_state_path(directory), {
        "format": STATE_FORMAT, "tensors": name, **progress, "optimizer": optim_json,
        "scheduler": scheduler.state_dict() if scheduler else None})
    remove_uncommitted(directory, keep=name)


def remove_uncommitted(directory: str | Path, keep: str | None) -> None:
    """Remove the tensors files in <run>/training/ other than `keep`, and what killed writes left there."""
    folder = Path(directory) / TRAINING_DIR
    if not folder.is_dir():
        return
    atomic.remove_leftovers(folder)
    for path in folder.iterdir():
        if path.is_file() and path.name.startswith("state") and path.suffix == ".safetensors" and path.name != keep:
            path.unlink(missing_ok=True)


def clear_training_state(directory: str | Path) -> None:
    """Forget a previous training in `directory` before a fresh one: its state and its kept epochs, so
    neither a resume nor a test curve mixes the two."""
    for folder in (Path(directory) / TRAINING_DIR, Path(directory) / EPOCHS_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file():
                    path.unlink()


def training_state_path(directory: str | Path) -> Path:
    """The commit of a run's resumable state (progress: epoch, best epoch, history, ...; its tensors' file)."""
    return Path(directory) / TRAINING_DIR / "state.json"


def committed_tensors_path(directory: str | Path) -> Path:
    """The tensors file the last commit names (format 1: state.safetensors)."""
    state = json.loads(training_state_path(directory).read_text())
    return Path(directory) / TRAINING_DIR / state.get("tensors", OLD_TENSORS)


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
        limits = {"epochs": config.get("epochs") if validated else None, "patience": DEFAULT_PATIENCE,
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


def load_training_state(directory: Path, model, optimizer, scheduler, *, rank: int = 0,
                        world_size: int = 1) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and RNG from the last commit; returns its progress and the best
    epoch's weights (None for a format-1 state, whose best weights are model.safetensors). Under torchrun
    (`world_size` processes) the process of `rank` takes its own random state; a run continues only with
    as many processes as it was saved by, since the share of each batch a process takes depends on it."""
    state_json = training_state_path(directory)
    if not state_json.is_file():
        raise checkpoint.CheckpointError(f"nothing to resume in {directory} (no {TRAINING_DIR}/state.json)")
    progress = atomic.read_json_object(state_json, checkpoint.CheckpointError)
    saved_by = progress.pop("world_size", 1)
    if saved_by != world_size:
        raise checkpoint.CheckpointError(
            f"{directory} was trained by {saved_by} process{'es' if saved_by > 1 else ''}: resume it with as many "
            f"(torchrun --nproc_per_node {saved_by}{' ...' if saved_by > 1 else ''}; now {world_size})"
            if saved_by > 1 else
            f"{directory} was trained by one process: resume it without torchrun (now {world_size} processes)")
    tensors = checkpoint.load_tensors(committed_tensors_path(directory))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer(optimizer, tensors, progress.pop("optimizer"))
    scheduler_state = progress.pop("scheduler")
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    suffix = f".rank{rank}" if rank else ""  # rank 0 (and one process) saves its state under the plain names
    torch.set_rng_state(tensors["rng.torch" + suffix])
    if "rng.cuda" + suffix in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda" + suffix])
    best = None
    if progress.pop("format", 1) >= STATE_FORMAT:
        prefix = "best." if any(k.startswith("best.") for k in tensors) else "model."
        best = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    progress.pop("tensors", None)
    return progress, best


def epoch_weights_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / EPOCHS_DIR / f"epoch_{epoch}.safetensors"


def kept_epochs(directory: str | Path) -> list[int]:
    """The epochs whose weights a `keep_epochs` run left in `directory`, in order."""
    numbers = (path.stem.removeprefix("epoch_") for path in Path(directory, EPOCHS_DIR).glob("epoch_*.safetensors"))
    return sorted(int(number) for number in numbers if number.isdigit())
