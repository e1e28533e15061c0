"""Training time per epoch of a table's rows, measured back to back in one process (SR-IEM's Table 3).

    nextclick reproduce sriem --table 3 --time      # a few minutes; pause other work on the machine first

A paper's time table compares models by seconds per training epoch on one machine. Full benchmark runs
record their epochs' times, but they run weeks apart, on whichever machine was lent, beside whatever
else ran; so the table is also measured in one go: for each dataset, each row's model, in its row's
settings, is timed as `nextclick speed` times it (measure.speed.measure_training_speed: batch building,
forward, backward and optimizer step over real batches of training's first epoch, after a warm-up), one
after the other in the same process with the same threads. Seconds per epoch are estimated as the
training cases of an epoch (every prefix of every training session, as the papers train) over the
steady-state cases/s. Validation and checkpointing are not part of it, as they are not of the papers'
training times. The file, results/speed/<dataset>/<paper>-<item>.json, is what render.py judges.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from nextclick.reproduce.plan import FLAGS, SWITCHES, row_on


def timing_path(results_dir: str | Path, paper: str, item: str, dataset: str) -> Path:
    return Path(results_dir) / "speed" / dataset / f"{paper}-{item}.json"


def read_timing(results_dir: str | Path, paper: str, item: str, dataset: str) -> dict | None:
    path = timing_path(results_dir, paper, item, dataset)
    return json.loads(path.read_text()) if path.is_file() else None


def row_overrides(row: dict) -> dict:
    """The model config a row's runs train with on a dataset (`row` as row_on gives it: its preset's
    values under its own settings), without the training options (refit, epochs, ...), which do not
    change a step."""
    from nextclick.models import model_class

    preset = model_class(row["model"]).presets[row["preset"]] if row.get("preset") else {}
    settings = {k: v for k, v in row.get("settings", {}).items() if k not in FLAGS and k not in SWITCHES}
    return {**preset, **settings}


def measure_item(paper: dict, item: dict, results_dir: str | Path, *, batches: int = 40, threads: int | None = None,
                 data_root: str | None = None, device: str = "auto", progress=print) -> list[Path]:
    """Time every row of a speed item on each of its datasets, write one file per dataset; their paths."""
    from nextclick import atomic
    from nextclick.measure.speed import measure_training_speed, provenance
    from nextclick.runtime import resolve_device, set_threads

    from nextclick.data.benchmarks import resolve

    threads = set_threads(threads)
    written = []
    for dataset in item["datasets"]:
        split = resolve(dataset, data_root)  # once per dataset, not once per row
        rows = []
        for row in (row_on(row, dataset) for row in item["rows"]):
            if row.get("model") is None:
                continue
            overrides = row_overrides(row)
            progress(f"timing {row['label']} on {dataset} ({batches} batches, {threads} threads)")
            timed = measure_training_speed(row["model"], split, overrides=overrides,
                                           batches=batches, threads=threads, device=device)
            fast = timed["fast_path"]
            rows.append({"label": row["label"], "model": timed["model"], "overrides": overrides,
                         "batch_size": timed["batch_size"], "cases_per_second": fast["cases_per_second"],
                         "epoch_cases": timed["epoch_cases"],
                         "seconds_per_epoch": round(timed["epoch_cases"] / fast["cases_per_second"], 1),
                         "operator_calls_per_step": fast["operator_calls_per_step"], "config": timed["config"]})
        result = {"paper": paper["name"], "item": item["id"], "dataset": dataset,
                  "what": "training seconds per epoch, estimated as the training cases of an epoch over the "
                          f"cases/s of {batches} batches after a warm-up, each row timed after the other in one "
                          "process (nextclick.reproduce.timing)",
                  "batches": batches, "rows": rows,
                  **provenance(threads, resolve_device(device), ["nextclick", *sys.argv[1:]])}
        path = timing_path(results_dir, paper["name"], item["id"], dataset)
        atomic.write_json(path, result)
        progress(f"wrote {path}: " + ", ".join(f"{r['label']} {r['seconds_per_epoch']:,.0f} s" for r in rows))
        written.append(path)
    return written


def command(paper: str, item: str) -> str:
    return shlex.join(["nextclick", "reproduce", paper, "--table", item, "--time"])
