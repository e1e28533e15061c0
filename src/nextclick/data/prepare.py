"""Raw click log -> split directory, as one library call (read -> recipe -> save), behind `nextclick data
prepare` and the preparation speed measurement alike, so the measurement times exactly what users run."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from nextclick.atomic import check_writable, read_json_object, recover_directory, staged_directory
from nextclick.data.benchmarks import DataError, check_replaceable, load_split, write_split_files
from nextclick.data.readers import MAX_BAD_FRACTION, GenericColumns, read_log
from nextclick.data.recipes import RECIPES, prepare
from nextclick.data.sessions import Split

# Inputs above this size get a progress bar by default (the 33M-click Yoochoose log is 1.4 GB).
PROGRESS_MIN_BYTES = 16 * 1024**2


def run_prepare(
    input_path: str | os.PathLike,
    recipe: str,
    out_dir: str | os.PathLike,
    *,
    log_format: str | None = None,
    columns: GenericColumns | None = None,
    fraction: str | None = None,
    test_days: float | None = None,
    strict: bool = False,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    drop_duplicates: bool = False,
    force: bool = False,
    progress: bool | None = None,
    streaming: bool = False,
) -> tuple[Split, dict]:
    """Read, run the recipe, write the split and stats.json. `progress=None`: a bar for large inputs.
    `streaming`: read on polars' streaming engine into Parquet files beside the output (removed at the
    end) instead of memory, for logs larger than memory (data/readers.py); the split is the same."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(sorted(RECIPES))}")
    recover_directory(out_dir)  # a split a killed prepare had moved aside goes back before it is looked at
    if (out_dir / "train.txt").exists() and not force:
        raise DataError(f"{out_dir} already holds a split; pass --force to overwrite it")
    if not input_path.is_file():
        raise DataError(f"no such file: {input_path}")
    check_replaceable(out_dir)
    check_writable(out_dir)  # before minutes of reading, not after
    if progress is None:
        progress = input_path.stat().st_size >= PROGRESS_MIN_BYTES
    # read, group, filter, split, [fraction,] write
    bar = _stage_bar(enabled=progress, stages=6 if fraction else 5)
    timings = {}
    started = time.perf_counter()

    bar(f"read {input_path.name}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # spilled clicks live beside the output (a disk with room for the split) until the recipe is done
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.spill-", dir=out_dir.parent) as spill:
        log = read_log(
            input_path,
            log_format,
            columns=columns,
            strict=strict,
            max_bad_fraction=max_bad_fraction,
            drop_duplicates=drop_duplicates,
            spill=spill if streaming else None,
        )
        timings["read_seconds"] = round(time.perf_counter() - started, 3)
        split, stats = prepare(log, recipe, fraction=fraction, test_days=test_days, name=out_dir.name, progress=bar)
        timings["recipe_seconds"] = round(time.perf_counter() - started - timings["read_seconds"], 3)
    if streaming:
        stats["engine"] = "streaming" if isinstance(log.clicks, pl.LazyFrame) else "in memory"  # every format streams since 829f835

    bar(f"write {out_dir}")
    before_write = time.perf_counter()
    extra = {
        "recipe": recipe,
        "input": str(input_path),
        "log_format": log.log_format,
        **({"fraction": str(stats["fraction"]["fraction"])} if "fraction" in stats else {}),
    }
    # the split and its stats.json appear together or not at all: an interrupted prepare leaves no part
    with staged_directory(out_dir) as staging:
        write_split_files(split, staging, extra=extra)
        timings["write_seconds"] = round(time.perf_counter() - before_write, 3)
        timings["total_seconds"] = round(time.perf_counter() - started, 3)
        stats["timings"] = timings
        (staging / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    bar(None)
    return split, stats


def _stage_bar(*, enabled: bool, stages: int):
    """A tqdm bar over the preparation stages (polars parses a file in one call, so the stages are the
    units of progress); call it with each stage's name as the stage starts, and with None at the end."""
    if not enabled:
        return lambda stage: None
    from tqdm import tqdm

    bar = tqdm(total=stages, file=sys.stderr, bar_format="prepare [{elapsed}] {n_fmt}/{total_fmt} {desc}")

    def advance(stage: str | None) -> None:
        if stage is None:
            bar.set_description_str("done", refresh=False)
            bar.close()
            return
        bar.set_description_str(stage, refresh=False)
        bar.update(1)

    return advance


def split_statistics(directory: str | os.PathLike) -> dict:
    """The counts of a split directory, plus its stats.json when there is one."""
    directory = Path(directory)
    if not (directory / "train.txt").is_file():
        raise DataError(f"{directory} holds no split (no train.txt); prepare one with `nextclick data prepare`")
    split = load_split(directory)
    summary = {"split": str(directory), **split.stats()}
    stats_file = directory / "stats.json"
    if stats_file.is_file():
        summary["stats.json"] = read_json_object(stats_file, DataError)
    return summary
