"""DSAN's query vectors compiled with numba, one session at a time: serving's per-request encoder.

`DSAN.numpy_query_vectors` computes what `DSAN.query_vectors` does in evaluation mode with numpy array
calls; a lone query still makes a few hundred of them, about a millisecond of call overhead on this CPU,
which was the largest single part of a served DSAN request after the item matmul (docs/serving.md). The
same arithmetic compiled by numba makes no Python call at all: each session is encoded at its own length
(no padding, no masks), its entmax thresholds found by the same Newton iterates as
`layers.alpha_entmax_numpy` in scalar loops. tests/test_dsan.py checks the vectors of every variant
against `query_vectors`. This module imports numba (the `serve` extra); `DSAN.numpy_query_vectors` uses
it when numba is installed and the numpy form otherwise.

Compiled functions are cached beside this file (numba's `cache=True`), so a service starts without
recompiling after its first start; `make install` compiles them ahead (`serve.index.compile_ahead`), which takes
10-20 s on this machine. Nothing here imports dsan.py, which builds the arguments (`_compiled_arguments`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nextclick.models.layers import SELU_ALPHA, SELU_SCALE

# variants (DSANConfig.variant) and how the two attention layers normalise, as small integers for numba
VARIANTS = {"dsan": 0, "ns": 1, "nt": 2, "da": 3}
ADAPTIVE, FIXED, DENSE = 0, 1, 2


@njit(cache=True, fastmath=True)
def _matmul(a, b):
    """a (n, k) @ b (k, m) by loops that LLVM vectorises along b's rows: for the encoder's small matrices
    (a few rows by 200) a BLAS call through numba cost 94 us where this costs a fraction (in process)."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            value = a[i, k]
            for j in range(b.shape[1]):
                out[i, j] += value * b[k, j]
    return out


@njit(cache=True)
def _renormed_row(table, row, max_norm, out):
    """out = table[row] scaled to max_norm if its norm is larger (nn.Embedding's max_norm rule)."""
    total = 0.0
    for j in range(table.shape[1]):
        total += table[row, j] * table[row, j]
    norm = math.sqrt(total)
    scale = max_norm / (norm + 1e-7) if norm > max_norm else 1.0
    for j in range(table.shape[1]):
        out[j] = table[row, j] * scale


@njit(cache=True)
def _normalise_row(x, alpha, dense, out):
    """out = alpha-entmax(x) (softmax when dense): `layers.alpha_entmax_numpy` for one row."""
    n = x.shape[0]
    if dense:
        top = x.max()
        total = 0.0
        for i in range(n):
            out[i] = math.exp(x[i] - top)
            total += out[i]
        for i in range(n):
            out[i] /= total
        return
    alpha_minus_one = alpha - 1.0
    exponent = 1.0 / alpha_minus_one
    top = x.max() * alpha_minus_one
    tau = top - 1.0
    tau_high = top - (1.0 / n) ** alpha_minus_one
    for _ in range(50):
        total, slope_sum = 0.0, 0.0
        for i in range(n):
            gap = x[i] * alpha_minus_one - tau
            if gap > 0:
                power = gap ** (exponent - 1)
                total += power * gap
                slope_sum += power
        norm = total ** alpha_minus_one
        slope = norm * slope_sum
        step = (norm - 1) * total / slope if slope > 0 else 0.0
        step = max(step, 0.0)
        tau = min(tau + step, tau_high)
        if step <= 1e-6 * (1 + abs(tau)):
            break
    total = 0.0
    for i in range(n):
        gap = x[i] * alpha_minus_one - tau
        out[i] = gap ** exponent if gap > 0 else 0.0
        total += out[i]
    for i in range(n):
        out[i] /= total


