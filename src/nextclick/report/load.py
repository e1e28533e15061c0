"""Reading what the report is made from: bench results, click-weight summaries and the manifest of
headline runs. Only files are read here, never a dataset: a result that lacks a number (older results
lack `test_by_repeat`) simply lacks that table row.

A run lives in results/<dataset>/<model>/<run id>/ (nextclick.runs.identity): result.json, ranks.npz
and what was made from them (click_weights.json, test curves). Results are labelled `<model> <run id>`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Iterable

from nextclick.runs.identity import DEFAULT_ID, RESULT_FILE

CLICK_WEIGHTS_FILE = "click_weights.json"
MANIFEST_FILE = "manifest.json"


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The given files, with a folder standing for every result.json and click_weights.json under it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json") if p.name in (RESULT_FILE, CLICK_WEIGHTS_FILE))
        else:
            files.append(path)
    return files


def read(paths: Iterable[str | Path]) -> list[tuple[Path, object]]:
    """Each file's path and parsed JSON, read once for all the tables made from them."""
    return [(path, json.loads(path.read_text())) for path in result_files(paths)]


def load(paths: Iterable[str | Path]) -> list[dict]:
    """Read results JSON files (or folders of them); each result gets `_path` and a display `_label`."""
    return bench_results(read(paths))


def bench_results(documents: list[tuple[Path, object]]) -> list[dict]:
    """The `nextclick bench` results among `read` files. `nextclick explain --test` summaries are left to
    `click_weights`; other JSON files a glob may catch (speed measurements, test curves) are skipped
    with a note on stderr."""
    results = []
    for path, result in documents:
        if is_click_weights(result):
            continue
        if not isinstance(result, dict) or "test_by_length" not in result or "test" not in result:
            print(f"skipped {path}: not a `nextclick bench` result", file=sys.stderr)
            continue
        result["_path"] = str(path)
        result["_label"] = label(result)
        results.append(result)
    return results


def is_click_weights(summary) -> bool:
    return isinstance(summary, dict) and "peak_over_uniform" in summary


def click_weights(documents: list[tuple[Path, object]]) -> list[dict]:
    """The `nextclick explain --test` summaries among `read` files (others are ignored)."""
    return [{**summary, "_path": str(path)} for path, summary in documents if is_click_weights(summary)]


def run_name(result: dict) -> str:
    """The run's id: the one it records (`run_id`), else its folder's name when it is a run folder's
    result.json or click_weights.json, else the hand-typed `variant` of files from before run ids, else
    the default run's id."""
    if result.get("run_id"):
        return result["run_id"]
    path = Path(result.get("_path", ""))
    if path.name in (RESULT_FILE, CLICK_WEIGHTS_FILE):
        return path.parent.name
    return result.get("variant") or DEFAULT_ID


def label(result: dict) -> str:
    """`<model> <run id>`, e.g. "narm default", "dsan epochs=30,refit=true"."""
    return f"{result.get('model', '?')} {run_name(result)}"


def without_seed(run: str) -> str:
    """The run id with its `seed=N` setting taken out: runs that differ in the seed alone share it."""
    settings = [setting for setting in run.split(",") if not re.fullmatch(r"seed=\d+", setting)]
    return ",".join(settings) or DEFAULT_ID


def read_manifest(path: str | Path) -> dict:
    """results/manifest.json: {dataset: {model: headline run id}}, and "notes": {dataset: {model: why}}
    where a choice needs a reason. Hand-curated: it names runs and holds no numbers."""
    return json.loads(Path(path).read_text())
