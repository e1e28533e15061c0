"""The Python API: from a click log to recommendations in a few calls, as the command line does them.

    import nextclick
    split = nextclick.prepare("clicks.csv", "data/mylog", test_days=1)   # or nextclick.load_split("diginetica")
    model = nextclick.build("narm", split, hidden_size=50)
    run = nextclick.train(model, split, epochs=5)                          # select the epoch on validation
    evaluation = nextclick.evaluate_run(run)                               # full ranking on the test cases
    nextclick.save(run, "runs/mylog/narm")
    run = nextclick.load("runs/mylog/narm")
    items, scores = nextclick.recommend(run, [214839, 214821], k=10, exclude_seen=True)

Every function here is what a command of `nextclick` calls (`recommend`, `evaluate` and `explain` go
through `load`, `recommend`, `evaluate_run` and `explain_session` below), so the API and the CLI give
the same answers. (`evaluate_run` and `explain_session` are not called `evaluate` and `explain`: those
are the modules nextclick.evaluate and nextclick.explain, and importing a module replaces a package
attribute of its name.) Item ids are the *raw* ids of the user's log: a `Run` carries the vocabulary that maps them to
the model's dense indices and back.

Nothing heavy is imported at module level: torch, scipy, polars and matplotlib load when a function
that needs them is first called, so `import nextclick` costs milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np

    from nextclick.data.readers import GenericColumns
    from nextclick.data.sessions import Protocol, Split, Vocab
    from nextclick.evaluate import Evaluation
    from nextclick.explain import Explanation
    from nextclick.models.base import Recommender

# The cut-offs every evaluation reports (nextclick.evaluate.DEFAULT_KS), repeated here so that reading
# this module's signatures imports nothing heavy; tests/test_api.py checks the two agree.
DEFAULT_KS = (5, 10, 20)


@dataclass
class Run:
    """A fitted model with what it needs to answer in raw item ids: the data of a checkpoint directory.

    model     the fitted model (`nextclick.build` + `nextclick.train`, or `nextclick.load`)
    vocab     raw item id <-> the model's dense index (`vocab.ids[index]` is the raw id)
    protocol  the evaluation protocol of the split it was trained on (shortest prefix that is a case)
    dataset   the split it was trained on, as `nextclick.load_split` finds it again: a published
              name, "synthetic", or a split directory's path
    record    how it was fitted (`train`: validation metrics, selected epoch, history) or, for a loaded
              run, its config.json
    """

    model: Recommender
    vocab: Vocab
    protocol: Protocol
    dataset: str
    record: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# data


def load_split(dataset: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None) -> Split:
    """A split of sessions to train and test on.

    Args:
        dataset: a published split's name ("retailrocket", "diginetica", "yoochoose1_64", looked up
            under `data_dir`/benchmarks), a split directory (as `nextclick.prepare` writes), or None /
            "synthetic" for the embedded synthetic dataset.
        data_dir: the directory holding benchmarks/ (default: $NEXTCLICK_DATA, else ../shared/data).

    Returns:
        A `nextclick.data.sessions.Split`: training sessions, test cases, the item vocabulary and the
        evaluation protocol.

    Raises:
        nextclick.data.benchmarks.DataError: an unknown name or an unreadable split directory.
    """
    from nextclick.data.benchmarks import resolve

    return resolve(None if dataset is None else str(dataset), data_dir)


def prepare(
    log: str | os.PathLike,
    out_dir: str | os.PathLike,
    recipe: str = "srgnn",
    *,
    log_format: str | None = None,
    session_column: str | None = None,
    user_column: str | None = None,
    item_column: str = "item_id",
    time_column: str = "timestamp",
    time_format: str = "seconds",
    gap_minutes: float = 30.0,
    separator: str = ",",
    test_days: float | None = None,
    fraction: str | None = None,
    strict: bool = False,
    drop_duplicates: bool = False,
    force: bool = False,
    progress: bool = False,
) -> Split:
    """Turn a raw click log into a split directory and return the split (`nextclick data prepare`).

    The recipe filters sessions and items as its paper did, splits by time (the last `test_days` are
    the test set), numbers the items seen in training 1..n and keeps their raw ids in the split's
    vocabulary. The directory holds train.txt, test.txt, split.json and stats.json (every step's counts
    and the skipped rows).

    Args:
        log: the click log: a CSV (with a header) or Parquet file of your own, or one of the published
            raw logs (Diginetica train-item-views.csv, Yoochoose yoochoose-clicks.dat, Retailrocket
            events.csv).
        out_dir: the split directory to write (refused if it holds a split, unless `force`).
        recipe: whose preprocessing: "srgnn" (sessions of 2+ clicks, items seen 5+ times, every
            prefix a case), "dsan" (3+ clicks, prefixes of 2+ clicks) or "narm".
        log_format: "csv", "parquet", "diginetica", "yoochoose" or "retailrocket"; None guesses from
            the file name (the published logs' names, .parquet, and any other .csv is "csv").
        session_column: the session id column of a CSV/Parquet log. Default "session_id", or none when
            `user_column` is given.
        user_column: a user id column; each user's clicks are cut into sessions after `gap_minutes`
            of inactivity.
        item_column: the item id column (integers).
        time_column: the click time column.
        time_format: "seconds" or "milliseconds" since 1970 UTC, or a strftime pattern such as
            "%Y-%m-%d %H:%M:%S".
        gap_minutes: inactivity that ends a user's session (30).
        separator: the CSV field separator (",").
        test_days: the test window in days; required for CSV/Parquet logs (the published logs have
            their paper's).
        fraction: keep only the most recent share of training cases, "1/64" or "1/4" (srgnn, narm).
        strict: fail on the first malformed row instead of skipping and counting it (more than 1%
            skipped fails anyway).
        drop_duplicates: drop exact duplicate clicks (default: keep and count them, as the papers did).
        force: replace a split already in `out_dir`.
        progress: a progress bar over the preparation steps.

    Returns:
        The prepared `Split`, as `load_split(out_dir)` would read it back.

    Raises:
        nextclick.data.benchmarks.DataError: an unreadable log, too many malformed rows, or an
            `out_dir` that already holds a split.
        ValueError: an unknown recipe or format, or a log from which no session survives the filters.
    """
    from nextclick.data.prepare import run_prepare
    from nextclick.data.readers import guess_format

    # a CSV of your own is the common case: a .csv name no published log has is read as one
    log_format = log_format or guess_format(log) or ("csv" if Path(log).suffix.lower() == ".csv" else None)
    columns = generic_columns(log_format, session_column, user_column, item_column, time_column, time_format,
                              gap_minutes, separator)
    split, _ = run_prepare(log, recipe, out_dir, log_format=log_format, columns=columns, fraction=fraction,
                           test_days=test_days, strict=strict, drop_duplicates=drop_duplicates, force=force,
                           progress=progress)
    return load_split(out_dir)  # as every later command reads it (with its path, which a saved run records)


def generic_columns(log_format: str | None, session_column: str | None, user_column: str | None,
                    item_column: str, time_column: str, time_format: str, gap_minutes: float,
                    separator: str) -> GenericColumns | None:
    """The column description of a CSV/Parquet log, or None for the published formats (which name their
    own columns). A log with a user column and no session column is cut into sessions by inactivity."""
    from nextclick.data.readers import GenericColumns

    if log_format not in ("csv", "parquet") and session_column is None and user_column is None:
        return None
    session = session_column or (None if user_column else "session_id")
    return GenericColumns(item=item_column, time=time_column, session=session, user=user_column,
                          gap_seconds=gap_minutes * 60, time_format=time_format, separator=separator)


# ---------------------------------------------------------------------------------------------------
# models


def model_names() -> list[str]:
    """The registered models' names, as `build` takes them ("pop", "s-pop", "sknn", "stan", "gru4rec",
    "narm", "sr-gnn", "stamp", "dsan", ...). `nextclick models --config NAME` shows a model's config."""
    from nextclick.models import REGISTRY

    return sorted(REGISTRY)


def build(name: str, catalogue: Split | int, *, preset: str | None = None, seed: int = 1, **overrides: Any) -> Recommender:
    """A fresh model by name, with its paper's config changed by `overrides`.

    Args:
        name: a registered model (see `model_names()`), case-insensitive.
        catalogue: the split it will learn from (its number of items sizes the model), or that number.
        preset: a named set of config values the model defines (GRU4Rec: "diginetica",
            "retailrocket", "yoochoose"); `overrides` win over it.
        seed: seeds torch before the weights are drawn, so the same call builds the same model (1, the
            command line's default).
        **overrides: config values, e.g. `hidden_size=50, epochs=5`; strings are parsed as
            `--set key=value` is. Unknown keys and values of the wrong type are refused.

    Returns:
        The model (`nextclick.models.base.Recommender`): neural models are `torch.nn.Module`s.

    Raises:
        nextclick.models.config.ConfigError: an unknown model, preset, key or a bad value.
    """
    import torch

    from nextclick.models import build as build_model
    from nextclick.models import model_class
    from nextclick.models.config import ConfigError

    n_items = catalogue if isinstance(catalogue, int) else catalogue.n_items
    if preset is not None:
        presets = model_class(name).presets
        if preset not in presets:
            raise ConfigError(f"{name} has no preset {preset!r}; its presets: {', '.join(sorted(presets)) or 'none'}")
        overrides = {**presets[preset], **overrides}
    torch.manual_seed(seed)
    return build_model(name, n_items, overrides)


def train(
    model: Recommender,
    split: Split,
    *,
    epochs: int | None = None,
    patience: int = 3,
    batch_size: int | None = None,
    seed: int = 1,
    select_metric: str = "HR@20",
    validation: str = "last-sessions",
    refit: bool = False,
    max_batches: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    progress: bool = True,
) -> Run:
    """Fit `model` on `split`'s training sessions and select it on validation, as `nextclick train` does.

    The last 10% of training sessions are held out for validation: neural models train on the rest,
    one epoch at a time, and keep the epoch with the best `select_metric` (stopping after `patience`
    epochs without gain); statistical models are fitted, measured on validation and refitted on all
    training sessions. The test cases are never read here: call `evaluate_run` on the returned run.

    Args:
        model: from `build` (same catalogue as `split`); trained in place.
        split: from `load_split` or `prepare`.
        epochs: most epochs of a neural model (default: its paper's setting).
        patience: epochs without validation gain before stopping (3).
        batch_size: training cases per batch (default: the model's).
        seed: the order of training cases per epoch and the validation draw (1).
        select_metric: the validation metric that selects the epoch: HR@K or MRR@K, K in 5, 10, 20.
        validation: "last-sessions" (the last 10% of training sessions), "random-cases" (NARM's and
            SR-GNN's official codes; leaky) or "random-sessions".
        refit: after selecting the epoch, train afresh on all training cases for that many epochs.
        max_batches: cap batches per epoch (quick trials).
        device: "auto" (a CUDA GPU when torch sees one), "cpu", "cuda" or "cuda:N".
        precision: "fp32" (the reference), "bf16": neural models' forward passes under bfloat16
            autocast, or "bf16-scores": only the losses' products with the whole catalogue in bfloat16
            (the fastest on CPUs); weights and optimizer state in float32, validation in float32
            (`--precision`; faster only where the hardware has bf16 units: docs/scale.md).
        threads: torch threads (default: leave torch's setting as it is). Training also sets the
            process's malloc to keep freed memory for reuse (nextclick.runtime.keep_freed_memory, on
            Linux), as every nextclick command does.
        progress: a progress bar and a line per epoch.

    Returns:
        A `Run` holding the trained model and the split's vocabulary; `run.record` holds the validation
        metrics, the precision and, for neural models, the selected epoch and per-epoch history.

    Raises:
        ValueError: a model built for another catalogue, or an option out of range.
    """
    from nextclick import checkpoint
    from nextclick.runs.select import fit_and_select
    from nextclick.runtime import keep_freed_memory, set_threads
    from nextclick.training.loop import TrainOptions

    if model.n_items != split.n_items:
        raise ValueError(f"the model was built for {model.n_items:,} items but {split.name} has {split.n_items:,}: "
                         "build it with this split")
    keep_freed_memory()  # as the CLI: glibc's malloc keeps freed memory for the next step (27% of a step)
    if threads is not None:
        set_threads(threads)
    options = TrainOptions(epochs=epochs, patience=patience, batch_size=batch_size, seed=seed,
                           select_metric=select_metric, validation=validation, refit=refit,
                           max_batches=max_batches, device=device, precision=precision, progress=progress,
                           quiet=not progress)
    model, record = fit_and_select(model, split, options)
    record["precision"] = precision
    return Run(model=model, vocab=split.vocab, protocol=split.protocol,
               dataset=checkpoint.dataset_reference(split), record=record)


# ---------------------------------------------------------------------------------------------------
# evaluation


def evaluate_run(
    run: Run,
    split: Split | str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 500,
    progress: bool = False,
) -> Evaluation:
    """Rank every test case's next click against the whole catalogue (`nextclick evaluate`).

    Ties count against the target and items already in the session stay candidates (see
    nextclick.evaluate), exactly as every benchmark result is computed.

    Args:
        run: from `train` or `load`.
        split: the split whose test cases to rank: a `Split`, a dataset name or split directory, or
            None for the one the run was trained on. It must have the run's item vocabulary.
        data_dir: where named splits are looked up (see `load_split`).
        ks: the cut-offs K of HR@K and MRR@K (5, 10, 20).
        batch_size: test cases scored at once (bounds memory at batch_size x items scores).
        progress: a progress bar.

    Returns:
        A `nextclick.evaluate.Evaluation`: `.metrics` ({"HR@20": ..., "MRR@20": ...}), `.summary()`
        (the dict `nextclick evaluate --json` prints and a benchmark's "test" field), `.by_length()`
        (per prefix length, "test_by_length"), `.by_repeat()`, and `.ranks`, one per test case, for
        `paired_test`.

    Raises:
        ValueError: a split whose vocabulary is not the run's.
    """
    from nextclick.evaluate import evaluate as rank_cases

    split = split_for(run, split, data_dir)
    return rank_cases(run.model.score, split.test, ks=tuple(ks), batch_size=batch_size,
                      max_length=run.model.max_length, progress=progress, description="test")


def split_for(run: Run, split: Split | str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None) -> Split:
    """The split to read `run` against: `split` itself, the dataset it names, or (None) the run's own;
    refused unless its vocabulary is the run's (the same number of items is not enough: index 7 would
    be another item, and every number wrong)."""
    import numpy as np

    from nextclick.data.sessions import Split

    if not isinstance(split, Split):
        split = load_split(split if split is not None else run.dataset, data_dir=data_dir)
    if split.n_items != run.model.n_items:
        raise ValueError(f"the run has {run.model.n_items:,} items but {split.name} has {split.n_items:,}")
    if not np.array_equal(split.vocab.ids, run.vocab.ids):
        raise ValueError(f"{split.name} numbers its items differently from the run's vocabulary: "
                         "evaluate a run on the split it was trained on")
    return split


def paired_test(a: Evaluation, b: Evaluation, k: int = 20) -> dict[str, dict[str, float]]:
    """Is `a` better than `b` on the same test cases, beyond chance? Paired two-sided t-tests on each
    case's hit@K and reciprocal rank@K (the test the DSAN and SR-IEM papers report).

    Args:
        a: an evaluation from `evaluate_run`.
        b: another model's evaluation on the same test cases, in the same order.
        k: the cut-off K.

    Returns:
        {"HR@K": {"mean_difference": a - b, "t": ..., "p": ...}, "MRR@K": {...}}; p is two-sided.

    Raises:
        ValueError: evaluations of different test sets.
    """
    from nextclick.evaluate import paired_test as t_tests

    if len(a.ranks) != len(b.ranks) or not (a.lengths == b.lengths).all():
        raise ValueError("a paired test needs both evaluations on the same test cases")
    return t_tests(a.ranks, b.ranks, k)


def plot_by_length(evaluations: Mapping[str, Evaluation], path: str | os.PathLike,
                   metrics: Sequence[str] = ("HR@20", "MRR@20"), title: str | None = None) -> Path:
    """A PNG of metrics by prefix length, one line per evaluation (NARM Table 5, SR-IEM Figure 2), with
    the number of test cases per length as grey bars; the figure of `nextclick report --by-length`.

    Args:
        evaluations: {legend label: evaluation}, all on the same test cases.
        path: the PNG to write.
        metrics: one panel each ("HR@20", "MRR@20").
        title: the figure's title (default: the metrics).

    Returns:
        The path written.
    """
    from nextclick.report.plots import plot_by_length as plot

    results = [{"_label": label, "test_by_length": evaluation.by_length()} for label, evaluation in evaluations.items()]
    return plot(results, path, metrics, title=title or f"test {', '.join(metrics)} by prefix length")


# ---------------------------------------------------------------------------------------------------
# checkpoints


def save(run: Run, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `run` as a checkpoint directory (safetensors + JSON, never pickle), which `load`,
    `nextclick recommend`, `nextclick evaluate` and `nextclick serve` read.

    Args:
        run: from `train` (or `load`).
        directory: where to write config.json, model.safetensors and vocab.safetensors.
        overwrite: replace a checkpoint already there (refused by default).

    Returns:
        The directory.

    Raises:
        FileExistsError: `directory` holds a checkpoint and `overwrite` is False.
    """
    from nextclick import checkpoint

    directory = Path(directory)
    if (directory / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{directory} already holds a checkpoint; pass overwrite=True to replace it")
    return checkpoint.save(directory, run.model, run.vocab, run.protocol, run.dataset)


def load(directory: str | os.PathLike) -> Run:
    """Read a checkpoint directory (`save`, `nextclick train` or `nextclick bench`) into a `Run`.

    Args:
        directory: the checkpoint directory.

    Returns:
        The `Run`, its model in evaluation mode; `run.record` is the checkpoint's config.json.

    Raises:
        nextclick.checkpoint.CheckpointError: a missing or damaged file, named with what is wrong.
    """
    from nextclick import checkpoint
    from nextclick.data.sessions import Protocol

    model, vocab, meta = checkpoint.load(directory)
    protocol = Protocol(**meta["protocol"]) if meta.get("protocol") else Protocol("custom", min_prefix=1)
    return Run(model=model, vocab=vocab, protocol=protocol, dataset=meta.get("dataset") or "synthetic", record=meta)


# ---------------------------------------------------------------------------------------------------
# using a run


def recommend(run: Run, session_items: Sequence[int], k: int = 20, *,
              exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The top-k next items for a session given in raw item ids (`nextclick recommend`).

    Args:
        run: from `train` or `load`.
        session_items: the session's clicks so far, oldest first, as raw item ids (the ids of the log
            the run was trained on); a live session is this list with each new click appended. Models
            read their most recent clicks (each its `max_length`); at most 10,000 may be given.
        k: how many items to return (a k beyond the catalogue returns the whole catalogue).
        exclude_seen: leave out the items already in the session, still returning k items (the
            default keeps them: a repeat click is often the right answer, and benchmarks rank them).

    Returns:
        (item ids, scores): two arrays of up to k entries, best first; ids are raw ids, scores the
        model's (higher is better; comparable within one call only).

    Raises:
        KeyError: an item id the run's vocabulary does not know (items dropped by the recipe's
            filters, or never seen in training), named in the message.
        ValueError: an empty session, a non-integer id, more than 10,000 clicks, or k < 1.
    """
    import numpy as np

    items = checked_session(session_items)
    k = checked_k(k)
    indices = run.vocab.encode(items)
    seen = np.unique(indices) if exclude_seen else np.zeros(0, dtype=np.int64)
    # seen items are dropped after the top-k, so ask for as many more as the session has distinct items
    top, scores = run.model.recommend([np.asarray(indices)], k=min(k + len(seen), run.model.n_items))
    keep = ~np.isin(top[0], seen)
    return run.vocab.decode(top[0][keep][:k]), scores[0][keep][:k]


def explain_session(run: Run, session_items: Sequence[int], k: int = 10) -> Explanation:
    """What an attention model (DSAN, NARM, SR-IEM, ...) weighed in a session (`nextclick explain`).

    Args:
        run: from `train` or `load`, of a model with attention (see nextclick.explain.attention_models()).
        session_items: the session's clicks, oldest first, as raw item ids.
        k: how many recommendations to list beside the weights.

    Returns:
        A `nextclick.explain.Explanation`: `.items` and `.weights` (each click's weight in the session
        representation), `.pairs` (a click-by-click matrix, where the model has one), `.scalars`,
        `.recommendations`; `.to_dict()` for JSON, and `nextclick.explain.plot(explanation, path)`
        draws it.

    Raises:
        ValueError: a model without attention, an empty session or a bad id; KeyError: an unknown id.
    """
    from nextclick import explain

    return explain.explain(run.model, run.vocab, checked_session(session_items), k=checked_k(k))


def checked_session(session_items: Sequence[int]) -> list[int]:
    """The session's ids as Python ints, refused with a ValueError unless there is at least one, each an
    integer that fits the id table (int64), and at most MAX_REQUEST_CLICKS of them."""
    from nextclick.data.padded import MAX_REQUEST_CLICKS

    items = list(session_items)
    if not items:
        raise ValueError("an empty session has nothing to recommend from: give at least one item id")
    if len(items) > MAX_REQUEST_CLICKS:
        raise ValueError(f"a session may give at most {MAX_REQUEST_CLICKS:,} clicks; got {len(items):,}")
    bad = next((i for i in items if not _is_item_id(i)), None)
    if bad is not None:
        raise ValueError(f"item ids must be integers below 2**63, got {bad!r}")
    return [int(i) for i in items]


def checked_k(k: int) -> int:
    """k as an int >= 1, else a ValueError (True is no count)."""
    if isinstance(k, bool) or not hasattr(k, "__index__") or int(k) < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    return int(k)


def _is_item_id(value: object) -> bool:
    """An int (or numpy integer) below 2**63 in size; bools, floats and strings are not ids."""
    return not isinstance(value, bool) and hasattr(value, "__index__") and abs(int(value)) < 2**63
