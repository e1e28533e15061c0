"""Speed benchmark for `nextclick data prepare`: a deterministic Yoochoose-format log of 10 million
clicks, prepared with the `srgnn` recipe; wall seconds and peak memory go to
results/preparation/prepare_yoochoose_10m.json.

The log imitates `yoochoose-clicks.dat` (RecSys Challenge 2015): `session_id,timestamp,item_id,category`,
no header, ISO-8601 timestamps with milliseconds and a `Z`, six months of clicks (2014-04-01 to
2014-09-30, as the real log), 52,739 items (the real catalogue size) with Zipf popularity, session
lengths geometric with mean 3.6 (the real log: 33M clicks in 9.2M sessions), session ids increasing with
the session's start time, clicks inside a session a few seconds to minutes apart. The real log is not
needed: only its shape matters for speed.

Peak memory is the `ru_maxrss` of a fresh child process that runs only the preparation (read, recipe,
write), because polars allocates outside Python's heap where tracemalloc cannot see it, and because the
generator's own peak must not count.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from nextclick import atomic
from nextclick.runtime import cpu_model, git_commit, memory_bytes

# Shape of the real yoochoose-clicks.dat (RecSys Challenge 2015 data description).
YOOCHOOSE_ITEMS = 52_739
YOOCHOOSE_MEAN_SESSION_LENGTH = 3.6
YOOCHOOSE_FIRST_DAY = "2014-04-01"
YOOCHOOSE_DAYS = 183
BENCH_CLICKS = 10_000_000
TARGET_SECONDS = 60.0  # issue 6: "under 60 seconds on this machine"
TARGET_PEAK_BYTES = 8 * 1024**3  # issue 6: "peak memory under 8 GB"


def generate_yoochoose_log(path: str | os.PathLike, n_clicks: int = BENCH_CLICKS, seed: int = 0) -> Path:
    """Write a deterministic Yoochoose-format click log of exactly `n_clicks` lines (vectorised)."""
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(1.0 / YOOCHOOSE_MEAN_SESSION_LENGTH, size=int(n_clicks / 2) + 16)
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, n_clicks)) + 1
    lengths = lengths[:n_sessions].copy()
    lengths[-1] -= int(ends[n_sessions - 1] - n_clicks)  # the last session ends at exactly n_clicks
    session_of_click = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)

    # sessions start uniformly over the six months; ids follow start time, as in the real log
    first_ms = int(np.datetime64(YOOCHOOSE_FIRST_DAY, "ms").astype(np.int64))
    starts = np.sort(rng.integers(0, YOOCHOOSE_DAYS * 86_400_000, size=n_sessions)) + first_ms
    gaps = rng.exponential(60_000.0, size=n_clicks).astype(np.int64)  # about a minute between clicks
    session_first_click = np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps[session_first_click == np.arange(n_clicks)] = 0  # a session's first click is at its start
    elapsed = np.cumsum(gaps)
    within = elapsed - elapsed[session_first_click]
    times_ms = starts[session_of_click] + within

    popularity = 1.0 / np.arange(1, YOOCHOOSE_ITEMS + 1)
    cumulative = np.cumsum(popularity / popularity.sum())
    item_rank = np.minimum(np.searchsorted(cumulative, rng.random(n_clicks)), YOOCHOOSE_ITEMS - 1)
    item_ids = 214_500_000 + rng.permutation(YOOCHOOSE_ITEMS * 8)[:YOOCHOOSE_ITEMS]  # real ids look like 214717095

    frame = pl.DataFrame(
        {
            "session_id": session_of_click + 1,
            "timestamp": pl.Series(times_ms).cast(pl.Datetime("ms")),
            "item_id": item_ids[item_rank],
            "category": np.zeros(n_clicks, dtype=np.int8),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ")
    return path


# ---------------------------------------------------------------------------------------------------
# the benchmark


def run_benchmark(
    results_path: str | os.PathLike = "results/preparation/prepare_yoochoose_10m.json",
    *,
    n_clicks: int = BENCH_CLICKS,
    seed: int = 0,
    recipe: str = "srgnn",
    fraction: str | None = None,
    workdir: str | os.PathLike | None = None,
    keep: bool = False,
) -> dict:
    """Generate the log, prepare it in a fresh child process, and write the result JSON."""
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nextclick-bench-prepare-"))
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = scratch / f"yoochoose-clicks-{n_clicks}-seed{seed}.dat"
    out_dir = scratch / "split"
    try:
        started = time.perf_counter()
        generate_yoochoose_log(log_path, n_clicks, seed)
        generate_seconds = time.perf_counter() - started
        digest = _sha256(log_path)
        command = [sys.executable, "-m", "nextclick.measure.preparation", "--child", str(log_path), str(out_dir), recipe]
        if fraction:
            command.append(fraction)
        load_before = os.getloadavg()[0]  # the machine is shared: other jobs slow the run down
        started = time.perf_counter()
        child = subprocess.run(command, capture_output=True, text=True)
        process_seconds = time.perf_counter() - started
        if child.returncode != 0:
            raise RuntimeError(f"the preparation failed:\n{child.stderr[-4000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    peak = measured["ru_maxrss_kib"] * 1024  # Linux reports ru_maxrss in KiB
    result = {
        "benchmark": "prepare a 10M-click Yoochoose-format log with the srgnn recipe (issue 6)",
        "command": "nextclick data bench-prepare" + (f" --fraction {fraction}" if fraction else ""),
        "recipe": recipe,
        "fraction": fraction,
        "log": {
            "format": "yoochoose-clicks.dat (generated, deterministic)",
            "clicks": n_clicks,
            "seed": seed,
            "bytes": measured["input_bytes"],
            "sha256": digest,
            "generate_seconds": round(generate_seconds, 2),
        },
        "seconds": measured["timings"]["total_seconds"],
        "stage_seconds": {k: v for k, v in measured["timings"].items() if k != "total_seconds"},
        "process_seconds": round(process_seconds, 2),
        "peak_memory_bytes": peak,
        "peak_memory_gib": round(peak / 1024**3, 3),
        "peak_memory_measured_by": "resource.getrusage(RUSAGE_SELF).ru_maxrss of the child process that only prepares",
        "targets": {"seconds": TARGET_SECONDS, "peak_memory_bytes": TARGET_PEAK_BYTES},
        "within_targets": measured["timings"]["total_seconds"] < TARGET_SECONDS and peak < TARGET_PEAK_BYTES,
        "split": measured["result"],
        "steps": measured["steps"],
        "machine": {**machine_info(), "load_average_1m_before": round(load_before, 2)},
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_text(results_path, json.dumps(result, indent=1) + "\n")  # a result is whole or absent
    return result


def _child(log_path: str, out_dir: str, recipe: str, fraction: str | None) -> None:
    """Runs in the fresh process: prepare, then print one JSON line with timings and ru_maxrss."""
    from nextclick.data.prepare import run_prepare

    _, stats = run_prepare(
        log_path, recipe, out_dir, log_format="yoochoose", fraction=fraction, force=True, progress=False
    )
    report = {
        "timings": stats["timings"],
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "input_bytes": Path(log_path).stat().st_size,
        "result": stats["result"],
        "steps": [
            {k: v for k, v in step.items() if k in ("step", "sessions", "clicks", "items")} for step in stats["steps"]
        ],
    }
    print(json.dumps(report))


def machine_info() -> dict:
    """CPU model, cores, memory and library versions: what the preparation's timings depend on."""
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "polars_threads": pl.thread_pool_size(),
        "memory_bytes": memory_bytes(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":  # the fresh child process that only prepares (see run_benchmark)
    _child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
