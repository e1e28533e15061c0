"""The papers' preprocessing recipes: a ClickLog -> a Split, plus the counts at every step.

Each recipe is the official script's behaviour, step for step, in its order; where a script has a
quirk that moves the published numbers, the quirk is kept and named. Sources (read at the commits named
in ../shared/docs/model_zoo.md and dsan_reference.md):

`srgnn` — Wu et al., "Session-based Recommendation with Graph Neural Networks", AAAI 2019;
CRIPAC-DIG/SR-GNN `datasets/preprocess.py`. Used by SR-GNN, SR-IEM, GCE-GNN and the NARM/STAMP re-runs.
  1. Clicks of a session in file order; Diginetica's sorted by `timeframe` (stable). The session's
     date is the time of its *last row in file order* (Diginetica: day granularity).
  2. Drop sessions of length 1.
  3. Count item clicks over all remaining sessions (train and test); drop clicks on items seen < 5 times.
  4. Drop sessions left with < 2 clicks. One pass, not iterated to a fixpoint.
  5. Split at (latest session date - 7 days) for Diginetica, (- 1 day) for Yoochoose: train = dated
     strictly before, test = strictly after; sessions dated exactly at the split are in neither.
  6. Train sessions sorted by date (stable: ties keep the order of first appearance in the file);
     items numbered 1..N in order of first appearance in them.
  7. Test sessions sorted by date; clicks on items not in the training numbering removed; sessions left
     with < 2 clicks dropped.
  8. Cases: every prefix of length >= 1, next click as label (train and test), longest first.
  9. Yoochoose 1/64 and 1/4 (`fraction`): the *last* int(n / 64) (int(n / 4)) of the n date-ordered
     training *cases* (not sessions), the full test set, and the full item numbering (37,483 items).
     As Sessions: the cut falls inside one session, whose shortest prefixes are kept; they are exactly
     the prefixes of that session truncated to (kept cases + 1) clicks, so the first training session
     is stored truncated and `every_prefix` gives back precisely the official cases. (The published
     yoochoose1_64 has train clicks - train sessions = 369,859 = its case count: stored the same way.)

`dsan` — Yuan et al., "Dual Sparse Attention Network for Session-based Recommendation", AAAI 2021;
SamHaoYuan/DSANForAAAI2021 `Preprocess_dn.py` (HEAD) and `Preprocess_rr.py` (dsan_reference.md §1).
  1. Diginetica: clicks sorted by (eventdate, timeframe) within the session (HEAD; without this sort the
     metrics become incomparable, dsan_reference.md §4.1). Session date = last row read (file order).
     Retailrocket: the reader's session-rec Stage A order (sessions after 30 minutes of inactivity,
     user-boundary quirk, views only); then Stage A drops single-view sessions and keeps sessions ending
     within 1000 days of the first view (one slice, 1000 train days).
  2. Drop sessions of length <= 2.
  3. Count items over the remaining sessions; drop clicks on items seen < 5 times.
  4. Drop sessions left with <= 2 clicks (one pass).
  5. Split at (latest date - 7 days) (Yoochoose, which the script also handles: - 1 day), strict < and >:
     with daily dates the whole split day is dropped.
  6./7. As SR-GNN 6./7. (test sessions with < 2 clicks dropped, as HEAD; a 2-click session has no case).
  8. Cases: every prefix of length >= 2 (train and test); no fraction.

`narm` — Li et al., "Neural Attentive Session-based Recommendation", CIKM 2017, section 4.1, and the
official lijingsdu/sessionRec_NARM `digi_process.py` / `example_preprocess.py`: sessions of length 1 and
items seen < 5 times filtered, the last day (Yoochoose) / last week (Diginetica) as test, test clicks on
items absent from the training set filtered, every prefix a case, Yoochoose trained on the most recent
1/64 or 1/4 of the training sequences. It is the script SR-GNN's was adapted from, so the steps are
SR-GNN's, with one difference: Diginetica clicks stay in *file order* (NARM's, and STAMP's, "unsorted"
Diginetica; same counts, but about 12 points higher Recall@20, model_zoo.md §7.1). For the fractions
NARM does *not* re-filter the test set to the fraction's items ("some items in the test set would not
appear in the training set since we trained the model only on more recent fractions", §4.1; model_zoo.md
§7.2): the test set stays filtered against the full training set only, as in the SR-GNN pickles.

Generic logs (`log_format == "generic"`): clicks sorted by time within a session, a session's date is its
latest click, and the test window must be given (`test_days`). Times are UTC seconds; the scripts used
`time.mktime` (local time), which differs by a constant offset in zones without daylight saving time
and so splits identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from typing import Callable

import numpy as np
import polars as pl

from nextclick.data import readers
from nextclick.data.readers import ROW, RUN_START, ClickLog, session_slices
from nextclick.data.sessions import Cases, Protocol, Sessions, Split, Vocab

DAY_SECONDS = 86_400
RETAILROCKET_SLICE_DAYS = 1000  # Preprocess_rr.py: preprocess_slices(num_slices=1, days_train=1000, days_test=0)
_STAGE_A_SINGLE = "Stage A: drop sessions with a single view"
_STAGE_A_WINDOW = f"Stage A: keep sessions ending within {RETAILROCKET_SLICE_DAYS} days of the first view"


@dataclass(frozen=True)
class Recipe:
    """One paper's preprocessing. Defaults cite their sources in the module docstring."""

    name: str
    source: str
    min_session_length: int  # sessions shorter than this are dropped before items are counted
    min_item_support: int  # clicks on items seen fewer times (over all sessions) are dropped
    min_length_after_items: int  # sessions left shorter than this are dropped (one pass)
    min_prefix: int  # shortest prefix that makes a case, train and test alike
    test_days: dict[str, float]  # test window per log format
    click_order: dict[str, tuple[str, ...]]  # per log format: columns clicks are sorted by inside a session
    min_test_length: int = 2  # test sessions shorter than this after unseen items are removed are dropped
    allows_fraction: bool = False  # Yoochoose 1/64, 1/4: the most recent training cases
    retailrocket_stage_a: bool = False  # DSAN's Preprocess_rr.py filters before the generic script


