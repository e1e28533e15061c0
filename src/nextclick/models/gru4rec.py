"""GRU4Rec as its authors run it (Hidasi, Karatzoglou, Baltrunas, Tikk, ICLR 2016; Hidasi & Karatzoglou,
CIKM 2018; official PyTorch code github.com/hidasib/GRU4Rec_PyTorch_Official, gru4rec_pytorch.py).

What it computes (model_zoo.md 2.8), one GRU layer with a constrained embedding (the input vector of an
item is its output vector, as in all of the authors' published best settings):
    h_t = GRU(dropout_e(W_y[x_t]), h_{t-1});   z_j = <W_y[j], h_t> + b_j
Training is session-parallel (`SessionParallelStream`): B sessions side by side, in file (time) order;
each step feeds every active session's current click and predicts its next one; a finished session's
slot takes the next session and its hidden state is zeroed; no prefix augmentation, no BPTT across
steps; the hidden state carried forward is the one after hidden dropout (as the code). A step scores
the B targets of the step (each row's own target on the diagonal, the others as negatives) and
`n_sample` extra items drawn from popularity^`sample_alpha`, shared by the step. Losses:
- "cross-entropy": softmax over those columns, with the logQ correction `logq` (scores minus
  logq * log popularity; sampled columns use popularity^sample_alpha, as the code does);
- "bpr-max": -log sum_j s_j sigmoid(z_i - z_j) + bpreg sum_j s_j z_j^2, s = softmax over the negatives,
  scores first through ELU(elu_param) when elu_param > 0.
The loss is summed over the step and divided by the configured batch size (the code's normalisation,
also when the last steps hold fewer sessions). Optimiser: Adagrad with momentum applied to the rows a
step touches only (`AdagradMomentum`, the code's IndexedAdagradM); init U(+-sqrt(6 / (fan_in + fan_out)))
with the GRU's three gates scaled as the code does; biases zero.

Defaults are the official class's; `PRESETS` holds the authors' published best settings per dataset
(paramfiles/*_best.py): `nextclick bench gru4rec -d retailrocket --preset retailrocket`.

Where we differ, and why:
- Evaluation ranks the full catalogue for every prefix of the protocol, as for every model, by running
  the GRU over the prefix (the code's evaluation steps through test sessions the same way).
- Negative samples are drawn per step from a seeded generator (the code pre-draws a cache of them); the
  distribution is the same.
- Only the constrained-embedding form is implemented (all published best settings use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.data.streams import StreamOptions
from nextclick.models.neural import NeuralModel


@dataclass(frozen=True)
class GRU4RecConfig:
    loss: Literal["cross-entropy", "bpr-max"] = "cross-entropy"  # official class default
    hidden_size: int = 100  # layers=[100]
    dropout_embedding: float = 0.0  # dropout_p_embed
    dropout_hidden: float = 0.0  # dropout_p_hidden
    n_sample: int = 2048  # extra negatives per step, popularity^sample_alpha
    sample_alpha: float = 0.5
    logq: float = 0.0  # cross-entropy's popularity correction
    bpreg: float = 1.0  # bpr-max's score regularisation
    elu_param: float = 0.5  # bpr-max's ELU on the scores (0: none)
    lr: float = 0.05  # learning_rate (Adagrad)
    momentum: float = 0.0
    batch_size: int = 64  # sessions side by side
    epochs: int = 10  # n_epochs
    max_length: int | None = None  # evaluation reads whole prefixes
    shuffle: bool = False  # sessions in time (file) order, as the code's session_order='time'


# paramfiles/<dataset>_*_best.py of the official repository
PRESETS: dict[str, dict] = {
    "diginetica": dict(loss="bpr-max", hidden_size=512, batch_size=128, dropout_embedding=0.5, dropout_hidden=0.3,
                       lr=0.05, momentum=0.15, n_sample=2048, sample_alpha=0.3, bpreg=0.9, elu_param=1.0, logq=0.0),
    "retailrocket": dict(loss="bpr-max", hidden_size=224, batch_size=80, dropout_embedding=0.5, dropout_hidden=0.05,
                         lr=0.05, momentum=0.4, n_sample=2048, sample_alpha=0.4, bpreg=1.95, elu_param=0.5, logq=0.0),
    "yoochoose": dict(loss="cross-entropy", hidden_size=480, batch_size=48, dropout_embedding=0.0, dropout_hidden=0.2,
                      lr=0.07, momentum=0.0, n_sample=2048, sample_alpha=0.2, bpreg=0.0, elu_param=0.0, logq=1.0),
}


@dataclass(frozen=True)
class SessionStep(Batch):
    """One step of session-parallel training: `items` (M,) the current click of each active session,
    `labels` (M,) its next click, `samples` (S,) extra negatives; before the step the carried hidden
    state keeps the slots in `keep` (a mask over the previous step's slots) and is zeroed where `reset`."""

    samples: torch.Tensor
    reset: torch.Tensor
    keep: torch.Tensor


class SessionParallelStream:
    """Session-parallel mini-batches over the training sessions behind the cases, in file (time) order,
    as the official SessionDataIterator: a per-step loop (each step is one batch), no per-case loop."""

    def __init__(self, cases: Cases, options: StreamOptions, n_sample: int, sampling: np.ndarray):
        used = np.unique(cases.session)  # the carve's training sessions (a random-case carve keeps them all)
        self.sessions: Sessions = cases.sessions.select(used)
        self.options, self.n_sample = options, n_sample
        self.cumulative = np.cumsum(sampling) / sampling.sum()  # (n_items + 1,), popularity^alpha; item 0 has 0

    def cases(self, epoch: int) -> int:
        predicted = int(np.maximum(self.sessions.lengths - 1, 0).sum())
        if self.options.max_batches:
            return min(predicted, self.options.max_batches * self.options.batch_size)
        return predicted

    def batches(self, epoch: int) -> Iterator[SessionStep]:
        rng = np.random.default_rng([self.options.seed, epoch, 2])
        offsets, items = self.sessions.offsets, self.sessions.items
        n_sessions, size = len(self.sessions), min(self.options.batch_size, len(self.sessions))
        order = rng.permutation(n_sessions) if self.options.shuffle else np.arange(n_sessions)
        slots = np.arange(size)
        start, end = offsets[order[slots]].copy(), offsets[order[slots] + 1].copy()
        next_session = size
        reset, keep = np.ones(size, dtype=bool), np.ones(size, dtype=bool)
        steps = 0
        while True:
            for i in range(int((end - start).min()) - 1):
                if self.options.max_batches and steps >= self.options.max_batches:
                    return
                current, following = items[start + i], items[start + i + 1]
                samples = np.searchsorted(self.cumulative, rng.random(self.n_sample), side="right")
                yield SessionStep(items=torch.from_numpy(current.astype(np.int64)),
                                  lengths=torch.ones(len(current), dtype=torch.int64),
                                  labels=torch.from_numpy(following.astype(np.int64)),
                                  full_lengths=torch.ones(len(current), dtype=torch.int64),
                                  samples=torch.from_numpy(np.minimum(samples, len(self.cumulative) - 1)),
                                  reset=torch.from_numpy(reset), keep=torch.from_numpy(keep))
                reset, keep = np.zeros(len(current), dtype=bool), np.ones(len(current), dtype=bool)
                steps += 1
            start += int((end - start).min()) - 1
            finished = end - start <= 1
            slots = slots.copy()
            slots[finished] = next_session + np.arange(finished.sum())
            next_session += int(finished.sum())
            valid = slots < n_sessions
            if not valid.any() or (self.n_sample == 0 and valid.sum() < 2):
                return
            refill = finished & valid
            start[refill] = offsets[order[slots[refill]]]
            end[refill] = offsets[order[slots[refill]] + 1]
            reset, keep = finished[valid], valid
            slots, start, end = slots[valid], start[valid], end[valid]


class AdagradMomentum(torch.optim.Optimizer):
    """Adagrad with momentum, as the official IndexedAdagradM: acc += g^2; m = momentum m - lr g /
    sqrt(acc + eps); p += m (plain Adagrad without momentum). With a sparse gradient only the rows it
    names are touched: their accumulators, momenta and values; other rows do not move."""

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6):
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p)
                    if momentum > 0:
                        state["mom"] = torch.zeros_like(p)
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()  # the update is not linear: one value per row
                    rows, values = grad.indices()[0], grad.values()
                    acc = state["acc"][rows] + values.pow(2)
                    state["acc"].index_copy_(0, rows, acc)
                    update = values / acc.add(eps).sqrt()
                    if momentum > 0:
                        update = state["mom"][rows].mul(momentum).add_(update, alpha=-lr)
                        state["mom"].index_copy_(0, rows, update)
                        p.index_add_(0, rows, update)
                    else:
                        p.index_add_(0, rows, update, alpha=-lr)
                else:
                    state["acc"].add_(grad.pow(2))
                    denominator = state["acc"].add(eps).sqrt()
                    if momentum > 0:
                        state["mom"].mul_(momentum).addcdiv_(grad, denominator, value=-lr)
                        p.add_(state["mom"])
                    else:
                        p.addcdiv_(grad, denominator, value=-lr)


