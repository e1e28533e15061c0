"""Readers: the real samples parse row for row, and every kind of bad input gets a clear error or a
counted, reported skip."""

from __future__ import annotations

import calendar
import csv
import time
from pathlib import Path

import polars as pl
import pytest

from nextclick.data.benchmarks import DataError
from nextclick.data.readers import GenericColumns, guess_format, read_log, read_retailrocket, sessionize_by_gap
from nextclick.data.recipes import prepare

DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"




def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _yoochoose_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---------------------------------------------------------------------------------------------------
# the real samples, row for row


def test_diginetica_sample_row_for_row(diginetica_path):
    log = read_log(diginetica_path)
    with diginetica_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    assert log.log_format == "diginetica" and log.report["rows"] == len(rows) == log.clicks.height
    assert log.clicks["session"].to_list() == [int(r["session_id"]) for r in rows]
    assert log.clicks["item"].to_list() == [int(r["item_id"]) for r in rows]
    assert log.clicks["timeframe"].to_list() == [int(r["timeframe"]) for r in rows]
    days = [calendar.timegm(time.strptime(r["eventdate"], "%Y-%m-%d")) for r in rows]
    assert log.clicks["time"].to_list() == days
    assert log.report["skipped"] == {} and log.report["duplicate_clicks"] == 0
    # the file is not in timeframe order inside sessions: the reason SR-GNN and DSAN sort
    assert log.report["clicks_out_of_time_order"] > 0


def test_yoochoose_sample_row_for_row(yoochoose_path):
    log = read_log(yoochoose_path)
    with yoochoose_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert log.log_format == "yoochoose" and log.clicks.height == len(rows) == 1913
    assert log.clicks["session"].to_list() == [int(r[0]) for r in rows]
    assert log.clicks["item"].to_list() == [int(r[2]) for r in rows]
    seconds = [calendar.timegm(time.strptime(r[1][:19], "%Y-%m-%dT%H:%M:%S")) for r in rows]  # as SR-GNN: [:19]
    assert log.clicks["time"].to_list() == seconds
    assert log.report["sessions"] == len({r[0] for r in rows})


def test_yoochoose_header_line_is_recognised(yoochoose_path, tmp_path):
    lines = _yoochoose_lines(yoochoose_path)
    with_header = _write(tmp_path / "clicks.dat", "session_id,timestamp,item_id,category\n" + "\n".join(lines) + "\n")
    log = read_log(with_header)
    assert log.clicks.height == len(lines) and log.report["skipped"] == {}


def test_crlf_line_endings(tmp_path):
    path = _write(
        tmp_path / "train-item-views.csv",
        DIGINETICA_HEADER.replace("\n", "\r\n") + "1;NA;5;10;2016-05-09\r\n1;NA;6;20;2016-05-09\r\n",
    )
    log = read_log(path)
    assert log.clicks["item"].to_list() == [5, 6] and log.report["skipped"] == {}


def test_format_from_file_name():
    assert guess_format("x/train-item-views.csv") == "diginetica"
    assert guess_format("yoochoose-clicks.dat") == "yoochoose"
    assert guess_format("events.csv") == "retailrocket"
    assert guess_format("log.parquet") == "parquet"
    assert guess_format("log.csv") is None


