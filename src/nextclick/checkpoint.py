"""Checkpoints are data: a directory of safetensors + JSON, never pickle.

    <dir>/config.json          model name, config, n_items, protocol, dataset, nextclick version
    <dir>/model.safetensors    weights (neural) or fitted statistics (non-neural)
    <dir>/vocab.safetensors    external item ids (`ids[i]` for dense index i)
    <dir>/metrics.json         validation / test metrics written by train and bench
    <dir>/training/            resumable trainer state (see nextclick.training.state)

Every write goes to a temporary file first and is renamed into place, so an interrupted run never
leaves a half-written file. Loading validates everything and fails with a message saying what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nextclick.data.sessions import Protocol, Vocab
from nextclick.models.base import Recommender
from nextclick.models.config import config_from_overrides

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def save_meta(directory: Path, model: Recommender, vocab: Vocab, protocol: Protocol, dataset: str, extra: dict | None = None) -> None:
    directory = Path(directory)
    atomic_write_json(
        directory / "config.json",
        {
            "format": FORMAT_VERSION,
            "model": model.name,
            "config": dataclasses.asdict(model.config),
            "n_items": model.n_items,
            "protocol": protocol.to_dict(),
            "dataset": dataset,
            **(extra or {}),
        },
    )
    atomic_save_tensors(directory / "vocab.safetensors", {"ids": torch.from_numpy(vocab.ids.copy())})


def save_weights(directory: Path, model: Recommender) -> None:
    atomic_save_tensors(Path(directory) / "model.safetensors", model.state_tensors())


def save(directory: Path, model: Recommender, vocab: Vocab, protocol: Protocol, dataset: str, extra: dict | None = None) -> Path:
    directory = Path(directory)
    save_meta(directory, model, vocab, protocol, dataset, extra)
    save_weights(directory, model)
    return directory


def load(directory: str | os.PathLike, weights: str | os.PathLike | None = None) -> tuple[Recommender, Vocab, dict]:
    """(model with weights, vocab, config.json contents) from a checkpoint directory; `weights` names
    another weights file of the same model (an epoch kept by `keep_epochs`) instead of model.safetensors."""
    from nextclick.models import model_class

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}")
    config_path = directory / "config.json"
    try:
        meta = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a checkpoint (no config.json)") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    for key in ("model", "config", "n_items"):
        if key not in meta:
            raise CheckpointError(f"{config_path} lacks {key!r}")
    cls = model_class(meta["model"])
    config = config_from_overrides(cls.Config, meta["config"])
    model = cls(int(meta["n_items"]), config)
    vocab = Vocab(load_tensors(directory / "vocab.safetensors")["ids"].numpy())
    if vocab.n_items != model.n_items:
        raise CheckpointError(f"{directory}: vocab has {vocab.n_items} items, model expects {model.n_items}")
    weights_path = Path(weights) if weights is not None else directory / "model.safetensors"
    tensors = load_tensors(weights_path)
    try:
        model.load_state_tensors(tensors)
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{weights_path} does not fit {meta['model']}: {error}") from None
    if getattr(model, "neural", False):
        model.eval()
    return model, vocab, meta
