"""Layers shared by several models, each written once.

- `alpha_entmax`: sparse attention normaliser (Peters et al., ACL 2019), the bisection algorithm of the
  `entmax` package with a per-row alpha, as DSAN's official code uses it (dsan_reference.md 2.4).
  alpha = 1 is softmax, alpha = 2 is sparsemax; in between, weights can be exactly zero.
- `cosine_scores`: L2-normalised session x item scores times a fixed scale (DSAN w_k, NISER).
- `masked_softmax`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from entmax import entmax_bisect
from entmax.root_finding import EntmaxBisectFunction


@torch.no_grad()
def renorm_rows_(weight: torch.Tensor, indices: torch.Tensor, max_norm: float) -> None:
    """In place, scale the rows at `indices` whose L2 norm exceeds max_norm down to max_norm, with
    nn.Embedding(max_norm=...)'s formula (scale = max_norm / (norm + 1e-7)), in one vectorised step
    instead of PyTorch's per-row loop."""
    rows = torch.unique(indices)
    norms = weight[rows].norm(dim=1, keepdim=True)
    scale = torch.where(norms > max_norm, max_norm / (norms + 1e-7), torch.ones_like(norms))
    weight[rows] = weight[rows] * scale


def embed_with_max_norm(table: torch.nn.Embedding, indices: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Same as table(indices) for an Embedding built with max_norm, faster on CPU."""
    if max_norm is not None:
        renorm_rows_(table.weight, indices, max_norm)
    return F.embedding(indices, table.weight, table.padding_idx)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=dim)


class _FastEntmaxBisect(EntmaxBisectFunction):
    """The same bisection as `entmax.entmax_bisect`, stopped once float32 cannot move tau any more.

    Each step halves the bracket; after `n_iter` = 30 steps the bracket is below 2^-30 of its start,
    smaller than float32's resolution, so later steps of the reference's 50 change nothing measurable
    (tests check values and gradients against the reference within 1e-5). The backward pass is the
    package's own closed form."""

    @classmethod
    def forward(cls, ctx, X, alpha, dim=-1, n_iter=30, ensure_sum_one=True):
        return super().forward(ctx, X, alpha, dim, n_iter, ensure_sum_one)


def alpha_entmax(scores: torch.Tensor, alpha: torch.Tensor | float, dim: int = -1, fast: bool = False) -> torch.Tensor:
    """alpha-entmax over `dim`; `alpha` is a float or a tensor broadcastable to scores with size 1 on
    `dim` (one alpha per row). Entries at -inf get exactly zero weight."""
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        return torch.softmax(scores, dim=dim)
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=scores.dtype)
    shape = list(scores.shape)
    shape[dim] = 1
    alpha = alpha.expand(*shape)
    if fast:
        return _FastEntmaxBisect.apply(scores, alpha, dim)
    return entmax_bisect(scores, alpha, dim=dim)


def cosine_scores(sessions: torch.Tensor, items: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(session, item) for every pair: (B, D) x (N, D) -> (B, N). Zero rows (padding) score 0."""
    return scale * F.normalize(sessions, dim=-1) @ F.normalize(items, dim=-1).T
