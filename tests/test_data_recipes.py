"""Recipes against plainly written reference computations on the real raw samples.

Each reference below follows the official script's steps with dicts and lists (as the scripts do), on
rows read with the csv module: nothing is shared with the code under test. The recipe must produce the
same training sessions, item numbering, test cases and counts, and its output must load with
`load_split`.
"""

from __future__ import annotations

import calendar
import csv
import json
import random
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies

from nextclick.data.benchmarks import DataError, data_dir, load_split
from nextclick.data.readers import GenericColumns, read_log
from nextclick.data.formats import RECIPE_NAMES
from nextclick.data.recipes import RECIPES, prepare

DAY = 86_400




# ---------------------------------------------------------------------------------------------------
# plain reference computations


def reference_read_diginetica(path, sort_by):
    """session -> list of items, session -> date of its last row in the file (dict order = first seen)."""
    clicks, dates = {}, {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            day = calendar.timegm(time.strptime(row["eventdate"], "%Y-%m-%d"))
            clicks.setdefault(row["session_id"], []).append((int(row["item_id"]), day, int(row["timeframe"])))
            dates[row["session_id"]] = day
    for session, rows in clicks.items():
        if sort_by == "timeframe":
            rows = sorted(rows, key=lambda click: click[2])
        elif sort_by == "date_timeframe":
            rows = sorted(rows, key=lambda click: (click[1], click[2]))
        clicks[session] = [click[0] for click in rows]
    return clicks, dates


def reference_read_yoochoose(path):
    clicks, dates = {}, {}
    with open(path, newline="") as handle:
        for session, stamp, item, _category in csv.reader(handle):
            clicks.setdefault(session, []).append(int(item))
            dates[session] = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return clicks, dates


def reference_split(clicks, dates, *, min_length, min_length_after, test_days, min_prefix, fraction=None):
    """The scripts' steps 2-9: filters, time split, numbering, unseen test clicks, prefix cases."""
    sessions = {s: seq for s, seq in clicks.items() if len(seq) >= min_length}
    support = Counter(item for seq in sessions.values() for item in seq)
    kept = {}
    for session, seq in sessions.items():
        seq = [item for item in seq if support[item] >= 5]
        if len(seq) >= min_length_after:
            kept[session] = seq
    latest = max(dates[s] for s in kept)
    split_at = latest - test_days * DAY
    train = sorted((s for s in kept if dates[s] < split_at), key=lambda s: dates[s])
    test = sorted((s for s in kept if dates[s] > split_at), key=lambda s: dates[s])
    numbering = {}
    for session in train:
        for item in kept[session]:
            numbering.setdefault(item, len(numbering) + 1)
    train_seqs = [kept[s] for s in train]
    test_seqs = [[i for i in kept[s] if i in numbering] for s in test]
    test_seqs = [seq for seq in test_seqs if len(seq) >= 2]

    def cases(seqs):
        return [(tuple(seq[:-k]), seq[-k]) for seq in seqs for k in range(1, len(seq)) if len(seq) - k >= min_prefix]

    train_cases = cases(train_seqs)
    if fraction is not None:
        # the official tr_seqs[-int(n / d):]; when int(n / d) is 0 that slice is *everything*, which the
        # recipe refuses, so the reference keeps nothing there
        train_cases = train_cases[len(train_cases) - int(len(train_cases) * fraction) :]
    return {
        "train_seqs": train_seqs,
        "train_cases": train_cases,
        "test_cases": cases(test_seqs),
        "numbering": list(numbering),
        "on_split_day": sum(1 for s in kept if dates[s] == split_at),
        "sessions_either_side": (len(train), len(test)),
    }


def decoded(split):
    """(training sessions, training cases, test cases, numbering) in the log's item ids."""
    ids = split.vocab.ids
    train_seqs = [ids[split.train[i]].tolist() for i in range(len(split.train))]

    def cases(c):
        labels = ids[c.labels]
        return [(tuple(ids[c.prefix(k)].tolist()), int(labels[k])) for k in range(len(c))]

    return train_seqs, cases(split.train_cases()), cases(split.test), ids[1:].tolist()


def assert_same(split, stats, expected, *, whole_train=True):
    train_seqs, train_cases, test_cases, numbering = decoded(split)
    if whole_train:
        assert train_seqs == expected["train_seqs"]
    assert numbering == expected["numbering"]
    assert train_cases == expected["train_cases"]
    assert test_cases == expected["test_cases"]
    assert stats["result"]["train_cases"] == len(expected["train_cases"])
    assert stats["result"]["test_cases"] == len(expected["test_cases"])
    assert stats["result"]["items"] == len(expected["numbering"])


def test_the_command_line_offers_every_recipe_and_only_those():
    assert sorted(RECIPE_NAMES) == sorted(RECIPES)


# ---------------------------------------------------------------------------------------------------
# Diginetica


def test_srgnn_diginetica_equals_reference(diginetica_path):
    split, stats = prepare(read_log(diginetica_path), "srgnn")
    clicks, dates = reference_read_diginetica(diginetica_path, "timeframe")
    expected = reference_split(clicks, dates, min_length=2, min_length_after=2, test_days=7, min_prefix=1)
    assert_same(split, stats, expected)
    assert stats["split"]["sessions_at_split_time_dropped"] == expected["on_split_day"] > 0
    assert split.protocol.name == "srgnn" and split.protocol.min_prefix == 1
    steps = {row["step"]: row for row in stats["steps"]}
    assert steps["read"]["clicks"] == sum(len(seq) for seq in clicks.values())
    assert steps["drop sessions with fewer than 2 clicks"]["removed_sessions"] == sum(
        len(s) == 1 for s in clicks.values()
    )


def test_dsan_diginetica_equals_reference(diginetica_path):
    split, stats = prepare(read_log(diginetica_path), "dsan")
    clicks, dates = reference_read_diginetica(diginetica_path, "date_timeframe")
    expected = reference_split(clicks, dates, min_length=3, min_length_after=3, test_days=7, min_prefix=2)
    assert_same(split, stats, expected)
    assert split.protocol.min_prefix == 2
    assert min(len(prefix) for prefix, _ in decoded(split)[2]) == 2


def test_narm_diginetica_keeps_file_order(diginetica_path):
    narm, narm_stats = prepare(read_log(diginetica_path), "narm")
    clicks, dates = reference_read_diginetica(diginetica_path, sort_by=None)
    expected = reference_split(clicks, dates, min_length=2, min_length_after=2, test_days=7, min_prefix=1)
    assert_same(narm, narm_stats, expected)
    srgnn, srgnn_stats = prepare(read_log(diginetica_path), "srgnn")
    # same counts as SR-GNN (model_zoo.md §1: "matching statistics does not prove the sorted version") ...
    assert narm_stats["result"]["train_cases"] == srgnn_stats["result"]["train_cases"]
    assert narm_stats["result"]["test_cases"] == srgnn_stats["result"]["test_cases"]
    # ... but a different click order
    assert decoded(narm)[0] != decoded(srgnn)[0]


# ---------------------------------------------------------------------------------------------------
# Yoochoose, fractions


@pytest.mark.parametrize("recipe", ["srgnn", "narm"])
def test_yoochoose_equals_reference(yoochoose_path, recipe):
    split, stats = prepare(read_log(yoochoose_path), recipe)
    clicks, dates = reference_read_yoochoose(yoochoose_path)
    expected = reference_split(clicks, dates, min_length=2, min_length_after=2, test_days=1, min_prefix=1)
    assert_same(split, stats, expected)


@pytest.mark.parametrize("fraction", ["1/4", "1/64", "1/3"])
def test_yoochoose_fraction_is_the_last_training_cases(yoochoose_path, fraction):
    split, stats = prepare(read_log(yoochoose_path), "srgnn", fraction=fraction)
    clicks, dates = reference_read_yoochoose(yoochoose_path)
    expected = reference_split(
        clicks, dates, min_length=2, min_length_after=2, test_days=1, min_prefix=1, fraction=Fraction(fraction)
    )
    # the cases, the full test set and the full numbering are exactly the official ones
    assert_same(split, stats, expected, whole_train=False)
    assert stats["fraction"]["kept_cases"] == len(expected["train_cases"])
    # every case is one prefix of a stored session: clicks - sessions = cases
    assert len(split.train.items) - len(split.train) == len(expected["train_cases"])


def test_fraction_too_small_is_an_error_not_everything(yoochoose_path):
    # SR-GNN's tr_seqs[-int(n / d):] returns *all* cases when int(n / d) == 0
    with pytest.raises(ValueError, match="no case at all"):
        prepare(read_log(yoochoose_path), "srgnn", fraction="1/100000")


def test_dsan_has_no_fraction(yoochoose_path):
    with pytest.raises(ValueError, match="no training fraction"):
        prepare(read_log(yoochoose_path), "dsan", fraction="1/64")


# ---------------------------------------------------------------------------------------------------
# Retailrocket (no sample in ../shared/data: generated here in the real format)


def write_retailrocket_events(path: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    start_ms = 1_433_221_332_000  # 2015-06-02, the real log's first day
    rows = []
    for user in range(1000, 1060):
        t = start_ms + rng.randrange(0, 20 * DAY * 1000)
        for _visit in range(rng.randint(1, 4)):
            for _click in range(rng.randint(1, 7)):
                t += rng.choice([0, 5_000, 60_000, 600_000, 1_700_000, 1_900_000])  # ties and near-gap steps
                event = rng.choices(["view", "addtocart", "transaction"], weights=[85, 10, 5])[0]
                item = rng.choice(range(1, 26))
                rows.append((t, user, event, item, "" if event != "transaction" else str(rng.randrange(9999))))
            t += rng.randrange(2, 48) * 3_600_000
    # the session-rec quirk: a visitor whose first event lies within 30 minutes of the previous visitor's last
    last_of_1060 = max(r[0] for r in rows) + 1000
    rows += [
        (last_of_1060, 1060, "view", 3, ""),
        (last_of_1060 + 60_000, 1060, "view", 4, ""),
        (last_of_1060 + 120_000, 1061, "view", 3, ""),
        (last_of_1060 + 180_000, 1061, "view", 5, ""),
    ]
    rng.shuffle(rows)  # the real file is not sorted by visitor
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "visitorid", "event", "itemid", "transactionid"])
        writer.writerows(rows)


