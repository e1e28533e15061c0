"""The base of the torch models: `NeuralModel` (a `torch.nn.Module` keeping the contract of
models/base.py), `ItemEmbeddingModel` for models that score by inner products with their item table, and
`ClickWeights`, what an attention model gives `nextclick explain`.

Statistical models (models/base.py) need none of this, and so no torch to load and recommend.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nextclick.data.batches import Batch, batch_from_prefixes, make_batch
from nextclick.data.sessions import Cases
from nextclick.data.streams import PrefixStream, Stream, StreamOptions
from nextclick.models.base import Recommender, check_k
from nextclick.models.calibration import RepeatCalibration
from nextclick.models.config import check_config
from nextclick.models.layers import inner_product_cross_entropy
from nextclick.models.repeat import RepeatOutput


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

    # a repeat calibration fitted after training (`nextclick calibrate --save`, models/calibration.py), which
    # `checkpoint.load` attaches: every ranking goes through `score`, so each applies it
    calibration: RepeatCalibration | None = None

    def score(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            batch = batch.to(self.device)
            scores = self(batch)[0]
            return scores if self.calibration is None else self.calibration.apply(scores, batch.items)

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per session prefix by torch.topk over the scores, padding excluded."""
        check_k(k)
        batch = batch_from_prefixes(prefixes, self.max_length)
        with torch.inference_mode():
            scores = self.score(batch).clone()
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, self.n_items), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()

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

