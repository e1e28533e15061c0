"""Raw logs larger than memory (issue 41, item 4): `data prepare --streaming` writes the same split and
stats as the in-memory path, on the real raw samples and on a messy log (bad rows, duplicates,
scattered sessions, clicks out of order), with the sessions cut into several slices."""

import json

import pytest

from nextclick.data import readers
from nextclick.data.prepare import run_prepare


def same_output(tmp_path, log, recipe, **options) -> dict:
    written = {}
    for streaming in (False, True):
        out = tmp_path / f"{recipe}-{streaming}"
        run_prepare(log, recipe, out, progress=False, streaming=streaming, **options)
        files = {path.name: path.read_bytes() for path in out.iterdir()}
        stats = json.loads(files.pop("stats.json"))
        stats.pop("timings")
        written[streaming] = (files, stats, stats.pop("engine", None))
    assert written[True][2] == "streaming"
    assert written[True][0] == written[False][0]  # train.txt, test.txt, split.json: byte for byte
    assert written[True][1] == written[False][1]  # every count of every step, the reader's report
    assert not list(tmp_path.glob(".*spill*"))  # the spilled Parquet files are gone
    return written[True][1]


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(readers, "SLICE_ROWS", 1_000)  # the samples' sessions in 2 to 13 slices


@pytest.mark.parametrize("recipe", ["srgnn", "narm"])  # clicks sorted by timeframe; clicks in file order
def test_diginetica_sample_streams_to_the_same_split(diginetica_path, tmp_path, small_slices, recipe):
    stats = same_output(tmp_path, diginetica_path, recipe)
    assert stats["reader"]["clicks_out_of_time_order"] > 0  # srgnn's sorting is exercised


@pytest.mark.parametrize("recipe, fraction", [("srgnn", "1/4"), ("dsan", None)])
def test_yoochoose_sample_streams_to_the_same_split(yoochoose_path, tmp_path, small_slices, recipe, fraction):
    same_output(tmp_path, yoochoose_path, recipe, fraction=fraction)


def test_a_messy_log_streams_to_the_same_split_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "SLICE_ROWS", 7)
    rows = ["session_id,item_id,timestamp"]
    for day in range(10):
        for session in range(6):
            sid = day * 10 + session
            rows += [f"{sid},{(sid * 7 + click) % 9 + 1},{day * 86_400 + 100 - click * 10}" for click in range(4)]
            if session == 2:
                rows.append(rows[-1])  # an exact duplicate
        rows.append(f"{day * 10},{3},{day * 86_400 + 500}")  # session day*10 again, after the others: scattered
    rows.insert(20, "12x,1,5")  # a bad id: skipped and counted
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    stats = same_output(tmp_path, log, "srgnn", log_format="csv", test_days=2)
    reader = stats["reader"]
    assert reader["skipped"] == {"not_an_integer": 1} and reader["duplicate_clicks"] == 10
    assert reader["sessions_not_contiguous"] == 10 and reader["clicks_out_of_time_order"] > 0
