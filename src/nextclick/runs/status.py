"""How far a run got, read from its directory alone (no training, no data): `nextclick status`.

A run is its own training, or a `selection` and a `refit`, and, for a grid search, one training per
candidate under grid/ (with the list of candidates in grid/search.json and, once a candidate has
finished, its record in grid/<candidate>/candidate.json and possibly a shared records folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from nextclick.training.state import training_progress

GRID_SPEC = "search.json"  # in <run>/grid/, beside the candidate directories
CANDIDATE_RECORD = "candidate.json"  # in <run>/grid/<candidate>/ once the candidate has finished


def candidate_record_paths(root: Path, name: str, records: str | Path | None) -> list[Path]:
    """Where a candidate's record lives: its own directory, and the shared `records` folder if given."""
    return [root / "grid" / name / CANDIDATE_RECORD] + ([Path(records) / f"{name}.json"] if records is not None else [])


def record_progress(path: Path) -> dict | None:
    """A finished candidate's progress (as training.state.training_progress gives it) read from its record alone,
    for a candidate whose checkpoint is gone."""
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    record, settings = kept["record"], kept["settings"]
    return {"epochs_done": record["epochs_run"], "best_epoch": record["selected_epoch"],
            "select_metric": settings["select_metric"], "best_valid": record["valid"],
            "epochs_without_gain": record["epochs_run"] - record["selected_epoch"] - 1,
            "patience": settings["patience"], "max_epochs": settings["epochs"] or settings["config"].get("epochs"),
            "finished": True, "train_seconds": record.get("train_seconds", 0.0), "saved_at": path.stat().st_mtime,
            "record": str(path)}


def run_status(run_dir: str | Path) -> dict:
    """How far a bench or train run got, from its checkpoint directory alone: each training in it (the
    run itself, or its `selection` and `refit`, and every grid candidate, with those a grid has not
    begun) with its progress (train.training_progress), and the test scores once it has been tested.
    For long runs resumed across sessions: what is done, what is left, the best validation so far."""
    root = Path(run_dir)
    if not any((root / name).exists() for name in ("config.json", "grid", "selection")):
        raise FileNotFoundError(f"{root} is not a run directory (no config.json); give the -o / --checkpoint-dir "
                                "of a bench or train run")
    parts = []
    spec_path = root / "grid" / GRID_SPEC
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    begun = sorted(path.name for path in (root / "grid").iterdir() if path.is_dir()) if (root / "grid").is_dir() else []
    names = spec["candidates"] + sorted(set(begun) - set(spec["candidates"])) if spec else begun
    for name in names:
        progress = training_progress(root / "grid" / name)
        if progress is None or not progress["finished"]:  # its checkpoint gone or behind: a record may hold it
            paths = candidate_record_paths(root, name, spec.get("records") if spec else None)
            progress = next(filter(None, map(record_progress, paths)), progress)
        parts.append({"part": f"grid/{name}", "progress": progress})
    for name in ("selection", "refit"):
        if (root / name).is_dir():
            parts.append({"part": name, "progress": training_progress(root / name)})
    own = training_progress(root)  # a run without selection/refit/grid trains in its own directory
    if not parts or own is not None:
        # a statistical model is fitted, not trained in epochs: its weights are all there is to see
        fitted = own is None and (root / "model.safetensors").is_file()
        parts.insert(0, {"part": ".", "progress": own, **({"fitted": True} if fitted else {})})
    metrics = root / "metrics.json"
    tested = json.loads(metrics.read_text()).get("test") if metrics.is_file() else None  # a train run tests nothing
    for part in parts:
        if tested and part["progress"] and part["progress"]["finished"] is None:
            part["progress"]["finished"] = True  # an old state without its limits: testing came after it
    return {"run": str(root), "parts": parts, "grid": bool(names), "grid_candidates": len(spec["candidates"]) if spec else None,
            "grid_metric": spec["metric"] if spec else None, "tested": tested}


