"""One contract for every model, neural or not.

    model = Model(n_items, config)            # stores parameters only
    model.prepare(train_sessions)             # before training: tables built from the training sessions
    model.fit(train_cases)                    # statistical models learn here; returns self
    scores, loss = model(batch, labels)       # neural models: one call for the trainer (and DDP); scores
                                              # may be None in training (a loss that never builds them)
    model.score(batch) -> (B, n_items + 1)    # higher is better; column 0 (padding) is -inf
    model.recommend(prefixes, k)              # top-k on top of score

Neural models are `torch.nn.Module`s trained by `nextclick.training`; they choose what a training epoch
is made of (`training_stream`: prefix cases in padded batches by default) and how its batches are built
(`collate`). Inner-product models also give `query_vectors(batch)` and `item_vectors()`, so that
`score(batch)[:, 1:] == query_vectors(batch) @ item_vectors()[1:].T` (serving's top-K index uses them).
Statistical models compute their arrays in `fit` and keep them as tensors (`state_tensors`), so every
checkpoint is safetensors + JSON.

Models sit below everything that drives them: nothing here (or in a model file) imports the trainer,
the evaluator, the search or the bench. A model's `fit` neither selects epochs nor tunes itself; a
statistical model that trains in epochs reports each one to `epoch_end`, and the caller decides.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from nextclick.data.batches import Batch, batch_from_prefixes, make_batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.data.streams import PrefixStream, Stream, StreamOptions
from nextclick.models.config import MAX_SESSION_LENGTH, check_config
from nextclick.models.layers import inner_product_cross_entropy
from nextclick.models.repeat import RepeatOutput

# called after each epoch of a statistical model trained in epochs, with the epoch (1-based) and its
# record (loss, seconds); returns True to stop. The caller (nextclick.runs.select) evaluates there.
EpochEnd = Callable[[int, dict], bool]


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
    """Behaviour shared by every model; subclasses define `name`, `Config`, `score` and how they learn."""

    name: ClassVar[str]
    Config: ClassVar[type]
    neural: ClassVar[bool] = False
    citation: ClassVar[str] = ""
    # statistical models: config values a `tune=true` run searches on validation (nextclick.runs.search),
    # the paper's value first
    search_space: ClassVar[dict[str, tuple]] = {}
    # named sets of config values (`--preset NAME`), e.g. GRU4Rec's best settings per dataset
    presets: ClassVar[dict[str, dict]] = {}
    # statistical models that learn in epochs (config `epochs`, `patience`): the bench selects the
    # number of epochs on validation through `fit(..., epoch_end=...)`
    trains_in_epochs: ClassVar[bool] = False
    # config values `nextclick serve` uses unless its --set says otherwise: ones that change how the model
    # computes, never what it scores (each is tested to give the reference path's scores), e.g. DSAN's
    # entmax by Newton instead of 50 halvings
    serving_config: ClassVar[dict[str, Any]] = {}

    n_items: int
    config: Any

    @property
    def max_length(self) -> int:
        """Clicks a batch keeps (the most recent): the config's `max_length`, at most MAX_SESSION_LENGTH
        (512), which also stands for "the whole prefix" (None). The cap bounds the work of one session in
        serving, training and evaluation alike; no published split has a prefix longer than 284 clicks,
        so it changes no result. With the repeat decoder on, the batch keeps the whole prefix (the
        decoder's candidates) and the model's encoder cuts its own input to `encoder_length`."""
        if getattr(self.config, "repeat", "off") != "off":
            return MAX_SESSION_LENGTH
        return self.encoder_length

    @property
    def encoder_length(self) -> int:
        """Clicks the model's encoder reads (the most recent): the config's `max_length`, capped."""
        configured = getattr(self.config, "max_length", None)
        return MAX_SESSION_LENGTH if configured is None else min(configured, MAX_SESSION_LENGTH)

    @property
    def inner_product(self) -> bool:
        """Whether score(batch)[:, 1:] == query_vectors(batch) @ item_vectors()[1:].T (serving's
        approximate index needs it). The repeat decoder's mixture is not an inner product: with it on,
        query_vectors give the explore side's query only."""
        return hasattr(self, "query_vectors") and getattr(self.config, "repeat", "off") == "off"

    def prepare(self, train: Sessions) -> None:
        """Build what training needs from the training sessions (popularity for negatives, item graphs,
        memories, neighbour indexes) before the first epoch. Most models need nothing."""

    def score(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per session prefix (item indices, not external ids); a k beyond the
        catalogue gives the whole catalogue."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
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


# Checks of a fitted array on load, (array, model, all arrays) -> what is wrong or None: a checkpoint of
# another catalogue or a hand-made file is refused when it is read, not at the first score (or, worse,
# after reading out of bounds). Each statistical model names its arrays' checks in `state_checks`.
StateCheck = Callable[[np.ndarray, "Recommender", dict], "str | None"]


def item_rows(width: str | None = None, optional: bool = False) -> StateCheck:
    """A value per item index 0..n_items: a vector, or rows as wide as the config's `width` (say
    "factors"); an empty table too when `optional`."""

    def check(array: np.ndarray, model: Recommender, arrays: dict) -> str | None:
        shape = (model.n_items + 1,) if width is None else (model.n_items + 1, getattr(model.config, width))
        if array.shape == shape or (optional and array.ndim == len(shape) and array.shape[0] == 0):
            return None
        return f"has shape {list(array.shape)}; {model.n_items} items and this config need {list(shape)}"

    return check


def item_ids(array: np.ndarray, model: Recommender, arrays: dict) -> str | None:
    """A flat array of item indices 0..n_items."""
    if array.ndim != 1:
        return "must be one-dimensional"
    if len(array) and (array.min() < 0 or array.max() > model.n_items):
        return f"holds item index {int(array.max() if array.max() > model.n_items else array.min())} outside 0..{model.n_items}"
    return None


def row_pointers(*columns: str, per_item: bool = False) -> StateCheck:
    """CSR row pointers into the equally long arrays `columns`: from 0, never decreasing, to their length;
    with `per_item`, a row per item index 0..n_items."""

    def check(array: np.ndarray, model: Recommender, arrays: dict) -> str | None:
        lengths = {len(arrays[c]) for c in columns}
        if array.ndim != 1 or len(array) == 0 or len(lengths) != 1:
            return f"must be row pointers into {', '.join(columns)} of one length"
        if per_item and len(array) != model.n_items + 2:
            return f"has {len(array) - 1} rows; {model.n_items} items need {model.n_items + 1}"
        if array[0] != 0 or array[-1] != lengths.pop() or (len(array) > 1 and np.any(np.diff(array) < 0)):
            return f"are not row pointers into {', '.join(columns)} (from 0, ascending, to their length)"
        return None

    return check


class StatisticalModel(Recommender):
    """Base for non-neural models whose fitted state is a handful of arrays named in `state_fields`."""

    state_fields: ClassVar[tuple[str, ...]] = ()
    state_checks: ClassVar[dict[str, StateCheck]] = {"popularity": item_rows()}  # every model keeps popularity

    def __init__(self, n_items: int, config: Any = None):
        self.n_items = n_items
        self.config = check_config(config if config is not None else self.Config())  # library callers too

    def fit(self, train: Cases, *, progress: bool = False, epoch_end: EpochEnd | None = None) -> StatisticalModel:
        """Learn from the training cases (their full sessions are at hand too); returns self."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        missing = [f for f in self.state_fields if getattr(self, f, None) is None]
        if missing:
            raise RuntimeError(f"{self.name} is not fitted (missing {', '.join(missing)})")
        return {f: torch.as_tensor(getattr(self, f)).contiguous() for f in self.state_fields}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the arrays after `state_checks` pass (ValueError naming the first that does not)."""
        for f in self.state_fields:
            if f not in tensors:
                raise KeyError(f"checkpoint lacks {f!r} for {self.name}")
        arrays = {f: tensors[f].numpy() for f in self.state_fields}
        for f, check in self.state_checks.items():
            problem = check(arrays[f], self, arrays)
            if problem:
                raise ValueError(f"{f} {problem}")
        for f, array in arrays.items():
            setattr(self, f, array)


class NeuralModel(nn.Module, Recommender):
    """Base for torch models. Subclasses implement `forward(batch, labels=None) -> (scores, loss)`:
    scores (B, n_items + 1) with -inf in the padding column, and the training loss when labels are
    given (None otherwise). With labels and gradients on, scores may be None: a model may compute its
    loss without them (ItemEmbeddingModel does), and the trainer reads only the loss. Training (optimizer steps, early stopping) is `nextclick.training`'s job."""

    neural = True

    def __init__(self, n_items: int, config: Any = None):
        nn.Module.__init__(self)
        self.n_items = n_items
        self.config = check_config(config if config is not None else self.Config())  # library callers too

    # -- what a training epoch is made of --
    def training_stream(self, cases: Cases, options: StreamOptions) -> Stream:
        """The batches of each training epoch. Default: the prefix cases, shuffled per epoch (seeded by
        epoch, so a resumed run sees the same order), in padded batches built by `collate`. Models
        trained otherwise (session-parallel, masked sequences) return a stream of their own."""
        return PrefixStream(cases, options, self.collate)

    def collate(self, cases: Cases, indices: np.ndarray) -> Batch:
        """The cases at `indices` as one batch: right-aligned, padded, truncated to `max_length`. Models
        with other inputs (session graphs) return a Batch subclass carrying them."""
        return make_batch(cases, indices, self.max_length)

    # -- the one call the trainer makes --
    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    # the fused Adam kernel computes the same update in one pass over the parameters instead of several:
    # it matters for the large item tables of full-softmax models (models written before it keep the loop)
    fused_adam: ClassVar[bool] = False

    def optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        return torch.optim.Adam(
            self.parameters(),
            lr=getattr(config, "lr", 1e-3),
            weight_decay=getattr(config, "weight_decay", 0.0),
            amsgrad=getattr(config, "amsgrad", False),
            fused=self.fused_adam or None,
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
            return self(batch.to(self.device))[0]

    def repeat_scalars(self, batch: Batch) -> dict[str, torch.Tensor]:
        """{"repeat probability": (B,)} for `click_weights` when the repeat decoder is on (models with a
        `repeat_decoder` define `_decoded(batch, labels)`), else {}."""
        if getattr(self, "repeat_decoder", None) is None:
            return {}
        with self.evaluating():
            return {"repeat probability": self._decoded(batch.to(self.device)).repeat_probability}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """On the CPU whatever the model's device, so checkpoints load anywhere."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)


class ItemEmbeddingModel(NeuralModel):
    """A neural model whose scores are inner products of a session vector with its item table
    `self.embedding` (rows 0..N, row 0 padding): it defines `session_vector(batch) -> (B, d)`, and gets
    `forward` (full-catalogue cross-entropy), `query_vectors` and `item_vectors` from it."""

    embedding: nn.Embedding

    def session_vector(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """To train (labels given, gradients on), the loss comes from `inner_product_cross_entropy`,
        which never builds the (B, N + 1) scores (1.6x faster at Retailrocket's size); scores is then
        None. Otherwise the scores, and the loss from them when labels are given. With the repeat
        decoder on (config `repeat`; the subclass builds `self.repeat_decoder`), its mixture."""
        if getattr(self, "repeat_decoder", None) is not None:
            decoded = self._decoded(batch, labels)
            return decoded.scores, decoded.loss
        vectors = self.session_vector(batch)
        if labels is not None and torch.is_grad_enabled():
            return None, inner_product_cross_entropy(vectors, self.embedding.weight, labels)
        scores = vectors @ self.embedding.weight.T  # (B, N + 1)
        scores[:, 0] = -torch.inf  # padding is no candidate (in place: the matmul's backward needs no output)
        return scores, cross_entropy(scores, labels)

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None) -> RepeatOutput:
        """The repeat/explore decoder on the inner-product scores."""
        vectors = self.session_vector(batch)
        return self.repeat_decoder(vectors, self.embedding.weight, vectors, self.embedding.weight, batch.items, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self.session_vector(batch.to(self.device))

    def item_vectors(self) -> torch.Tensor:
        return self.embedding.weight.detach().clone()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Full-catalogue cross-entropy (the padding column drops out through its -inf logit); None
    without labels. The default loss of the neural models."""
    return None if labels is None else nn.functional.cross_entropy(logits, labels)

