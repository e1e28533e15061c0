"""Readers: raw click logs -> one clicks table (polars), with a report of everything read and skipped.

Formats (../shared/data/README.md):
- Diginetica, CIKM Cup 2016 `train-item-views.csv`: `session_id;user_id;item_id;timeframe;eventdate`,
  `;`-separated, header, `NA` for a missing user.
- Yoochoose, RecSys Challenge 2015 `yoochoose-clicks.dat`: `session_id,timestamp,item_id,category`, no
  header, ISO-8601 timestamps such as `2014-04-06T20:21:58.444Z`.
- Retailrocket `events.csv`: `timestamp,visitorid,event,itemid,transactionid`, header, milliseconds,
  events `view` / `addtocart` / `transaction`. It has users, not sessions: the reader cuts sessions after
  30 minutes of inactivity exactly as session-rec's `preprocess_rr` (used by DSAN) does, quirk included
  (see `sessionize_by_gap`), and keeps the `view` events.
- Generic CSV or Parquet with named columns: a session column, or a user column plus an inactivity gap.

Every reader returns a `ClickLog` whose `clicks` table has one row per click, in the log's *file order*
(which the recipes need: SR-GNN and DSAN take a session's date from the last row read):

    session    Int64    session id (from the log, or assigned 0, 1, ... by sessionization)
    item       Int64    item id from the log
    time       Float64  seconds since 1970-01-01 UTC. Diginetica: the event *date* at midnight (the
                        only clock the log has); Yoochoose: truncated to whole seconds, as SR-GNN and
                        DSAN read `timestamp[:19]`; Retailrocket: `int(ms / 1000)` as session-rec does.
    timeframe  Int64    Diginetica only: the within-session clock SR-GNN and DSAN sort clicks by.
    user       Int64    Retailrocket and user-based generic logs.

Bad input never passes silently. A row is *skipped and counted* (per reason, with the first example,
in `report["skipped"]`) when it has invalid UTF-8 (mixed encodings), too many or too few fields, an id
that is not an integer, or a timestamp that does not parse; blank lines are counted too. More than
`max_bad_fraction` (default 1%: the real logs have none, so more means a wrong format or a broken
file) or any at all with `strict=True` raises `DataError` naming the first bad line. Empty files,
missing columns and UTF-16 files raise `DataError` at once. Exact duplicate events are counted
(`duplicate_clicks`) and kept, because the papers' scripts keep them and dropping them would change the
published counts (`drop_duplicates=True` drops them). Clicks that come earlier in time than the
previous click of their session (`clicks_out_of_time_order`) and sessions whose rows are not contiguous
(`sessions_not_contiguous`) are counted; the recipe decides the click order, as its paper did.

Logs larger than memory (`spill=<directory>`, `nextclick data prepare --streaming`): the same queries run
on polars' streaming engine and their rows go to Parquet files in `spill` (`sink_parquet`) instead of
memory; `clicks` is then a LazyFrame over them, the counts above come from streaming aggregations, and
what needs whole sessions together (duplicates, clicks out of order, `drop_duplicates`) is computed on
one slice of the sessions at a time (`session_slices`: by the hash of the session id, about SLICE_ROWS
clicks each). Logs cut into sessions by inactivity (Retailrocket, generic logs with a user column) are
cut one slice of the *users* at a time (`sessionize_spilled`): consecutive ranges of user ids of about
SLICE_ROWS clicks (`user_ranges`), each sorted and cut in memory as `sessionize_by_gap` cuts the whole
log, giving the same session ids, and written in its order, so the spilled clicks are exactly the
in-memory table. Memory is then bounded by the sessions and items (and one slice), not by the clicks.
"""

from __future__ import annotations

import os
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from nextclick.data.benchmarks import DataError
from nextclick.data.formats import LOG_FORMATS, MAX_BAD_FRACTION, SESSION_GAP_SECONDS  # noqa: F401 (re-exported)

RETAILROCKET_EVENTS = ("view", "addtocart", "transaction")

# Why a row was skipped, in the order the checks run (a row gets the first reason that applies).
SKIP_REASONS = {
    1: ("blank_line", "blank line"),
    2: ("invalid_utf8", "bytes that are not UTF-8 (mixed encodings?)"),
    3: ("too_many_fields", "more fields than the format has"),
    4: ("missing_field", "a required field is missing or empty"),
    5: ("not_an_integer", "an id or counter that is not an integer"),
    6: ("bad_timestamp", "a timestamp that does not parse"),
    7: ("unknown_event", f"an event type other than {', '.join(RETAILROCKET_EVENTS)}"),
}
_BLANK, _ENCODING, _EXTRA, _MISSING, _INTEGER, _TIME, _EVENT = range(1, 8)
_EXTRA_COLUMN = "__extra_fields__"
# streaming (spill): clicks per slice of the sessions that is held in memory at once, and the columns the
# spilled clicks carry besides the log's: their row number among the good clicks, and whether a click
# starts a run of its session's rows in file order
SLICE_ROWS = 10_000_000
ROW, RUN_START = "__row__", "__run_start__"
_RUN_START_EXPR = (pl.col("session") != pl.col("session").shift(1)).fill_null(True)
# user_ranges: buckets of user ids counted per pass when a range of users is cut into slices
USER_BUCKETS = 4096