def test_unknown_format_is_an_error(tmp_path):
    path = _write(tmp_path / "log.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="--format"):
        read_log(path)
    with pytest.raises(DataError, match="unknown log format"):
        read_log(path, "excel")


# ---------------------------------------------------------------------------------------------------
# malformed lines, non-numeric ids, bad timestamps: counted skips, or an error past the threshold


def test_malformed_rows_are_skipped_counted_and_quoted(yoochoose_path, tmp_path):
    lines = _yoochoose_lines(yoochoose_path)
    bad = [
        "9001,2014-04-06T20:21:58.444Z,214717095",  # too few fields
        "9002,2014-04-06T20:21:58.444Z,214717095,0,surplus",  # too many
        "9003,2014-04-06T20:21:58.444Z,21471x095,0",  # non-numeric item id
        "abc,2014-04-06T20:21:58.444Z,214717095,0",  # non-numeric session id
        "9005,yesterday,214717095,0",  # bad timestamp
        "",  # blank line
    ]
    path = _write(tmp_path / "clicks.dat", "\n".join(lines[:100] + bad + lines[100:]) + "\n")
    log = read_log(path)
    assert log.clicks.height == len(lines)
    assert log.report["skipped"] == {
        "blank_line": 1,
        "missing_field": 1,
        "too_many_fields": 1,
        "not_an_integer": 2,
        "bad_timestamp": 1,
    }
    assert log.report["first_skipped"]["missing_field"].startswith("line 101:")
    assert log.report["first_skipped"]["not_an_integer"] == "line 103: '9003,2014-04-06T20:21:58.444Z,21471x095,0'"
    assert log.report["first_skipped"]["bad_timestamp"].startswith("line 105:")
    # and the skips reach stats.json through the recipe
    _, stats = prepare(log, "srgnn")
    assert stats["reader"]["skipped"]["not_an_integer"] == 2


def test_strict_mode_fails_on_the_first_bad_row(yoochoose_path, tmp_path):
    lines = _yoochoose_lines(yoochoose_path)
    path = _write(
        tmp_path / "clicks.dat", "\n".join(lines[:5] + ["7,2014-04-06T20:21:58.444Z,1x,0"] + lines[5:]) + "\n"
    )
    with pytest.raises(DataError, match=r"clicks.dat:6: an id or counter that is not an integer"):
        read_log(path, strict=True)


def test_too_many_bad_rows_is_an_error(yoochoose_path, tmp_path):
    lines = _yoochoose_lines(yoochoose_path)
    broken = [line.replace(",", ";") for line in lines[:50]] + lines[50:]  # 2.6% bad
    path = _write(tmp_path / "clicks.dat", "\n".join(broken) + "\n")
    with pytest.raises(DataError, match=r":1: a required field is missing.*50 of 1,913 rows are bad"):
        read_log(path)
    assert read_log(path, max_bad_fraction=0.05).clicks.height == len(lines) - 50


def test_wrong_format_is_an_error(diginetica_path):
    with pytest.raises(DataError, match="right --format"):
        read_log(diginetica_path, "yoochoose")


def test_non_numeric_ids_in_diginetica(tmp_path):
    path = _write(
        tmp_path / "train-item-views.csv",
        DIGINETICA_HEADER
        + "1;NA;5;10;2016-05-09\n"
        + "1;NA;item7;20;2016-05-09\n"
        + "".join(f"{s};NA;{s};1;2016-05-09\n" for s in range(2, 200)),
    )
    log = read_log(path)
    assert log.report["skipped"] == {"not_an_integer": 1}
    assert log.report["first_skipped"]["not_an_integer"].startswith("line 3:")


# ---------------------------------------------------------------------------------------------------
# missing columns, empty files


def test_missing_column_names_it(tmp_path):
    path = _write(tmp_path / "train-item-views.csv", "session_id;user_id;timeframe;eventdate\n1;NA;10;2016-05-09\n")
    with pytest.raises(DataError, match=r"missing column 'item_id'.*found 'session_id', 'user_id'"):
        read_log(path)
    path = _write(tmp_path / "events.csv", "timestamp,visitorid,itemid\n1,2,3\n")
    with pytest.raises(DataError, match="missing column 'event'"):
        read_log(path)


def test_wrong_separator_shows_as_missing_columns(tmp_path):
    path = _write(
        tmp_path / "train-item-views.csv", "session_id,user_id,item_id,timeframe,eventdate\n1,NA,5,10,2016-05-09\n"
    )
    with pytest.raises(DataError, match=r"separator ';'"):
        read_log(path)


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        read_log(_write(tmp_path / "train-item-views.csv", ""))
    with pytest.raises(DataError, match="no such file"):
        read_log(tmp_path / "absent.dat")


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="no click rows"):
        read_log(_write(tmp_path / "train-item-views.csv", DIGINETICA_HEADER))


def test_only_blank_lines(tmp_path):
    with pytest.raises(DataError, match="no valid click rows"):
        read_log(_write(tmp_path / "clicks.dat", "\n\n\n"))


# ---------------------------------------------------------------------------------------------------
# duplicates, unsorted timestamps, scattered sessions


