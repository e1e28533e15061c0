import os
from pathlib import Path

import pytest
import torch

from nextclick.data.benchmarks import data_dir

# tests are small: one thread avoids oversubscription when other jobs share the cores
torch.set_num_threads(1)
# DSAN's numba-compiled serving encoder compiles in 10-20 s the first time; only the test of that encoder
# (tests/test_dsan.py) turns it on, the serving tests use its numpy form (models/dsan.py)
os.environ.setdefault("NEXTCLICK_COMPILED", "0")


@pytest.fixture(autouse=True)
def _back_to_one_thread():
    """CLI commands set torch threads to the core count; put it back so later tests stay on one."""
    yield
    torch.set_num_threads(1)


@pytest.fixture
def length_group_calls(monkeypatch) -> list:
    """A list that grows by one each time DSAN splits a batch into length groups."""
    from nextclick.models import dsan

    calls: list = []
    grouped = dsan.length_groups
    monkeypatch.setattr(dsan, "length_groups", lambda lengths: calls.append(1) or grouped(lengths))
    return calls


@pytest.fixture(scope="session")
def benchmarks_dir():
    root = data_dir()
    if root is None or not (root / "benchmarks").is_dir():
        pytest.skip("published splits not found (set NEXTCLICK_DATA or put ../shared/data beside the checkout)")
    return root / "benchmarks"


def _raw(name: str) -> Path:
    base = data_dir()
    if base is None or not (base / "raw" / name).is_file():
        pytest.skip(f"shared data absent: raw/{name} not found (set $NEXTCLICK_DATA or place ../shared/data)")
    return base / "raw" / name


@pytest.fixture(scope="module")
def diginetica_path() -> Path:
    """The real Diginetica train-item-views.csv sample in ../shared/data/raw."""
    return _raw("diginetica_sample_train-item-views.csv")


@pytest.fixture(scope="module")
def yoochoose_path() -> Path:
    """The real Yoochoose yoochoose-clicks.dat sample in ../shared/data/raw."""
    return _raw("yoochoose_sample_clicks.dat")


@pytest.fixture
def tiny_model(monkeypatch):
    """A registered neural model ("tiny") small enough that grid, refit and status tests train in
    milliseconds: the mean of a session's item vectors scored against every item."""
    from dataclasses import dataclass

    from torch import nn

    from nextclick.models import REGISTRY
    from nextclick.models.neural import NeuralModel, cross_entropy

    @dataclass(frozen=True)
    class TinyConfig:
        embedding_size: int = 8
        dropout: float = 0.0
        lr: float = 0.01
        batch_size: int = 256
        epochs: int = 2
        max_length: int | None = 5
        shuffle: bool = True

    class Tiny(NeuralModel):
        name = "tiny"
        Config = TinyConfig

        def __init__(self, n_items, config=None):
            super().__init__(n_items, config)
            self.embedding = nn.Embedding(n_items + 1, self.config.embedding_size, padding_idx=0)
            self.dropout = nn.Dropout(self.config.dropout)

        def query_vectors(self, batch):
            with self.evaluating():
                return self._query(batch.to(self.device))

        def item_vectors(self):
            return self.embedding.weight.detach().clone()

        def _query(self, batch):
            rows = self.embedding(batch.items)  # (B, L, D), zero at padding
            return self.dropout(rows.sum(1) / batch.lengths.unsqueeze(1))

        def forward(self, batch, labels=None):
            scores = self._query(batch) @ self.embedding.weight.T  # (B, N + 1)
            scores[:, 0] = -torch.inf
            return scores, cross_entropy(scores, labels)

    monkeypatch.setitem(REGISTRY, "tiny", Tiny)
    return Tiny
