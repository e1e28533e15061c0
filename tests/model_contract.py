"""Shared helpers for the model tests: the synthetic split, a model fitted on it once per test session,
and the forward/backward check every neural model passes.

    from model_contract import fitted, synthetic
    model = fitted("sknn")            # fitted on the synthetic training sessions (neural: one short training)
"""

from __future__ import annotations

import functools

import torch

from nextclick.data.synthetic import generate
from nextclick.evaluate import evaluate
from nextclick.models import REGISTRY, build
from nextclick.training.loop import TrainOptions, train_model

# small and quick settings for the neural models, so one epoch on the synthetic data learns something
QUICK = {
    "fpmc": {"epochs": 3},
    "narm": {"embedding_size": 32, "hidden_size": 48, "batch_size": 256, "lr": 5e-3},
    "sr-iem": {"embedding_size": 64, "attention_size": 32, "batch_size": 256, "lr": 5e-3},
    "dsan": {"embedding_dim": 32, "batch_size": 256, "lr": 3e-3, "fast_entmax": True},
    "sr-gnn": {"hidden_size": 32, "batch_size": 256, "lr": 5e-3},
    "gc-san": {"hidden_size": 32, "batch_size": 256, "lr": 5e-3},
    "gru4rec": {"n_sample": 256},
    "danser": {"hidden_size": 32, "batch_size": 256, "lr": 5e-3},
    "bert4rec": {"hidden_size": 32, "inner_size": 64, "dropout": 0.1, "attention_dropout": 0.0, "lr": 1e-2,
                 "weight_std": 0.1, "weight_decay": 0.0, "mask_last_ratio": 0.5},
    "cosan": {"embedding_size": 32, "batch_size": 256, "lr": 2e-2, "sample_size": 20},
    "csrm": {"embedding_size": 32, "hidden_size": 32, "batch_size": 256, "lr": 1e-2, "memory_slots": 2000,
             "neighbours": 256},
}
QUICK_BATCHES = {"narm": 40, "sr-iem": 40, "dsan": 60, "stamp": 30, "sr-gnn": 40, "gc-san": 40, "gru4rec": 200, "danser": 40, "bert4rec": 30, "cosan": 40, "csrm": 15}  # of one epoch: enough for DSAN to beat POP by ten points


@functools.lru_cache(maxsize=1)
def synthetic():
    return generate().split


@functools.lru_cache(maxsize=1)
def synthetic_validation():
    """(split, fit cases, validation cases, POP's validation HR@20) on the synthetic data."""
    split = synthetic()
    fit, valid = split.carve_validation()
    pop = build("pop", split.n_items).fit(fit)
    return split, fit, valid, evaluate(pop.score, valid).metrics["HR@20"]


@functools.lru_cache(maxsize=None)
def fitted(name: str):
    """Registered model `name` fitted on the synthetic training cases: statistical models by `fit`,
    neural ones by one epoch of the trainer (with QUICK settings). Shared by the tests: do not modify."""
    split = synthetic()
    torch.manual_seed(0)
    model = build(name, split.n_items, QUICK.get(name))
    cases = split.train_cases()
    if model.neural:
        train_model(model, cases, None, TrainOptions(epochs=1, max_batches=QUICK_BATCHES.get(name), progress=False,
                                                     quiet=True, device="cpu"))
    else:
        model.prepare(cases.sessions)
        model.fit(cases)
    return model


@functools.lru_cache(maxsize=1)
def pop_hit_rate() -> float:
    return evaluate(fitted("pop").score, synthetic().test).metrics["HR@20"]


def registered() -> list[str]:
    return sorted(REGISTRY)


def check_forward_backward(model, batch) -> torch.Tensor:
    """`scores, loss = model(batch, labels)`: scores are (B, n_items + 1), -inf in the padding column and
    finite elsewhere; without labels the loss is None; the training loss (scores may be None there)
    equals the loss computed from the scores; it gives every parameter a finite gradient. Returns the
    scores."""
    with torch.no_grad():  # first: DSAN renormalises its embedding rows in place at every lookup
        scores, no_loss = model(batch)
        assert no_loss is None
        torch.manual_seed(0)  # the same dropout masks and sampled negatives in both calls
        plain_loss = model(batch, batch.labels)[1]
    torch.manual_seed(0)
    trained_scores, loss = model(batch, batch.labels)  # may be None: a loss computed without the scores
    if trained_scores is not None:
        scores = trained_scores
    assert torch.allclose(loss, plain_loss, rtol=1e-4, atol=1e-6)
    assert scores.shape == (len(batch), model.n_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    return scores
