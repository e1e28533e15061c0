"""The contract every model keeps, checked on the embedded synthetic dataset (a shared test helper).

    from model_contract import check_contract
    def test_contract(tmp_path):
        check_contract("sknn", tmp_path)

It fits the model on the synthetic training sessions, then checks: it beats POP's test HR@20; scores are
(B, n_items + 1) with -inf in the padding column; a checkpoint round trip through
`nextclick.checkpoint.save`/`load` gives identical scores.

Neural models use `check_short_training(model, directory)`: one epoch on the synthetic training
split beats POP on validation by a margin, and the checkpoint round trip is exact.
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


def check_forward_backward(model, batch) -> torch.Tensor:
    """Logits are (B, n_items + 1), -inf in the padding column and finite elsewhere; the loss gives
    every parameter a finite gradient. Returns the logits."""
    logits = model(batch)
    assert logits.shape == (len(batch), model.n_items + 1)
    assert torch.isneginf(logits[:, 0]).all() and torch.isfinite(logits[:, 1:]).all()
    model.loss(batch).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    return logits


@functools.lru_cache(maxsize=1)
def synthetic_validation():
    """(split, fit cases, validation cases, POP's validation HR@20) on the synthetic data."""
    split = synthetic()
    fit, valid = split.carve_validation()
    pop = build("pop", split.n_items).fit(fit)
    return split, fit, valid, evaluate(pop.score, valid).metrics["HR@20"]


def check_short_training(model, directory: Path, epochs: int = 1, margin: float = 0.05):
    """Train neural `model` briefly on synthetic data: it must beat POP on validation by `margin`,
    and its checkpoint must load back to identical scores."""
    from nextclick.train import TrainOptions, train_model

    split, fit, valid, pop_hr = synthetic_validation()
    train_model(model, fit, valid, TrainOptions(epochs=epochs, progress=False, quiet=True))
    hr = evaluate(model.score, valid, max_length=model.max_length).metrics["HR@20"]
    assert hr > pop_hr + margin, (model.name, hr, pop_hr)

    path = checkpoint.save(directory / model.name, model, split.vocab, split.protocol, split.name)
    loaded, _, meta = checkpoint.load(path)
    assert meta["model"] == model.name and loaded.config == model.config
    loaded.to(model.device)  # checkpoints load on the CPU; training used the GPU where there is one
    batch = make_batch(valid, np.arange(200), model.max_length)
    torch.testing.assert_close(model.score(batch), loaded.score(batch), rtol=0, atol=0)
    return model


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
