"""Paired t-tests on the per-case test ranks a bench writes (ranks.npz), without torch.

The test of nextclick.evaluate.paired_test (two-sided, on each case's hit@K and reciprocal rank@K, as
the DSAN and SR-IEM papers report), computed here from the ranks alone: evaluate.py imports torch, and
a report must run where only the result files are. With several seeds per side, each case's hit and
reciprocal rank are first averaged over that side's seeds. tests/test_reproduce.py checks this against
scipy.stats.ttest_rel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
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


def read_ranks(path: str | Path) -> tuple[Path, dict, np.ndarray]:
    """(its folder, result.json, the per-case test ranks) of one bench result: its folder or its result.json."""
    folder = Path(path)
    if folder.name == "result.json":
        folder = folder.parent
    result_file, ranks_file = folder / "result.json", folder / "ranks.npz"
    if not result_file.is_file():
        raise FileNotFoundError(f"{path}: no result.json there (a bench result folder: results/<dataset>/<model>/<run id>)")
    if not ranks_file.is_file():
        raise FileNotFoundError(f"{folder}: no ranks.npz beside result.json (a paired test needs each case's rank)")
    return folder, json.loads(result_file.read_text()), np.load(ranks_file)["ranks"]


def compare_sides(a: Sequence[np.ndarray], b: Sequence[np.ndarray], k: int = 20,
                  groups: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Side a against side b (each one or more seeds' ranks on the same cases) on HR@k and MRR@k, for all
    cases and for each boolean case mask in `groups`: rows of {"group", "cases", "metric", "a", "b",
    "mean_difference", "t", "p"}, the sides' means taken over cases after averaging each case over seeds."""
    lengths = {len(r) for r in (*a, *b)}
    if len(lengths) != 1:
        raise ValueError(f"the runs were tested on different numbers of cases ({sorted(lengths)}): not the same test set")
    rows = []
    for group, mask in {"all": None, **(groups or {})}.items():
        for metric in (f"HR@{k}", f"MRR@{k}"):
            case_a = per_case([r if mask is None else r[mask] for r in a], metric)
            case_b = per_case([r if mask is None else r[mask] for r in b], metric)
            rows.append({"group": group, "cases": len(case_a), "metric": metric, "a": float(case_a.mean()),
                         "b": float(case_b.mean()), **paired_t(case_a, case_b)})
    return rows


def comparison_markdown(rows: list[dict], label_a: str, label_b: str) -> str:
    """The rows of `compare_sides` as a markdown table, in percent; a * where p < LEVEL."""
    lines = [f"A: {label_a}", f"B: {label_b}", "",
             "| cases | metric | A | B | A - B | t | p |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = " *" if row["p"] < LEVEL else ""
        lines.append(f"| {row['group']} ({row['cases']:,}) | {row['metric']} | {100 * row['a']:.2f} | {100 * row['b']:.2f} "
                     f"| {100 * row['mean_difference']:+.2f}{mark} | {row['t']:.2f} | {row['p']:.2g} |")
    lines.append(f"\n* p < {LEVEL}: two-sided paired t-test over the cases (each case's hit or reciprocal rank, "
                 "averaged over a side's seeds)")
    return "\n".join(lines)