SRGNN = Recipe(
    name="srgnn",
    source="SR-GNN (Wu et al., AAAI 2019), CRIPAC-DIG/SR-GNN datasets/preprocess.py",
    min_session_length=2,
    min_item_support=5,
    min_length_after_items=2,
    min_prefix=1,
    test_days={"diginetica": 7, "yoochoose": 1},
    click_order={"diginetica": ("timeframe",), "generic": ("time",)},
    allows_fraction=True,
)

DSAN = Recipe(
    name="dsan",
    source="DSAN (Yuan et al., AAAI 2021), SamHaoYuan/DSANForAAAI2021 Preprocess_dn.py + Preprocess_rr.py",
    min_session_length=3,
    min_item_support=5,
    min_length_after_items=3,
    min_prefix=2,
    test_days={"diginetica": 7, "retailrocket": 7, "yoochoose": 1},
    click_order={"diginetica": ("time", "timeframe"), "generic": ("time",)},
    retailrocket_stage_a=True,
)

NARM = Recipe(
    name="narm",
    source="NARM (Li et al., CIKM 2017) section 4.1, lijingsdu/sessionRec_NARM digi_process.py",
    min_session_length=2,
    min_item_support=5,
    min_length_after_items=2,
    min_prefix=1,
    test_days={"diginetica": 7, "yoochoose": 1},
    click_order={"generic": ("time",)},  # Diginetica in file order: NARM's "unsorted" version
    allows_fraction=True,
)

RECIPES = {recipe.name: recipe for recipe in (SRGNN, DSAN, NARM)}