def test_duplicate_events_are_counted_and_kept(yoochoose_path, tmp_path):
    lines = _yoochoose_lines(yoochoose_path)
    path = _write(tmp_path / "clicks.dat", "\n".join(lines[:10] + [lines[3], lines[3], lines[7]] + lines[10:]) + "\n")
    log = read_log(path)
    assert log.report["duplicate_clicks"] == 3 and log.clicks.height == len(lines) + 3  # kept, as the papers did
    deduplicated = read_log(path, drop_duplicates=True)
    assert deduplicated.report["duplicate_clicks_dropped"] == 3 and deduplicated.clicks.height == len(lines)
    # the row order (file order) survives deduplication
    assert deduplicated.clicks["time"].to_list() == read_log(yoochoose_path).clicks["time"].to_list()


def test_same_second_is_not_a_duplicate(tmp_path):
    path = _write(tmp_path / "clicks.dat", "1,2014-04-06T20:21:58.100Z,5,0\n1,2014-04-06T20:21:58.900Z,5,0\n")
    assert read_log(path).report["duplicate_clicks"] == 0


def test_unsorted_timestamps_are_counted_and_the_recipe_decides(tmp_path):
    rows = ["1,2014-04-01T10:00:{:02d}.000Z,{},0".format(s, item) for s, item in [(30, 11), (10, 12), (20, 13)]]
    path = _write(tmp_path / "clicks.dat", "\n".join(rows) + "\n")
    log = read_log(path)
    assert log.report["clicks_out_of_time_order"] == 1
    # Yoochoose: SR-GNN keeps file order; a generic log is sorted by time
    grouped = pl.read_csv(path, has_header=False, new_columns=["sid", "ts", "item", "cat"])
    generic = tmp_path / "log.csv"
    grouped.with_columns(pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ").dt.epoch("s")).write_csv(generic)
    from nextclick.data.recipes import group_into_sessions

    file_order, ids = group_into_sessions(log.clicks, (), session_time="last_row")
    assert ids[file_order.items].tolist() == [11, 12, 13]
    columns = GenericColumns(item="item", time="ts", session="sid")
    by_time, ids = group_into_sessions(
        read_log(generic, "csv", columns=columns).clicks, ("time",), session_time="latest"
    )
    assert ids[by_time.items].tolist() == [12, 13, 11]


def test_scattered_sessions_are_counted_and_regrouped(tmp_path):
    rows = [(1, "10:00:00", 11), (2, "10:00:05", 21), (1, "10:00:10", 12), (2, "10:00:15", 22), (1, "10:00:20", 13)]
    path = _write(tmp_path / "clicks.dat", "".join(f"{s},2014-04-01T{t}.000Z,{i},0\n" for s, t, i in rows))
    log = read_log(path)
    assert log.report["sessions_not_contiguous"] == 2
    from nextclick.data.recipes import group_into_sessions

    sessions, ids = group_into_sessions(log.clicks, (), session_time="last_row")
    assert [ids[sessions[i]].tolist() for i in range(len(sessions))] == [[11, 12, 13], [21, 22]]
    assert sessions.times.tolist() == [log.clicks["time"][4], log.clicks["time"][3]]


# ---------------------------------------------------------------------------------------------------
# encodings


def test_mixed_encodings_are_skipped_and_counted(tmp_path):
    latin1_line = "train-item-views.csv é".encode("latin-1")  # a byte that is not UTF-8
    body = b"".join(f"{s};NA;{s % 7};{s};2016-05-09\n".encode() for s in range(1, 300))
    text = (
        DIGINETICA_HEADER.encode()
        + body
        + b"300;NA;caf\xe9;1;2016-05-09\n"
        + b"301;"
        + latin1_line[-2:]
        + b";5;1;2016-05-09\n"
    )
    log = read_log(_write(tmp_path / "train-item-views.csv", text))
    assert log.report["skipped"] == {"invalid_utf8": 2}
    assert log.report["first_skipped"]["invalid_utf8"].startswith("line 301:")
    assert log.clicks.height == 299


def test_utf16_file_is_an_error(tmp_path):
    path = _write(tmp_path / "train-item-views.csv", (DIGINETICA_HEADER + "1;NA;5;10;2016-05-09\n").encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_log(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = _write(
        tmp_path / "train-item-views.csv", b"\xef\xbb\xbf" + (DIGINETICA_HEADER + "1;NA;5;10;2016-05-09\n").encode()
    )
    assert read_log(path).clicks["item"].to_list() == [5]


# ---------------------------------------------------------------------------------------------------
# Retailrocket and generic logs


def _events(path: Path, rows) -> Path:
    return _write(
        path, "timestamp,visitorid,event,itemid,transactionid\n" + "".join(f"{t},{u},{e},{i},\n" for t, u, e, i in rows)
    )


def test_retailrocket_sessions_views_and_unknown_events(tmp_path):
    minute = 60_000
    rows = [
        (0, 1, "view", 10),
        (10 * minute, 1, "addtocart", 10),
        (20 * minute, 1, "view", 11),
        (100 * minute, 1, "view", 12),  # 80 min later: a new session
        (105 * minute, 2, "view", 13),  # another visitor 5 min after visitor 1's last event
        (106 * minute, 2, "click", 13),  # unknown event type
    ]
    path = _events(tmp_path / "events.csv", rows)
    quirky = read_log(path, max_bad_fraction=0.5)
    assert quirky.report["events"] == {"addtocart": 1, "view": 4}
    assert quirky.report["skipped"] == {"unknown_event": 1}
    # session-rec's quirk: visitor 2 continues visitor 1's second session
    assert quirky.clicks["session"].to_list() == [0, 0, 1, 1]
    assert quirky.clicks["item"].to_list() == [10, 11, 12, 13]
    assert quirky.clicks["time"].to_list() == [0, 1200, 6000, 6300]
    proper = read_retailrocket(path, user_boundary_quirk=False, max_bad_fraction=0.5)
    assert proper.clicks["session"].to_list() == [0, 0, 1, 2]


def test_sessionize_by_gap_per_user():
    events = pl.DataFrame(
        {"user": [7, 7, 7, 8, 7], "time": [0.0, 100.0, 5000.0, 5001.0, 50.0], "item": [1, 2, 3, 4, 5]}
    )
    sessions = sessionize_by_gap(events, 1800, across_users=False)
    assert sessions["item"].to_list() == [1, 5, 2, 3, 4]
    assert sessions["session"].to_list() == [0, 0, 0, 1, 2]


def test_generic_user_log_with_a_strftime_time(tmp_path):
    path = _write(
        tmp_path / "log.csv",
        "user,item,when\n1,5,2020-01-01 10:00:00\n1,6,2020-01-01 10:10:00\n"
        "1,7,2020-01-01 12:00:00\n2,8,2020-01-01 10:05:00\n",
    )
    columns = GenericColumns(item="item", time="when", session=None, user="user", time_format="%Y-%m-%d %H:%M:%S")
    log = read_log(path, "csv", columns=columns)
    assert log.clicks["session"].to_list() == [0, 0, 1, 2] and log.clicks["item"].to_list() == [5, 6, 7, 8]
    assert log.clicks["time"][0] == calendar.timegm((2020, 1, 1, 10, 0, 0))


def test_generic_missing_column_and_parquet_types(tmp_path):
    path = _write(tmp_path / "log.csv", "sid,item\n1,2\n")
    with pytest.raises(DataError, match="missing column 'timestamp'"):
        read_log(path, "csv", columns=GenericColumns(session="sid", item="item"))
    parquet = tmp_path / "log.parquet"
    pl.DataFrame(
        {"sid": [1, 1, 2], "item": [3.0, 4.5, 5.0], "timestamp": pl.Series([0, 1000, 2000]).cast(pl.Datetime("ms"))}
    ).write_parquet(parquet)
    with pytest.raises(DataError, match=r"log.parquet:2: an id or counter that is not an integer"):
        read_log(parquet, columns=GenericColumns(session="sid", item="item"))  # 1 of 3 rows bad
    log = read_log(parquet, columns=GenericColumns(session="sid", item="item"), max_bad_fraction=0.5)
    assert log.report["skipped"] == {"not_an_integer": 1}  # item 4.5
    assert log.clicks["time"].to_list() == [0.0, 2.0]
    with pytest.raises(DataError, match="missing column"):
        read_log(parquet, columns=GenericColumns(session="session", item="item"))


def test_generic_columns_need_sessions_or_users():
    with pytest.raises(ValueError, match="session column"):
        GenericColumns(session=None, user=None)
