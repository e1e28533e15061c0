"""Checkpoints are data: a directory of safetensors + JSON, never pickle.

    <dir>/config.json          model name, config, n_items, protocol, dataset (a name or a split
                               directory that `resolve` finds again), training options, nextclick version
    <dir>/model.safetensors    weights (neural) or fitted statistics (non-neural)
    <dir>/vocab.safetensors    external item ids (`ids[i]` for dense index i)
    <dir>/metrics.json         validation / test metrics written by train and bench
    <dir>/training/            resumable trainer state (see nextclick.training.state)

Every write goes to a temporary file first, is synced and renamed into place (nextclick.atomic), so an
interrupted run or a full disk never leaves a half-written file. Loading validates everything and fails
with a message saying what is wrong.

A statistical model's arrays and every vocabulary are written and read as numpy arrays; torch is
imported only for a neural model's weights (and the trainer's state), so that loading POP or STAN for
`nextclick recommend` does not spend 2-3 s importing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from nextclick import atomic
from nextclick.data.sessions import Protocol, Vocab
from nextclick.models.base import Recommender
from nextclick.models.config import config_from_overrides

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    pass


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Tensors as a safetensors file, written as atomic.write_bytes writes (serialised in memory first:
    the file is complete before its name appears)."""
    from safetensors.torch import save as save_tensors  # imports torch

    atomic.write_bytes(path, save_tensors({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def atomic_save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Numpy arrays as a safetensors file (the same format as tensors), written as atomic_save_tensors."""
    atomic.write_bytes(path, safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # imports torch

    return _read_safetensors(path, load_file)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return _read_safetensors(path, safetensors.numpy.load_file)


def _read_safetensors(path: Path, load_file: Callable[[str], dict]) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def dataset_reference(split) -> str:
    """What a checkpoint records as its dataset: a name `resolve` finds again (synthetic, or a split
    under the data directory known by that name), else the split directory's absolute path, so that
    `evaluate RUN` finds a prepared split without --dataset."""
    from nextclick.data.benchmarks import available

    path = split.provenance.get("path") if split.provenance else None
    if path is None:
        return split.name
    named = available().get(split.name)
    if named is not None and Path(named).resolve() == Path(path).resolve():
        return split.name
    return str(Path(path).resolve())


def save_meta(directory: Path, model: Recommender, vocab: Vocab, protocol: Protocol, dataset: str, extra: dict | None = None) -> None:
    directory = Path(directory)
    atomic.write_json(
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
    atomic_save_arrays(directory / "vocab.safetensors", {"ids": vocab.ids})


def save_weights(directory: Path, model: Recommender) -> None:
    path = Path(directory) / "model.safetensors"
    if model.neural:
        atomic_save_tensors(path, model.state_tensors())
    else:
        atomic_save_arrays(path, model.state_arrays())


def save(directory: Path, model: Recommender, vocab: Vocab, protocol: Protocol, dataset: str, extra: dict | None = None) -> Path:
    directory = Path(directory)
    save_meta(directory, model, vocab, protocol, dataset, extra)
    save_weights(directory, model)
    return directory


def load(directory: str | os.PathLike, weights: str | os.PathLike | None = None,
         calibrated: bool = True) -> tuple[Recommender, Vocab, dict]:
    """(model with weights, vocab, config.json contents) from a checkpoint directory; `weights` names
    another weights file of the same model (an epoch kept by `keep_epochs`) instead of model.safetensors.
    A repeat calibration saved beside the weights (CALIBRATION_FILE, `nextclick calibrate --save`) is
    attached to the model unless `calibrated` is False or `weights` names another file; it must have been
    fitted for these very weights (their SHA-256), else the load is refused.

    Everything is checked before anything is allocated: config.json's types, n_items against MAX_ITEMS,
    the config against its limits (nextclick.models.config), and the shapes in the safetensors headers
    (read without the tensors) against the vocabulary and the model the config describes. Any failure
    is one CheckpointError naming the file and what is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}")
    config_path = directory / "config.json"
    meta = _read_meta(config_path, directory)
    cls, config = _model_class_and_config(meta, config_path)
    n_items = meta["n_items"]
    vocab_path = directory / "vocab.safetensors"
    _expect_shapes(vocab_path, {"ids": (n_items + 1,)}, f"n_items {n_items} in {config_path}")
    weights_path = Path(weights) if weights is not None else directory / "model.safetensors"
    if cls.neural:
        _expect_shapes(weights_path, _parameter_shapes(cls, n_items, config), f"{meta['model']} as {config_path} describes it",
                       getattr(cls, "rows_from_data", ()))
    else:
        _header_shapes(weights_path)  # a readable header; statistical state is as large as the file itself
    model = cls(n_items, config)
    vocab = Vocab(load_arrays(vocab_path)["ids"])
    try:
        if cls.neural:
            model.load_state_tensors(load_tensors(weights_path))
        else:
            model.load_state_arrays(load_arrays(weights_path))
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as error:
        raise CheckpointError(f"{weights_path} does not fit {meta['model']}: {_first_line(error)}") from None
    if getattr(model, "neural", False):
        model.eval()
    if calibrated and weights is None and (directory / CALIBRATION_FILE).is_file():
        model.calibration = read_calibration(directory)
    return model, vocab, meta


CALIBRATION_FILE = "calibration.json"


def weights_digest(directory: Path) -> str:
    """SHA-256 of the checkpoint's model.safetensors: what a saved calibration was fitted for."""
    digest = hashlib.sha256()
    with open(Path(directory) / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_calibration(directory: Path, calibration, run: str) -> Path:
    """Write `calibration` (models.calibration.RepeatCalibration) beside the checkpoint's weights."""
    path = Path(directory) / CALIBRATION_FILE
    atomic.write_json(path, {"run": run, "weights_sha256": weights_digest(directory), **calibration.to_dict()})
    return path


def read_calibration(directory: Path):
    from nextclick.models.calibration import RepeatCalibration

    path = Path(directory) / CALIBRATION_FILE
    try:
        saved = json.loads(path.read_text())
        calibration = RepeatCalibration.from_dict(saved)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"cannot read {path}: {_first_line(error)}") from None
    if saved.get("weights_sha256") != weights_digest(directory):
        raise CheckpointError(f"{path} was fitted for other weights than {Path(directory) / 'model.safetensors'} "
                              "(trained again since?): run `nextclick calibrate --save` again, or delete it")
    return calibration


def _read_meta(config_path: Path, directory: Path) -> dict:
    """config.json as a dict whose 'model', 'config' and 'n_items' have the right types and sizes (at most
    MAX_ITEMS items, the splits' limit: a crafted config.json cannot make a model ask for terabytes)."""
    from nextclick.data.benchmarks import MAX_ITEMS

    if not config_path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint (no config.json)")
    meta = atomic.read_json_object(config_path, CheckpointError)
    for key in ("model", "config", "n_items"):
        if key not in meta:
            raise CheckpointError(f"{config_path} lacks {key!r}")
    for key, kind, what in (("model", str, "a model name"), ("config", dict, "an object"), ("n_items", int, "an integer")):
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"{config_path}: {key!r} must be {what}; got {meta[key]!r:.60}")
    if not 1 <= meta["n_items"] <= MAX_ITEMS:
        raise CheckpointError(f"{config_path}: n_items must be from 1 to {MAX_ITEMS:,}; got {meta['n_items']:,}")
    # optional keys that commands read: the split evaluate resolves, the protocol, the format version
    for key, kind, what in (("dataset", str, "a dataset name or split directory"), ("protocol", dict, "an object"),
                            ("format", int, "an integer")):
        if meta.get(key) is not None and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{config_path}: {key!r} must be {what}; got {meta[key]!r:.60}")
    return meta


def _model_class_and_config(meta: dict, config_path: Path):
    from nextclick.models import model_class
    from nextclick.models.config import ConfigError

    try:
        cls = model_class(meta["model"])
        return cls, config_from_overrides(cls.Config, meta["config"])
    except ConfigError as error:
        raise CheckpointError(f"{config_path}: {error}") from None


def _parameter_shapes(cls: type, n_items: int, config: Any) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a neural model of `n_items` items holds, without building it: a model's
    tables grow linearly with the catalogue (rows per item), so two models of one and two items give
    every dimension as a + b * n_items. (torch's meta device would do too, but its first use costs
    seconds of imports on every `recommend`.) The global random state is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        one, two = ({name: tuple(t.shape) for name, t in cls(n, config).state_dict().items()} for n in (1, 2))
    return {name: tuple(a + (b - a) * (n_items - 1) for a, b in zip(shape, two[name])) for name, shape in one.items()}


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from a safetensors file's header, without reading any tensor."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        with safe_open(str(path), framework="np") as handle:  # "pt" would import torch
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot read {path}: {_first_line(error)}") from None


def _expect_shapes(path: Path, expected: dict[str, tuple[int, ...]], source: str, rows_from_data: tuple[str, ...] = ()) -> None:
    """CheckpointError unless the header of `path` holds exactly `expected`'s tensors with their shapes;
    tensors named in `rows_from_data` (tables a model sizes from its training data in `prepare`, such as
    CoSAN's session table) may have any number of rows."""
    found = _header_shapes(path)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"{path} lacks {missing[0]!r} ({len(missing)} tensors missing), which {source} needs")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path} holds {unexpected[0]!r}, which {source} does not have")
    for name, shape in expected.items():
        if name in rows_from_data and len(found[name]) == len(shape) and found[name][1:] == shape[1:]:
            continue
        if found[name] != shape:
            raise CheckpointError(f"{path}: {name!r} has shape {list(found[name])}, but {source} needs {list(shape)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