def parse_fraction(text: str | None) -> Fraction | None:
    """'1/64', '1/4' or '0.25' -> Fraction; None stays None."""
    if text in (None, "", "1", "1/1"):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--fraction must look like 1/64 or 0.25, not {text!r}") from None
    if not 0 < value <= 1:
        raise ValueError(f"--fraction must lie in (0, 1], not {text}")
    return value


# ---------------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class _Steps:
    """Counts after every step, in order (what stats.json reports)."""

    rows: list[dict] = field(default_factory=list)
    progress: Callable[[str], None] | None = None

    def record(self, step: str, sessions: Sessions, **extra) -> None:
        previous = self.rows[-1] if self.rows else None
        row = {"step": step, **_counts(sessions)}
        if previous is not None:
            row["removed_sessions"] = previous["sessions"] - row["sessions"]
            row["removed_clicks"] = previous["clicks"] - row["clicks"]
        row.update(extra)
        self.rows.append(row)

    def announce(self, step: str) -> None:
        if self.progress is not None:
            self.progress(step)


def prepare(
    log: ClickLog,
    recipe: Recipe | str,
    *,
    fraction: Fraction | str | None = None,
    test_days: float | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Split, dict]:
    """Run a recipe on a parsed log: (Split, stats). `progress(step)` is called as each step starts."""
    recipe, fraction, window_days = _checked_arguments(log, recipe, fraction, test_days)
    steps = _Steps(progress=progress)

    steps.announce("group clicks into sessions")
    sessions, item_ids = _sessions_of(log, recipe, steps)

    steps.announce("filter sessions and items")
    sessions = drop_short_sessions(sessions, recipe.min_session_length)
    steps.record(f"drop sessions with fewer than {recipe.min_session_length} clicks", sessions)
    sessions = drop_rare_items(sessions, len(item_ids), recipe.min_item_support)
    steps.record(f"drop clicks on items seen fewer than {recipe.min_item_support} times", sessions)
    sessions = drop_short_sessions(sessions, recipe.min_length_after_items)
    steps.record(f"drop sessions left with fewer than {recipe.min_length_after_items} clicks", sessions)
    if len(sessions) == 0:
        raise ValueError(f"no session survives the {recipe.name} filters: the log is too small or too sparse")

    steps.announce("split by time")
    train, test, split_info = split_by_time(sessions, window_days)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"the time split leaves {len(train)} training and {len(test)} test sessions "
            f"(log spans {_span_days(sessions):.1f} days, test window {window_days:g} days)"
        )
    code_to_index, vocab_codes = number_items_by_first_appearance(train.items, len(item_ids))
    train = Sessions(code_to_index[train.items], train.offsets, train.times)
    test, test_info = keep_seen_test_items(test, code_to_index, recipe.min_test_length)
    split_info.update(test_info)
    vocab = Vocab(np.concatenate([[0], item_ids[vocab_codes]]))

    fraction_info = None
    if fraction is not None:
        steps.announce(f"keep the most recent {fraction} of training cases")
        train, fraction_info = keep_most_recent_cases(train, fraction, recipe.min_prefix)

    split = Split(
        name=name
        or f"{recipe.name}-{log.log_format}" + (f"-{fraction.numerator}_{fraction.denominator}" if fraction else ""),
        train=train,
        test=Cases.every_prefix(test, recipe.min_prefix),
        vocab=vocab,
        protocol=Protocol(recipe.name, min_prefix=recipe.min_prefix, source=recipe.source),
        provenance={"recipe": recipe.name, "input": log.path, "log_format": log.log_format},
    )
    stats = {
        "recipe": recipe.name,
        "source": recipe.source,
        "input": log.path,
        "log_format": log.log_format,
        "reader": log.report,
        "steps": steps.rows,
        "split": split_info,
        **({"fraction": fraction_info} if fraction_info else {}),
        "result": _result_counts(split, test),
    }
    return split, stats