@dataclass(frozen=True)
class ClickLog:
    """A parsed click log: the clicks table (see the module docstring), its format, and the report."""

    clicks: pl.DataFrame | pl.LazyFrame  # a LazyFrame over spilled Parquet when read with `spill`
    log_format: str  # "diginetica" | "yoochoose" | "retailrocket" | "generic"
    path: str
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GenericColumns:
    """Column names and conventions of a generic CSV/Parquet log.

    Sessions come from `session`, or, when it is None, from `user` cut after `gap_seconds` of inactivity.
    `time_format`: "seconds" or "milliseconds" (numbers since the epoch), or a strftime pattern such as
    "%Y-%m-%d %H:%M:%S" (times without a zone are read as UTC). Parquet datetime/date columns need none.
    """

    item: str = "item_id"
    time: str = "timestamp"
    session: str | None = "session_id"
    user: str | None = None
    gap_seconds: float = SESSION_GAP_SECONDS
    time_format: str = "seconds"
    separator: str = ","

    def __post_init__(self) -> None:
        if self.session is None and self.user is None:
            raise ValueError("a generic log needs a session column, or a user column to cut sessions by gap")
        if self.gap_seconds <= 0:
            raise ValueError("the inactivity gap must be positive")


# ---------------------------------------------------------------------------------------------------
# entry point


def guess_format(path: str | os.PathLike) -> str | None:
    """The format a file name suggests (the names the sources ship with), or None."""
    name = Path(path).name.lower()
    if "train-item-views" in name:
        return "diginetica"
    if name.endswith(".dat") or "yoochoose" in name:
        return "yoochoose"
    if name.startswith("events") and name.endswith(".csv"):
        return "retailrocket"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return None


def read_log(
    path: str | os.PathLike,
    log_format: str | None = None,
    *,
    columns: GenericColumns | None = None,
    strict: bool = False,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    drop_duplicates: bool = False,
    spill: str | os.PathLike | None = None,
) -> ClickLog:
    """Read any supported log; `log_format` defaults to the one the file name suggests. With `spill` (a
    directory), the log is read on the streaming engine into Parquet there (see the module docstring)
    and `clicks` is a LazyFrame over it, holding what the in-memory read holds, in the same order."""
    log_format = log_format or guess_format(path)
    if log_format is None:
        raise DataError(f"cannot tell the format of {path}: pass --format ({', '.join(LOG_FORMATS)})")
    options = dict(strict=strict, max_bad_fraction=max_bad_fraction, drop_duplicates=drop_duplicates,
                   spill=Path(spill) if spill is not None else None)
    if log_format == "diginetica":
        return read_diginetica(path, **options)
    if log_format == "yoochoose":
        return read_yoochoose(path, **options)
    if log_format == "retailrocket":
        return read_retailrocket(path, **options)
    if log_format in ("csv", "parquet", "generic"):
        parquet = {"csv": False, "parquet": True}.get(log_format)
        return read_generic(path, columns or GenericColumns(), parquet=parquet, **options)
    raise DataError(f"unknown log format {log_format!r}; known: {', '.join(LOG_FORMATS)}")


# ---------------------------------------------------------------------------------------------------
# the three published formats


def read_diginetica(path: str | os.PathLike, **options) -> ClickLog:
    """CIKM Cup 2016 `train-item-views.csv`. `time` is the event date (midnight UTC); `timeframe` the
    within-session clock. `user_id` is not needed by any recipe and may be `NA`."""
    path = _checked_file(path)
    header = _header(
        path,
        ";",
        required=("session_id", "item_id", "timeframe", "eventdate"),
        form="expected Diginetica's session_id;user_id;item_id;timeframe;eventdate",
    )
    raw = _scan_text_fields(path, header, ";", has_header=True)
    date = pl.col("eventdate").str.to_date("%Y-%m-%d", strict=False)
    typed = {
        "session": _integer("session_id"),
        "item": _integer("item_id"),
        "timeframe": _integer("timeframe"),
        "time": (date.cast(pl.Int64) * 86_400).cast(pl.Float64),
    }
    checks = [
        (_MISSING, _any_null(["session_id", "item_id", "timeframe", "eventdate"])),
        (_INTEGER, _any_null([typed["session"], typed["item"], typed["timeframe"]])),
        (_TIME, date.is_null()),
    ]
    clicks, report = _validated(raw, header, typed, checks, path, ";", has_header=True, **_validation(options))
    return _finish(
        clicks,
        "diginetica",
        path,
        report,
        identity=["session", "item", "timeframe", "time"],
        order=["time", "timeframe"],
        drop_duplicates=options.get("drop_duplicates", False),
        spill=options.get("spill"),
    )


