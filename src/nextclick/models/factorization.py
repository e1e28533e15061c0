"""Factorisation baselines: BPR-MF and FPMC, trained with BPR on uniformly sampled negatives.

BPR-MF (Rendle et al., UAI 2009), as the session baseline of GRU4Rec (ICLR 2016) and NARM (CIKM 2017).
    Each training session is a user u with a factor p_u; items have factors q_i (and, optionally, a bias
    b_i); BPR maximises Σ ln σ(x_ui − x_uj) over (session, clicked item i, random item j), x_ui = <p_u, q_i>.
    A new session has no factor, so (NARM §4.2's adaptation, GRU4Rec's baselines.py) its vector is the
    mean of the factors of the items clicked so far: z_j = <mean_k q_{x_k}, q_j> (+ b_j) (model_zoo.md 2.4).
FPMC (Rendle, Freudenthaler & Schmidt-Thieme, WWW 2010), in session mode (model_zoo.md 2.5): the session
    is the user and the basket is the last click l, z(u, l, i) = <v^{UI}_u, v^{IU}_i> + <v^{IL}_i, v^{LI}_l>,
    trained with S-BPR on (session, last click, next click, random item).
    A new session has no user factor. `session_term` says what we do about it:
    - "none" (default): no user term at all, in training and inference, so FPMC is the factorised Markov
      chain z_i = <v^{IL}_i, v^{LI}_l>. That is the model NARM evaluated (it drops the user term at
      inference), without training a per-session term that inference never uses (model_zoo.md §6).
    - "train-only": NARM's literal recipe: per-session user factors are trained, then dropped at inference.
    - "prefix-mean": the session's user factor is the mean of learned item factors over its prefix, in
      training and at inference alike (NARM's BPR-MF adaptation built into FPMC; our variant).

Training, ours: vectorised mini-batches with autograd on sparse embeddings. BPR-MF uses plain SGD on the
summed loss, so every sampled triple gets the full per-triple step of GRU4Rec's baseline (10 epochs,
lr 0.01, 100 factors, uniform init ±0.05, no L2, no effective bias). That baseline draws its negative as
the item of a random row among the first n_items rows of the click log (an accident of indexing, roughly
popularity-weighted); we draw negatives uniformly from the catalogue, as BPR does. FPMC uses (sparse) Adam, lr 0.005, 100 factors, init N(0, 0.01),
no L2, one negative, as DSAN's FPMC run (dsan_reference.md 5.9). Training samples come from the full
training sessions: every click (BPR-MF) or every transition (FPMC), also on Retailrocket whose protocol
scores prefixes of length >= 2 only. The bench chooses the number of epochs on validation HR@20 (a fixed subset of at most 20,000 cases;
stop after `patience` epochs without gain; nextclick.runs.select) and writes that number into the
config, so the refit on all training sessions trains as long.
Items never clicked in training keep their initial factors except for negative-sample updates; the
popularity tie-break (below 1e-9 of the click share) orders exact ties.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nextclick.data.batches import make_batch
from nextclick.data.padded import PaddedPrefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models.base import EpochEnd, StatisticalModel, item_rows
from nextclick.models.config import MAX_SESSION_LENGTH
from nextclick.models.knn import click_counts, popularity_tie_break


def _prefix_mean(table: torch.Tensor | nn.Embedding, items: torch.Tensor) -> torch.Tensor:
    """(B, L) right-aligned item ids -> (B, D) mean of their rows (padding 0 excluded)."""
    rows = table(items) if isinstance(table, nn.Module) else table[items]  # (B, L, D)
    mask = (items != 0).unsqueeze(-1).to(rows.dtype)
    return (rows * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _finish(scores: torch.Tensor, popularity: np.ndarray) -> torch.Tensor:
    """(B, n_items + 1) float scores -> float64 with the popularity tie-break and -inf padding."""
    scores = scores.to(torch.float64) + torch.from_numpy(popularity_tie_break(popularity))
    scores[:, 0] = -torch.inf
    return scores


class _PairwiseModel(StatisticalModel):
    """BPR training loop shared by BPR-MF and FPMC: epochs of shuffled mini-batches. Subclasses define
    the network, the samples and `_export`."""

    trains_in_epochs = True  # the bench chooses `epochs` on validation through `fit(..., epoch_end=...)`
    popularity: np.ndarray | None = None

    def _network(self, sessions: Sessions) -> nn.Module:
        raise NotImplementedError

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def _samples(self, sessions: Sessions):
        """The positives of one epoch (anything with a length, indexed by `_loss`)."""
        raise NotImplementedError

    def _loss(self, network: nn.Module, cases: Cases, chosen: np.ndarray, negatives: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _export(self, network: nn.Module) -> None:
        """Copy the inference arrays (the checkpointed state) out of the network."""
        raise NotImplementedError

    def fit(self, train: Cases, *, progress: bool = False, epoch_end: EpochEnd | None = None) -> _PairwiseModel:
        """`config.epochs` epochs of BPR on the training sessions; after each, `epoch_end(epoch, record)`
        (when given) may stop the training (the bench selects the number of epochs there)."""
        config = self.config
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        sessions = train.sessions
        self.popularity = click_counts(sessions, self.n_items)
        network = self._network(sessions)
        optimizer = self._optimizer(network)
        samples = self._samples(sessions)
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            order = rng.permutation(len(samples))
            total = 0.0
            bar = tqdm(range(0, len(order), config.batch_size), desc=f"{self.name} epoch {epoch}",
                       disable=not progress, leave=False)
            for first in bar:
                chosen = order[first : first + config.batch_size]
                negatives = torch.from_numpy(rng.integers(1, self.n_items + 1, size=len(chosen)))
                loss = self._loss(network, samples, chosen, negatives)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            bar.close()
            self._export(network)
            record = {"epoch": epoch, "loss": round(total / len(samples), 5), "seconds": round(time.perf_counter() - start, 2)}
            if epoch_end is not None and epoch_end(epoch, record):
                break
        return self


# ---------------------------------------------------------------------------------------------------
# BPR-MF
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BPRMFConfig:
    factors: int = 100  # GRU4Rec baselines.py BPR n_factors (model_zoo.md 2.4)
    epochs: int = 10  # n_iterations of the same baseline; with validation cases: the most, selected by HR@20
    learning_rate: float = 0.01  # plain SGD, a full step per sampled triple (same baseline)
    regularization: float = 0.0  # L2 per step on the factors in play (same baseline: lambda_session = lambda_item = 0)
    init_scale: float = 0.05  # factors start uniform in [-σ, σ] (same baseline: sigma, init_normal=False)
    learn_item_bias: bool = False  # b_i (Rendle's BPR-MF has none; GRU4Rec's baseline allocates it, never updates it)
    batch_size: int = 1024  # triples per vectorised SGD step (ours; the loss is summed, not averaged)
    patience: int = 2  # epochs without validation gain before stopping (ours; only with validation cases)
    seed: int = 1


class _BPRNetwork(nn.Module):
    def __init__(self, n_sessions: int, n_items: int, config: BPRMFConfig):
        super().__init__()
        self.session_factors = nn.Embedding(n_sessions, config.factors, sparse=True)  # p_u
        self.item_factors = nn.Embedding(n_items + 1, config.factors, sparse=True)  # q_i
        self.item_bias = nn.Embedding(n_items + 1, 1, sparse=True)  # b_i, stays 0 unless config.learn_item_bias
        for table in (self.session_factors, self.item_factors):
            nn.init.uniform_(table.weight, -config.init_scale, config.init_scale)
        nn.init.zeros_(self.item_bias.weight)


class BPRMF(_PairwiseModel):
    name = "bpr-mf"
    Config = BPRMFConfig
    citation = "BPR-MF (Rendle et al., UAI 2009) with NARM's (CIKM 2017) session = mean of its items' factors"
    state_fields = ("item_factors", "item_bias", "popularity")
    state_checks = {**StatisticalModel.state_checks, "item_factors": item_rows("factors"), "item_bias": item_rows()}

    item_factors: np.ndarray | None = None  # (n_items + 1, factors) float32
    item_bias: np.ndarray | None = None  # (n_items + 1,) float32, zeros without config.learn_item_bias

    def _network(self, sessions: Sessions) -> nn.Module:
        return _BPRNetwork(len(sessions), self.n_items, self.config)

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(network.parameters(), lr=self.config.learning_rate)

    def _samples(self, sessions: Sessions) -> "_Clicks":
        return _Clicks.of(sessions)  # every click is a positive for its session

    def _loss(self, network: _BPRNetwork, samples: "_Clicks", chosen: np.ndarray, negatives: torch.Tensor) -> torch.Tensor:
        users = torch.from_numpy(samples.session[chosen])
        positives = torch.from_numpy(samples.item[chosen])
        user, positive, negative = network.session_factors(users), network.item_factors(positives), network.item_factors(negatives)
        margin = (user * (positive - negative)).sum(-1)
        if self.config.learn_item_bias:
            margin = margin + (network.item_bias(positives) - network.item_bias(negatives)).squeeze(-1)
        loss = -nn.functional.logsigmoid(margin).sum()
        if self.config.regularization:
            loss = loss + 0.5 * self.config.regularization * (user.pow(2).sum() + positive.pow(2).sum() + negative.pow(2).sum())
        return loss

    def _export(self, network: _BPRNetwork) -> None:
        self.item_factors = network.item_factors.weight.detach().numpy().copy()
        self.item_bias = network.item_bias.weight.detach().numpy()[:, 0].copy()

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        factors = torch.from_numpy(self.item_factors)
        session = _prefix_mean(factors, torch.from_numpy(prefixes.items))  # (B, D): NARM's session vector
        return _finish(session @ factors.T + torch.from_numpy(self.item_bias), self.popularity).numpy()


@dataclass(frozen=True)
class _Clicks:
    """Every training click as (session, item): BPR-MF's positives."""

    session: np.ndarray  # (n_clicks,) int64
    item: np.ndarray  # (n_clicks,) int64

    @classmethod
    def of(cls, sessions: Sessions) -> _Clicks:
        return cls(sessions.session_of_click(), sessions.items.astype(np.int64))

    def __len__(self) -> int:
        return len(self.item)


