"""Model configs: a frozen dataclass per model whose defaults are its paper's settings. Overrides
(`--set key=value`, a checkpoint's config.json, a grid candidate) are type-checked here, unknown keys
rejected, and every numeric value checked against `LIMITS`, with a message naming the option, the value
and what is allowed. Checkpoint loading builds its config here too, so a tampered config.json is
refused before a model allocates anything.

The limits are wide (no paper setting comes near them) but finite: a size bounds the memory a model
may ask for, and NaN or infinity never passes."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

# The most clicks of one prefix any model reads (the most recent are kept). No published split comes
# near it: the longest prefix is 284 clicks (Retailrocket training), 127 in any test set. DSAN's
# position table (max_positions, 512 rows) is bounded by it, and its attention costs L^2 per session.
MAX_SESSION_LENGTH = 512


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Limit:
    """The values a numeric config field allows: low <= value <= high (strict where `open_low`)."""

    low: float
    high: float
    open_low: bool = False
    integer: bool = False

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {'(' if self.open_low else '['}{_plain(self.low)}, {_plain(self.high)}]"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _count(low: int, high: int) -> Limit:
    return Limit(low, high, integer=True)


SIZE = _count(1, 1024)  # vector widths (papers: 50 to 200): an item table is n_items x this
PROBABILITY = Limit(0.0, 0.999)  # dropouts: 1 would drop everything
RATE = Limit(0.0, 10.0, open_low=True)  # learning rates
PENALTY = Limit(0.0, 10.0)  # L2 terms
POSITIVE = Limit(0.0, 1e9, open_low=True)
NON_NEGATIVE = Limit(0.0, 1e9)

# One rule per field name, shared by every model that uses the name (the names mean the same thing in
# every model). tests/test_bad_input.py checks that every numeric field of every registered Config
# has one.
LIMITS: dict[str, Limit] = {
    "embedding_dim": SIZE, "embedding_size": SIZE, "hidden_size": SIZE, "attention_size": SIZE, "factors": SIZE,
    "dropout": PROBABILITY, "embedding_dropout": PROBABILITY, "context_dropout": PROBABILITY,
    "lr": RATE, "learning_rate": RATE,
    "weight_decay": PENALTY, "regularization": PENALTY,
    "lr_decay": Limit(0.0, 1.0, open_low=True),  # a multiplier: 1 = no decay
    "lr_decay_every": _count(0, 10_000),  # 0 = never
    "batch_size": _count(1, 65_536),
    "epochs": _count(1, 10_000),
    "patience": _count(1, 10_000),
    "seed": _count(0, 2**32 - 1),
    "max_length": _count(1, MAX_SESSION_LENGTH),  # None (no truncation) is allowed where the type says so
    "max_positions": _count(1, MAX_SESSION_LENGTH),
    "max_norm": POSITIVE,
    "w_k": POSITIVE,
    "alpha": Limit(1.0, 2.0),  # entmax alpha: 1 = softmax, 2 = sparsemax (paper Figure 4's range)
    "alpha_guard": Limit(1.0, 2.0, open_low=True),
    "init_scale": Limit(0.0, 10.0, open_low=True),
    "weight_std": Limit(0.0, 10.0, open_low=True),
    "embedding_std": Limit(0.0, 10.0, open_low=True),
    "max_grad_norm": POSITIVE,  # None: no clipping
    "steps": _count(1, 32),  # gated graph steps (SR-GNN, GC-SAN: 1)
    "blocks": _count(0, 32),  # self-attention blocks (GC-SAN: 1; 0 = the graph states alone)
    "weight": Limit(0.0, 1.0),  # GC-SAN's w, a blend of two states
    "repeat_mode_weight": Limit(0.0, 100.0),  # the repeat decoder's mode loss (models/repeat.py)
    "repeat_explore_weight": Limit(0.0, 100.0),  # the repeat decoder's explore cross-entropy (models/repeat.py)
    "neighbours": _count(1, 10_000_000),
    "memory_slots": _count(1, 200_000),  # CSRM's memory of recent sessions (official: 10,000 rows)
    "sample_size": _count(0, 1_000_000_000),  # 0 = every session
    "shrinkage": NON_NEGATIVE,
    "idf_weighting": NON_NEGATIVE,  # 0 = off
    "position_decay": POSITIVE,
    "neighbour_position_decay": POSITIVE,
    "recency_decay": NON_NEGATIVE,  # 0 = no recency factor
    # GRU4Rec (official parameter names in comments)
    "dropout_embedding": PROBABILITY, "dropout_hidden": PROBABILITY,  # dropout_p_embed, dropout_p_hidden
    "n_sample": _count(0, 1_000_000),  # extra negatives per step (official: 2048)
    "sample_alpha": Limit(0.0, 10.0),  # popularity exponent of the sampled negatives
    "logq": Limit(0.0, 10.0),  # 0 = no popularity correction
    "bpreg": NON_NEGATIVE,
    "elu_param": NON_NEGATIVE,  # 0 = no ELU
    "momentum": Limit(0.0, 0.999),
    # DANSeR (models/danser.py)
    "layers": _count(0, 32),  # gated graph layers, each a receptive field
    "scale": Limit(0.0, 1000.0, open_low=True),  # fixed cosine scale
    "hard_negative_weight": Limit(0.0, 100.0),  # 0 = no hard-negative loss
    "hard_negative_margin": Limit(0.0, 1000.0),
    "hard_negative_temperature": Limit(0.0, 100.0, open_low=True),
    "min_negatives": _count(0, 100_000),
    "max_negatives": _count(1, 100_000),
    "warmup_epochs": _count(0, 10_000),
    # BERT4Rec (models/bert4rec.py) and CoSAN (models/cosan.py)
    "heads": _count(1, 64),  # attention heads (a divisor of the width)
    "inner_size": _count(1, 4096),  # feed-forward width (BERT: 4 x hidden)
    "attention_dropout": PROBABILITY,
    "mask_probability": Limit(0.0, 1.0),  # share of a sequence's tokens masked in a Cloze sample
    "mask_last_ratio": Limit(0.0, 1.0),  # share of samples that mask only the last token
    "neighbour_weight": Limit(0.0, 100.0),  # CoSAN's alpha on the neighbour sessions
}
# where one model gives a name a wider meaning
CLASS_LIMITS: dict[str, dict[str, Limit]] = {
    "ItemKNNConfig": {"neighbours": _count(0, 10_000_000)},  # 0 = every similar item
    "CoSANConfig": {"neighbours": _count(1, 1000)},  # neighbour sessions per click (a (clicks, k) table)
}


def limit_of(config_class: type, name: str) -> Limit | None:
    return CLASS_LIMITS.get(config_class.__name__, {}).get(name, LIMITS.get(name))


def check_config(config: Any) -> Any:
    """`config` itself when every numeric value is within its limit; else ConfigError naming the first
    value that is not."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        limit = limit_of(type(config), field.name)
        if limit is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not limit.allows(value):
            raise ConfigError(f"option {field.name!r} must be {limit.describe()}; got {value!r}")
    return config


