"""DSAN: Dual Sparse Attention Network (Yuan, Song, Sun, Wang, Zhao; AAAI 2021).

What it computes, as the official code does it (../shared/docs/dsan_reference.md section 2):
  C   = [item embedding ; position embedding] of the prefix plus a learned *target token* appended
        at position t+1 (positions count from the session start)                      (B, L+1, 2d)
  a1  = sigmoid(w_a . c_token) + 1                       one alpha per session, in (1, 2)
  SAN : Q = dropout(ReLU(W_q C)); A = a1-entmax(Q C^T / sqrt(2d)) over unmasked keys; O = A C;
        O = LayerNorm(O + dropout(FFN(O)))           keys and values are the raw embeddings C
  e_s = O[token] (the learned target embedding), E = O[clicks]
  a2  = sigmoid(w_a . e_s) + 1                           the same alpha head
  target attention: u_p = w_0 . ReLU(W_1 e_p + W_2 e_s + b); beta = a2-entmax(u) over real clicks;
        h_s = sum_p beta_p c_p                       values are the *input* embeddings c_p
  z   = dropout(SELU(W_z [h_s ; e_s]));  score_i = w_k * cos(z, item_i),  w_k = 20
  loss: cross-entropy over items 1..N plus the target-token row (a permanent negative).

Faithful defaults (dsan_reference.md 2.2-2.8): d = 100 for items and positions, max_norm 1.5, N(0,1)
embedding init, dropout 0.5 on Q, on the FFN output and on z, Adam(lr 1e-3, amsgrad), batch 512,
`entmax_bisect` with 50 iterations, alpha guard 1 -> 1.0001, no truncation.

Session length: the official code reads whole prefixes; here a prefix keeps its most recent
`max_positions` clicks (512; `max_length` can lower it). Attention costs L^2 per session, so an
uncapped 20,000-click session took minutes and gigabytes. The longest prefix of the published splits is
284 clicks (Retailrocket training; 127 in any test set), so the cap changes no result on them.

Where nextclick differs, and why:
- Selection uses a validation split, not the test set (the official notebook picks its epoch on test).
- Evaluation ranks items 1..N; the target-token column, which the official ranking also includes and
  which is a trained negative, is not a candidate.
- Speed: a batch is the same random batch as the reference's, but its sessions are encoded in groups
  of similar length, each padded only to its own longest prefix instead of the global maximum (285 on
  Retailrocket). Masked keys get exactly zero weight, so this gives the same result as padding to
  285; tests check it. `fast_entmax` (off by default) finds entmax's threshold by Newton's method (2-6 steps, not 50 halvings).
Variants (paper Table 3; the paper's own definitions are not in our references, this is our reading):
  "ns" no sparse self-attention (E = C, e_s = the target token's input embedding),
  "nt" no target attention (z from e_s alone), "da" dense attention (softmax in both layers).
Figure 4's fixed alphas are `alpha=1.0 ... 2.0`; Figure 5's scale is `w_k`.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch
from nextclick.models.layers import (SELU_ALPHA, SELU_SCALE, alpha_entmax, alpha_entmax_numpy, embed_with_max_norm,
                                     full_precision, inner_product_cross_entropy, length_groups)
from nextclick.models.base import COMPILED_ENV, recent_clicks
from nextclick.models.neural import ClickWeights, NeuralModel
from nextclick.models.repeat import RepeatOutput, repeat_decoder, with_repeat_options


@dataclass(frozen=True)
@with_repeat_options
class DSANConfig:
    embedding_dim: int = 100  # item and position vectors, 100 each (dsan_reference.md 2.2)
    max_norm: float = 1.5  # nn.Embedding max_norm on both tables (2.2)
    max_positions: int = 512  # position table rows; official: longest prefix + 2 (RR 286). Longer sessions share the last row
    dropout: float = 0.5  # on Q, on the FFN output, on z (2.8)
    w_k: float = 20.0  # cosine scale (2.6; paper Figure 5)
    alpha: float | None = None  # None: adaptive alpha per session (2.4); a float fixes it (Figure 4; 1 = softmax)
    alpha_guard: float = 1.0001  # alpha exactly 1 replaced by this (RR notebook)
    variant: Literal["dsan", "ns", "nt", "da"] = "dsan"  # paper Table 3 ablations
    fast_entmax: bool = False  # reference entmax_bisect (50 halvings) unless set; True: Newton (layers._FastEntmax)
    # encode length groups separately: the same scores with much less padding, which pays on a CPU; on a
    # GPU, where DSAN is bound by kernel launches, one padded group makes a third of the operator calls
    # (docs/dsan.md). None: groups on a CPU only
    group_by_length: bool | None = None
    max_length: int | None = None  # official: no truncation; None keeps the last max_positions clicks
    lr: float = 1e-3  # Adam (2.8)
    amsgrad: bool = True  # (2.8)
    weight_decay: float = 0.0
    batch_size: int = 512
    epochs: int = 50  # official runs 50 epochs; we stop early on validation
    shuffle: bool = True


@dataclass
class Attention:
    """What DSAN attended to, for explanations: per session, over [clicks..., target token]."""

    self_attention: torch.Tensor  # (B, L+1, L+1), rows = queries, columns = keys
    target_attention: torch.Tensor  # (B, L), weight of each click (padding 0)
    alpha_self: torch.Tensor  # (B,)
    alpha_target: torch.Tensor  # (B,)
    items: torch.Tensor  # (B, L) the clicks (right-aligned, 0 = padding)


class DSAN(NeuralModel):
    name = "dsan"
    Config = DSANConfig
    neural = True
    citation = "Yuan et al., Dual Sparse Attention Network for Session-based Recommendation, AAAI 2021"
    # the same threshold in 2-6 Newton steps: a lone query's entmax cost falls from ~60% of its model call
    # to ~20% (docs/serving.md); tests/test_dsan.py checks the scores against the reference path
    serving_config = {"fast_entmax": True}

    @property
    def max_length(self) -> int:
        """The most recent clicks a prefix keeps: at most one per row of the position table."""
        return min(super().max_length, self.config.max_positions)

    @property
    def encoder_length(self) -> int:
        return min(super().encoder_length, self.config.max_positions)

    def __init__(self, n_items: int, config: DSANConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        d, width = c.embedding_dim, 2 * c.embedding_dim
        self.target_token = n_items + 1
        # rows: 0 padding, 1..N items, N+1 target token, N+2 unused (kept for parity with the official table)
        # max_norm 1.5 is applied at every lookup by embed_with_max_norm (the same rule as nn.Embedding's)
        self.item_embedding = nn.Embedding(n_items + 3, d, padding_idx=0)
        self.position_embedding = nn.Embedding(c.max_positions + 1, d, padding_idx=0)
        self.query = nn.Linear(width, width)
        nn.init.zeros_(self.query.bias)
        self.ffn_in = nn.Linear(width, width)
        self.ffn_out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.alpha_head = nn.Linear(width, 1)  # shared by both attention layers (2.4)
        self.key_weight = nn.Linear(width, width, bias=False)  # W_1
        self.target_weight = nn.Linear(width, width, bias=False)  # W_2
        self.attention_bias = nn.Parameter(torch.zeros(width))  # b_a, inside the ReLU
        self.attention_vector = nn.Linear(width, 1, bias=False)  # w_0
        for layer in (self.key_weight, self.target_weight, self.attention_vector):
            nn.init.normal_(layer.weight, 0.0, 0.05)  # (2.7)
        decoder_in = width if c.variant == "nt" else 2 * width
        self.decoder = nn.Linear(decoder_in, d)
        self.dropout = nn.Dropout(c.dropout)
        self.repeat_decoder = repeat_decoder(c, d, d)  # after the model's own init: off leaves it untouched

    # ---- alpha ------------------------------------------------------------------------------
    def _alpha(self, vector: torch.Tensor) -> torch.Tensor:
        """(B, 2d) -> (B,) alpha in (1, 2), or the fixed value."""
        c = self.config
        if c.variant == "da":
            return vector.new_ones(vector.shape[0])
        if c.alpha is not None:
            return vector.new_full((vector.shape[0],), float(c.alpha))
        # in float32 under bf16 autocast: there 1 + sigmoid(x) would round to steps of 1/128, an alpha below
        # 1.004 to exactly 1, and the guard's 1.0001 to 1 again (entmax would divide by alpha - 1 = 0)
        alpha = torch.sigmoid(full_precision(self.alpha_head(vector))).squeeze(-1) + 1.0
        return torch.where(alpha == 1.0, torch.full_like(alpha, c.alpha_guard), alpha)

    def _normalise(self, scores: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if self.config.variant == "da" or self.config.alpha == 1.0:
            return torch.softmax(full_precision(scores), dim=-1)  # float32 under autocast, as alpha_entmax
        shape = alpha.shape + (1,) * (scores.dim() - 1)
        return alpha_entmax(scores, alpha.reshape(shape), dim=-1, fast=self.config.fast_entmax)

    # ---- encoder ----------------------------------------------------------------------------
    def _indices(self, items: torch.Tensor, full_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item and position indices (B, L+1) for right-aligned clicks plus the target token."""
        batch, width = items.shape
        token = items.new_full((batch, 1), self.target_token)
        tokens = torch.cat([items, token], dim=1)  # (B, L+1)
        # column j of a right-aligned row holds click number full_length - (L-1-j), counted from 1
        offsets = torch.arange(-width + 1, 2, device=items.device)  # (L+1,): -(L-1) .. 0 for clicks, +1 for the token
        positions = (full_lengths.unsqueeze(1) + offsets.unsqueeze(0)).clamp(max=self.config.max_positions)
        return tokens, positions.masked_fill(tokens == 0, 0)

    def _embed(self, groups: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """C = [item ; position] embeddings for several (tokens, positions) groups in one lookup per
        table, so each table gets one gradient per batch rather than one per group."""
        tokens = torch.cat([t.reshape(-1) for t, _ in groups])
        positions = torch.cat([p.reshape(-1) for _, p in groups])
        flat = torch.cat([
            embed_with_max_norm(self.item_embedding, tokens, self.config.max_norm),
            embed_with_max_norm(self.position_embedding, positions, self.config.max_norm),
        ], dim=-1)  # (sum of b*(L+1), 2d)
        sizes = [t.numel() for t, _ in groups]
        return [part.view(*t.shape, -1) for part, (t, _) in zip(flat.split(sizes), groups)]

    def _encode_group(self, C: torch.Tensor, tokens: torch.Tensor, keep_attention: bool = False):
        """C (b, L+1, 2d) of right-aligned clicks + target token -> session vectors z (b, d) [+ Attention]."""
        c = self.config
        mask = tokens != 0  # (b, L+1); the target token is always a key of the self-attention
        items = tokens[:, :-1]
        alpha_self = self._alpha(C[:, -1])
        if c.variant == "ns":
            O, A = C, None
        else:
            Q = self.dropout(F.relu(self.query(C)))
            scores = Q @ C.transpose(1, 2) / math.sqrt(C.shape[-1])  # (b, L+1, L+1)
            scores = scores.masked_fill(~mask.unsqueeze(1), -torch.inf)
            A = self._normalise(scores, alpha_self)
            O = A @ C
            # the residual sum and LayerNorm's statistics in float32 (O is bf16 under autocast)
            O = self.norm(full_precision(O) + self.dropout(self.ffn_out(F.relu(self.ffn_in(O)))))
        target, clicks = O[:, -1], O[:, :-1]  # e_s (b, 2d), E (b, L, 2d)
        alpha_target = self._alpha(target)
        beta = None
        if c.variant == "nt":
            hidden = target
        else:
            u = self.attention_vector(
                F.relu(self.key_weight(clicks) + self.target_weight(target).unsqueeze(1) + self.attention_bias)
            ).squeeze(-1)  # (b, L)
            u = u.masked_fill(~mask[:, :-1], -torch.inf)
            beta = self._normalise(u, alpha_target)
            session = (beta.unsqueeze(-1) * C[:, :-1]).sum(dim=1)  # h_s (b, 2d)
            hidden = torch.cat([session, target], dim=-1)
        z = self.dropout(F.selu(self.decoder(hidden)))  # (b, d)
        if not keep_attention:
            return z, None
        return z, Attention(
            self_attention=A if A is not None else C.new_zeros(items.shape[0], items.shape[1] + 1, items.shape[1] + 1),
            target_attention=beta if beta is not None else C.new_zeros(items.shape),
            alpha_self=alpha_self, alpha_target=alpha_target, items=items,
        )

    def encode(self, batch: Batch) -> torch.Tensor:
        """(B, d) session vectors. Groups of similar length are encoded separately when
        `group_by_length` is on; padding never receives weight, so the result is the same."""
        batch = batch.recent(self.encoder_length)  # a no-op unless the repeat decoder widened the batch
        group = self.config.group_by_length
        if group is None:
            group = not batch.items.is_cuda
        if not group:
            tokens, positions = self._indices(batch.items, batch.full_lengths)
            return self._encode_group(self._embed([(tokens, positions)])[0], tokens)[0]
        groups = length_groups(batch.lengths)
        indices = []
        for index in groups:
            width = int(batch.lengths[index].max())
            indices.append(self._indices(batch.items[index, -width:], batch.full_lengths[index]))
        z = torch.empty(len(batch), self.config.embedding_dim, device=batch.items.device)
        for index, C, (tokens, _) in zip(groups, self._embed(indices), indices):
            z[index] = full_precision(self._encode_group(C, tokens)[0])  # bf16 under autocast
        return z

    def attention(self, batch: Batch) -> Attention:
        """Attention weights and alphas for the batch (evaluation mode, no dropout)."""
        with self.evaluating():
            batch = batch.to(self.device)
            tokens, positions = self._indices(batch.items, batch.full_lengths)
            return self._encode_group(self._embed([(tokens, positions)])[0], tokens, keep_attention=True)[1]

    def click_weights(self, batch: Batch) -> ClickWeights:
        """Target attention per click, the self-attention matrix, both alphas; the ablations lack a layer:
        `nt` has no target attention to weigh clicks with, `ns` no self-attention matrix (or alpha_self)."""
        variant = self.config.variant
        if variant == "nt":
            raise ValueError("DSAN variant nt has no target attention: its session vector weighs no click")
        attention = self.attention(batch)
        scalars = {"alpha_self": attention.alpha_self, "alpha_target": attention.alpha_target}
        if variant == "ns":
            del scalars["alpha_self"]
        scalars.update(self.repeat_scalars(batch))
        return ClickWeights(
            items=attention.items, weights=attention.target_attention, name="target attention",
            pairs=None if variant == "ns" else attention.self_attention, pairs_name="self-attention",
            extra=() if variant == "ns" else ("target",), scalars=scalars,
        )

    # ---- scores -----------------------------------------------------------------------------
    def _cosine_factors(self, batch: Batch, include_token: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, d), the queries w_k * z / |z| and the unit item rows 0..N[+1]: the scores are
        queries @ rows^T (w_k * cos(z, item))."""
        z = full_precision(self.encode(batch))  # first: its lookups renorm the rows the table reads
        rows = self.n_items + (2 if include_token else 1)
        return z, self.config.w_k * F.normalize(z, dim=-1), F.normalize(self.item_embedding.weight[:rows], dim=-1)

    def _logits(self, batch: Batch, include_token: bool) -> torch.Tensor:
        """w_k * cos(z, item rows 0..N[+1]); row 0 (padding) is set to -inf."""
        _, queries, table = self._cosine_factors(batch, include_token)
        logits = queries @ table.T
        logits[:, 0] = -torch.inf
        return logits

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores over items 1..N (B, N+1), and with labels the loss: the official softmax runs over the
        items and the target-token row, a permanent negative, which is no candidate when ranking."""
        if self.repeat_decoder is not None:
            decoded = self._decoded(batch, labels)
            return decoded.scores, decoded.loss
        if labels is not None and torch.is_grad_enabled():  # the loss without the (B, N + 2) scores
            _, queries, table = self._cosine_factors(batch, include_token=True)
            return None, inner_product_cross_entropy(queries, table, labels)
        logits = self._logits(batch, include_token=labels is not None)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits[:, : self.n_items + 1], loss

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None) -> RepeatOutput:
        """The repeat/explore decoder (config `repeat`) on the cosine scores over items 1..N (the target
        token, a training negative of the plain model, is no part of the mixture)."""
        z, queries, table = self._cosine_factors(batch, include_token=False)
        # the clicks' rows were renormed by encode's lookup
        return self.repeat_decoder(queries, table, z, self.item_embedding.weight, batch.items, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        """(B, d): w_k * z / |z|, so that scores = query_vectors @ item_vectors().T."""
        with self.evaluating():
            return self.config.w_k * F.normalize(self.encode(batch.to(self.device)), dim=-1)

    def numpy_query_vectors(self) -> NumpyQueryVectors | None:
        """`query_vectors` in numpy, for serving's small batches. None with the repeat decoder, whose scores
        are no inner product, and without `fast_entmax`: `--set fast_entmax=false` asks for the reference
        bisection, which only the torch path runs."""
        return NumpyQueryVectors(self) if self.inner_product and self.config.fast_entmax else None

    def item_vectors(self) -> torch.Tensor:
        """(N+1, d): unit item vectors, row 0 padding (never a candidate)."""
        with torch.no_grad():
            return F.normalize(self.item_embedding.weight[: self.n_items + 1], dim=-1).detach()


class NumpyQueryVectors:
    """DSAN's `query_vectors` in numpy, in evaluation mode (no dropout), for serving's batches of a few
    sessions: torch spends ~3.8 ms of operator overhead encoding one short session on this CPU
    (docs/serving.md), numpy's calls cost about a microsecond each, and one padded batch of B sessions costs
    about what one session does. The numpy form reads the model's weights in place; the compiled form
    (models/dsan_compiled.py) takes contiguous copies of the small matrices when this is built, so build it
    again after the weights change. Entmax is the Newton form of `fast_entmax` (the same threshold as the
    reference's bisection). tests/test_dsan.py checks both forms against `query_vectors` for every variant."""

    def __init__(self, model: DSAN):
        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().float().cpu().numpy()

        self.config = model.config
        self.n_items = model.n_items
        self.target_token = model.target_token
        self.max_length = model.max_length
        self.items, self.positions = array(model.item_embedding.weight), array(model.position_embedding.weight)
        self.query = (array(model.query.weight).T, array(model.query.bias))
        self.ffn_in = (array(model.ffn_in.weight).T, array(model.ffn_in.bias))
        self.ffn_out = (array(model.ffn_out.weight).T, array(model.ffn_out.bias))
        self.norm = (array(model.norm.weight), array(model.norm.bias), model.norm.eps)
        self.alpha_head = (array(model.alpha_head.weight)[0], array(model.alpha_head.bias)[0])
        self.key_weight, self.target_weight = array(model.key_weight.weight).T, array(model.target_weight.weight).T
        self.attention_bias, self.attention_vector = array(model.attention_bias), array(model.attention_vector.weight)[0]
        self.decoder = (array(model.decoder.weight).T, array(model.decoder.bias))
        use = os.environ.get(COMPILED_ENV, "1") != "0" and _compiled() is not None
        self.compiled = _compiled_arguments(self) if use else None

    def _lookup(self, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """table[rows] with nn.Embedding's max_norm rule (layers.renorm_rows_), on a copy: the model's
        own lookups renorm the table in place, to the same values."""
        vectors = table[rows]
        norms = np.sqrt(np.square(vectors).sum(axis=-1, keepdims=True))
        return np.where(norms > self.config.max_norm, vectors * (self.config.max_norm / (norms + 1e-7)), vectors)

    def _alpha(self, vectors: np.ndarray) -> np.ndarray | float:
        """(B, 2d) -> (B, 1) alphas, or the fixed one."""
        c = self.config
        if c.variant == "da":
            return 1.0
        if c.alpha is not None:
            return float(c.alpha)
        weight, bias = self.alpha_head
        sigmoid = np.exp(-np.logaddexp(0.0, -(vectors @ weight + bias)))
        alpha = (sigmoid.astype(np.float32) + np.float32(1.0))[:, None]  # in float32 as torch's: the guard meets the same 1.0
        return np.where(alpha == 1.0, np.float32(c.alpha_guard), alpha)

    def _normalise(self, scores: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
        dense = self.config.variant == "da" or self.config.alpha == 1.0
        return alpha_entmax_numpy(scores, 1.0 if dense else alpha)

    def _recent_clicks(self, prefixes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The most recent `max_length` clicks of every prefix, concatenated, with how many each keeps and
        each prefix's whole length (the clicks' positions count from the session's start)."""
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("a session needs at least one click")
        return recent_clicks(prefixes, self.max_length, self.n_items)

    def _tokens(self, prefixes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, L+1) the most recent `max_length` clicks right-aligned (0 = padding) with the target token
        last, and each prefix's whole length: `pad_prefixes`' layout without its trip through Sessions,
        a third of a lone query's time in this class."""
        clicks, kept, full_lengths = self._recent_clicks(prefixes)
        width = int(kept.max())
        rows = np.repeat(np.arange(len(prefixes)), kept)
        columns = np.arange(len(clicks)) - np.repeat(np.cumsum(kept) - kept, kept) + np.repeat(width - kept, kept)
        tokens = np.zeros((len(prefixes), width + 1), dtype=np.int64)
        tokens[rows, columns] = clicks
        tokens[:, -1] = self.target_token
        return tokens, full_lengths

    def __call__(self, prefixes: list[np.ndarray]) -> np.ndarray:
        """(B, d) query vectors w_k * z / |z| of the sessions (item indices, oldest first): compiled
        (models/dsan_compiled.py) where numba is installed, else numpy calls on batches of similar
        length as `encode` groups them on a CPU (the self-attention costs B x L^2: one 127-click session
        padded to its width 15 short ones)."""
        if self.compiled is not None:
            clicks, kept, full_lengths = self._recent_clicks(prefixes)
            starts = np.concatenate([[0], np.cumsum(kept)])
            return _compiled().encode_sessions(clicks, starts, full_lengths, self.target_token, *self.compiled)
        return self.in_numpy(prefixes)

    def in_numpy(self, prefixes: list[np.ndarray]) -> np.ndarray:
        """`__call__` by numpy calls, length band by length band."""
        lengths = np.fromiter((min(len(p), self.max_length) for p in prefixes), dtype=np.int64, count=len(prefixes))
        band = np.ceil(np.log2(np.maximum(lengths, 4)))  # layers.length_groups' bands: 1-4, 5-8, 9-16, ...
        if (band == band[0]).all():
            return self._encode(prefixes)
        vectors = np.empty((len(prefixes), self.config.embedding_dim), dtype=np.float32)
        for value in np.unique(band):
            members = np.flatnonzero(band == value)
            vectors[members] = self._encode([prefixes[i] for i in members])
        return vectors

    def _encode(self, prefixes: list[np.ndarray]) -> np.ndarray:
        c = self.config
        tokens, full_lengths = self._tokens(prefixes)
        batch, width = tokens.shape[0], tokens.shape[1] - 1
        mask = tokens != 0
        positions = np.minimum(full_lengths[:, None] + np.arange(-width + 1, 2), c.max_positions) * mask
        C = np.concatenate([self._lookup(self.items, tokens), self._lookup(self.positions, positions)], axis=-1)
        if c.variant == "ns":
            O = C
        else:
            Q = np.maximum(C @ self.query[0] + self.query[1], 0)
            scores = np.where(mask[:, None, :], Q @ C.transpose(0, 2, 1) / np.float32(math.sqrt(C.shape[-1])), -np.inf)
            alpha_self = self._alpha(C[:, -1])
            O = self._normalise(scores, alpha_self if np.isscalar(alpha_self) else alpha_self[:, :, None]) @ C
            O = O + np.maximum(O @ self.ffn_in[0] + self.ffn_in[1], 0) @ self.ffn_out[0] + self.ffn_out[1]
            scale, shift, eps = self.norm
            O = (O - O.mean(axis=-1, keepdims=True)) / np.sqrt(O.var(axis=-1, keepdims=True) + eps) * scale + shift
        target = O[:, -1]  # e_s (B, 2d)
        if c.variant == "nt":
            hidden = target
        else:
            u = np.maximum(O[:, :-1] @ self.key_weight + (target @ self.target_weight)[:, None] + self.attention_bias, 0)
            u = np.where(mask[:, :-1], u @ self.attention_vector, -np.inf)  # (B, L)
            beta = self._normalise(u, self._alpha(target))
            hidden = np.concatenate([np.einsum("bl,bld->bd", beta, C[:, :-1]), target], axis=-1)
        x = hidden @ self.decoder[0] + self.decoder[1]
        z = SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
        norms = np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
        return (c.w_k * z / norms).astype(np.float32)




@functools.cache
def _compiled():
    """models/dsan_compiled.py, or None without numba (the `serve` extra installs it)."""
    try:
        from nextclick.models import dsan_compiled
    except ImportError:
        return None
    return dsan_compiled


def _compiled_arguments(encoder: NumpyQueryVectors) -> tuple:
    """`dsan_compiled.encode_sessions`' arguments after the sessions and the target token: contiguous
    float32 copies of the small matrices (numba's matmul wants them contiguous) and the tables as they are."""
    compiled, c = _compiled(), encoder.config

    def dense(matrix):
        return np.ascontiguousarray(matrix, dtype=np.float32)

    if c.variant == "da" or c.alpha == 1.0:
        mode, fixed = compiled.DENSE, 1.0
    elif c.alpha is not None:
        mode, fixed = compiled.FIXED, float(c.alpha)
    else:
        mode, fixed = compiled.ADAPTIVE, 0.0
    scale, shift, eps = encoder.norm
    return (c.max_positions, dense(encoder.items), dense(encoder.positions), float(c.max_norm),
            *map(dense, encoder.query), *map(dense, encoder.ffn_in), *map(dense, encoder.ffn_out),
            dense(scale), dense(shift), float(eps), dense(encoder.alpha_head[0]), float(encoder.alpha_head[1]),
            mode, fixed, float(c.alpha_guard), compiled.VARIANTS[c.variant], dense(encoder.key_weight),
            dense(encoder.target_weight), dense(encoder.attention_bias), dense(encoder.attention_vector),
            *map(dense, encoder.decoder), float(c.w_k))


def compile_ahead() -> None:
    """Compile `dsan_compiled.encode_sessions` (and its helpers) into numba's cache with a tiny model's
    arguments: the types, not the values, select the compiled code, so a served run of any size then loads
    it (`make install` runs this)."""
    torch.manual_seed(0)
    encoder = NumpyQueryVectors(DSAN(3, DSANConfig(embedding_dim=2, fast_entmax=True)).eval())
    if encoder.compiled is None:
        raise RuntimeError(f"numba is not installed, or {COMPILED_ENV}=0: nothing to compile")
    encoder([np.array([1, 2])])