def read_yoochoose(path: str | os.PathLike, **options) -> ClickLog:
    """RecSys Challenge 2015 `yoochoose-clicks.dat` (no header; a `session_id,...` header line, which
    SR-GNN's instructions ask users to add, is recognised and skipped). Timestamps keep whole seconds."""
    path = _checked_file(path)
    names = ["session_id", "timestamp", "item_id", "category"]
    first = _first_line(path)
    has_header = first.lower().startswith("session_id")
    raw = _scan_text_fields(path, names, ",", has_header=has_header)
    # exact time for duplicate detection; SR-GNN and DSAN then keep `timestamp[:19]`, i.e. whole seconds
    exact_ms = pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_unit="ms").dt.epoch("ms")
    typed = {"session": _integer("session_id"), "item": _integer("item_id"), "time_ms": exact_ms}
    checks = [
        (_MISSING, _any_null(names)),  # the category is unused, but a line without it is truncated
        (_INTEGER, _any_null([typed["session"], typed["item"]])),
        (_TIME, exact_ms.is_null()),
    ]
    clicks, report = _validated(raw, names, typed, checks, path, ",", has_header=has_header, **_validation(options))
    log = _finish(
        clicks,
        "yoochoose",
        path,
        report,
        identity=["session", "item", "time_ms"],
        order=["time_ms"],
        drop_duplicates=options.get("drop_duplicates", False),
        spill=options.get("spill"),
    )
    whole_seconds = (pl.col("time_ms") // 1000).cast(pl.Float64)
    spilled = [ROW, RUN_START] if isinstance(log.clicks, pl.LazyFrame) else []
    return ClickLog(log.clicks.select("session", "item", *spilled, time=whole_seconds), log.log_format, log.path,
                    log.report)


def read_retailrocket(
    path: str | os.PathLike, *, keep_events: tuple[str, ...] = ("view",), user_boundary_quirk: bool = True, **options
) -> ClickLog:
    """Retailrocket `events.csv`, cut into sessions and reduced to `keep_events`, as session-rec's
    `preprocess_rr` (DSAN's Stage A, dsan_reference.md section 1.2) does:

    1. time in seconds = int(ms / 1000); rows sorted by (visitorid, time), stably;
    2. a session ends where the gap to the *previous row* exceeds 30 minutes; with the quirk kept (the
       default, as DSAN), a visitor whose first event lies within 30 minutes of the previous visitor's
       last event continues that visitor's session;
    3. rows sorted by (session, time), stably; only `view` events kept (sessionizing used all events).

    The clicks come out in that order, which is the order DSAN's second script reads them in. With
    `spill`, the same clicks, ids and order come from `sessionize_spilled`, a slice of the visitors at
    a time.
    """
    path = _checked_file(path)
    header = _header(
        path,
        ",",
        required=("timestamp", "visitorid", "event", "itemid"),
        form="expected Retailrocket's timestamp,visitorid,event,itemid,transactionid",
    )
    raw = _scan_text_fields(path, header, ",", has_header=True)
    event = pl.col("event").str.strip_chars()
    typed = {
        "user": _integer("visitorid"),
        "item": _integer("itemid"),
        "time_ms": _integer("timestamp"),
        "event": event,
    }
    checks = [
        (_MISSING, _any_null(["timestamp", "visitorid", "event", "itemid"])),
        (_INTEGER, _any_null([typed["user"], typed["item"], typed["time_ms"]])),
        (_TIME, typed["time_ms"] < 0),
        (_EVENT, ~event.is_in(list(RETAILROCKET_EVENTS))),
    ]
    events, report = _validated(raw, header, typed, checks, path, ",", has_header=True, **_validation(options))
    events = events.with_columns(time=(pl.col("time_ms") // 1000).cast(pl.Float64))
    if isinstance(events, pl.LazyFrame):  # spilled: cut one slice of the visitors at a time
        clicks = sessionize_spilled(
            events, SESSION_GAP_SECONDS, across_users=user_boundary_quirk, identity=["user", "event", "item", "time_ms"],
            drop_duplicates=options.get("drop_duplicates", False), keep_events=keep_events, spill=options["spill"],
            report=report)
        report.update(kept_events=list(keep_events), user_boundary_quirk=user_boundary_quirk,
                      clicks=report.pop("clicks"), sessions=report.pop("sessions"))
        _require_clicks(clicks, path, f"no {'/'.join(keep_events)} events")
        return ClickLog(clicks, "retailrocket", str(path), report)
    report["duplicate_clicks"] = _count_duplicates(events, ["user", "event", "item", "time_ms"])
    if options.get("drop_duplicates"):
        events = _drop_duplicates(events, ["user", "event", "item", "time_ms"], report)
    report["events"] = {name: int(count) for name, count in events.group_by("event").len().sort("event").iter_rows()}
    sessionized = sessionize_by_gap(events, SESSION_GAP_SECONDS, across_users=user_boundary_quirk)
    clicks = sessionized.filter(pl.col("event").is_in(list(keep_events))).select("session", "item", "time", "user")
    report["kept_events"] = list(keep_events)
    report["user_boundary_quirk"] = user_boundary_quirk
    report["clicks"] = clicks.height
    report["sessions"] = clicks["session"].n_unique()
    _require_clicks(clicks, path, f"no {'/'.join(keep_events)} events")
    return ClickLog(clicks, "retailrocket", str(path), report)


# ---------------------------------------------------------------------------------------------------
# generic CSV / Parquet


def read_generic(
    path: str | os.PathLike, columns: GenericColumns | None = None, *, parquet: bool | None = None, **options
) -> ClickLog:
    """A CSV (with a header) or Parquet log with the named columns (`parquet=None`: by file suffix).
    With a session column the rows keep the file order; with a user column, sessions are cut after
    `columns.gap_seconds` of inactivity, separately per user (no session-rec quirk), and rows come out
    ordered by (user, time); with `spill`, a slice of the users at a time (`sessionize_spilled`)."""
    columns = columns or GenericColumns()
    is_parquet = Path(path).suffix.lower() in (".parquet", ".pq") if parquet is None else parquet
    path = _checked_file(path, text=not is_parquet)
    id_names = [name for name in (columns.session, columns.user) if name is not None]
    required = tuple(dict.fromkeys([*id_names, columns.item, columns.time]))
    if is_parquet:
        raw, header = _scan_parquet(path, required)
        separator = ","
    else:
        separator = columns.separator
        header = _header(
            path,
            separator,
            required=required,
            form="name the columns with --session-column/--user-column, --item-column, --time-column",
        )
        raw = _scan_text_fields(path, header, separator, has_header=True)
    schema = raw.collect_schema()
    typed = {"item": _integer(columns.item, schema[columns.item])}
    if columns.session is not None:
        typed["session"] = _integer(columns.session, schema[columns.session])
    if columns.user is not None:
        typed["user"] = _integer(columns.user, schema[columns.user])
    typed["time"] = _seconds(columns.time, schema[columns.time], columns.time_format)
    ids = [typed[name] for name in ("session", "user", "item") if name in typed]
    checks = [
        (_MISSING, _any_null(list(required))),
        (_INTEGER, _any_null(ids)),
        (_TIME, typed["time"].is_null() | typed["time"].is_nan()),
    ]
    clicks, report = _validated(
        raw, header, typed, checks, path, separator, has_header=not is_parquet, **_validation(options)
    )
    if columns.session is None and isinstance(clicks, pl.LazyFrame):  # spilled: one slice of the users at a time
        clicks = sessionize_spilled(
            clicks, columns.gap_seconds, across_users=False, identity=["user", "item", "time"],
            drop_duplicates=options.get("drop_duplicates", False), keep_events=None, spill=options["spill"],
            report=report)
        report.pop("clicks")
        report["gap_seconds"] = columns.gap_seconds
        return ClickLog(clicks, "generic", str(path), report)
    if columns.session is None:
        report["duplicate_clicks"] = _count_duplicates(clicks, ["user", "item", "time"])
        if options.get("drop_duplicates"):
            clicks = _drop_duplicates(clicks, ["user", "item", "time"], report)
        clicks = sessionize_by_gap(clicks, columns.gap_seconds, across_users=False).select(
            "session", "item", "time", "user"
        )
        report["sessions"] = clicks["session"].n_unique()
        report["gap_seconds"] = columns.gap_seconds
        return ClickLog(clicks, "generic", str(path), report)
    keep = ["session", "item", "time"] + (["user"] if columns.user is not None else [])
    spilled = [ROW, RUN_START] if isinstance(clicks, pl.LazyFrame) else []
    return _finish(
        clicks.select(keep + spilled),
        "generic",
        path,
        report,
        identity=keep,
        order=["time"],
        drop_duplicates=options.get("drop_duplicates", False),
        spill=options.get("spill"),
    )


def sessionize_by_gap(events: pl.DataFrame, gap_seconds: float, *, across_users: bool) -> pl.DataFrame:
    """Assign `session` (0, 1, ...) to events with `user` and `time`; return them ordered by (session, time).

    Rows are sorted by (user, time), stably, and a session starts where the time to the previous row
    exceeds `gap_seconds`. `across_users=True` reproduces session-rec's `preprocess_rr` (DSAN): the gap
    is taken to the previous *row*, as an absolute value, even when that row is another user's, so a
    user can continue the previous user's session. `across_users=False` also starts a session at every
    new user (the sound rule, for generic logs).
    """
    ordered = events.sort(["user", "time"], maintain_order=True)
    gap = (pl.col("time") - pl.col("time").shift(1)).abs() > gap_seconds
    if not across_users:
        gap = gap | (pl.col("user") != pl.col("user").shift(1))
    ordered = ordered.with_columns(session=gap.fill_null(False).cast(pl.Int64).cum_sum())
    return ordered.sort(["session", "time"], maintain_order=True)


# ---------------------------------------------------------------------------------------------------
# file checks and scanning


def _checked_file(path: str | os.PathLike, *, text: bool = True) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if not text:
        return path
    with path.open("rb") as handle:
        start = handle.read(4096)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in start:
        raise DataError(f"{path} looks like UTF-16 or binary, not a UTF-8 text log; convert it to UTF-8 first")
    return path


def _first_line(path: Path) -> str:
    with path.open("rb") as handle:
        line = handle.readline()
    return line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")


def _header(path: Path, separator: str, *, required: tuple[str, ...], form: str) -> list[str]:
    """The column names of a CSV header; DataError naming any required column that is missing."""
    if path.suffix.lower() in (".parquet", ".pq"):
        raise DataError(f"{path} is Parquet; read it with --format parquet")
    names = [name.strip().strip('"') for name in _first_line(path).split(separator)]
    missing = [name for name in required if name not in names]
    if missing:
        found = ", ".join(repr(n) for n in names[:8]) + (" ..." if len(names) > 8 else "")
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"in the header (found {found}; separator {separator!r}; {form})"
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"{path}: the header repeats column {', '.join(map(repr, duplicated))}")
    return names


def _scan_text_fields(path: Path, names: list[str], separator: str, *, has_header: bool) -> pl.LazyFrame:
    """Lazy scan with every field as text (so that bad values can be counted instead of aborting the
    parse), one extra column that catches surplus fields, and invalid UTF-8 replaced by U+FFFD (so that
    mixed encodings are detected per row rather than failing the whole file)."""
    schema = {name: pl.String for name in names}
    schema[_EXTRA_COLUMN] = pl.String
    return pl.scan_csv(
        path,
        has_header=False,
        skip_lines=1 if has_header else 0,
        separator=separator,
        schema=schema,
        missing_columns="insert",
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
        raise_if_empty=False,
    )


def _scan_parquet(path: Path, required: tuple[str, ...]) -> tuple[pl.LazyFrame, list[str]]:
    try:
        lazy = pl.scan_parquet(path)
        names = lazy.collect_schema().names()
    except Exception as error:  # polars raises several types for a damaged file
        raise DataError(f"{path} is not a readable Parquet file: {error}") from None
    missing = [name for name in required if name not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (found {', '.join(names)})")
    return lazy.select(list(required)).with_columns(pl.lit(None, pl.String).alias(_EXTRA_COLUMN)), list(required)


# ---------------------------------------------------------------------------------------------------
# typed columns and validation


def _integer(name: str, dtype: pl.DataType = pl.String) -> pl.Expr:
    """An id column as Int64; null where the value is not an integer (e.g. '12x', '4.5')."""
    column = pl.col(name)
    if dtype.is_integer():
        return column.cast(pl.Int64)
    if dtype.is_float():
        return pl.when(column == column.round()).then(column.cast(pl.Int64, strict=False))
    return column.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)


def _seconds(name: str, dtype: pl.DataType, time_format: str) -> pl.Expr:
    """A time column as float seconds since the epoch (UTC)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        return column.dt.epoch("ms").cast(pl.Float64) / 1000.0
    if isinstance(dtype, pl.Date):
        return column.cast(pl.Int64).cast(pl.Float64) * 86_400.0
    if time_format in ("seconds", "milliseconds"):
        number = (
            column.cast(pl.Float64, strict=False)
            if dtype.is_numeric()
            else column.str.strip_chars().cast(pl.Float64, strict=False)
        )
        return number / 1000.0 if time_format == "milliseconds" else number
    parsed = column.cast(pl.String).str.strip_chars().str.to_datetime(time_format, strict=False, time_unit="ms")
    return parsed.dt.epoch("ms").cast(pl.Float64) / 1000.0


def _any_null(columns: list) -> pl.Expr:
    return pl.any_horizontal([(pl.col(c) if isinstance(c, str) else c).is_null() for c in columns])


def _validation(options: dict) -> dict:
    return {
        "strict": options.get("strict", False),
        "max_bad_fraction": options.get("max_bad_fraction", MAX_BAD_FRACTION),
        "spill": options.get("spill"),
    }


def _validated(
    raw: pl.LazyFrame,
    names: list[str],
    typed: dict[str, pl.Expr],
    checks: list[tuple[int, pl.Expr]],
    path: Path,
    separator: str,
    *,
    has_header: bool,
    strict: bool,
    max_bad_fraction: float,
    spill: Path | None = None,
) -> tuple[pl.DataFrame | pl.LazyFrame, dict]:
    """Parse every row, give each bad row its first skip reason, count the reasons, and return the good
    rows' typed columns in file order. One streaming pass over a clean file; a second one, only when
    there are bad rows, fetches the text of the first bad row of each kind for the report. With `spill`
    the rows go to Parquet there, and the good ones come back as a LazyFrame over a second file that
    also numbers them (ROW) and, when the log names its sessions, marks where each run of a session's
    rows starts (RUN_START)."""
    reason = _skip_reason(raw, names, checks)
    query = raw.select(reason.alias("__reason__"), *[expr.alias(key) for key, expr in typed.items()])
    try:
        if spill is None:
            frame = query.collect(engine="streaming")
        else:
            query.sink_parquet(spill / "parsed.parquet")
            frame = pl.scan_parquet(spill / "parsed.parquet")
    except pl.exceptions.PolarsError as error:
        raise DataError(f"{path}: cannot parse as a {separator!r}-separated text log: {error}") from None
    first_line = 2 if has_header else 1  # line number of row 0 (Parquet: row number, from 1)
    if spill is None:
        rows = frame.height
        bad = frame.select("__reason__").with_row_index("__row__").filter(pl.col("__reason__") > 0)
    else:
        rows = frame.select(pl.len()).collect(engine="streaming").item()
        bad = (frame.select("__reason__").with_row_index("__row__").filter(pl.col("__reason__") > 0)
               .collect(engine="streaming"))  # at most max_bad_fraction of the rows, or the read stops below
    first_bad = bad.group_by("__reason__").agg(pl.col("__row__").first(), pl.len()).sort("__row__")
    quoted = _row_texts(raw, names, separator, first_bad["__row__"].to_list()) if bad.height else {}
    report = {
        "file": str(path),
        "bytes": path.stat().st_size,
        "rows": rows,
        "skipped": {SKIP_REASONS[code][0]: int(n) for code, _, n in first_bad.sort("__reason__").iter_rows()},
        "first_skipped": {
            SKIP_REASONS[code][0]: f"line {row + first_line}: {quoted.get(row)!r}"
            for code, row, _ in first_bad.iter_rows()
        },
    }
    errors = bad.filter(pl.col("__reason__") != _BLANK)  # blank lines are harmless: counted, never fatal
    if errors.height and (strict or errors.height > max_bad_fraction * max(rows, 1)):
        row, code = errors.row(0)  # the first bad row of its kind, so already quoted
        text = quoted[row]
        limit = "--strict allows none" if strict else f"more than the {max_bad_fraction:.0%} a real log could lose"
        raise DataError(
            f"{path}:{row + first_line}: {SKIP_REASONS[code][1]}: {text!r} "
            f"({errors.height:,} of {rows:,} rows are bad, {limit}; is this the right --format?)"
        )
    good = frame.filter(pl.col("__reason__") == 0).drop("__reason__")
    if spill is not None:
        good = good.with_row_index(ROW)
        if "session" in typed:
            good = good.with_columns(_RUN_START_EXPR.alias(RUN_START))
        good.sink_parquet(spill / "clicks.parquet")
        good = pl.scan_parquet(spill / "clicks.parquet")
    _require_clicks(good, path, "no valid click rows" if rows else "no click rows (only a header?)")
    return good, report


def _skip_reason(raw: pl.LazyFrame, names: list[str], checks: list[tuple[int, pl.Expr]]) -> pl.Expr:
    """Int8 per row: 0 for a good row, else the code of the first check it fails (SKIP_REASONS)."""
    schema = raw.collect_schema()
    text_columns = [name for name in names if schema[name] == pl.String]
    blank = pl.all_horizontal([pl.col(name).is_null() for name in names])
    invalid_utf8 = (
        pl.any_horizontal([pl.col(name).str.contains("\ufffd", literal=True) for name in text_columns])
        if text_columns
        else pl.lit(False)
    )
    reason = pl.when(blank).then(pl.lit(_BLANK))
    reason = reason.when(invalid_utf8.fill_null(False)).then(pl.lit(_ENCODING))
    reason = reason.when(pl.col(_EXTRA_COLUMN).is_not_null()).then(pl.lit(_EXTRA))
    for code, is_bad in checks:
        reason = reason.when(is_bad.fill_null(True)).then(pl.lit(code))
    return reason.otherwise(pl.lit(0)).cast(pl.Int8)


def _row_texts(raw: pl.LazyFrame, names: list[str], separator: str, rows: list[int]) -> dict[int, str]:
    """The fields of the given rows joined back into a line (invalid bytes shown as U+FFFD)."""
    fields = [pl.col(name).cast(pl.String) for name in names + [_EXTRA_COLUMN]]
    line = pl.concat_str(fields, separator=separator, ignore_nulls=True)
    wanted = raw.with_row_index("__row__").filter(pl.col("__row__").is_in(rows)).select("__row__", line.alias("line"))
    return dict(wanted.collect(engine="streaming").iter_rows())


def _require_clicks(clicks: pl.DataFrame | pl.LazyFrame, path: Path, why: str) -> None:
    if height(clicks) == 0:
        raise DataError(f"{path}: {why}")


def height(clicks: pl.DataFrame | pl.LazyFrame) -> int:
    """Rows of a frame, or of a spilled one (a streaming count)."""
    if isinstance(clicks, pl.LazyFrame):
        return int(clicks.select(pl.len()).collect(engine="streaming").item())
    return clicks.height


def session_slices(clicks: pl.LazyFrame, columns: list[str], total: int | None = None):
    """The spilled clicks' `columns`, one slice of the sessions at a time (every click of a session in
    the same slice, file order kept), about SLICE_ROWS clicks each: what needs whole sessions together
    is computed in memory bounded by a slice."""
    total = height(clicks) if total is None else total
    count = max(1, math.ceil(total / SLICE_ROWS))
    for part in range(count):
        chosen = clicks.filter(pl.col("session").hash(seed=0) % count == part) if count > 1 else clicks
        yield chosen.select(columns).collect(engine="streaming")


def user_ranges(events: pl.LazyFrame, total: int | None = None) -> list[tuple[int, int] | None]:
    """Consecutive ranges (low, high) of the spilled events' user ids, in increasing order, together
    holding every user and each about SLICE_ROWS events (at most that, unless one user has more);
    [None] when all the events fit in one slice. Each pass counts the events of a range in USER_BUCKETS
    equal buckets of ids, which are then packed greedily; a bucket over SLICE_ROWS is cut the same way,
    so skewed ids cost passes, not memory."""
    total = height(events) if total is None else total
    if total <= SLICE_ROWS:
        return [None]
    bounds = events.select(low=pl.col("user").min(), high=pl.col("user").max()).collect(engine="streaming")
    return _cut_users(events, int(bounds["low"][0]), int(bounds["high"][0]), total)


def _cut_users(events: pl.LazyFrame, low: int, high: int, count: int) -> list[tuple[int, int]]:
    if count <= SLICE_ROWS or low == high:
        return [(low, high)]
    width = -(-(high - low + 1) // USER_BUCKETS)  # Python integers: no overflow on 64-bit ids
    buckets = (events.filter(pl.col("user").is_between(low, high))
               .group_by((pl.col("user") // width).alias("bucket")).agg(pl.len().alias("events"))
               .collect(engine="streaming").sort("bucket"))
    ranges: list[tuple[int, int]] = []
    start = end = None
    size = 0
    for bucket, events_in in buckets.iter_rows():
        first, last = max(low, bucket * width), min(high, bucket * width + width - 1)
        if start is not None and size + events_in > SLICE_ROWS:
            ranges.append((start, end))
            start, size = None, 0
        if events_in > SLICE_ROWS:
            ranges += _cut_users(events, first, last, events_in)
            continue
        start = first if start is None else start
        end, size = last, size + events_in
    if start is not None:
        ranges.append((start, end))
    return ranges


def partition_by_user(events: pl.LazyFrame, ranges: list[tuple[int, int]], folder: Path) -> Path:
    """Write the events to one folder of Parquet files per range of `ranges` (`folder/slice=<i>/`), in one
    streaming pass: each slice is then read alone, where filtering the whole log by each range read it
    once per slice (some 200 passes for 2 billion events). The slice of a user is how many ranges end
    below its id, counted with integer comparisons, so ids beyond float64's 2^53 are placed exactly."""
    highs = [high for _, high in ranges[:-1]]
    key = pl.sum_horizontal([(pl.col("user") > high).cast(pl.UInt32) for high in highs])
    events.sink_parquet(pl.PartitionBy(folder, key={"slice": key}, include_key=False))
    return folder


def sessionize_spilled(
    events: pl.LazyFrame,
    gap_seconds: float,
    *,
    across_users: bool,
    identity: list[str],
    drop_duplicates: bool,
    keep_events: tuple[str, ...] | None,
    spill: Path,
    report: dict,
) -> pl.LazyFrame:
    """sessionize_by_gap for events spilled to Parquet, one slice of the users at a time: the clicks
    (with `session`, `item`, `time`, `user`, ROW and RUN_START) that the in-memory read gives, in its
    order, as a LazyFrame over Parquet files in `spill`.

    The users are taken in consecutive ranges of ids (`user_ranges`), each range's events written to
    files of their own in one pass (`partition_by_user`), so the rows of slice after slice are the whole
    log's (user, time, file order) sort, and a running count of session starts gives each
    row the session id the whole log's cumulative sum gives it. A slice's first row starts a session
    where sessionize_by_gap's would: at a new user, or, `across_users` (session-rec's quirk), where its
    time lies more than the gap from the previous slice's last event. Under the quirk a session can run
    on into the next slice, so the last session of each slice is held back and sorted with the next
    one's rows. Each slice also gives its share of the reader's counts, added into `report` in the
    in-memory order: duplicate_clicks (over `identity`), duplicate_clicks_dropped (with
    `drop_duplicates`: the first copy in file order is kept), events (per type, with `keep_events`,
    whose events alone are then kept), clicks and sessions."""
    needed = list(dict.fromkeys(["user", "time", ROW, "item", *identity, *(["event"] if keep_events else [])]))
    duplicates = dropped = emitted = sessions = 0
    per_event: dict[str, int] = {}
    session_id = 0  # the last session id given so far
    last_time = None  # the time of the last event so far, in (user, time) order
    held = None  # the last session's clicks, which the next slice's first users may continue
    parts: list[Path] = []

    def write(clicks: pl.DataFrame) -> None:
        nonlocal emitted, sessions
        if clicks.height == 0:
            return
        clicks = clicks.with_row_index(ROW, offset=emitted).with_columns(_RUN_START_EXPR.alias(RUN_START))
        parts.append(spill / f"sessions-{len(parts):05d}.parquet")
        clicks.write_parquet(parts[-1])
        emitted += clicks.height
        sessions += int(clicks[RUN_START].sum())

    new_session = (pl.col("time") - pl.col("time").shift(1)).abs() > gap_seconds
    if not across_users:
        new_session = new_session | (pl.col("user") != pl.col("user").shift(1))
    ranges = user_ranges(events)
    by_slice = partition_by_user(events.select(needed), ranges, spill / "by-user") if len(ranges) > 1 else None
    for index in range(len(ranges)):
        if by_slice is None:
            part = events.select(needed).collect(engine="streaming")
        else:  # this slice's own files, written by one pass over the log, then let go
            files = by_slice / f"slice={index}"
            if not files.is_dir():
                continue
            part = pl.scan_parquet(files / "*.parquet").collect(engine="streaming")
            shutil.rmtree(files)
        part = part.sort(["user", "time", ROW])
        duplicates += _count_duplicates(part, identity)
        if drop_duplicates:  # the first copy by (user, time, row) is the first in file order
            kept = part.unique(subset=identity, keep="first", maintain_order=True)
            dropped += part.height - kept.height
            part = kept
        if keep_events:
            for event, count in part.group_by("event").len().iter_rows():
                per_event[event] = per_event.get(event, 0) + count
        # the first row of the log continues nothing (sessionize_by_gap's fill_null(False))
        starts = last_time is not None and (not across_users or abs(part["time"][0] - last_time) > gap_seconds)
        part = part.with_columns(session=session_id + new_session.fill_null(starts).cast(pl.Int64).cum_sum())
        session_id, last_time = int(part["session"][-1]), part["time"][-1]
        if keep_events:  # sessions were cut on every event; the kept ones are what the reader gives
            part = part.filter(pl.col("event").is_in(list(keep_events)))
        part = part.select("session", "item", "time", "user")
        if held is not None:
            part = pl.concat([held, part])
        part = part.sort(["session", "time"], maintain_order=True)
        if across_users:
            held = part.filter(pl.col("session") == session_id)
            part = part.filter(pl.col("session") != session_id)
        write(part)
    if held is not None:
        write(held)
    if not parts:  # no click is kept: an empty table, which the reader reports
        parts.append(spill / "sessions-empty.parquet")
        pl.DataFrame(schema={ROW: pl.UInt32, "session": pl.Int64, "item": pl.Int64, "time": pl.Float64,
                             "user": pl.Int64, RUN_START: pl.Boolean}).write_parquet(parts[-1])
    report["duplicate_clicks"] = duplicates
    if drop_duplicates:
        report["duplicate_clicks_dropped"] = dropped
    if keep_events:
        report["events"] = dict(sorted(per_event.items()))
    report["clicks"] = emitted
    report["sessions"] = sessions
    return pl.scan_parquet(parts)


def _count_duplicates(frame: pl.DataFrame | pl.LazyFrame, identity: list[str]) -> int:
    """Rows equal in every identity column to another row (each extra copy counts once). A sort and
    a comparison of neighbours: faster than hashing whole rows on tens of millions of clicks. A spilled
    log (whose identity holds the session) is counted one slice of the sessions at a time."""
    if isinstance(frame, pl.LazyFrame):
        return sum(_count_duplicates(part, identity) for part in session_slices(frame, identity))
    ordered = frame.select(identity).sort(identity)
    same = pl.all_horizontal([pl.col(c) == pl.col(c).shift(1) for c in identity]).fill_null(False)
    return int(ordered.select(same.sum()).item())


def _drop_duplicates(frame: pl.DataFrame | pl.LazyFrame, identity: list[str], report: dict,
                     spill: Path | None = None) -> pl.DataFrame | pl.LazyFrame:
    """The first of each group of rows equal in every identity column, in file order. A spilled log
    (whose identity holds the session) finds its copies one slice of the sessions at a time and is
    written again to `spill` without them, its runs of a session's rows marked anew."""
    if isinstance(frame, pl.LazyFrame):
        copies = pl.concat([
            part.sort(ROW).filter(~pl.struct(identity).is_first_distinct()).select(ROW)
            for part in session_slices(frame, [*identity, ROW])
        ])
        report["duplicate_clicks_dropped"] = copies.height
        if copies.height == 0:
            return frame
        kept = frame.filter(~pl.col(ROW).is_in(copies[ROW].implode())).with_columns(_RUN_START_EXPR.alias(RUN_START))
        kept.sink_parquet(spill / "deduplicated.parquet")
        return pl.scan_parquet(spill / "deduplicated.parquet")
    kept = frame.unique(subset=identity, keep="first", maintain_order=True)
    report["duplicate_clicks_dropped"] = frame.height - kept.height
    return kept


def _finish(
    clicks: pl.DataFrame | pl.LazyFrame,
    log_format: str,
    path: Path,
    report: dict,
    *,
    identity: list[str],
    order: list[str],
    drop_duplicates: bool,
    spill: Path | None = None,
) -> ClickLog:
    """Count duplicates, out-of-order clicks and scattered sessions of a log that names its sessions."""
    report["duplicate_clicks"] = _count_duplicates(clicks, identity)
    if drop_duplicates:
        clicks = _drop_duplicates(clicks, identity, report, spill)
    report.update(_order_report(clicks, order))
    report["clicks"] = height(clicks)
    return ClickLog(clicks, log_format, str(path), report)


def _order_report(clicks: pl.DataFrame | pl.LazyFrame, order: list[str]) -> dict:
    """How far the file is from sessions stored contiguously with their clicks in time order."""
    if isinstance(clicks, pl.LazyFrame):
        return _spilled_order_report(clicks, order)
    n_sessions = clicks["session"].n_unique()
    run_start = (pl.col("session") != pl.col("session").shift(1)).fill_null(True)
    runs = int(clicks.select(run_start.sum()).item())
    in_file = clicks.select("session", *order)
    scattered = 0
    if runs != n_sessions:  # some session's rows are apart: compare each click with its session's previous one
        scattered = clicks.filter(run_start).group_by("session").len().filter(pl.col("len") > 1).height
        in_file = in_file.with_row_index("__row__").sort(["session", "__row__"]).drop("__row__")
    same_session = pl.col("session") == pl.col("session").shift(1)
    earlier, tie = pl.lit(False), pl.lit(True)
    for key in order:  # lexicographic "less than the previous click of the session"
        earlier = earlier | (tie & (pl.col(key) < pl.col(key).shift(1)))
        tie = tie & (pl.col(key) == pl.col(key).shift(1))
    out_of_order = int(in_file.select((same_session & earlier).fill_null(False).sum()).item())
    return {"sessions": n_sessions, "sessions_not_contiguous": scattered, "clicks_out_of_time_order": out_of_order}


def _spilled_order_report(clicks: pl.LazyFrame, order: list[str]) -> dict:
    """_order_report of a spilled log: the same three counts, one slice of the sessions at a time (a
    slice keeps file order, and each of its sessions whole, so a click's previous click of its session
    is the previous row of that session within the slice)."""
    n_sessions = runs = 0
    scattered = out_of_order = 0
    same_session = pl.col("session") == pl.col("session").shift(1)
    earlier, tie = pl.lit(False), pl.lit(True)
    for key in order:
        earlier = earlier | (tie & (pl.col(key) < pl.col(key).shift(1)))
        tie = tie & (pl.col(key) == pl.col(key).shift(1))
    for part in session_slices(clicks, ["session", RUN_START, *order]):
        n_sessions += part["session"].n_unique()
        runs += int(part[RUN_START].sum())
        scattered += part.filter(pl.col(RUN_START)).group_by("session").len().filter(pl.col("len") > 1).height
        in_file = part.with_row_index("__slice_row__").sort(["session", "__slice_row__"])
        out_of_order += int(in_file.select((same_session & earlier).fill_null(False).sum()).item())
    return {"sessions": n_sessions, "sessions_not_contiguous": scattered, "clicks_out_of_time_order": out_of_order}
