"""The contract every model keeps, checked on the embedded synthetic dataset (a shared test helper).

    from model_contract import check_contract
    def test_contract(tmp_path):
        check_contract("sknn", tmp_path)

It fits the model on the synthetic training sessions, then checks: it beats POP's test HR@20; scores are
(B, n_items + 1) with -inf in the padding column; a checkpoint round trip through
`nextclick.checkpoint.save`/`load` gives identical scores.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from nextclick import checkpoint
from nextclick.data.batches import make_batch
from nextclick.data.synthetic import generate
from nextclick.evaluate import evaluate
from nextclick.models import build


@functools.lru_cache(maxsize=1)
def synthetic():
    return generate().split


@functools.lru_cache(maxsize=1)
def pop_hit_rate() -> float:
    split = synthetic()
    pop = build("pop", split.n_items).fit(split.train_cases())
    return evaluate(pop.score, split.test).metrics["HR@20"]


def check_contract(name: str, directory: Path, overrides: dict | None = None):
    """Run the contract checks for registered model `name`; returns the fitted model."""
    split = synthetic()
    model = build(name, split.n_items, overrides).fit(split.train_cases(), None)

    result = evaluate(model.score, split.test)
    assert result.metrics["HR@20"] > pop_hit_rate(), (name, result.metrics["HR@20"], pop_hit_rate())

    batch = make_batch(split.test, np.arange(37), model.max_length)
    scores = model.score(batch)
    assert scores.shape == (37, split.n_items + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()

    path = checkpoint.save(directory / name, model, split.vocab, split.protocol, split.name)
    loaded, vocab, meta = checkpoint.load(path)
    assert meta["model"] == name and type(loaded) is type(model)
    assert torch.equal(loaded.score(batch), scores)
    return model