# ---------------------------------------------------------------------------------------------------
# FPMC
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FPMCConfig:
    factors: int = 100  # DSAN's FPMC run (dsan_reference.md 5.9: emb 100)
    epochs: int = 20  # the most epochs (ours; DSAN stopped on 3 evaluations without gain, every 100 steps)
    learning_rate: float = 0.005  # Adam (DSAN's FPMC run)
    regularization: float = 0.0  # L2 on the factors in play (DSAN's run: 0)
    init_scale: float = 0.01  # factors start N(0, σ) (DSAN's run: truncated normal 0.01)
    batch_size: int = 512  # transitions per Adam step (ours; DSAN used 128, slow on CPU)
    session_term: Literal["none", "train-only", "prefix-mean"] = "none"  # see the module docstring
    patience: int = 2  # epochs without validation gain before stopping (ours; only with validation cases)
    seed: int = 1


class _FPMCNetwork(nn.Module):
    def __init__(self, n_sessions: int, n_items: int, config: FPMCConfig):
        super().__init__()
        width, factors = n_items + 1, config.factors
        self.item_to_last = nn.Embedding(width, factors, sparse=True)  # v^{IL}_i: candidate, MC term
        self.last_to_item = nn.Embedding(width, factors, sparse=True)  # v^{LI}_l: last click, MC term
        self.session_term = config.session_term
        if config.session_term != "none":
            self.item_to_user = nn.Embedding(width, factors, sparse=True)  # v^{IU}_i: candidate, user term
            if config.session_term == "train-only":
                self.user_to_item = nn.Embedding(n_sessions, factors, sparse=True)  # v^{UI}_u per training session
            else:
                self.user_to_item = nn.Embedding(width, factors, sparse=True, padding_idx=0)  # averaged over the prefix
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, config.init_scale)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def user(self, sessions: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor | None:
        if self.session_term == "train-only":
            return self.user_to_item(sessions)
        if self.session_term == "prefix-mean":
            return _prefix_mean(self.user_to_item, prefixes)
        return None

    def margin(self, sessions, prefixes, positives, negatives) -> tuple[torch.Tensor, list[torch.Tensor]]:
        last = self.last_to_item(prefixes[:, -1])
        positive, negative = self.item_to_last(positives), self.item_to_last(negatives)
        margin = (last * (positive - negative)).sum(-1)
        used = [last, positive, negative]
        user = self.user(sessions, prefixes)
        if user is not None:
            positive_user, negative_user = self.item_to_user(positives), self.item_to_user(negatives)
            margin = margin + (user * (positive_user - negative_user)).sum(-1)
            used += [user, positive_user, negative_user]
        return margin, used


class FPMC(_PairwiseModel):
    name = "fpmc"
    Config = FPMCConfig
    citation = "FPMC (Rendle, Freudenthaler & Schmidt-Thieme, WWW 2010), session as user, last click as basket"
    state_fields = ("item_to_last", "last_to_item", "item_to_user", "user_to_item", "popularity")
    state_checks = {**StatisticalModel.state_checks, "item_to_last": item_rows("factors"),
                    "last_to_item": item_rows("factors"), "item_to_user": item_rows("factors", optional=True),
                    "user_to_item": item_rows("factors", optional=True)}

    item_to_last: np.ndarray | None = None  # (n_items + 1, factors) v^{IL}
    last_to_item: np.ndarray | None = None  # (n_items + 1, factors) v^{LI}
    item_to_user: np.ndarray | None = None  # (n_items + 1, factors) v^{IU}, or (0, factors) without a user term
    user_to_item: np.ndarray | None = None  # (n_items + 1, factors) item rows averaged into v^{UI}, or (0, factors)

    def _network(self, sessions: Sessions) -> nn.Module:
        return _FPMCNetwork(len(sessions), self.n_items, self.config)

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SparseAdam(list(network.parameters()), lr=self.config.learning_rate)

    def _samples(self, sessions: Sessions) -> Cases:
        return Cases.every_prefix(sessions, 1)  # every transition (last click -> next click)

    def _loss(self, network: _FPMCNetwork, samples: Cases, chosen: np.ndarray, negatives: torch.Tensor) -> torch.Tensor:
        # the prefix mean reads at most the last MAX_SESSION_LENGTH clicks, as scoring does
        width = MAX_SESSION_LENGTH if self.config.session_term == "prefix-mean" else 1
        batch = make_batch(samples, chosen, max_length=width)
        sessions = torch.from_numpy(samples.session[chosen])
        margin, used = network.margin(sessions, batch.items, batch.labels, negatives)
        loss = -nn.functional.logsigmoid(margin).sum() / len(chosen)
        if self.config.regularization:
            loss = loss + 0.5 * self.config.regularization * sum(t.pow(2).sum() for t in used) / len(chosen)
        return loss

    def _export(self, network: _FPMCNetwork) -> None:
        self.item_to_last = network.item_to_last.weight.detach().numpy().copy()
        self.last_to_item = network.last_to_item.weight.detach().numpy().copy()
        empty = np.zeros((0, self.config.factors), dtype=np.float32)
        if self.config.session_term == "prefix-mean":
            self.item_to_user = network.item_to_user.weight.detach().numpy().copy()
            self.user_to_item = network.user_to_item.weight.detach().numpy().copy()
        else:  # "train-only" drops its user term at inference, "none" has none
            self.item_to_user, self.user_to_item = empty, empty.copy()

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        items = torch.from_numpy(prefixes.items)  # (B, L)
        last = torch.from_numpy(self.last_to_item)[items[:, -1]]  # (B, D)
        scores = last @ torch.from_numpy(self.item_to_last).T  # (B, n_items + 1)
        if len(self.user_to_item):
            user = _prefix_mean(torch.from_numpy(self.user_to_item), items)
            scores = scores + user @ torch.from_numpy(self.item_to_user).T
        return _finish(scores, self.popularity).numpy()
