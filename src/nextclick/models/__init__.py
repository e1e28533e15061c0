"""The model registry: the one place that lists models. `nextclick models` prints it.

A model's module is imported when its class is first asked for, not when the package is: most models
import torch, and commands that only need a name or a constant (`nextclick --help`, `data prepare`,
`report`, the serving limits) should not wait seconds for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from nextclick.models.config import ConfigError, config_from_overrides

if TYPE_CHECKING:
    from nextclick.models.base import Recommender

# name -> "module:Class" (a module of this package), in the order `nextclick models` lists them
MODELS: dict[str, str] = {
    "pop": "popularity:Pop",
    "s-pop": "popularity:SessionPop",
    "item-knn": "knn:ItemKNN",
    "sknn": "knn:SessionKNN",
    "v-sknn": "knn:VectorSessionKNN",
    "stan": "knn:STAN",
    "bpr-mf": "factorization:BPRMF",
    "fpmc": "factorization:FPMC",
    "gru4rec": "gru4rec:GRU4Rec",
    "narm": "narm:NARM",
    "sr-iem": "sriem:SRIEM",
    "sr-gnn": "srgnn:SRGNN",
    "gc-san": "gcsan:GCSAN",
    "stamp": "stamp:STAMP",
    "dsan": "dsan:DSAN",
    "danser": "danser:DANSeR",
    "bert4rec": "bert4rec:BERT4Rec",
    "csrm": "csrm:CSRM",
    "cosan": "cosan:CoSAN",
}


class Registry(MutableMapping):
    """name -> model class, importing a model's module on first access."""

    def __init__(self, where: dict[str, str]):
        self._where = dict(where)
        self._classes: dict[str, type[Recommender]] = {}

    def __getitem__(self, name: str) -> type[Recommender]:
        if name not in self._classes:
            module, cls = self._where[name].split(":")  # KeyError for an unknown name, as a dict
            module = module if "." in module else f"nextclick.models.{module}"
            self._classes[name] = getattr(importlib.import_module(module), cls)
        return self._classes[name]

    def __setitem__(self, name: str, cls: type[Recommender]) -> None:
        self._where[name] = f"{cls.__module__}:{cls.__qualname__}"
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._classes.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


REGISTRY = Registry(MODELS)


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


__all__ = ["MODELS", "REGISTRY", "Registry", "build", "model_class", "register"]
