"""Raw logs larger than memory (issue 41, item 4): `data prepare --streaming` writes the same split and
stats as the in-memory path, on the real raw samples, on a messy log that names its sessions (bad rows,
duplicates, scattered sessions, clicks out of order), and on logs cut into sessions by inactivity (a
Retailrocket events.csv, a generic user log in csv and Parquet), with the sessions or the users cut into
several slices."""

import json
import random

import polars as pl
import pytest

from nextclick.data import readers
from nextclick.data.prepare import run_prepare
from nextclick.data.readers import GenericColumns, read_log, read_retailrocket

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000


def same_output(tmp_path, log, recipe, **options) -> dict:
    written = {}
    for streaming in (False, True):
        out = tmp_path / f"{recipe}-{streaming}"
        run_prepare(log, recipe, out, progress=False, streaming=streaming, force=True, **options)
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


@pytest.mark.parametrize("drop_duplicates", [False, True])
def test_a_messy_log_streams_to_the_same_split_and_report(tmp_path, monkeypatch, drop_duplicates):
    monkeypatch.setattr(readers, "SLICE_ROWS", 7)
    rows = ["session_id,item_id,timestamp"]
    for day in range(10):
        for session in range(6):
            sid = day * 10 + session
            rows += [f"{sid},{(sid * 7 + click) % 9 + 1},{day * 86_400 + 100 - click * 10}" for click in range(4)]
            if session == 2:
                rows.append(rows[-1])  # an exact duplicate
        rows.append(f"{day * 10},{3},{day * 86_400 + 500}")  # session day*10 again, after the others: scattered
        rows.append(f"{day * 10 + 2},{(day * 10 + 2) * 7 % 9 + 1},{day * 86_400 + 100}")  # a duplicate, scattered
    rows.insert(20, "12x,1,5")  # a bad id: skipped and counted
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    stats = same_output(tmp_path, log, "srgnn", log_format="csv", test_days=2, drop_duplicates=drop_duplicates)
    reader = stats["reader"]
    assert reader["skipped"] == {"not_an_integer": 1} and reader["duplicate_clicks"] == 20
    assert reader.get("duplicate_clicks_dropped", 0) == (20 if drop_duplicates else 0)
    # a dropped copy that stood apart leaves its session contiguous again
    assert reader["sessions_not_contiguous"] == (10 if drop_duplicates else 20)
    assert reader["clicks_out_of_time_order"] > 0


# ---------------------------------------------------------------------------------------------------
# logs cut into sessions by inactivity: one slice of the users at a time


def write_messy_events(path, seed: int = 3) -> None:
    """A Retailrocket events.csv: 120 visitors with ids spread over a million, each with one to four
    visits of one to eight events (ties, steps just under, at and over the 30 minutes), in random file
    order; a chain of ten consecutive visitors whose events interleave within minutes, so that
    session-rec's quirk joins them into sessions that span several slices of the users; exact
    duplicates and bad rows."""
    rng = random.Random(seed)
    start = 1_433_221_332_000  # 2015-06-02
    rows = []
    for user in rng.sample(range(1, 1_000_000), 120):
        t = start + rng.randrange(0, 30 * DAY_MS)
        for _visit in range(rng.randint(1, 4)):
            for _event in range(rng.randint(1, 8)):
                t += rng.choice([0, 1_000, MINUTE_MS, 10 * MINUTE_MS, 1_799_000, 1_800_000, 1_801_000])
                rows.append(_event_row(rng, t, user))
            t += rng.randrange(2, 72) * HOUR_MS
    chain = start + 20 * DAY_MS
    for user in range(600_000, 600_010):  # each visitor's first event a minute before the previous one's last
        for click in range(6):
            rows.append(_event_row(rng, chain + user * 0 + (user - 600_000) * 4 * MINUTE_MS + click * MINUTE_MS, user))
    rows += rng.sample(rows, 12)  # exact duplicates
    rng.shuffle(rows)  # visitors spread over the file
    rows[100:100] = ["1433221332000,12x,view,5,", "1433221332000,7,click,5,", "1433221332000,7,view,,"]
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n" + "\n".join(rows) + "\n")


def _event_row(rng, t: int, user: int) -> str:
    event = rng.choices(["view", "addtocart", "transaction"], weights=[85, 10, 5])[0]
    return f"{t},{user},{event},{rng.randrange(1, 30)},{rng.randrange(9999) if event == 'transaction' else ''}"


@pytest.mark.parametrize("recipe, options", [("dsan", {}), ("dsan", {"drop_duplicates": True}),
                                             ("srgnn", {"test_days": 7})])
