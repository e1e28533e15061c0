"""Full-ranking evaluation: one function used by the CLI, the trainer, benchmarks and tests.

rank = 1 + #{items j != target, j >= 1 : score_j >= score_target}: every item of the catalogue is a
candidate (items already in the session too), padding (column 0) never is, and ties count against
the target (GRU4Rec's "conservative" rule), so a model cannot gain from constant scores.
HR@K = mean(rank <= K); MRR@K = mean(1/rank if rank <= K else 0).
Scores are computed batch by batch and reduced to ranks at once, so memory stays bounded by
batch_size x n_items whatever the size of the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from nextclick.data.batches import Batch, iterate_batches
from nextclick.data.sessions import Cases

DEFAULT_KS = (5, 10, 20)


def ranks_from_scores(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, n_items + 1) scores, (B,) labels -> (B,) pessimistic 1-based ranks over columns 1..n.

    A NaN target score ranks last; NaN elsewhere never outranks the target."""
    candidates = scores[:, 1:]
    target = scores.gather(1, labels.unsqueeze(1))  # (B, 1)
    at_least = (candidates >= target).sum(dim=1)  # counts the target itself once
    ranks = at_least  # 1 + (#others >= target) == #(all >= target) including the target
    worst = torch.full_like(ranks, candidates.shape[1])
    return torch.where(torch.isnan(target.squeeze(1)), worst, ranks)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def reciprocal_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    return np.where(ranks <= k, 1.0 / ranks, 0.0)


def mrr(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(reciprocal_ranks(ranks, k))) if len(ranks) else 0.0


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_rate(ranks, k)
    for k in ks:
        out[f"MRR@{k}"] = mrr(ranks, k)
    return out


def length_bucket(length: int, cap: int) -> str:
    return str(length) if length < cap else f"{cap}+"


def by_length(ranks: np.ndarray, lengths: np.ndarray, ks: Sequence[int] = DEFAULT_KS, cap: int = 20) -> dict:
    """Metrics per prefix length (lengths >= cap pooled), as NARM Table 5 and SR-IEM Figure 2."""
    buckets: dict[str, dict] = {}
    clipped = np.minimum(lengths, cap)
    for value in np.unique(clipped):
        chosen = clipped == value
        buckets[length_bucket(int(value), cap)] = {"cases": int(chosen.sum()), **metrics_from_ranks(ranks[chosen], ks)}
    return buckets


@dataclass
class Evaluation:
    ranks: np.ndarray  # (n_cases,) int64, in the order of the evaluated Cases
    lengths: np.ndarray  # (n_cases,) prefix lengths
    ks: tuple[int, ...] = DEFAULT_KS
    seconds: float = 0.0
    repeats: np.ndarray | None = None  # (n_cases,) bool: the label was already clicked in the prefix
    metrics: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = metrics_from_ranks(self.ranks, self.ks)

    def by_length(self, cap: int = 20) -> dict:
        return by_length(self.ranks, self.lengths, self.ks, cap)

    def by_repeat(self) -> dict:
        """Metrics on repeat targets (already in the prefix) and on new ones, with each group's share:
        repeats are easy (S-POP gets nearly all of them), so this shows where a model's hits come from."""
        if self.repeats is None:
            return {}
        out = {}
        for name, chosen in (("repeat", self.repeats), ("new", ~self.repeats)):
            out[name] = {"cases": int(chosen.sum()), "share": round(float(chosen.mean()), 6) if len(chosen) else 0.0,
                         **{k: round(v, 6) for k, v in metrics_from_ranks(self.ranks[chosen], self.ks).items()}}
        return out

    def summary(self) -> dict:
        return {
            "cases": int(len(self.ranks)),
            **{k: round(v, 6) for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 3),
            "cases_per_second": round(len(self.ranks) / self.seconds, 1) if self.seconds else None,
        }


def evaluate(
    score: Callable[[Batch], torch.Tensor],
    cases: Cases,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 500,
    max_length: int | None = None,
    progress: bool = False,
    description: str = "evaluate",
) -> Evaluation:
    """Rank every case's label against the whole catalogue with `score(batch) -> (B, n_items + 1)`."""
    import time

    start = time.perf_counter()
    ranks = np.empty(len(cases), dtype=np.int64)
    done = 0
    from nextclick.runtime import progress_interval

    bar = tqdm(total=len(cases), desc=description, unit="case", disable=not progress, leave=False,
               mininterval=progress_interval())
    with torch.inference_mode():
        for batch in iterate_batches(cases, batch_size, max_length):
            scores = score(batch)
            ranks[done : done + len(batch)] = ranks_from_scores(scores, batch.labels.to(scores.device)).cpu().numpy()
            done += len(batch)
            bar.update(len(batch))
    bar.close()
    return Evaluation(ranks, cases.length.copy(), tuple(ks), time.perf_counter() - start, cases.repeats())


def paired_test(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 20) -> dict:
    """Paired two-sided t-tests between two models' per-case results on the same cases (the test
    the DSAN and SR-IEM papers report): hits@K and reciprocal ranks@K."""
    from scipy import stats as scipy_stats  # here, not at import: scipy.stats costs a second of start-up

    if ranks_a.shape != ranks_b.shape:
        raise ValueError("paired test needs both models evaluated on the same cases")
    out = {}
    for name, a, b in (
        (f"HR@{k}", (ranks_a <= k).astype(float), (ranks_b <= k).astype(float)),
        (f"MRR@{k}", reciprocal_ranks(ranks_a, k), reciprocal_ranks(ranks_b, k)),
    ):
        if np.array_equal(a, b):
            out[name] = {"mean_difference": 0.0, "t": 0.0, "p": 1.0}
            continue
        result = scipy_stats.ttest_rel(a, b)
        out[name] = {"mean_difference": float(np.mean(a - b)), "t": float(result.statistic), "p": float(result.pvalue)}
    return out
