"""The model registry: the one place that lists models. `nextclick models` prints it."""

from __future__ import annotations

from typing import Any

from nextclick.models.base import Recommender
from nextclick.models.config import ConfigError, config_from_overrides
from nextclick.models.danser import DANSeR
from nextclick.models.dsan import DSAN
from nextclick.models.factorization import BPRMF, FPMC
from nextclick.models.gcsan import GCSAN
from nextclick.models.gru4rec import GRU4Rec
from nextclick.models.knn import STAN, ItemKNN, SessionKNN, VectorSessionKNN
from nextclick.models.narm import NARM
from nextclick.models.popularity import Pop, SessionPop
from nextclick.models.sriem import SRIEM
from nextclick.models.srgnn import SRGNN
from nextclick.models.stamp import STAMP

REGISTRY: dict[str, type[Recommender]] = {
    "pop": Pop,
    "s-pop": SessionPop,
    "item-knn": ItemKNN,
    "sknn": SessionKNN,
    "v-sknn": VectorSessionKNN,
    "stan": STAN,
    "bpr-mf": BPRMF,
    "fpmc": FPMC,
    "gru4rec": GRU4Rec,
    "narm": NARM,
    "sr-iem": SRIEM,
    "sr-gnn": SRGNN,
    "gc-san": GCSAN,
    "stamp": STAMP,
    "dsan": DSAN,
    "danser": DANSeR,
}


def register(cls: type[Recommender]) -> type[Recommender]:
    REGISTRY[cls.name] = cls
    return cls


def model_class(name: str) -> type[Recommender]:
    key = name.lower()
    if key not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def build(name: str, n_items: int, overrides: dict[str, Any] | None = None) -> Recommender:
    cls = model_class(name)
    return cls(n_items, config_from_overrides(cls.Config, overrides))


__all__ = ["REGISTRY", "build", "model_class", "register"]
