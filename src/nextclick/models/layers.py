"""Layers shared by several models, each written once.

- `alpha_entmax`: sparse attention normaliser (Peters et al., ACL 2019), the bisection algorithm of the
  `entmax` package with a per-row alpha, as DSAN's official code uses it (dsan_reference.md 2.4), stopped
  once further halvings can no longer change the answer (`_ExactBisectEntmax`: the same output bits).
  alpha = 1 is softmax, alpha = 2 is sparsemax; in between, weights can be exactly zero.
  `alpha_entmax_numpy`: its Newton form in numpy, for one session at a time (serving).
- `cosine_scores`: L2-normalised session x item scores times a fixed scale (DSAN w_k, NISER).
- `masked_softmax`; `length_groups`: a batch's rows in bands of similar length (DSAN, BERT4Rec).
- `inner_product_cross_entropy`: full-catalogue cross-entropy of inner-product scores computed in row
  blocks that stay in cache, with the gradients taken in the same pass (the score matrix is never built);
  `inner_product_logsumexp`, its normaliser alone (the repeat decoder's explore side).
- `session_graphs` and `GatedGraphCell`: SR-GNN's directed session graph and gated graph step (SR-GNN,
  GC-SAN, DANSeR).
- `full_precision`, `autocast_dtype`, `scores_in`: mixed precision (`TrainOptions.precision="bf16"` runs
  the forward pass under autocast, which makes every matmul's output bf16; "bf16-scores" runs only the
  blocked losses' products with the catalogue in bf16, through `scores_in`). Normalisers (entmax,
  softmax, the losses' log-sum-exp) take bf16 inputs back to float32 through `full_precision`; the
  blocked losses make their matmuls in the dtype `autocast_dtype` names and everything else in float32.
  In float32 all are no-ops.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from entmax.root_finding import EntmaxBisectFunction


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32 if autocast made it half precision (bf16, fp16), else `tensor` itself (float32 and
    float64 untouched, and no operator call: the float32 path stays the same computation). Used at the
    entry of every numerically sensitive step: a bf16 softmax, entmax threshold or loss normaliser keeps
    3 significant digits, and an entmax alpha of 1.003 in bf16 is exactly 1 (a division by zero)."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


# the dtype of the blocked losses' products with the catalogue when autocast is off (`scores_in`)
_SCORES_DTYPE: ContextVar[torch.dtype | None] = ContextVar("scores_dtype", default=None)


@contextmanager
def scores_in(dtype: torch.dtype):
    """Inside, the blocked losses (`inner_product_cross_entropy`, `inner_product_logsumexp`) make their
    products with the whole catalogue in `dtype`, and nothing else changes: precision "bf16-scores". On a
    CPU with bf16 units those products are where bf16 pays (2.5-3x the float32 matmul on a Zen 4 EPYC),
    while autocasting an encoder's small matmuls costs more than it saves (oneDNN compiles a kernel for
    every new shape, and grouped encoders make many): docs/scale.md."""
    token = _SCORES_DTYPE.set(dtype)
    try:
        yield
    finally:
        _SCORES_DTYPE.reset(token)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype the blocked losses' matmuls run in on `device_type` now: autocast's when it is on there,
    else the one `scores_in` set, else None (float32)."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return _SCORES_DTYPE.get()
        return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: one function per device kind
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else _SCORES_DTYPE.get()
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else _SCORES_DTYPE.get()


def _autocast_off(device_type: str, low: torch.dtype | None):
    """No autocast inside (the blocked losses cast their matmuls themselves), when it was on."""
    return torch.autocast(device_type, enabled=False) if low is not None else nullcontext()


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


def length_groups(lengths: torch.Tensor) -> list[torch.Tensor]:
    """Indices of the batch grouped by kept length in bands 1-4, 5-8, 9-16, ..., so each group pads
    to at most twice its shortest member (short sessions share one group: padding them to 4 costs
    less than another pass of the attention). DSAN and BERT4Rec encode each group at its own width."""
    band = torch.ceil(torch.log2(lengths.clamp(min=4).double())).long()
    return [torch.nonzero(band == b).squeeze(1) for b in torch.unique(band)]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(full_precision(scores).masked_fill(~mask, -torch.inf), dim=dim)


class _ExactBisectEntmax(EntmaxBisectFunction):
    """`entmax.entmax_bisect` (50 halvings, as DSAN's official code calls it) with the same output bits,
    stopped once a halving leaves every row's threshold where it was. From then on the reference's loop
    cannot move: each later step adds a smaller `dm` to the same `tau_lo`, and float rounding is monotone,
    so `tau_lo + dm` rounds to `tau_lo` again, gives the same `p_m` and keeps `tau_lo`. The loop below is
    the package's own forward, operation for operation (entmax 1.3, root_finding.py), plus that test; float32
    thresholds stop after 27-41 halvings. A row with a NaN threshold (all entries -inf) never compares
    equal, so it runs all 50, as the reference does. tests/test_layers.py checks outputs and gradients
    bit for bit against `entmax_bisect`."""

    @classmethod
    def forward(cls, ctx, X, alpha, dim=-1, n_iter=50):
        alpha = alpha.expand(*[1 if i == dim % X.dim() else size for i, size in enumerate(X.shape)])
        ctx.alpha, ctx.dim = alpha, dim
        max_val, _ = X.max(dim=dim, keepdim=True)
        X = X * (alpha - 1)
        max_val = max_val * (alpha - 1)
        tau_lo = max_val - cls._gp(1, alpha)
        tau_hi = max_val - cls._gp(1 / X.shape[dim], alpha)
        dm = tau_hi - tau_lo
        for _ in range(n_iter):
            dm /= 2
            tau_m = tau_lo + dm
            p_m = cls._p(X - tau_m, alpha)
            if torch.equal(tau_m, tau_lo):  # every later halving gives this same p_m
                break
            f_m = p_m.sum(dim) - 1
            tau_lo = torch.where((f_m >= 0).unsqueeze(dim), tau_m, tau_lo)
        p_m /= p_m.sum(dim=dim).unsqueeze(dim=dim)
        ctx.save_for_backward(p_m)
        return p_m


class _FastEntmax(torch.autograd.Function):
    """alpha-entmax with its threshold found by Newton's method instead of `entmax.entmax_bisect`'s 50
    halvings: 2-6 steps to float32 precision for alpha in (1, 2], so a tenth of the operator calls, which is
    what a lone query or a small batch pays for. tests/test_dsan.py checks it finds the reference's
    threshold in float64 and is as close to the float64 answer as the reference in float32.

    With X scaled by (alpha-1) as the reference does, the threshold tau solves ||relu(X - tau)||_p = 1,
    p = 1/(alpha-1) >= 1. That norm is convex and decreasing in tau, so Newton's iterates from
    tau = max - 1 (where the norm is >= 1) rise monotonically to the root without overshooting. Newton on
    the norm rather than on its p-th power (the reference's sum) keeps the function close to linear even
    for large p, where the sum is nearly flat and Newton on it would crawl. The backward pass is the
    package's own closed form (it needs only the output)."""

    @staticmethod
    def forward(ctx, X, alpha, dim=-1, max_steps=50):
        shape = list(X.shape)
        shape[dim] = 1
        alpha = alpha.expand(*shape)
        alpha_minus_one = alpha - 1
        exponent = 1.0 / alpha_minus_one
        X = X * alpha_minus_one
        max_value = X.max(dim=dim, keepdim=True).values
        tau = max_value - 1.0
        tau_high = max_value - (1.0 / X.shape[dim]) ** alpha_minus_one  # the root is at or below it
        for _ in range(max_steps):
            gap = torch.clamp(X - tau, min=0)
            gap_power = torch.where(gap > 0, gap ** (exponent - 1), 0.0)  # 0 ** 0 would count outside the support
            total = (gap_power * gap).sum(dim=dim, keepdim=True)
            norm = total ** alpha_minus_one
            # norm - 1 over minus the derivative of the norm in tau; a 0/0 where rounding emptied a row is no step
            step = ((norm - 1) * total / (norm * gap_power.sum(dim=dim, keepdim=True))).nan_to_num(0.0).clamp(min=0)
            tau = torch.minimum(tau + step, tau_high)
            if bool((step <= 1e-6 * (1 + tau.abs())).all()):
                break
        p = torch.clamp(X - tau, min=0) ** exponent
        p = p / p.sum(dim=dim, keepdim=True)
        ctx.save_for_backward(p)
        ctx.alpha, ctx.dim = alpha, dim
        return p

    @staticmethod
    def backward(ctx, dY):
        dX, d_alpha, *_ = EntmaxBisectFunction.backward(ctx, dY)
        return dX, d_alpha, None, None


# torch.nn.SELU's constants (Klambauer et al. 2017), for the encoders that compute SELU without torch
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def alpha_entmax_numpy(scores: np.ndarray, alpha: np.ndarray | float, max_steps: int = 50) -> np.ndarray:
    """`_FastEntmax`'s forward pass in numpy over the last axis (-inf gets exactly zero weight); `alpha` a
    float or an array broadcastable to `scores` with size 1 on the last axis. For serving's small batches,
    where a numpy operator call costs about a microsecond and torch's several: the same Newton iterates, so
    the same threshold."""
    if np.isscalar(alpha) and alpha == 1.0:
        shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    alpha_minus_one = alpha - 1.0
    exponent = 1.0 / alpha_minus_one
    X = scores * alpha_minus_one
    max_value = X.max(axis=-1, keepdims=True)
    tau, tau_high = max_value - 1.0, max_value - (1.0 / X.shape[-1]) ** alpha_minus_one
    for _ in range(max_steps):
        gap = np.maximum(X - tau, 0)
        gap_power = np.where(gap > 0, gap ** (exponent - 1), 0)
        total = (gap_power * gap).sum(axis=-1, keepdims=True)
        norm = total ** alpha_minus_one
        slope = norm * gap_power.sum(axis=-1, keepdims=True)
        # a row that rounding emptied (slope 0) takes no step, as nan_to_num(0 / 0) does in the torch form
        step = np.divide((norm - 1) * total, slope, out=np.zeros_like(slope), where=slope > 0).clip(min=0)
        tau = np.minimum(tau + step, tau_high)
        if (step <= 1e-6 * (1 + np.abs(tau))).all():
            break
    p = np.maximum(X - tau, 0) ** exponent
    return p / p.sum(axis=-1, keepdims=True)


def alpha_entmax(scores: torch.Tensor, alpha: torch.Tensor | float, dim: int = -1, fast: bool = False) -> torch.Tensor:
    """alpha-entmax over `dim`; `alpha` is a float or a tensor broadcastable to scores with size 1 on
    `dim` (one alpha per row). Entries at -inf get exactly zero weight. Half-precision scores (a bf16
    autocast matmul's) are taken to float32 first: the threshold search needs float32's digits."""
    scores = full_precision(scores)
    if isinstance(alpha, torch.Tensor):
        alpha = full_precision(alpha)
    if isinstance(alpha, (int, float)) and alpha == 1.0:
        return torch.softmax(scores, dim=dim)
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=scores.dtype, device=scores.device)
    shape = list(scores.shape)
    shape[dim] = 1
    alpha = alpha.expand(*shape)
    if fast:
        return _FastEntmax.apply(scores, alpha, dim)
    return _ExactBisectEntmax.apply(scores, alpha, dim)


# rows of scores per block: ~4M floats (16 MB) stays in a 32 MB L3 cache between the matmul, the softmax
# and the two gradient matmuls; measured on retailrocket (B 512, N 36,969, d 100, 2 threads) as the
# fastest of 16..256 rows: 215 ms per batch against 349 ms for the unblocked loss
BLOCK_FLOATS = 1 << 22


class _InnerProductCrossEntropy(torch.autograd.Function):
    """mean_b CE(softmax(q_b . T^T with column 0 at -inf), y_b) and its gradients for q and T, block by
    block. The plain form writes the (B, N) scores to memory and reads them back five times (softmax,
    loss, softmax backward, two matmuls); here each block is used while it is still in cache, the
    softmax is made in place, and the two gradient matmuls read it at once.

    `low` (bf16 or fp16, from autocast): the three matmuls take their inputs in that dtype; the scores
    come back to float32 before the softmax, and the loss and the gradients are accumulated in float32."""

    @staticmethod
    def forward(ctx, queries: torch.Tensor, table: torch.Tensor, labels: torch.Tensor,
                low: torch.dtype | None = None) -> torch.Tensor:
        n_rows = queries.shape[0]
        need_queries, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        query_grad = torch.empty_like(queries) if need_queries else None
        table_grad = torch.zeros_like(table) if need_table else None
        total = queries.new_zeros((), dtype=torch.float64)
        low_table = None if low is None else table.to(low)
        for start, probabilities in _score_blocks(queries, table, None, low_table):  # scores, made softmax in place
            end = start + len(probabilities)
            y = labels[start:end]
            rows = torch.arange(len(y), device=y.device)
            target = probabilities[rows, y]
            top = probabilities.amax(1, keepdim=True)
            probabilities.sub_(top).exp_()
            norm = probabilities.sum(1, keepdim=True)
            total += (norm.log() + top - target.unsqueeze(1)).sum(dtype=torch.float64)
            probabilities.div_(norm)
            probabilities[rows, y] -= 1.0  # d loss / d scores, times the batch size
            _add_block_gradients(probabilities, slice(start, end), queries, table, low_table, query_grad, table_grad)
        ctx.save_for_backward(query_grad, table_grad)
        ctx.n_rows = n_rows
        return (total / n_rows).to(queries.dtype)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        query_grad, table_grad = ctx.saved_tensors
        scale = grad_loss / ctx.n_rows
        return (None if query_grad is None else query_grad * scale,
                None if table_grad is None else table_grad * scale, None, None)


def inner_product_cross_entropy(queries: torch.Tensor, table: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the scores queries (B, d) @ table (N + 1, d)^T over items 1..N (row 0 of the
    table is padding), equal to F.cross_entropy on those scores with column 0 at -inf, in about 60% of
    its time and without the (B, N + 1) scores in memory. Gradients are computed in the forward pass,
    so call it only to train (under no_grad it does no gradient work). Under autocast the matmuls run
    in its dtype and the softmax and the loss in float32 (the float32 loss of the rounded scores)."""
    queries, table = full_precision(queries), full_precision(table)
    if not torch.is_grad_enabled():
        with torch.no_grad():
            scores = full_precision(queries @ table.T)
            scores[:, 0] = -torch.inf
            return F.cross_entropy(scores, labels)
    low = autocast_dtype(queries.device.type)
    with _autocast_off(queries.device.type, low):
        return _InnerProductCrossEntropy.apply(queries, table, labels, low)


# `inner_product_logsumexp` keeps the (B, N + 1) softmax for its backward pass up to this many floats
# (256 MB; SR-IEM's diginetica batch, 256 x 43k, is 11M), instead of recomputing the scores there: the
# score matmul is the dearest of the block's three: SR-IEM's code form on diginetica (batch 256, one
# thread) trained 1.01 s a batch with the repeat decoder and the recomputation, 0.75 s with the softmax
# kept, 0.68 s without the decoder
KEEP_FLOATS = 1 << 26


class _InnerProductLogSumExp(torch.autograd.Function):
    """log sum_i exp(q_b . T_i) over items 1..N not excluded for row b, block by block as
    `_InnerProductCrossEntropy`. The backward pass needs each row's softmax times its upstream gradient,
    which the forward pass cannot fold in (the gradient differs per row): it keeps the softmax when it
    fits in KEEP_FLOATS, and otherwise recomputes each block (one matmul more). `low`: as
    `_InnerProductCrossEntropy`'s, matmuls in that dtype, the rest in float32."""

    @staticmethod
    def forward(ctx, queries: torch.Tensor, table: torch.Tensor, excluded: torch.Tensor | None,
                low: torch.dtype | None = None) -> torch.Tensor:
        result = queries.new_empty(queries.shape[0])
        low_table = None if low is None else table.to(low)
        keep = any(ctx.needs_input_grad[:2]) and queries.shape[0] * table.shape[0] <= KEEP_FLOATS
        softmax = []
        for start, scores in _score_blocks(queries, table, excluded, low_table):
            result[start:start + len(scores)] = norm = torch.logsumexp(scores, dim=1)
            if keep:
                softmax.append(scores.sub_(norm.unsqueeze(1)).exp_())
        ctx.save_for_backward(queries, table, result, excluded)
        ctx.low, ctx.softmax = low, softmax
        return result

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        queries, table, result, excluded = ctx.saved_tensors
        need_queries, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        query_grad = torch.empty_like(queries) if need_queries else None
        table_grad = torch.zeros_like(table) if need_table else None
        low = ctx.low
        with _autocast_off(queries.device.type, low):
            low_table = None if low is None else table.to(low)
            if ctx.softmax:
                blocks, ctx.softmax = _softmax_blocks(ctx.softmax), None
            else:
                blocks = ((start, scores.sub_(result[start:start + len(scores)].unsqueeze(1)).exp_())
                          for start, scores in _score_blocks(queries, table, excluded, low_table))
            for start, softmax in blocks:
                end = start + len(softmax)
                weights = softmax.mul_(grad[start:end].unsqueeze(1))  # g_b softmax
                _add_block_gradients(weights, slice(start, end), queries, table, low_table, query_grad, table_grad)
        return query_grad, table_grad, None, None


def _softmax_blocks(blocks: list[torch.Tensor]):
    """(start row, block) of blocks of consecutive rows."""
    start = 0
    for block in blocks:
        yield start, block
        start += len(block)


def _add_block_gradients(weights: torch.Tensor, rows: slice, queries: torch.Tensor, table: torch.Tensor,
                         low_table: torch.Tensor | None, query_grad: torch.Tensor | None,
                         table_grad: torch.Tensor | None) -> None:
    """The two gradient products of a block of score gradients `weights` (b, N + 1): query_grad[rows] =
    weights @ table, table_grad += weights^T @ queries[rows] (each only where it is wanted, not None). In
    float32 in place (out=, addmm_); with `low_table` (the table in bf16/fp16) the products take their
    inputs in that dtype and are added in float32."""
    if low_table is None:
        if query_grad is not None:
            torch.mm(weights, table, out=query_grad[rows])
        if table_grad is not None:
            table_grad.addmm_(weights.T, queries[rows])
        return
    weights = weights.to(low_table.dtype)
    if query_grad is not None:
        query_grad[rows] = weights @ low_table
    if table_grad is not None:
        table_grad += weights.T @ queries[rows].to(low_table.dtype)


def _score_blocks(queries: torch.Tensor, table: torch.Tensor, excluded: torch.Tensor | None,
                  low_table: torch.Tensor | None = None):
    """(start row, scores (b, N + 1)) blocks of queries @ table^T, -inf at padding and at `excluded`.
    With `low_table` (the table in a half-precision dtype) the matmul takes its inputs in that dtype and
    the scores come back in float32."""
    block = max(1, min(len(queries), BLOCK_FLOATS // table.shape[0]))
    for start in range(0, len(queries), block):
        if low_table is None:
            scores = queries[start:start + block] @ table.T
        else:
            scores = (queries[start:start + block].to(low_table.dtype) @ low_table.T).float()
        scores[:, 0] = -torch.inf
        if excluded is not None:
            scores.scatter_(1, excluded[start:start + block], -torch.inf)
        yield start, scores


def inner_product_logsumexp(queries: torch.Tensor, table: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) log of sum over items 1..N of exp(queries (B, d) . table (N + 1, d) rows), leaving out for
    each row the items in its row of `excluded` (B, L) (0 entries exclude only the padding), without
    the (B, N + 1) scores in memory; differentiable in queries and table. Under autocast, as
    `inner_product_cross_entropy`: matmuls in its dtype, the normaliser in float32."""
    queries, table = full_precision(queries), full_precision(table)
    low = autocast_dtype(queries.device.type)
    with _autocast_off(queries.device.type, low):
        return _InnerProductLogSumExp.apply(queries, table, excluded, low)


def cosine_scores(sessions: torch.Tensor, items: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(session, item) for every pair: (B, D) x (N, D) -> (B, N). Zero rows (padding) score 0."""
    return scale * F.normalize(sessions, dim=-1) @ F.normalize(items, dim=-1).T


@dataclass(frozen=True)
class SessionGraphs:
    """The directed session graphs of a batch (SR-GNN section 3.2; its official code's `get_slice`), one
    per session, built on the session's distinct items and packed: the nodes of all sessions in one
    list, no padding node anywhere (as graph libraries batch graphs).
        node_items     (n,)    the item of each node
        node_session   (n,)    the session (batch row) of each node
        click_node     (B, L)  the node of each click (0 at padding positions: masked by the reader)
        source, target (e,)    the edges: some click on `source` is directly followed by one on `target`
                               (a transition repeated in a session counts once)
        incoming       (e,)    1 / indegree(target): a node averages its predecessors (SR-GNN's A_in)
        outgoing       (e,)    1 / outdegree(source): a node averages its successors (A_out)"""

    node_items: torch.Tensor
    node_session: torch.Tensor
    click_node: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    incoming: torch.Tensor
    outgoing: torch.Tensor


def session_graphs(items: torch.Tensor) -> SessionGraphs:
    """Session graphs of right-aligned clicks (B, L), 0 = padding, in a few vectorised steps."""
    real = items != 0
    rows = torch.arange(items.shape[0], device=items.device).unsqueeze(1).expand_as(items)
    width = int(items.max()) + 1 if items.numel() else 1
    keys, click_node = torch.unique(rows[real] * width + items[real], return_inverse=True)  # nodes by (row, item)
    clicks = torch.zeros_like(items)
    clicks[real] = click_node
    # transitions between consecutive real clicks (right-aligned: the real clicks of a row are contiguous)
    step = real[:, 1:] & real[:, :-1]
    edges = torch.unique(clicks[:, :-1][step] * len(keys) + clicks[:, 1:][step])  # deduplicated
    source, target = edges // len(keys), edges % len(keys)
    indegree = torch.bincount(target, minlength=len(keys)).clamp(min=1)
    outdegree = torch.bincount(source, minlength=len(keys)).clamp(min=1)
    return SessionGraphs(node_items=keys % width, node_session=keys // width, click_node=clicks, source=source,
                         target=target, incoming=1.0 / indegree[target].float(),
                         outgoing=1.0 / outdegree[source].float())


class GatedGraphCell(nn.Module):
    """One step of SR-GNN's gated graph network (section 3.3; official `GNN.GNNCell`):
        a_in  = A_in (W_in H + b_in) + b_iah,   a_out = A_out (W_out H + b_out) + b_oah,   a = [a_in; a_out]
        r = sigmoid(W_r a + U_r h),  u = sigmoid(W_u a + U_u h),  n = tanh(W_n a + r * (U_n h))
        h' = n + u * (h - n)   (= (1 - u) n + u h)
    with the official code's gate layout: the input is [a_in; a_out] (2d), all with biases. The A
    products are sums over the packed edges, so the cost follows the real nodes and edges, not a padded
    (B, N, N) matrix."""

    def __init__(self, size: int):
        super().__init__()
        self.edge_in = nn.Linear(size, size)
        self.edge_out = nn.Linear(size, size)
        self.bias_in = nn.Parameter(torch.zeros(size))  # b_iah
        self.bias_out = nn.Parameter(torch.zeros(size))  # b_oah
        self.input_gates = nn.Linear(2 * size, 3 * size)  # w_ih, b_ih
        self.hidden_gates = nn.Linear(size, 3 * size)  # w_hh, b_hh

    def forward(self, graphs: SessionGraphs, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (n, d) node states -> (n, d) after one step."""
        g = graphs
        from_predecessors = self.edge_in(hidden)[g.source] * g.incoming.unsqueeze(1)  # (e, d)
        from_successors = self.edge_out(hidden)[g.target] * g.outgoing.unsqueeze(1)  # (e, d)
        incoming = hidden.new_zeros(hidden.shape).index_add(0, g.target, from_predecessors) + self.bias_in
        outgoing = hidden.new_zeros(hidden.shape).index_add(0, g.source, from_successors) + self.bias_out
        input_reset, input_update, input_new = self.input_gates(torch.cat([incoming, outgoing], dim=1)).chunk(3, dim=1)
        hidden_reset, hidden_update, hidden_new = self.hidden_gates(hidden).chunk(3, dim=1)
        reset = torch.sigmoid(input_reset + hidden_reset)
        update = torch.sigmoid(input_update + hidden_update)
        new = torch.tanh(input_new + reset * hidden_new)
        return new + update * (hidden - new)


def node_states(items: torch.Tensor, embedding: nn.Embedding, cell: GatedGraphCell,
                steps: int) -> tuple[torch.Tensor, SessionGraphs]:
    """(B, L) right-aligned clicks -> the node states (n, d) after `steps` gated graph steps over each
    session's graph, and the graphs (SR-GNN's encoder, which GC-SAN and DANSeR build on);
    `states[graphs.click_node]` is each click's state."""
    graphs = session_graphs(items)
    hidden = embedding(graphs.node_items)  # (n, d)
    for _ in range(steps):
        hidden = cell(graphs, hidden)
    return hidden, graphs