def reference_retailrocket_dsan(path: Path):
    """Preprocess_rr.py Stage A with plain lists, then the generic script's dicts."""
    with path.open(newline="") as handle:
        rows = [
            (int(int(r["timestamp"]) / 1000), int(r["visitorid"]), r["event"], int(r["itemid"]))
            for r in csv.DictReader(handle)
        ]
    order = sorted(range(len(rows)), key=lambda r: (rows[r][1], rows[r][0]))  # stable, like pandas
    session, current, previous = {}, 0, None
    for r in order:
        if previous is not None and abs(rows[r][0] - rows[previous][0]) > 1800:
            current += 1
        session[r] = current
        previous = r
    order = sorted(order, key=lambda r: (session[r], rows[r][0]))
    views = [r for r in order if rows[r][2] == "view"]
    length = Counter(session[r] for r in views)
    views = [r for r in views if length[session[r]] > 1]
    start = min(rows[r][0] for r in views)
    last = {}
    for r in views:
        last[session[r]] = max(last.get(session[r], 0), rows[r][0])
    views = [r for r in views if last[session[r]] < start + 1000 * DAY]
    clicks, dates = {}, {}
    for r in views:  # Stage B reads these rows in this order
        clicks.setdefault(session[r], []).append(rows[r][3])
        dates[session[r]] = rows[r][0]
    return clicks, dates, session