def _checked_arguments(
    log: ClickLog, recipe: Recipe | str, fraction, test_days
) -> tuple[Recipe, Fraction | None, float]:
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    fraction = parse_fraction(fraction) if isinstance(fraction, str) or fraction is None else Fraction(fraction)
    if fraction is not None and not recipe.allows_fraction:
        raise ValueError(f"the {recipe.name} recipe has no training fraction (only srgnn and narm do, for Yoochoose)")
    window_days = test_days if test_days is not None else recipe.test_days.get(log.log_format)
    if window_days is None:
        raise ValueError(
            f"the {recipe.name} recipe has no published test window for a {log.log_format} log: pass --test-days "
            f"(its paper used {', '.join(f'{d:g} for {f}' for f, d in recipe.test_days.items())})"
        )
    if window_days <= 0:
        raise ValueError("--test-days must be positive")
    return recipe, fraction, float(window_days)


def _sessions_of(log: ClickLog, recipe: Recipe, steps: _Steps) -> tuple[Sessions, np.ndarray]:
    """The log's sessions in the recipe's click order (Retailrocket: after DSAN's Stage A)."""
    order = recipe.click_order.get(log.log_format, ())
    latest = log.log_format == "generic"
    clicks = log.clicks
    steps.rows.append(
        {
            "step": "read",
            **_frame_counts(clicks, log.report.get("sessions")),
            "click_order": list(order) or "file order",
            "session_time": "latest click" if latest else "time of the last row in file order",
        }
    )
    if recipe.retailrocket_stage_a and log.log_format == "retailrocket":
        spilled = isinstance(clicks, pl.LazyFrame)
        clicks = (_spilled_retailrocket_stage_a if spilled else _retailrocket_stage_a)(clicks, steps.rows)
    if isinstance(clicks, pl.LazyFrame):  # a log read with `spill`: larger than memory, perhaps
        return group_spilled_sessions(clicks, order, session_time="latest" if latest else "last_row")
    return group_into_sessions(clicks, order, session_time="latest" if latest else "last_row")


# ---------------------------------------------------------------------------------------------------
# steps (each small and pure)


def group_into_sessions(
    clicks: pl.DataFrame, order: tuple[str, ...], *, session_time: str
) -> tuple[Sessions, np.ndarray]:
    """Clicks table -> (Sessions of item codes, item id of each code).

    Sessions come in order of first appearance in the file (the scripts' dict order); clicks inside a
    session in file order, or sorted stably by `order`. `session_time`: "last_row" takes the time of the
    session's last row in file order (SR-GNN, DSAN, NARM), "latest" its largest time (generic logs).
    """
    numbered = clicks.with_row_index("row")
    time_of_session = pl.col("time").last() if session_time == "last_row" else pl.col("time").max()
    per_session = (
        numbered.group_by("session")
        .agg(first_row=pl.col("row").min(), length=pl.len(), time=time_of_session)
        .sort("first_row")
    )
    contiguous = numbered.select((pl.col("session") != pl.col("session").shift(1)).fill_null(True).sum()).item() == len(
        per_session
    )
    if order or not contiguous:  # otherwise the file order already is the session order
        first_row = pl.col("row").min().over("session")
        numbered = numbered.with_columns(first_row=first_row).sort(["first_row", *order, "row"])
    items = numbered["item"].to_numpy()
    item_ids = np.sort(numbered["item"].unique().to_numpy())
    codes = np.searchsorted(item_ids, items).astype(np.int32)
    sessions = Sessions.from_lengths(codes, per_session["length"].to_numpy(), per_session["time"].to_numpy())
    return sessions, item_ids


