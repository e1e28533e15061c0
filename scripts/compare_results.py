"""Check that a results migration changed where numbers live, never the numbers.

    .venv/bin/python scripts/compare_results.py OLD_COMMIT [--results results]

Reads every result of OLD_COMMIT's tree (`git show OLD_COMMIT:results/...`) and every result.json of
the working tree, pairs them by the new file's `migrated_from`, and checks that every number under
`test`, `valid` and `test_by_length` and every per-case rank are identical (same keys, same values,
same types; the ranks' dtype too), and that the rest of each result is unchanged apart from the fields
the migration adds. Every other file of the old tree (curves, click weights, candidate records, speed
and preparation measurements) must be found byte for byte somewhere in the new one. Prints a summary;
exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

COMPARED = ("test", "valid", "test_by_length")
ADDED_BY_MIGRATION = ("migrated_from", "test_by_repeat", "test_by_repeat_source")


def git_show(commit: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{commit}:{path}"], check=True, capture_output=True).stdout


def old_files(commit: str, results: str) -> list[str]:
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "--", results],
                             check=True, capture_output=True, text=True).stdout
    return listing.split()


def is_bench_result(document: Any) -> bool:
    return isinstance(document, dict) and "test" in document and "test_by_length" in document


def differences(old: Any, new: Any, where: str) -> list[str]:
    """Where two parsed JSON values differ: keys, values or types (1 and 1.0 differ; bool is no number)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = [f"{where}.{key}: only in the old file" for key in old.keys() - new.keys()]
        found += [f"{where}.{key}: only in the new file" for key in new.keys() - old.keys()]
        for key in old.keys() & new.keys():
            found += differences(old[key], new[key], f"{where}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} entries, now {len(new)}"]
        return [d for index, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{index}]")]
    if type(old) is not type(new) or old != new:
        return [f"{where}: {old!r} -> {new!r}"]
    return []


def count_numbers(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_numbers(v) for v in value)
    return int(isinstance(value, (int, float)) and not isinstance(value, bool))


def new_results(results: Path) -> dict[str, Path]:
    """{old path: new result.json} for every migrated result of the working tree."""
    paired = {}
    for path in sorted(results.rglob("result.json")):
        origin = json.loads(path.read_text()).get("migrated_from")
        if origin is None:
            continue  # a run written in the new layout, nothing to compare it with
        if origin in paired:
            raise SystemExit(f"{paired[origin]} and {path} both say they were {origin}")
        paired[origin] = path
    return paired


def ranks_of(data: bytes | Path) -> np.ndarray:
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as archive:
        return archive["ranks"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commit", help="the commit before the migration")
    parser.add_argument("--results", default="results", help="the results folder, old and new (results/)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    paired = new_results(results)
    problems: list[str] = []
    counts = {"results": 0, "paired": 0, "identical": 0, "numbers": 0, "ranks": 0, "rank values": 0,
              "unchanged": 0, "gained repeats": 0, "other": 0, "found": 0}

    old_paths = old_files(args.commit, args.results)
    old_documents = {path: git_show(args.commit, path) for path in old_paths}
    result_paths = [p for p in old_paths if p.endswith(".json") and is_bench_result(json.loads(old_documents[p]))]
    ranks_paths = {p.removesuffix(".json") + ".ranks.npz" for p in result_paths}
    for old_path in result_paths:
        counts["results"] += 1
        if old_path not in paired:
            problems.append(f"{old_path}: no result.json says it was migrated from here")
            continue
        counts["paired"] += 1
        new_path = paired[old_path]
        old, new = json.loads(old_documents[old_path]), json.loads(new_path.read_text())
        found = [d for key in COMPARED if key in old or key in new
                 for d in differences(old.get(key), new.get(key), f"{new_path}: {key}")]
        problems += found
        counts["identical"] += not found
        counts["numbers"] += sum(count_numbers(old.get(key)) for key in COMPARED)
        added = [key for key in ADDED_BY_MIGRATION if key in new and key not in old]
        rest = differences({k: v for k, v in old.items() if k not in COMPARED},
                           {k: v for k, v in new.items() if k not in COMPARED and k not in added}, f"{new_path}")
        problems += rest
        counts["unchanged"] += not rest
        counts["gained repeats"] += "test_by_repeat" in added
        old_ranks_path = old_path.removesuffix(".json") + ".ranks.npz"
        new_ranks_path = new_path.with_name("ranks.npz")
        if old_ranks_path not in old_documents or not new_ranks_path.exists():
            problems.append(f"{new_path}: ranks missing (old {old_ranks_path in old_documents}, "
                            f"new {new_ranks_path.exists()})")
            continue
        old_ranks, new_ranks = ranks_of(old_documents[old_ranks_path]), ranks_of(new_ranks_path)
        if old_ranks.dtype != new_ranks.dtype or not np.array_equal(old_ranks, new_ranks):
            problems.append(f"{new_ranks_path}: ranks differ from {old_ranks_path}")
        else:
            counts["ranks"] += 1
            counts["rank values"] += len(new_ranks)

    # every other old file (curves, click weights, candidates, speed, preparation), byte for byte
    new_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in results.rglob("*") if p.is_file()}
    for path in old_paths:
        if path in result_paths or path in ranks_paths:
            continue
        counts["other"] += 1
        if hashlib.sha256(old_documents[path]).hexdigest() in new_hashes:
            counts["found"] += 1
        else:
            problems.append(f"{path}: its content is nowhere under {results}/ now")

    print(f"compared {args.results}/ of {args.commit} with the working tree")
    print(f"results: {counts['results']} old, {counts['paired']} paired by migrated_from, {counts['identical']} "
          f"identical in {', '.join(COMPARED)} ({counts['numbers']:,} numbers)")
    print(f"ranks: {counts['ranks']} arrays identical ({counts['rank values']:,} ranks, same dtype)")
    print(f"other fields: {counts['unchanged']} results unchanged apart from {', '.join(ADDED_BY_MIGRATION)} "
          f"({counts['gained repeats']} gained test_by_repeat)")
    print(f"other files: {counts['other']} old, {counts['found']} found byte-identical in the new tree")
    for problem in problems:
        print(f"DIFFERENT {problem}")
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