def test_dsan_retailrocket_equals_reference(tmp_path):
    events = tmp_path / "events.csv"
    write_retailrocket_events(events)
    log = read_log(events)
    split, stats = prepare(log, "dsan")
    clicks, dates, session_of_row = reference_retailrocket_dsan(events)
    expected = reference_split(clicks, dates, min_length=3, min_length_after=3, test_days=7, min_prefix=2)
    assert_same(split, stats, expected)
    assert stats["steps"][1]["step"].startswith("Stage A")
    assert log.report["events"]["addtocart"] > 0 and log.report["kept_events"] == ["view"]
    # the quirk: visitor 1061 continues visitor 1060's session
    sessions_1060 = set(log.clicks.filter(log.clicks["user"] == 1060)["session"].to_list())
    sessions_1061 = set(log.clicks.filter(log.clicks["user"] == 1061)["session"].to_list())
    assert sessions_1060 == sessions_1061 and len(sessions_1060) == 1


# ---------------------------------------------------------------------------------------------------
# generic logs give the same split as the dedicated reader


def _yoochoose_as_generic(yoochoose_path: Path, target: Path) -> None:
    with yoochoose_path.open(newline="") as source, target.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["sid", "ts", "item"])
        for session, stamp, item, _ in csv.reader(source):
            writer.writerow([session, calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) * 1000, item])


