"""Raw logs larger than memory (issue 41, item 4): generate a Yoochoose-format click log or a
Retailrocket-format events log of N rows in bounded memory, prepare it with `nextclick data prepare` in
a child process, and write the time, the child's peak memory (ru_maxrss) and the machine's facts to
results/scale/.

    .venv/bin/python scripts/scale_prepare.py generate /tmp/big/yoochoose-100m.dat --clicks 100000000
    nice -n 19 .venv/bin/python scripts/scale_prepare.py measure /tmp/big/yoochoose-100m.dat \\
        --out results/scale/prepare_yoochoose_100m.json [--in-memory]
    .venv/bin/python scripts/scale_prepare.py generate /tmp/big/events-100m.csv --format retailrocket --clicks 100000000
    nice -n 19 .venv/bin/python scripts/scale_prepare.py measure /tmp/big/events-100m.csv --format retailrocket \\
        --out results/scale/prepare_retailrocket_100m_streaming.json

The Yoochoose log has the shape of nextclick.measure.preparation's 10M-click benchmark log (the real
catalogue of 52,739 Zipf-popular items, geometric session lengths of mean 3.6, six months, ids
increasing with the session's start), written chunk by chunk: chunk k holds the sessions starting in the
k-th of K equal slices of the six months, so memory stays at one chunk's (10M clicks) whatever N is.

The Retailrocket log (`timestamp,visitorid,event,itemid,transactionid`, header, milliseconds) has the
shape of the public events.csv, which has no sessions, only visitors (2.76M events of 1.41M visitors on
235,061 items over four and a half months, 96.7% views, 2.5% add-to-carts, 0.8% transactions): visits
of geometric length (mean 2 events, about a minute apart) start uniformly over 139 days, each by a
visitor drawn from a pool of N / 2 ids, so a visitor's visits lie anywhere in the file; items are Zipf
over 235,061. It is written chunk by chunk in the same way, each chunk's events in time order, so every
chunk interleaves thousands of visitors and `data prepare` must gather each visitor's events from the
whole file before it can cut sessions by 30 minutes of inactivity.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from nextclick import atomic
from nextclick.measure.preparation import (YOOCHOOSE_DAYS, YOOCHOOSE_FIRST_DAY, YOOCHOOSE_ITEMS,
                                           YOOCHOOSE_MEAN_SESSION_LENGTH, machine_info)
from nextclick.runtime import git_commit

CHUNK_CLICKS = 10_000_000
# the public Retailrocket events.csv, roughly: its catalogue, its span, its events per type
RETAILROCKET_ITEMS = 235_061
RETAILROCKET_FIRST_DAY = "2015-05-03"
RETAILROCKET_DAYS = 139
RETAILROCKET_EVENT_SHARES = {"view": 0.967, "addtocart": 0.025, "transaction": 0.008}
RETAILROCKET_MEAN_VISIT_LENGTH = 2.0


def generate(path: Path, n_clicks: int, seed: int = 0, log_format: str = "yoochoose") -> dict:
    if log_format == "retailrocket":
        return generate_retailrocket(path, n_clicks, seed)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, YOOCHOOSE_ITEMS + 1)
    cumulative = np.cumsum(popularity / popularity.sum())
    item_ids = 214_500_000 + rng.permutation(YOOCHOOSE_ITEMS * 8)[:YOOCHOOSE_ITEMS]
    first_ms = int(np.datetime64(YOOCHOOSE_FIRST_DAY, "ms").astype(np.int64))
    span = YOOCHOOSE_DAYS * 86_400_000
    chunks = -(-n_clicks // CHUNK_CLICKS)
    path.parent.mkdir(parents=True, exist_ok=True)
    started, next_session = time.perf_counter(), 1
    with path.open("wb") as handle:
        for chunk in range(chunks):
            clicks = min(CHUNK_CLICKS, n_clicks - chunk * CHUNK_CLICKS)
            lengths, session_of_click = _chunk_visits(rng, clicks, YOOCHOOSE_MEAN_SESSION_LENGTH, clicks // 2 + 16)
            n_sessions = len(lengths)
            low, high = chunk * span // chunks, (chunk + 1) * span // chunks
            starts = np.sort(rng.integers(low, high, size=n_sessions)) + first_ms
            times_ms = _event_times(rng, lengths, session_of_click, starts)
            rank = np.minimum(np.searchsorted(cumulative, rng.random(clicks)), YOOCHOOSE_ITEMS - 1)
            frame = pl.DataFrame({"session_id": session_of_click + next_session,
                                  "timestamp": pl.Series(times_ms).cast(pl.Datetime("ms")),
                                  "item_id": item_ids[rank], "category": np.zeros(clicks, dtype=np.int8)})
            frame.write_csv(handle, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ")
            next_session += n_sessions
    return {"path": str(path), "clicks": n_clicks, "sessions": next_session - 1, "seed": seed,
            "bytes": path.stat().st_size, "generate_seconds": round(time.perf_counter() - started, 1)}


def _chunk_visits(rng: np.random.Generator, events: int, mean_length: float,
                  draws: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Geometric visit lengths adding up to exactly `events`, and the visit of each event (`draws`
    lengths drawn, enough to cover `events`; the Yoochoose generator's own count keeps its logs as made)."""
    lengths = rng.geometric(1.0 / mean_length, size=draws or int(events / mean_length * 1.2) + 16)
    ends = np.cumsum(lengths)
    n_visits = int(np.searchsorted(ends, events)) + 1
    lengths = lengths[:n_visits].copy()
    lengths[-1] -= int(ends[n_visits - 1] - events)
    return lengths, np.repeat(np.arange(n_visits, dtype=np.int64), lengths)