def config_from_overrides(config_class: type, overrides: dict[str, Any] | None = None, base: Any = None):
    """Build a model Config from {field: value}; values may be strings from the command line.
    Unknown keys and values of the wrong type are rejected with a message naming them."""
    base = base if base is not None else config_class()
    overrides = overrides or {}
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    changes = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {config_class.__qualname__}; options: {', '.join(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return check_config(dataclasses.replace(base, **changes))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    target = args[0] if (origin is typing.Union or str(origin) == "<class 'types.UnionType'>") and args else hint
    if typing.get_origin(target) is typing.Literal:
        choices = typing.get_args(target)
        if value not in choices:
            raise ConfigError(f"option {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if isinstance(value, (dict, list)) and typing.get_origin(target) is not tuple:
        raise ConfigError(f"option {key!r} expects {getattr(target, '__name__', target)}; got {value!r}")
    if isinstance(value, bool) and target in (int, float):  # JSON true is not a number
        raise ConfigError(f"option {key!r} expects {target.__name__}; got {value!r}")
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if target is float:
            return float(value)
        if target is str:
            return str(value)
        if typing.get_origin(target) is tuple:
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            inner = typing.get_args(target)[0]
            return tuple(inner(p) for p in parts)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"option {key!r} expects {getattr(target, '__name__', target)}; got {value!r}") from None
    return value