def test_generic_csv_and_parquet_match_the_yoochoose_reader(yoochoose_path, tmp_path):
    generic_csv = tmp_path / "log.tsv"
    _yoochoose_as_generic(yoochoose_path, generic_csv)
    columns = GenericColumns(item="item", time="ts", session="sid", time_format="milliseconds", separator="\t")
    expected_split, _ = prepare(read_log(yoochoose_path), "srgnn")
    from_csv, _ = prepare(read_log(generic_csv, "csv", columns=columns), "srgnn", test_days=1)
    assert decoded(from_csv) == decoded(expected_split)

    import polars as pl

    parquet = tmp_path / "log.parquet"
    pl.read_csv(generic_csv, separator="\t").write_parquet(parquet)
    from_parquet, _ = prepare(read_log(parquet, "parquet", columns=columns), "srgnn", test_days=1)
    assert decoded(from_parquet) == decoded(expected_split)


def test_generic_log_needs_a_test_window(yoochoose_path, tmp_path):
    generic_csv = tmp_path / "log.tsv"
    _yoochoose_as_generic(yoochoose_path, generic_csv)
    columns = GenericColumns(item="item", time="ts", session="sid", time_format="milliseconds", separator="\t")
    with pytest.raises(ValueError, match="--test-days"):
        prepare(read_log(generic_csv, "csv", columns=columns), "srgnn")


# ---------------------------------------------------------------------------------------------------
# the command line and the saved format


