"""Layers shared by several models, each written once.

- `alpha_entmax`: sparse attention normaliser (Peters et al., ACL 2019), the bisection algorithm of the
  `entmax` package with a per-row alpha, as DSAN's official code uses it (dsan_reference.md 2.4).
  alpha = 1 is softmax, alpha = 2 is sparsemax; in between, weights can be exactly zero.
- `cosine_scores`: L2-normalised session x item scores times a fixed scale (DSAN w_k, NISER).
- `masked_softmax`.
- `session_graphs` and `GatedGraphCell`: SR-GNN's directed session graph and gated graph step (SR-GNN,
  GC-SAN, DANSeR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
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


@dataclass(frozen=True)
class SessionGraphs:
    """The directed session graphs of a batch (SR-GNN section 3.2; its official code's `get_slice`), one
    per session, built on the session's distinct items:
        nodes     (B, N)      the item of each node, 0 for padding nodes (N = most distinct items in the batch)
        alias     (B, L)      the node of each click (0 at padding positions: masked by the reader)
        incoming  (B, N, N)   row v averages v's predecessors: M[u, v] / indegree(v)
        outgoing  (B, N, N)   row u averages u's successors:  M[u, v] / outdegree(u)
    with M[u, v] = 1 where some click on u is directly followed by a click on v (a repeated transition
    counts once)."""

    nodes: torch.Tensor
    alias: torch.Tensor
    incoming: torch.Tensor
    outgoing: torch.Tensor


def session_graphs(items: torch.Tensor) -> SessionGraphs:
    """Session graphs of right-aligned clicks (B, L), 0 = padding, in a few vectorised steps."""
    batch, width = items.shape
    real = items != 0
    sentinel = torch.iinfo(items.dtype).max  # padding sorts after every item
    ordered, order = torch.sort(torch.where(real, items, sentinel), dim=1)  # (B, L)
    first = torch.ones_like(real)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first &= ordered != sentinel
    node_of_sorted = torch.cumsum(first, dim=1) - 1  # (B, L): node index of each sorted click
    alias = torch.zeros_like(items).scatter_(1, order, node_of_sorted.clamp(min=0))
    alias = alias.masked_fill(~real, 0)
    n_nodes = int(first.sum(dim=1).max()) if batch else 1
    nodes = items.new_zeros(batch, max(n_nodes, 1))
    rows = torch.arange(batch, device=items.device).unsqueeze(1).expand(-1, width)
    nodes[rows[first], node_of_sorted[first]] = ordered[first]
    # transitions between consecutive real clicks (right-aligned: the real clicks are contiguous)
    step = real[:, 1:] & real[:, :-1]  # (B, L-1)
    adjacency = items.new_zeros(batch, nodes.shape[1], nodes.shape[1], dtype=torch.float32)
    adjacency[rows[:, 1:][step], alias[:, :-1][step], alias[:, 1:][step]] = 1.0  # binary: repeats count once
    indegree = adjacency.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, N)
    outdegree = adjacency.sum(dim=2, keepdim=True).clamp(min=1.0)  # (B, N, 1)
    return SessionGraphs(nodes, alias, (adjacency / indegree).transpose(1, 2), adjacency / outdegree)


class GatedGraphCell(nn.Module):
    """One step of SR-GNN's gated graph network (section 3.3; official `GNN.GNNCell`):
        a_in  = A_in (W_in H + b_in) + b_iah,   a_out = A_out (W_out H + b_out) + b_oah,   a = [a_in; a_out]
        r = sigmoid(W_r a + U_r h),  u = sigmoid(W_u a + U_u h),  n = tanh(W_n a + r * (U_n h))
        h' = n + u * (h - n)   (= (1 - u) n + u h)
    with the official code's gate layout: the input is [a_in; a_out] (2d), all with biases."""

    def __init__(self, size: int):
        super().__init__()
        self.edge_in = nn.Linear(size, size)
        self.edge_out = nn.Linear(size, size)
        self.bias_in = nn.Parameter(torch.zeros(size))  # b_iah
        self.bias_out = nn.Parameter(torch.zeros(size))  # b_oah
        self.input_gates = nn.Linear(2 * size, 3 * size)  # w_ih, b_ih
        self.hidden_gates = nn.Linear(size, 3 * size)  # w_hh, b_hh

    def forward(self, graphs: SessionGraphs, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, N, d) node states -> (B, N, d) after one step."""
        incoming = graphs.incoming @ self.edge_in(hidden) + self.bias_in  # (B, N, d)
        outgoing = graphs.outgoing @ self.edge_out(hidden) + self.bias_out  # (B, N, d)
        input_reset, input_update, input_new = self.input_gates(torch.cat([incoming, outgoing], dim=2)).chunk(3, dim=2)
        hidden_reset, hidden_update, hidden_new = self.hidden_gates(hidden).chunk(3, dim=2)
        reset = torch.sigmoid(input_reset + hidden_reset)
        update = torch.sigmoid(input_update + hidden_update)
        new = torch.tanh(input_new + reset * hidden_new)
        return new + update * (hidden - new)


def click_states(items: torch.Tensor, embedding: nn.Embedding, cell: GatedGraphCell, steps: int) -> torch.Tensor:
    """(B, L) right-aligned clicks -> (B, L, d): each click's node state after `steps` gated graph steps
    over its session's graph (SR-GNN's encoder, which GC-SAN and DANSeR build on)."""
    graphs = session_graphs(items)
    hidden = embedding(graphs.nodes)  # (B, N, d)
    for _ in range(steps):
        hidden = cell(graphs, hidden)
    return torch.gather(hidden, 1, graphs.alias.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