def _event_times(rng: np.random.Generator, lengths: np.ndarray, visit_of_event: np.ndarray,
                 starts_ms: np.ndarray) -> np.ndarray:
    """Each event's time (ms): its visit's start, then exponential gaps of a minute on average."""
    events = len(visit_of_event)
    gaps = rng.exponential(60_000.0, size=events).astype(np.int64)
    first_event = np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps[first_event == np.arange(events)] = 0
    elapsed = np.cumsum(gaps)
    return starts_ms[visit_of_event] + (elapsed - elapsed[first_event])


def generate_retailrocket(path: Path, n_events: int, seed: int = 0) -> dict:
    """A Retailrocket-format events.csv of exactly `n_events` rows, a chunk of CHUNK_CLICKS at a time."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, RETAILROCKET_ITEMS + 1)
    cumulative = np.cumsum(popularity / popularity.sum())
    item_ids = rng.permutation(RETAILROCKET_ITEMS * 2)[:RETAILROCKET_ITEMS]
    visitor_pool = max(1, n_events // 2)
    event_names = np.array(list(RETAILROCKET_EVENT_SHARES))
    event_cumulative = np.cumsum(list(RETAILROCKET_EVENT_SHARES.values()))
    first_ms = int(np.datetime64(RETAILROCKET_FIRST_DAY, "ms").astype(np.int64))
    span = RETAILROCKET_DAYS * 86_400_000
    chunks = -(-n_events // CHUNK_CLICKS)
    path.parent.mkdir(parents=True, exist_ok=True)
    started, visits, transactions = time.perf_counter(), 0, 0
    with path.open("wb") as handle:
        handle.write(b"timestamp,visitorid,event,itemid,transactionid\n")
        for chunk in range(chunks):
            events = min(CHUNK_CLICKS, n_events - chunk * CHUNK_CLICKS)
            lengths, visit_of_event = _chunk_visits(rng, events, RETAILROCKET_MEAN_VISIT_LENGTH)
            low, high = chunk * span // chunks, (chunk + 1) * span // chunks
            starts = rng.integers(low, high, size=len(lengths)) + first_ms
            visitors = rng.integers(0, visitor_pool, size=len(lengths))
            times_ms = _event_times(rng, lengths, visit_of_event, starts)
            rank = np.minimum(np.searchsorted(cumulative, rng.random(events)), RETAILROCKET_ITEMS - 1)
            kind = np.minimum(np.searchsorted(event_cumulative, rng.random(events)), len(event_names) - 1)
            is_transaction = kind == 2
            transaction_ids = np.full(events, -1, dtype=np.int64)
            transaction_ids[is_transaction] = transactions + np.arange(int(is_transaction.sum()))
            transactions += int(is_transaction.sum())
            frame = pl.DataFrame({
                "timestamp": times_ms, "visitorid": visitors[visit_of_event], "event": event_names[kind],
                "itemid": item_ids[rank], "transactionid": pl.Series(transaction_ids).replace(-1, None),
            }).sort("timestamp", maintain_order=True)  # the chunk's visitors interleaved
            frame.write_csv(handle, include_header=False)
            visits += len(lengths)
            del frame, times_ms, visit_of_event
    return {"path": str(path), "format": "retailrocket", "events": n_events, "visits": visits,
            "visitor_pool": visitor_pool, "seed": seed, "bytes": path.stat().st_size,
            "generate_seconds": round(time.perf_counter() - started, 1)}


def measure(log: Path, out: Path, recipe: str | None, in_memory: bool, log_format: str = "yoochoose") -> dict:
    recipe = recipe or {"retailrocket": "dsan"}.get(log_format, "srgnn")  # srgnn has no Retailrocket window
    split_dir = log.parent / f"split-{'memory' if in_memory else 'streaming'}"
    command = [sys.executable, "-m", "nextclick.cli", "data", "prepare", recipe, "--input", str(log),
               "--out", str(split_dir), "--format", log_format, "--force"] + ([] if in_memory else ["--streaming"])
    load_before = os.getloadavg()
    started = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"prepare failed:\n{child.stderr[-4000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB; the only child
    stats = json.loads((split_dir / "stats.json").read_text())
    result = {
        "what": f"nextclick data prepare on a generated {log_format.capitalize()}-format log, wall time and the "
                "preparing process's peak resident memory (getrusage RUSAGE_CHILDREN ru_maxrss)",
        "command": " ".join(["nextclick"] + command[3:]),
        "engine": "in-memory (polars DataFrames, numpy)" if in_memory else "streaming (polars lazy scans, sink_parquet)",
        "log": {"path": str(log), "bytes": log.stat().st_size, "rows": stats["reader"]["rows"],
                **({"events": stats["reader"]["events"]} if "events" in stats["reader"] else {}),
                "clicks": stats["steps"][0]["clicks"], "sessions": stats["steps"][0]["sessions"]},
        "seconds": round(seconds, 1),
        "stage_seconds": stats.get("timings"),
        "peak_memory_bytes": peak,
        "peak_memory_gib": round(peak / 1024**3, 3),
        "niceness": os.nice(0),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "split": stats["result"],
        "machine": machine_info(),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_text(out, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    g = sub.add_parser("generate")
    g.add_argument("path", type=Path)
    g.add_argument("--clicks", type=int, default=100_000_000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--format", dest="log_format", choices=["yoochoose", "retailrocket"], default="yoochoose",
                   help="--clicks counts events for retailrocket")
    m = sub.add_parser("measure")
    m.add_argument("log", type=Path)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--format", dest="log_format", choices=["yoochoose", "retailrocket"], default="yoochoose")
    m.add_argument("--recipe", default=None, help="srgnn (yoochoose), dsan (retailrocket)")
    m.add_argument("--in-memory", action="store_true")
    args = parser.parse_args()
    if args.verb == "generate":
        print(json.dumps(generate(args.path, args.clicks, args.seed, args.log_format)))
    else:
        print(json.dumps(measure(args.log, args.out, args.recipe, args.in_memory, args.log_format), indent=1))
