"""One contract for every model, neural or not.

    model = Model(n_items, config)            # stores parameters only
    model.prepare(train_sessions)             # before training: tables built from the training sessions
    model.fit(train_cases)                    # statistical models learn here; returns self
    scores, loss = model(batch, labels)       # neural models: one call for the trainer (and DDP); scores
                                              # may be None in training (a loss that never builds them)
    model.score(batch) -> (B, n_items + 1)    # higher is better; column 0 (padding) is -inf
    model.recommend(prefixes, k)              # top-k on top of the scores

Neural models (models/neural.py) are `torch.nn.Module`s trained by `nextclick.training`; they choose
what a training epoch is made of (`training_stream`: prefix cases in padded batches by default) and how
its batches are built (`collate`). Inner-product models also give `query_vectors(batch)` and
`item_vectors()`, so that `score(batch)[:, 1:] == query_vectors(batch) @ item_vectors()[1:].T`
(serving's top-K index uses them).
Statistical models (here) compute their arrays in `fit` and score in numpy (`score_prefixes`); `score`
hands the same numbers to the evaluator as a tensor, and `recommend` ranks them in numpy. Their arrays
are the checkpoint (`state_arrays`), so every checkpoint is safetensors + JSON. This module imports no
torch, nor do POP, S-POP and the kNN family: loading one of them and recommending (`nextclick
recommend`, `nextclick.load` + `nextclick.recommend`) takes 0.4-0.9 s on a 2-core machine instead of
2.5-2.8 s, nearly all of it torch's import, which neural models (and BPR-MF and FPMC, which score
with torch) still pay.

Models sit below everything that drives them: nothing here (or in a model file) imports the trainer,
the evaluator, the search or the bench. A model's `fit` neither selects epochs nor tunes itself; a
statistical model that trains in epochs reports each one to `epoch_end`, and the caller decides.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from nextclick.data.padded import PaddedPrefixes, pad_prefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models.config import MAX_SESSION_LENGTH, check_config

if TYPE_CHECKING:
    import torch

    from nextclick.data.batches import Batch

# called after each epoch of a statistical model trained in epochs, with the epoch (1-based) and its
# record (loss, seconds); returns True to stop. The caller (nextclick.runs.select) evaluates there.
EpochEnd = Callable[[int, dict], bool]


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
        query_vectors give the explore side's query only; nor is a repeat calibration's bonus on the
        session's items (models/calibration.py)."""
        return (hasattr(self, "query_vectors") and getattr(self.config, "repeat", "off") == "off"
                and getattr(self, "calibration", None) is None)

    def prepare(self, train: Sessions) -> None:
        """Build what training needs from the training sessions (popularity for negatives, item graphs,
        memories, neighbour indexes) before the first epoch. Most models need nothing."""

    def score(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per session prefix (item indices, not external ids), best first; a k
        beyond the catalogue gives the whole catalogue."""
        raise NotImplementedError

    # -- state as tensors (checkpoints are safetensors, never pickle) --
    def state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


def check_k(k: int) -> None:
    """ValueError unless k is an integer >= 1 (True is no count)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")


def largest_in_rows(values: np.ndarray, k: int, *, ties_to_last: bool = False) -> np.ndarray:
    """(R, W) -> (R, W) bool, True at exactly k entries of every row (1 <= k <= W): its k largest values.
    Among values equal to the k-th largest, those nearest the row's start are kept (its end with
    `ties_to_last`): a rule, where np.argpartition and torch.topk keep whichever their selection
    algorithm happens to meet. No value may be NaN."""
    width = values.shape[1]
    kth = np.partition(values, width - k, axis=1)[:, width - k, None]  # (R, 1) each row's k-th largest
    keep = values > kth
    room = k - keep.sum(axis=1)  # (R,) places left for values equal to the k-th
    tied = values == kth
    crowded = np.flatnonzero(tied.sum(axis=1) > room)  # rows with more such values than places (rare)
    if len(crowded):
        ties = tied[crowded, ::-1] if ties_to_last else tied[crowded]
        first = ties & (np.cumsum(ties, axis=1) <= room[crowded, None])
        tied[crowded] = first[:, ::-1] if ties_to_last else first
    return keep | tied


# NEXTCLICK_COMPILED=0: no numba-compiled code (DSAN's serving encoder, top_items, the session kNN scores)
# even where numba is installed; tests/conftest.py sets it for all but the tests of the compiled forms
COMPILED_ENV = "NEXTCLICK_COMPILED"
_compiled_top_items: Callable | None = None  # models/top_compiled.py's, once use_compiled() ran


def use_compiled() -> bool:
    """From now on in this process, run the numba-compiled forms where numba is installed and
    NEXTCLICK_COMPILED is not 0: `top_items` (models/top_compiled.py: 0.03 against 0.21 ms for one
    37k-item row) and SKNN's, V-SKNN's and STAN's scores of a few prefixes (models/knn_compiled.py), each
    giving the array form's answer. For long-lived processes: loading the compiled code takes about 0.4 s, more than a
    one-shot `nextclick recommend` of a statistical model takes in all (serving calls it). True when on."""
    global _compiled_top_items
    if _compiled_top_items is None and os.environ.get(COMPILED_ENV, "1") != "0":
        try:
            from nextclick.models.top_compiled import top_columns
        except ImportError:
            return False
        _compiled_top_items = top_columns
    return _compiled_top_items is not None


def compiled_in_use() -> bool:
    """Whether `use_compiled` switched the compiled forms on in this process."""
    return _compiled_top_items is not None


def recent_clicks(prefixes: list[np.ndarray], max_length: int, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The most recent `max_length` clicks of every prefix (item indices, oldest first), concatenated,
    with how many each keeps and each prefix's whole length (positions count from the session's start):
    what the compiled encoders read. IndexError for an index outside 0..n_items, which compiled code
    would read unchecked."""
    full_lengths = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=len(prefixes))
    kept = np.minimum(full_lengths, max_length)
    parts = [np.asarray(p, dtype=np.int64)[len(p) - n :] for p, n in zip(prefixes, kept)]
    clicks = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(clicks) and (clicks.min() < 0 or clicks.max() > n_items):
        raise IndexError(f"item indices must be in 0..{n_items}; got {int(clicks.min())}..{int(clicks.max())}")
    return clicks, kept, full_lengths


def top_items(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, n_items + 1) scores -> (B, k) item indices and their scores, best first, k <= n_items; the
    padding column is never among them. Equal scores rank by item index, lower first, so that every
    caller (`recommend`, the CLI, serving) gets one order for a session."""
    if _compiled_top_items is not None:
        if not 1 <= k < scores.shape[1]:  # the compiled scan reads its rows without bounds checks
            raise ValueError(f"k must be in 1..{scores.shape[1] - 1} for these scores; got {k}")
        return _compiled_top_items(scores, k)
    items = scores[:, 1:]  # (B, N) item j + 1 in column j
    columns = candidate_columns(items, k)  # ascending per row
    values = np.take_along_axis(items, columns, axis=1)
    chosen = np.nonzero(largest_in_rows(values, k))[1].reshape(len(scores), k)
    columns, values = np.take_along_axis(columns, chosen, axis=1), np.take_along_axis(values, chosen, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")  # stable: equal scores stay in index order
    return np.take_along_axis(columns, order, axis=1) + 1, np.take_along_axis(values, order, axis=1)


# top_items looks at blocks of this many columns first: a row's k best values lie in the blocks whose
# maximum is among the k best block maxima (ties included), so it partitions a few hundred block maxima
# and about k blocks instead of the whole row. On a (16, 37k) batch: 1.2 ms against 5.6 ms for the
# whole-row selection; torch.topk, which serving used before the statistical models left torch, 2.2 ms.
BLOCK = 64


def candidate_columns(values: np.ndarray, k: int) -> np.ndarray:
    """(R, W) -> (R, C) column indices, ascending in every row, that hold every value of the row at least
    its k-th largest (so its k largest, ties included): the columns of the blocks of BLOCK whose maximum
    is at least the row's k-th largest block maximum, and the last, partial block. All W columns when
    there are no more than 2k blocks."""
    rows, width = values.shape
    blocks = width // BLOCK
    if blocks <= 2 * k:
        return np.broadcast_to(np.arange(width), (rows, width))
    maxima = values[:, : blocks * BLOCK].reshape(rows, blocks, BLOCK).max(axis=2)  # (R, blocks)
    kth = np.partition(maxima, blocks - k, axis=1)[:, blocks - k, None]  # each row's k-th largest maximum
    wanted = int((maxima >= kth).sum(axis=1).max())  # blocks the most crowded row needs (k, more with ties)
    chosen = np.sort(np.argpartition(-maxima, wanted - 1, axis=1)[:, :wanted], axis=1)  # (R, wanted)
    columns = (chosen[:, :, None] * BLOCK + np.arange(BLOCK)).reshape(rows, -1)
    tail = np.broadcast_to(np.arange(blocks * BLOCK, width), (rows, width - blocks * BLOCK))
    return np.concatenate([columns, tail], axis=1)


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
    """Base for non-neural models whose fitted state is a handful of arrays named in `state_fields`.
    Subclasses score padded prefixes in `score_prefixes`; `score` and `recommend` come from it."""

    state_fields: ClassVar[tuple[str, ...]] = ()
    state_checks: ClassVar[dict[str, StateCheck]] = {"popularity": item_rows()}  # every model keeps popularity

    def __init__(self, n_items: int, config: Any = None):
        self.n_items = n_items
        self.config = check_config(config if config is not None else self.Config())  # library callers too

    def fit(self, train: Cases, *, progress: bool = False, epoch_end: EpochEnd | None = None) -> StatisticalModel:
        """Learn from the training cases (their full sessions are at hand too); returns self."""
        raise NotImplementedError

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        """(B, n_items + 1) scores of the padded prefixes, higher is better, column 0 -inf: the one
        place a statistical model computes its scores."""
        raise NotImplementedError

    def score(self, batch: Batch) -> torch.Tensor:
        """`score_prefixes` as a tensor, for the evaluator and the trainer. torch is imported here, not with
        the module, so that `recommend` never loads it; whoever holds a Batch has loaded it already."""
        import torch

        scores = self.score_prefixes(batch.numpy())
        if len(scores) and scores.strides[0] == 0:  # one row for every prefix (POP): a view, not B copies
            return torch.from_numpy(scores[0].copy()).expand(len(scores), -1)
        return torch.from_numpy(scores)

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per session prefix, best first, equal scores by item index (`top_items`);
        numpy throughout, so that recommending from a loaded checkpoint needs no torch."""
        check_k(k)
        scores = self.score_prefixes(pad_prefixes(prefixes, self.max_length))
        return top_items(scores, min(k, self.n_items))

    # -- state: the checkpoint holds the arrays as they are --
    def state_arrays(self) -> dict[str, np.ndarray]:
        missing = [f for f in self.state_fields if getattr(self, f, None) is None]
        if missing:
            raise RuntimeError(f"{self.name} is not fitted (missing {', '.join(missing)})")
        return {f: np.ascontiguousarray(getattr(self, f)) for f in self.state_fields}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Take the arrays after `state_checks` pass (ValueError naming the first that does not)."""
        for f in self.state_fields:
            if f not in arrays:
                raise KeyError(f"checkpoint lacks {f!r} for {self.name}")
        arrays = {f: arrays[f] for f in self.state_fields}
        for f, check in self.state_checks.items():
            problem = check(arrays[f], self, arrays)
            if problem:
                raise ValueError(f"{f} {problem}")
        for f, array in arrays.items():
            setattr(self, f, array)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The arrays as tensors sharing their memory (the trainer's epoch selection and serving copy state so)."""
        import torch

        return {f: torch.from_numpy(array) for f, array in self.state_arrays().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_arrays({f: tensor.numpy() for f, tensor in tensors.items()})