@njit(cache=True)
def _alpha(vector, weight, bias, mode, fixed, guard):
    if mode == FIXED:
        return fixed
    if mode == DENSE:
        return 1.0
    logit = np.float32((vector * weight).sum() + bias)
    alpha = np.float32(1.0 / (1.0 + math.exp(-logit))) + np.float32(1.0)  # in float32, as torch's
    return guard if alpha == 1.0 else float(alpha)


@njit(cache=True)
def encode_sessions(clicks, starts, full_lengths, target_token, max_positions, items, positions, max_norm,
                    query_weight, query_bias, ffn_in_weight, ffn_in_bias, ffn_out_weight, ffn_out_bias,
                    norm_scale, norm_shift, norm_eps, alpha_weight, alpha_bias, alpha_mode, fixed_alpha, alpha_guard,
                    variant, key_weight, target_weight, attention_bias, attention_vector, decoder_weight,
                    decoder_bias, w_k):
    """(B, d) query vectors w_k * z / |z| of the sessions clicks[starts[b]:starts[b + 1]] (the clicks the
    model reads, oldest first; full_lengths: each prefix's whole length, for the positions). Weights are
    laid out for `x @ weight` (nn.Linear's transposed), contiguous."""
    sessions = starts.shape[0] - 1
    d = items.shape[1]
    width = 2 * d
    dense = alpha_mode == DENSE
    out = np.empty((sessions, decoder_weight.shape[1]), dtype=np.float32)
    for b in range(sessions):
        start, length = starts[b], starts[b + 1] - starts[b]
        C = np.empty((length + 1, width), dtype=np.float32)  # clicks, then the target token
        for j in range(length + 1):
            token = clicks[start + j] if j < length else target_token
            _renormed_row(items, token, max_norm, C[j, :d])
            _renormed_row(positions, min(full_lengths[b] - length + 1 + j, max_positions), max_norm, C[j, d:])
        if variant == 1:  # ns: no self-attention
            O = C
        else:
            Q = np.maximum(_matmul(C, query_weight) + query_bias, np.float32(0))
            scores = _matmul(Q, np.ascontiguousarray(C.T)) / np.float32(math.sqrt(width))
            alpha = _alpha(C[length], alpha_weight, alpha_bias, alpha_mode, fixed_alpha, alpha_guard)
            A = np.empty_like(scores)
            for i in range(length + 1):
                _normalise_row(scores[i], alpha, dense or alpha == 1.0, A[i])
            O = _matmul(A, C)
            O = O + _matmul(np.maximum(_matmul(O, ffn_in_weight) + ffn_in_bias, np.float32(0)), ffn_out_weight) + ffn_out_bias
            for i in range(length + 1):
                mean = O[i].mean()
                deviation = O[i] - mean
                variance = (deviation * deviation).mean()
                O[i] = deviation / np.float32(math.sqrt(variance + norm_eps)) * norm_scale + norm_shift
        target = O[length].copy()
        if variant == 2:  # nt: no target attention
            hidden = target
        else:
            keys = np.ascontiguousarray(O[:length])
            projected = _matmul(target.reshape(1, -1), target_weight)[0]
            gated = np.maximum(_matmul(keys, key_weight) + projected + attention_bias, np.float32(0))
            u = _matmul(gated, attention_vector.reshape(-1, 1))[:, 0]
            alpha = _alpha(target, alpha_weight, alpha_bias, alpha_mode, fixed_alpha, alpha_guard)
            beta = np.empty(length, dtype=np.float32)
            _normalise_row(u, alpha, dense or alpha == 1.0, beta)
            hidden = np.concatenate((_matmul(beta.reshape(1, -1), C[:length])[0], target))
        x = _matmul(hidden.reshape(1, -1), decoder_weight)[0] + decoder_bias
        z = np.empty_like(x)
        for j in range(x.shape[0]):
            z[j] = SELU_SCALE * (x[j] if x[j] > 0 else SELU_ALPHA * math.expm1(x[j]))
        out[b] = w_k * z / max(math.sqrt((z * z).sum()), 1e-12)
    return out