def test_retailrocket_events_stream_to_the_same_split(tmp_path, monkeypatch, recipe, options):
    monkeypatch.setattr(readers, "SLICE_ROWS", 40)  # the visitors in some 40 slices, the chain cut
    events = tmp_path / "events.csv"
    write_messy_events(events)
    stats = same_output(tmp_path, events, recipe, **options)
    reader = stats["reader"]
    assert reader["skipped"] == {"missing_field": 1, "not_an_integer": 1, "unknown_event": 1}
    assert reader["duplicate_clicks"] >= 12 and reader["user_boundary_quirk"]
    assert reader.get("duplicate_clicks_dropped", 0) == (reader["duplicate_clicks"] if options.get("drop_duplicates") else 0)


def test_retailrocket_sessions_and_clicks_equal_in_memory_with_and_without_the_quirk(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "SLICE_ROWS", 25)
    events = tmp_path / "events.csv"
    write_messy_events(events, seed=5)
    for quirk in (True, False):
        spill = tmp_path / f"spill-{quirk}"
        spill.mkdir()
        spilled = read_retailrocket(events, user_boundary_quirk=quirk, spill=spill)
        in_memory = read_retailrocket(events, user_boundary_quirk=quirk)
        ranges = readers.user_ranges(pl.scan_parquet(spill / "clicks.parquet"))
        assert len(ranges) > 20 and any(600_000 <= high < 600_009 for _, high in ranges)  # the chain is cut
        clicks = spilled.clicks.collect()
        assert clicks.drop(readers.ROW, readers.RUN_START).equals(in_memory.clicks)  # the same ids, in the same order
        assert clicks[readers.ROW].to_list() == list(range(clicks.height))
        assert spilled.report == in_memory.report and list(spilled.report) == list(in_memory.report)
        chain = in_memory.clicks.filter(pl.col("user").is_between(600_000, 600_009))
        assert chain["session"].n_unique() == (1 if quirk else 10)  # the quirk joins the ten visitors


def write_user_log(path, *, parquet: bool, seed: int = 11) -> None:
    """A generic log with a user column: 80 users spread over the file with several sessions each (gaps
    of minutes within, hours between, and exactly the gap), clicks out of time order, duplicates, two
    bad rows."""
    rng = random.Random(seed)
    rows = []
    for user in rng.sample(range(-500, 10**12), 80):
        t = rng.randrange(0, 10 * 86_400)
        for _visit in range(rng.randint(1, 5)):
            for _click in range(rng.randint(1, 6)):
                t += rng.choice([0, 30, 300, 1_800, 1_801])
                rows.append((str(user), str(rng.randrange(1, 25)), str(t * 1000)))
            t += rng.randrange(1, 30) * 3_600
    rows += rng.sample(rows, 10)
    rng.shuffle(rows)  # users spread, and their clicks out of time order
    rows[50:50] = [("u7", "3", "1000"), ("7", "3", "")]
    frame = pl.DataFrame(rows, schema=["user", "item", "ts"], orient="row")
    if parquet:
        frame.with_columns(pl.col("ts").cast(pl.Int64, strict=False)).write_parquet(path)  # "u7" stays a bad id
    else:
        frame.write_csv(path)


@pytest.mark.parametrize("parquet, drop_duplicates", [(False, False), (True, True)])
def test_a_generic_user_log_streams_to_the_same_split(tmp_path, monkeypatch, parquet, drop_duplicates):
    monkeypatch.setattr(readers, "SLICE_ROWS", 30)
    log = tmp_path / ("log.parquet" if parquet else "log.csv")
    write_user_log(log, parquet=parquet)
    columns = GenericColumns(item="item", time="ts", session=None, user="user", time_format="milliseconds")
    stats = same_output(tmp_path, log, "srgnn", log_format="parquet" if parquet else "csv", columns=columns,
                        test_days=2, drop_duplicates=drop_duplicates, max_bad_fraction=0.01)
    reader = stats["reader"]
    assert sum(reader["skipped"].values()) == 2 and reader["duplicate_clicks"] >= 10
    assert stats["steps"][0]["sessions"] > 200  # several sessions per user


def test_user_ranges_cover_every_user_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "SLICE_ROWS", 100)
    rng = random.Random(1)
    users = [rng.randrange(-2**63, 2**63) for _ in range(300)] + [5] * 250 + list(range(1000, 1400)) + [2**63 - 1]
    frame = pl.DataFrame({"user": users}, schema={"user": pl.Int64})
    ranges = readers.user_ranges(frame.lazy())
    assert all(low <= high < next_low for (low, high), (next_low, _) in zip(ranges, ranges[1:]))
    sizes = [frame.filter(pl.col("user").is_between(low, high)).height for low, high in ranges]
    assert sum(sizes) == len(users) and all(size <= 100 or low == high for size, (low, high) in zip(sizes, ranges))
    assert (5, 5) in ranges and len(ranges) < 20


def test_no_view_event_is_the_same_error_streaming(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("timestamp,visitorid,event,itemid,transactionid\n1000,1,addtocart,5,\n2000,2,transaction,6,7\n")
    for spill in (None, tmp_path):
        with pytest.raises(readers.DataError, match="no view events"):
            read_log(events, spill=spill)