def init_uniform_(tensor: torch.Tensor, gates: int = 1) -> torch.Tensor:
    """U(+-sqrt(6 / (fan_in + fan_out))) with one fan divided by the number of gates stacked in the matrix
    (the code's init_parameter_matrix(dim1_scale=3); torch stores GRU weights as (3H, in))."""
    rows, columns = tensor.shape
    bound = math.sqrt(6.0 / (rows / gates + columns))
    return nn.init.uniform_(tensor, -bound, bound)


class GRU4Rec(NeuralModel):
    name = "gru4rec"
    presets = PRESETS
    Config = GRU4RecConfig
    citation = "Hidasi et al., Session-based Recommendations with Recurrent Neural Networks, ICLR 2016 (official PyTorch code)"

    def __init__(self, n_items: int, config: GRU4RecConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        self.output = nn.Embedding(n_items + 1, c.hidden_size, sparse=True)  # W_y, also the input (constrained)
        self.bias = nn.Embedding(n_items + 1, 1, sparse=True)  # b_y
        self.cell = nn.GRUCell(c.hidden_size, c.hidden_size)
        self.dropout_embedding = nn.Dropout(c.dropout_embedding)
        self.dropout_hidden = nn.Dropout(c.dropout_hidden)
        self.register_buffer("popularity", torch.zeros(n_items + 1))  # training clicks per item (logQ, sampling)
        with torch.no_grad():
            init_uniform_(self.cell.weight_ih, gates=3)
            init_uniform_(self.cell.weight_hh, gates=3)
            self.cell.bias_ih.zero_()
            self.cell.bias_hh.zero_()
            init_uniform_(self.output.weight)
            self.bias.weight.zero_()
        self._hidden: torch.Tensor | None = None  # the carried state of session-parallel training (not saved)

    def prepare(self, train: Sessions) -> None:
        counts = np.bincount(train.items, minlength=self.n_items + 1).astype(np.float32)
        counts[0] = 0.0
        self.popularity.copy_(torch.from_numpy(counts))

    def training_stream(self, cases: Cases, options: StreamOptions) -> SessionParallelStream:
        counts = self.popularity.cpu().numpy().astype(np.float64)
        sampling = np.where(counts > 0, counts ** self.config.sample_alpha, 0.0)  # never an unseen item, even at alpha 0
        return SessionParallelStream(cases, options, self.config.n_sample, sampling)

    def optimizer(self) -> torch.optim.Optimizer:
        return AdagradMomentum(self.parameters(), lr=self.config.lr, momentum=self.config.momentum)

    # -- training: one session-parallel step --
    def _step_loss(self, step: SessionStep) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if step.reset.all() or self._hidden is None:
            hidden = step.items.new_zeros(len(step), c.hidden_size, dtype=torch.float32)
        else:
            hidden = self._hidden[step.keep].masked_fill(step.reset.unsqueeze(1), 0.0)
        columns = torch.cat([step.labels, step.samples])  # (M + S,): the step's targets, then the samples
        rows = self.output(torch.cat([step.items, columns]))  # one lookup (the code's embed_contrained)
        inputs, outputs = rows[: len(step)], rows[len(step):]
        hidden = self.dropout_hidden(self.cell(self.dropout_embedding(inputs), hidden.detach()))  # (M, d)
        self._hidden = hidden.detach()
        scores = hidden @ outputs.T + self.bias(columns).T  # (M, M + S), row i's target in column i
        if c.loss == "cross-entropy":
            loss = self._cross_entropy(scores, columns, len(step))
        else:
            loss = self._bpr_max(scores)
        return scores, loss / c.batch_size

    def _cross_entropy(self, scores: torch.Tensor, columns: torch.Tensor, m: int) -> torch.Tensor:
        if self.config.logq > 0:
            prior = torch.cat([self.popularity[columns[:m]], self.popularity[columns[m:]] ** self.config.sample_alpha])
            scores = scores - self.config.logq * torch.log(prior)
        log_probabilities = torch.log_softmax(scores, dim=1)
        return -log_probabilities.diagonal().sum()

    def _bpr_max(self, scores: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.elu_param > 0:
            scores = F.elu(scores, c.elu_param)
        negative = 1.0 - torch.eye(*scores.shape, device=scores.device)  # (M, M + S), 0 at each row's target
        weights = torch.softmax(scores.masked_fill(negative == 0, -torch.inf), dim=1)  # softmax over negatives
        target = scores.diagonal().unsqueeze(1)
        ranking = -torch.log((torch.sigmoid(target - scores) * weights).sum(dim=1) + 1e-24)
        return (ranking + c.bpreg * (scores.pow(2) * weights).sum(dim=1)).sum()

    # -- scoring a prefix: the GRU over its clicks --
    def _final_state(self, batch: Batch) -> torch.Tensor:
        """h_t (B, d) after each right-aligned prefix (padding steps leave the zero state as it is)."""
        hidden = batch.items.new_zeros(len(batch), self.config.hidden_size, dtype=torch.float32)
        embedded = self.dropout_embedding(self.output(batch.items))  # (B, L, d)
        mask = batch.mask.unsqueeze(-1)  # (B, L, 1)
        for column in range(batch.items.shape[1]):
            stepped = self.dropout_hidden(self.cell(embedded[:, column], hidden))
            hidden = torch.where(mask[:, column], stepped, hidden)
        return hidden

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """On a SessionStep (training): scores over [the step's targets; samples] and the loss. On a
        prefix batch: scores over the catalogue (column 0, padding, -inf)."""
        if isinstance(batch, SessionStep):
            return self._step_loss(batch)
        scores = self._final_state(batch) @ self.output.weight.T + self.bias.weight.T  # (B, N + 1)
        scores[:, 0] = -torch.inf
        return scores, None if labels is None else F.cross_entropy(scores, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        """[h_t; 1], so that scores = query_vectors @ item_vectors().T with item vectors [W_y | b_y]."""
        with self.evaluating():
            hidden = self._final_state(batch.to(self.device))
            return torch.cat([hidden, hidden.new_ones(len(hidden), 1)], dim=1)

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([self.output.weight, self.bias.weight], dim=1).detach().clone()
