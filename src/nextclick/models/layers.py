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


class _FastEntmaxBisect(torch.autograd.Function):
    """The bisection of `entmax.entmax_bisect`, with its per-step overhead removed: the exponent
    1/(alpha-1) is computed once instead of at every step, and the loop stops after `n_iter` = 30
    halvings, when the bracket is below 2^-30 of its start and float32 can no longer move tau (the
    reference runs 50). Tests check values and gradients against the reference within 1e-5.
    The backward pass is the package's own closed form."""

    @staticmethod
    def forward(ctx, X, alpha, dim=-1, n_iter=30):
        shape = list(X.shape)
        shape[dim] = 1
        alpha = alpha.expand(*shape)
        alpha_minus_one = alpha - 1
        exponent = 1.0 / alpha_minus_one
        max_value = X.max(dim=dim, keepdim=True).values * alpha_minus_one
        X = X * alpha_minus_one
        tau_low = max_value - 1.0  # (alpha-1) * max - 1 ** (alpha-1)
        bracket = (max_value - (1.0 / X.shape[dim]) ** alpha_minus_one) - tau_low
        for _ in range(n_iter):
            bracket = bracket / 2
            tau = tau_low + bracket
            p = torch.clamp(X - tau, min=0) ** exponent
            tau_low = torch.where(p.sum(dim=dim, keepdim=True) >= 1, tau, tau_low)
        p = p / p.sum(dim=dim, keepdim=True)
        ctx.save_for_backward(p)
        ctx.alpha, ctx.dim = alpha, dim
        return p

    @staticmethod
    def backward(ctx, dY):
        dX, d_alpha, *_ = EntmaxBisectFunction.backward(ctx, dY)
        return dX, d_alpha, None, None


def alpha_entmax(scores: torch.Tensor, alpha: torch.Tensor | float, dim: int = -1, fast: bool = False) -> torch.Tensor:
    """alpha-entmax over `dim`; `alpha` is a float or a tensor broadcastable to scores with size 1 on
    `dim` (one alpha per row). Entries at -inf get exactly zero weight."""
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        return torch.softmax(scores, dim=dim)
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=scores.dtype, device=scores.device)
    shape = list(scores.shape)
    shape[dim] = 1
    alpha = alpha.expand(*shape)
    if fast:
        return _FastEntmaxBisect.apply(scores, alpha, dim)
    return entmax_bisect(scores, alpha, dim=dim)


def cosine_scores(sessions: torch.Tensor, items: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(session, item) for every pair: (B, D) x (N, D) -> (B, N). Zero rows (padding) score 0."""
    return scale * F.normalize(sessions, dim=-1) @ F.normalize(items, dim=-1).T
