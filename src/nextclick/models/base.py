"""One contract for every model, neural or not.

    model = Model(n_items, config)          # stores parameters only
    model.fit(train_cases, valid_cases)     # learns; returns self
    model.score(batch) -> (B, n_items + 1)  # higher is better; column 0 (padding) is -inf
    model.recommend(prefixes, k)            # top-k on top of score

Non-neural models compute statistics in `fit` and keep them as tensors (`state_tensors`), so every
checkpoint is safetensors + JSON. Neural models are `torch.nn.Module`s trained by `nextclick.train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.data.sessions import Cases


class ConfigError(ValueError):
    pass


def config_from_overrides(config_class: type, overrides: dict[str, Any] | None = None, base: Any = None):
    """Build a model Config from {field: value}; values may be strings from the command line.
    Unknown keys and values of the wrong type are rejected with a message naming them."""
    base = base if base is not None else config_class()
    overrides = overrides or {}
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    changes = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {config_class.__qualname__}; options: {', '.join(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(base, **changes)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    target = args[0] if (origin is typing.Union or str(origin) == "<class 'types.UnionType'>") and args else hint
    if typing.get_origin(target) is typing.Literal:
        choices = typing.get_args(target)
        if value not in choices:
            raise ConfigError(f"option {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if target is float:
            return float(value)
        if target is str:
            return str(value)
        if typing.get_origin(target) is tuple:
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            inner = typing.get_args(target)[0]
            return tuple(inner(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key!r} expects {getattr(target, '__name__', target)}; got {value!r}") from None
    return value


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


@dataclass
class ClickWeights:
    """What an attention model weighed in each session of a batch: the material of `nextclick explain`.
    Positions follow `items` (whatever alignment the model reads its clicks in)."""

    items: torch.Tensor  # (B, L) the clicks the model read, 0 = padding
    weights: torch.Tensor  # (B, L) each click's weight in the session representation, 0 at padding
    name: str  # what `weights` are, in words
    pairs: torch.Tensor | None = None  # (B, L + len(extra), L + len(extra)) click-by-click weights, rows = queries
    pairs_name: str = ""
    extra: tuple[str, ...] = ()  # labels of the rows and columns of `pairs` after the clicks (DSAN: its target token)
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)  # per-session numbers, (B,) each


class Recommender:
    """Behaviour shared by every model; subclasses define `name`, `Config`, `fit` and `score`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    neural: ClassVar[bool] = False
    citation: ClassVar[str] = ""

    n_items: int
    config: Any

    @property
    def max_length(self) -> int | None:
        return getattr(self.config, "max_length", None)

    def fit(self, train: Cases, valid: Cases | None = None, **options) -> Recommender:
        raise NotImplementedError

    def score(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per session prefix (item indices, not external ids)."""
        batch = batch_from_prefixes(prefixes, self.max_length)
        with torch.inference_mode():
            scores = self.score(batch).clone()
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, self.n_items), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()

    # -- state as tensors (checkpoints are safetensors, never pickle) --
    def state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class StatisticalModel(Recommender):
    """Base for non-neural models whose fitted state is a handful of arrays named in `state_fields`."""

    state_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_items: int, config: Any = None):
        self.n_items = n_items
        self.config = config if config is not None else self.Config()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        missing = [f for f in self.state_fields if getattr(self, f, None) is None]
        if missing:
            raise RuntimeError(f"{self.name} is not fitted (missing {', '.join(missing)})")
        return {f: torch.as_tensor(getattr(self, f)).contiguous() for f in self.state_fields}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for f in self.state_fields:
            if f not in tensors:
                raise KeyError(f"checkpoint lacks {f!r} for {self.name}")
            setattr(self, f, tensors[f].numpy())


class NeuralModel(nn.Module, Recommender):
    """Base for torch models. Subclasses implement `forward(batch) -> logits (B, n_items + 1)`;
    training (optimizer, loss, early stopping) is `nextclick.train`'s job."""

    neural = True

    def __init__(self, n_items: int, config: Any = None):
        nn.Module.__init__(self)
        self.n_items = n_items
        self.config = config if config is not None else self.Config()

    def loss(self, batch: Batch) -> torch.Tensor:
        """Full-catalogue cross-entropy (padding column excluded by its -inf logit)."""
        logits = self(batch)
        return nn.functional.cross_entropy(logits, batch.labels)

    def optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        return torch.optim.Adam(
            self.parameters(),
            lr=getattr(config, "lr", 1e-3),
            weight_decay=getattr(config, "weight_decay", 0.0),
            amsgrad=getattr(config, "amsgrad", False),
        )

    def scheduler(self, optimizer: torch.optim.Optimizer):
        """Per-epoch learning-rate schedule; `lr_decay_every` epochs x `lr_decay` (SR-GNN family)."""
        every = getattr(self.config, "lr_decay_every", 0)
        if not every:
            return None
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=self.config.lr_decay)

    @property
    def device(self) -> torch.device:
        """Where the parameters live; `score` brings each batch there."""
        return next(self.parameters()).device

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode (no dropout) and no autograd inside the block; the training flag comes back after."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.train(was_training)

    def score(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self(batch.to(self.device))

    def fit(self, train: Cases, valid: Cases | None = None, **options) -> NeuralModel:
        from nextclick.train import TrainOptions, train_model

        train_model(self, train, valid, TrainOptions(**options))
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """On the CPU whatever the model's device, so checkpoints load anywhere."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)


def padded_logits(logits_for_items: torch.Tensor) -> torch.Tensor:
    """(B, n_items) scores for items 1..n -> (B, n_items + 1) with -inf in the padding column."""
    pad = logits_for_items.new_full((logits_for_items.shape[0], 1), -torch.inf)
    return torch.cat([pad, logits_for_items], dim=1)