def group_spilled_sessions(
    clicks: pl.LazyFrame, order: tuple[str, ...], *, session_time: str
) -> tuple[Sessions, np.ndarray]:
    """group_into_sessions for clicks spilled to Parquet (readers.read_log with `spill`): the same
    Sessions and item ids, with memory bounded by the sessions, the items and one int32 per click.

    One streaming aggregation gives each session's first row, length and time (sorted by first row,
    they give every session's offset); the items are then written into their places one slice of the
    sessions at a time (readers.session_slices), each slice sorted by (session, `order`, row) as
    group_into_sessions sorts the whole log, or, when the file already is in session order, read in file
    order a slice of rows at a time."""
    # each session's first row, length and time, aggregated one slice of the sessions at a time (a slice
    # keeps file order, so a session's last row in it is its last row in the file): 24 bytes a session
    time_of_session = pl.col("time").last() if session_time == "last_row" else pl.col("time").max()
    per_session = pl.concat([
        part.group_by("session").agg(first_row=pl.col(ROW).min(), length=pl.len(), time=time_of_session)
        for part in session_slices(clicks, ["session", ROW, "time"])
    ]).sort("first_row")
    runs = int(clicks.select(pl.col(RUN_START).sum()).collect(engine="streaming").item())
    item_ids = np.sort(clicks.select(pl.col("item").unique()).collect(engine="streaming")["item"].to_numpy())
    total = int(per_session["length"].sum())
    codes = np.empty(total, dtype=np.int32)
    if not order and runs == len(per_session):  # the file order is the session order
        step = readers.SLICE_ROWS
        for start in range(0, total, step):
            items = clicks.slice(start, step).select("item").collect(engine="streaming")["item"].to_numpy()
            codes[start : start + len(items)] = np.searchsorted(item_ids, items)
    else:
        lengths = per_session["length"].to_numpy().astype(np.int64)
        offsets = pl.DataFrame({"session": per_session["session"], "offset": np.cumsum(lengths) - lengths})
        for part in session_slices(clicks, ["session", *order, ROW, "item"], total):
            part = part.sort(["session", *order, ROW]).join(offsets, on="session", how="left", maintain_order="left")
            within = pl.int_range(pl.len()).over("session")
            place = part.select((pl.col("offset") + within).alias("place"))["place"].to_numpy()
            codes[place] = np.searchsorted(item_ids, part["item"].to_numpy())
    sessions = Sessions.from_lengths(codes, per_session["length"].to_numpy(), per_session["time"].to_numpy())
    return sessions, item_ids


def drop_short_sessions(sessions: Sessions, min_length: int) -> Sessions:
    return sessions.select(np.flatnonzero(sessions.lengths >= min_length))


def keep_clicks(sessions: Sessions, keep: np.ndarray) -> Sessions:
    """The same sessions with only the clicks where `keep` is True (sessions may become empty)."""
    lengths = np.bincount(sessions.session_of_click()[keep], minlength=len(sessions))
    return Sessions.from_lengths(sessions.items[keep], lengths, sessions.times)


def drop_rare_items(sessions: Sessions, n_codes: int, min_support: int) -> Sessions:
    """Remove clicks on items with fewer than `min_support` clicks, counted over all given sessions."""
    support = np.bincount(sessions.items, minlength=n_codes)
    return keep_clicks(sessions, support[sessions.items] >= min_support)


def split_by_time(sessions: Sessions, test_days: float) -> tuple[Sessions, Sessions, dict]:
    """Train = sessions dated strictly before (latest date - test_days), test = strictly after; both
    sorted by date, stably. Sessions dated exactly at the split belong to neither (as the scripts)."""
    times = sessions.times
    latest = float(times.max())
    split_time = latest - test_days * DAY_SECONDS
    train_index = np.flatnonzero(times < split_time)
    test_index = np.flatnonzero(times > split_time)
    train_index = train_index[np.argsort(times[train_index], kind="stable")]
    test_index = test_index[np.argsort(times[test_index], kind="stable")]
    info = {
        "test_days": test_days,
        "latest_session_time": _iso(latest),
        "split_time": _iso(split_time),
        "train_sessions": len(train_index),
        "test_sessions": len(test_index),
        "sessions_at_split_time_dropped": int(np.count_nonzero(times == split_time)),
    }
    return sessions.select(train_index), sessions.select(test_index), info


