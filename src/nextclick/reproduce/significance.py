"""Paired t-tests on the per-case test ranks a bench writes (ranks.npz), without torch.

The test of nextclick.evaluate.paired_test (two-sided, on each case's hit@K and reciprocal rank@K, as
the DSAN and SR-IEM papers report), computed here from the ranks alone: evaluate.py imports torch, and
a report must run where only the result files are. With several seeds per side, each case's hit and
reciprocal rank are first averaged over that side's seeds. tests/test_reproduce.py checks this against
scipy.stats.ttest_rel.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LEVEL = 0.01  # the DSAN and SR-IEM papers mark improvements at p < 0.01


def per_case(ranks: Sequence[np.ndarray], metric: str) -> np.ndarray:
    """Each case's hit@K ("HR@K") or reciprocal rank@K ("MRR@K"), averaged over the given runs' ranks."""
    name, k = metric.split("@")
    k = int(k)
    rows = []
    for r in ranks:
        r = np.asarray(r, dtype=np.float64)
        rows.append((r <= k).astype(np.float64) if name == "HR" else np.where(r <= k, 1.0 / r, 0.0))
    return np.mean(rows, axis=0)


def paired_t(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sided paired t-test of a against b: {"mean_difference", "t", "p"} (scipy.stats.ttest_rel's t
    and p; identical samples give t = 0, p = 1)."""
    if a.shape != b.shape:
        raise ValueError("a paired test needs both sides evaluated on the same cases")
    difference = a - b
    mean = float(np.mean(difference))
    if np.array_equal(a, b):
        return {"mean_difference": 0.0, "t": 0.0, "p": 1.0}
    spread = float(np.std(difference, ddof=1))
    if spread == 0.0:  # every case differs by the same amount
        return {"mean_difference": mean, "t": math.copysign(math.inf, mean), "p": 0.0}
    from scipy.special import stdtr  # Student's t CDF; scipy.stats would cost a second of start-up

    t = mean / (spread / math.sqrt(len(difference)))
    return {"mean_difference": mean, "t": t, "p": float(2.0 * stdtr(len(difference) - 1, -abs(t)))}


def compare(ranks_a: Sequence[np.ndarray], ranks_b: Sequence[np.ndarray], metric: str) -> dict[str, float]:
    """The paired test of side a against side b on `metric` (HR@K or MRR@K), seeds averaged per case."""
    return paired_t(per_case(ranks_a, metric), per_case(ranks_b, metric))
