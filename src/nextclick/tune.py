"""A small grid search for statistical models, on the validation split, with the project's evaluation.

    best_config, record = grid_search(model, train_cases, valid_cases, {"neighbours": (500, 100)})

Every candidate config is fitted on `train` and evaluated on (a fixed random subset of) `valid` with
`nextclick.evaluate.evaluate`, the same full-ranking evaluation the test set gets; the candidate with
the best `metric` wins (ties go to the earlier candidate, so list the paper's value first). The record
holds the grid, every candidate's validation metrics and the chosen values, for the bench result.
Models opt in with a `tune` config flag: their `fit(train, valid)` runs the search when `valid` is
given, then fits with the chosen values, which therefore appear in the result's config.
Neural models, whose candidates train for many epochs each, are searched by `bench --grid`
(`nextclick.bench.grid_select`), which keeps every candidate's checkpoint so a search can resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np

from nextclick.data.sessions import Cases
from nextclick.evaluate import evaluate

DEFAULT_METRIC = "HR@20"  # the selection metric of the trainer and of the paper codes
DEFAULT_MAX_CASES = 20_000  # validation cases per candidate: enough to separate configs, cheap on 2 cores


def validation_subset(cases: Cases, max_cases: int = DEFAULT_MAX_CASES, seed: int = 0) -> Cases:
    """At most `max_cases` validation cases, drawn without replacement by a fixed seed, in file order."""
    if len(cases) <= max_cases:
        return cases
    chosen = np.sort(np.random.default_rng(seed).choice(len(cases), size=max_cases, replace=False))
    return cases.select(chosen)


def grid_candidates(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    """The cartesian product of the grid's values, in order (first values first)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def grid_search(
    model: Any,
    train: Cases,
    valid: Cases,
    grid: dict[str, tuple],
    *,
    metric: str = DEFAULT_METRIC,
    max_cases: int = DEFAULT_MAX_CASES,
    batch_size: int = 500,
    seed: int = 0,
) -> tuple[Any, dict]:
    """Fit a fresh copy of `model`'s class for every candidate (its config with the grid values
    replaced), evaluate it on the validation subset, and return (best config, search record)."""
    cases = validation_subset(valid, max_cases, seed)
    candidates = []
    best_index, best_value = 0, -np.inf
    for index, values in enumerate(grid_candidates(grid)):
        config = dataclasses.replace(model.config, **values)
        start = time.perf_counter()
        candidate = type(model)(model.n_items, config).fit(train, None)
        result = evaluate(candidate.score, cases, batch_size=batch_size, max_length=candidate.max_length)
        candidates.append({
            **values,
            **{k: round(v, 6) for k, v in result.metrics.items() if k.endswith("@20")},
            "seconds": round(time.perf_counter() - start, 2),
        })
        if result.metrics[metric] > best_value:
            best_index, best_value = index, result.metrics[metric]
    chosen = {k: candidates[best_index][k] for k in grid}
    record = {
        "metric": metric,
        "valid_cases": len(cases),
        "valid_cases_available": len(valid),
        "grid": {k: list(v) for k, v in grid.items()},
        "candidates": candidates,
        "chosen": chosen,
    }
    return dataclasses.replace(model.config, **chosen), record