def number_items_by_first_appearance(train_codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """(code -> index 1..N, 0 for items absent from training; the codes in index order)."""
    codes_in_order = pl.Series(train_codes).unique(maintain_order=True).to_numpy()
    code_to_index = np.zeros(n_codes, dtype=np.int32)
    code_to_index[codes_in_order] = np.arange(1, len(codes_in_order) + 1, dtype=np.int32)
    return code_to_index, codes_in_order


def keep_seen_test_items(test: Sessions, code_to_index: np.ndarray, min_length: int) -> tuple[Sessions, dict]:
    """Test sessions in training indices: clicks on items absent from training removed, then sessions
    left shorter than `min_length` dropped."""
    seen = code_to_index[test.items] > 0
    kept = keep_clicks(test, seen)
    kept = Sessions(code_to_index[kept.items], kept.offsets, kept.times)
    long_enough = drop_short_sessions(kept, min_length)
    return long_enough, {
        "test_clicks_on_unseen_items_removed": int(np.count_nonzero(~seen)),
        f"test_sessions_left_shorter_than_{min_length}_dropped": len(kept) - len(long_enough),
    }


def keep_most_recent_cases(train: Sessions, fraction: Fraction, min_prefix: int) -> tuple[Sessions, dict]:
    """The last int(n * fraction) of the n training cases (SR-GNN: `tr_seqs[-int(len(tr_seqs) / 64):]`).

    Cases run session by session in date order, longest prefix first, so the kept cases are whole
    sessions at the end plus the shortest prefixes of one session, which are the cases of that session
    truncated to (min_prefix + kept cases) clicks.
    """
    cases = np.maximum(train.lengths - min_prefix, 0)
    total = int(cases.sum())
    keep = total * fraction.numerator // fraction.denominator
    if keep == 0:
        # the official slice tr_seqs[-0:] would silently return *every* case
        raise ValueError(f"{fraction} of {total} training cases is no case at all: the log is too small")
    cases_from = np.cumsum(cases[::-1])[::-1]  # cases in sessions i, i+1, ...
    first = int(np.flatnonzero(cases_from >= keep)[-1])
    taken_from_first = keep - (int(cases_from[first + 1]) if first + 1 < len(train) else 0)
    kept = train.select(np.arange(first, len(train)))
    lengths = kept.lengths.copy()
    lengths[0] = min_prefix + taken_from_first
    starts = kept.offsets[:-1]
    within = np.arange(len(kept.items)) - np.repeat(starts, kept.lengths)
    items = kept.items[within < np.repeat(lengths, kept.lengths)]
    truncated = Sessions.from_lengths(items, lengths, kept.times)
    info = {
        "fraction": str(fraction),
        "of_training_cases": total,
        "kept_cases": keep,
        "kept_sessions": len(truncated),
        "first_session_truncated_to_clicks": int(lengths[0]) if taken_from_first < cases[first] else None,
        "test_and_item_numbering": "of the full training set (not re-filtered to the fraction)",
    }
    return truncated, info


def _retailrocket_stage_a(clicks: pl.DataFrame, rows: list[dict]) -> pl.DataFrame:
    """Preprocess_rr.py after sessionizing: drop single-view sessions (filter_data), then keep the
    sessions whose last view lies before (first view + 1000 days) (preprocess_slices, one slice).
    Appends a count row per step to `rows`."""
    several = clicks.filter(pl.len().over("session") > 1)
    counts = _frame_counts(several)
    rows.append({"step": _STAGE_A_SINGLE, **counts, **_removed(rows[-1], counts)})
    if several.height == 0:
        raise ValueError("no Retailrocket session has more than one view: the log is too small or too sparse")
    start = several["time"].min()
    last_view = pl.col("time").max().over("session")
    window = several.filter(last_view < start + RETAILROCKET_SLICE_DAYS * DAY_SECONDS)
    counts = _frame_counts(window)
    rows.append({"step": _STAGE_A_WINDOW, **counts, **_removed(rows[-1], counts)})
    return window


def _spilled_retailrocket_stage_a(clicks: pl.LazyFrame, rows: list[dict]) -> pl.LazyFrame:
    """_retailrocket_stage_a of spilled clicks: each session's length and first and last view come from
    one slice of the sessions at a time, only sessions of several views are kept (16 bytes each), and
    the clicks are then filtered by session id."""
    several, starts = [], []
    for part in session_slices(clicks, ["session", "time"]):
        per_session = (part.group_by("session").agg(length=pl.len(), first=pl.col("time").min(),
                                                     last=pl.col("time").max()).filter(pl.col("length") > 1))
        several.append(per_session.select("session", "last"))
        starts.append(per_session["first"].min())
    several = pl.concat(several)
    kept = clicks.filter(pl.col("session").is_in(several["session"].implode()))
    counts = _frame_counts(kept, several.height)
    rows.append({"step": _STAGE_A_SINGLE, **counts, **_removed(rows[-1], counts)})
    if several.height == 0:
        raise ValueError("no Retailrocket session has more than one view: the log is too small or too sparse")
    start = min(first for first in starts if first is not None)
    window = several.filter(pl.col("last") < start + RETAILROCKET_SLICE_DAYS * DAY_SECONDS)
    if window.height < several.height:
        kept = clicks.filter(pl.col("session").is_in(window["session"].implode()))
        counts = _frame_counts(kept, window.height)
    rows.append({"step": _STAGE_A_WINDOW, **counts, **_removed(rows[-1], counts)})
    return kept


# ---------------------------------------------------------------------------------------------------
# counts


def _counts(sessions: Sessions) -> dict:
    return {
        "sessions": len(sessions),
        "clicks": int(len(sessions.items)),
        "items": int(np.count_nonzero(np.bincount(sessions.items))) if len(sessions.items) else 0,
    }


def _frame_counts(clicks: pl.DataFrame | pl.LazyFrame, sessions: int | None = None) -> dict:
    if isinstance(clicks, pl.LazyFrame):  # spilled: the sessions the reader counted slice by slice, one pass
        counts = clicks.select(clicks=pl.len(), items=pl.col("item").n_unique()).collect(engine="streaming")
        if sessions is None:
            sessions = sum(part["session"].n_unique() for part in session_slices(clicks, ["session"]))
        return {"sessions": int(sessions), **{key: int(counts[key][0]) for key in ("clicks", "items")}}
    return {"sessions": clicks["session"].n_unique(), "clicks": clicks.height, "items": clicks["item"].n_unique()}


def _removed(previous: dict, counts: dict) -> dict:
    return {
        "removed_sessions": previous["sessions"] - counts["sessions"],
        "removed_clicks": previous["clicks"] - counts["clicks"],
    }


def _result_counts(split: Split, test_sessions: Sessions) -> dict:
    counts = split.stats()
    counts.pop("protocol", None)
    test_lengths = test_sessions.lengths
    counts.update(
        test_sessions=len(test_sessions),
        test_sessions_with_cases=int(np.count_nonzero(test_lengths > split.protocol.min_prefix)),
        test_clicks=int(test_lengths.sum()),
        clicks=int(len(split.train.items) + test_lengths.sum()),
        average_session_length=round(
            float((len(split.train.items) + test_lengths.sum()) / max(len(split.train) + len(test_sessions), 1)), 4
        ),
        min_prefix=split.protocol.min_prefix,
    )
    return counts


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _span_days(sessions: Sessions) -> float:
    return float(sessions.times.max() - sessions.times.min()) / DAY_SECONDS
