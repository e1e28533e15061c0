"""A run's identity: the settings it was asked for that differ from the defaults, and the place its
results live. Nobody types a run's name; two runs with the same settings are the same run.

    settings = run_settings(asdict(Config()), requested_config, asdict(TrainOptions()), options, grid)
    run_id(settings)   # "default" | "refit=true,seed=2,validation=random-cases" | ... (sorted keys)
    run_dir("results", "diginetica", "narm", run_id(settings))  # results/diginetica/narm/<run id>/

The requested config is the one the run started from (before a statistical model's search or an epoch
selection wrote its choices into the config). Training options count only where they change what is
learned or selected (RESULT_OPTIONS); where a training option and a config field share a name (epochs,
batch_size), the option wins, as it does in the trainer. A grid search is part of the identity: its
keys and values appear as `grid.<key>=v1+v2+...`. Identities longer than MAX_LENGTH keep a readable
head and a hash of the whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

# the training options a result depends on; device, threads, checkpoints, progress and resume do not
# (precision does: a bf16 run, precision=bf16, learns other weights than the fp32 reference)
RESULT_OPTIONS = ("epochs", "patience", "batch_size", "seed", "select_metric", "validation", "refit",
                  "length_buckets", "max_batches", "precision")
DEFAULT_ID = "default"
MAX_LENGTH = 120  # a directory name that fits a terminal line and every file system
RESULT_FILE = "result.json"
RANKS_FILE = "ranks.npz"


def format_value(value: Any) -> str:
    """One setting's value as it appears in a run id: true/false, none, shortest float repr, a+b for tuples."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value)
    return str(value).replace("/", "_").replace(",", "_").replace("=", "_")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def run_settings(default_config: Mapping[str, Any], config: Mapping[str, Any], default_options: Mapping[str, Any],
                 options: Mapping[str, Any], grid: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{name: formatted value} for every requested setting that differs from its default."""
    settings: dict[str, str] = {}
    for key, value in config.items():
        if key in default_config and not _same(value, default_config[key]):
            settings[key] = format_value(value)
    for key in RESULT_OPTIONS:
        if key not in options or options[key] is None:
            continue  # None: the model config's value, already counted above
        value = options[key]
        # epochs, batch_size: an option whose default is None (the config's value) replaces the config's
        # value when given. patience: the trainer's option has a default of its own (3), and the
        # statistical models' configs their own field (2) that the option does not replace, so it is
        # compared with the option's default like any other option
        if key in default_config and default_options.get(key) is None:
            if _same(value, default_config[key]):
                settings.pop(key, None)
            else:
                settings[key] = format_value(value)
        elif not _same(value, default_options.get(key)):
            settings[key] = format_value(value)
    for key, values in (grid or {}).items():
        settings.pop(key, None)  # searched, not fixed
        settings[f"grid.{key}"] = format_value(list(values))
    return settings


def run_id(settings: Mapping[str, str]) -> str:
    """The run's name: its non-default settings, sorted, as key=value joined by commas ("default" when none)."""
    if not settings:
        return DEFAULT_ID
    text = ",".join(f"{key}={settings[key]}" for key in sorted(settings))
    if len(text) <= MAX_LENGTH:
        return text
    digest = hashlib.sha1(json.dumps(dict(sorted(settings.items()))).encode()).hexdigest()[:10]
    return text[: MAX_LENGTH - 12].rstrip(",") + "~" + digest


def run_dir(results_dir: str | Path, dataset: str, model: str, identity: str) -> Path:
    """Where one run's result.json, ranks.npz and the files made from it (curves, click weights) live."""
    return Path(results_dir) / dataset / model / identity