def _cli(argv):
    import argparse

    from nextclick.cli.data import add_data_commands

    parser = argparse.ArgumentParser(prog="nextclick")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prepare_writes_a_split_that_loads(diginetica_path, tmp_path, capsys):
    out = tmp_path / "diginetica"
    assert _cli(["data", "prepare", "srgnn", "--input", str(diginetica_path), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_split(out)
    split, stats = prepare(read_log(diginetica_path), "srgnn")
    assert loaded.protocol.name == "srgnn" and loaded.protocol.min_prefix == 1
    assert np.array_equal(loaded.train.items, split.train.items)
    assert np.array_equal(loaded.train.offsets, split.train.offsets)
    assert np.array_equal(loaded.test.labels, split.test.labels)
    assert np.array_equal(loaded.vocab.ids, split.vocab.ids)
    assert len(loaded.train_cases()) == stats["result"]["train_cases"]
    assert len(loaded.test) == stats["result"]["test_cases"]
    written = json.loads((out / "stats.json").read_text())
    assert written["result"] == stats["result"] and written["steps"] == stats["steps"]
    assert "read_seconds" in written["timings"]

    assert _cli(["data", "stats", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"{stats['result']['train_cases']:>12,}" in shown and "drop clicks on items seen fewer than 5 times" in shown
    with pytest.raises(DataError, match="--force"):
        _cli(["data", "prepare", "srgnn", "--input", str(diginetica_path), "--out", str(out), "-q"])


def test_prepare_fraction_split_loads_with_the_full_vocabulary(yoochoose_path, tmp_path):
    out = tmp_path / "yoochoose1_4"
    assert _cli(["data", "prepare", "srgnn", "-i", str(yoochoose_path), "-o", str(out), "--fraction", "1/4", "-q"]) == 0
    loaded = load_split(out)
    stats = json.loads((out / "stats.json").read_text())
    assert loaded.n_items == stats["result"]["items"] > stats["result"]["train_items"]
    assert len(loaded.train_cases()) == stats["fraction"]["kept_cases"]


def test_main_cli_turns_bad_input_into_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("nextclick.cli")
    from nextclick.cli import main

    empty = tmp_path / "train-item-views.csv"
    empty.write_text("")
    code = main(["data", "prepare", "srgnn", "--input", str(empty), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and "is empty" in error


def test_stats_of_a_published_split():
    base = data_dir()
    if base is None or not (base / "benchmarks" / "retailrocket").is_dir():
        pytest.skip("shared data absent: benchmarks/retailrocket not found")
    from nextclick.data.prepare import split_statistics

    summary = split_statistics(base / "benchmarks" / "retailrocket")
    assert summary["train_cases"] == 433_648 and summary["test_cases"] == 15_132  # DSAN Table 1


@pytest.mark.parametrize("name", ["diginetica", "retailrocket"])
def test_published_splits_number_items_by_first_appearance(name):
    """The numbering rule of srgnn and dsan (step 6) is the one in the published files."""
    base = data_dir()
    if base is None or not (base / "benchmarks" / name).is_dir():
        pytest.skip(f"shared data absent: benchmarks/{name} not found")
    import polars as pl

    train = load_split(base / "benchmarks" / name).train
    first_seen = pl.Series(train.items).unique(maintain_order=True).to_numpy()
    assert np.array_equal(first_seen, np.arange(1, len(first_seen) + 1))


@pytest.mark.slow  # times the preparation of the raw samples
def test_bench_prepare_small(tmp_path):
    from nextclick.measure.preparation import generate_yoochoose_log, run_benchmark

    first = generate_yoochoose_log(tmp_path / "a.dat", 5_000, seed=3).read_bytes()
    assert first == generate_yoochoose_log(tmp_path / "b.dat", 5_000, seed=3).read_bytes()  # deterministic
    assert first.count(b"\n") == 5_000
    result = run_benchmark(tmp_path / "result.json", n_clicks=20_000, workdir=tmp_path / "work")
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["log"]["clicks"] == 20_000 and written["peak_memory_bytes"] > 0
    assert written["machine"]["cpu_count"] >= 1 and written["machine"]["polars"]
    assert result["split"]["train_cases"] > 0 and not (tmp_path / "work").exists()


# ---------------------------------------------------------------------------------------------------
# random small logs: recipe == reference, including where the fraction cuts and empty splits


def _random_yoochoose_rows(draw_sessions):
    rows = []
    for session, (day, clicks) in enumerate(draw_sessions, start=1):
        for second, item in enumerate(clicks):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_396_310_400 + day * DAY + 3600 + second))
            rows.append(f"{session},{stamp}.000Z,{item},0")
    return rows


_session = strategies.tuples(
    strategies.integers(0, 3), strategies.lists(strategies.integers(1, 5), min_size=1, max_size=6)
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sessions=strategies.lists(_session, min_size=3, max_size=25),
    recipe=strategies.sampled_from(["srgnn", "dsan"]),
    fraction=strategies.sampled_from([None, "1/2", "1/3", "1/7"]),
)
def test_random_logs_match_the_reference(sessions, recipe, fraction):
    """Days 0-3, items 1-5: the filters, the strict split on day boundaries and the fraction's cut fall
    everywhere, including nowhere (an empty side must be an error, never a silent split)."""
    fraction = None if recipe == "dsan" else fraction
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "clicks.dat"
        path.write_text("\n".join(_random_yoochoose_rows(sessions)) + "\n")
        clicks, dates = reference_read_yoochoose(path)
        minimum = 3 if recipe == "dsan" else 2
        try:
            expected = reference_split(
                clicks,
                dates,
                min_length=minimum,
                min_length_after=minimum,
                test_days=1,
                min_prefix=minimum - 1,
                fraction=Fraction(fraction) if fraction else None,
            )
        except ValueError:  # max() of no date: no session survives the filters
            expected = None
        usable = expected is not None and min(expected["sessions_either_side"]) > 0
        if not usable or (fraction and not expected["train_cases"]):
            event("refused: nothing to split")
            with pytest.raises(ValueError):
                prepare(read_log(path), recipe, fraction=fraction)
            return
        split, stats = prepare(read_log(path), recipe, fraction=fraction)
    event("compared")
    assert_same(split, stats, expected, whole_train=fraction is None)
