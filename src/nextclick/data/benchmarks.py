"""Published splits on disk, and the plain-text format every prepared split is saved in.

A split directory holds `train.txt` (one training session per line, item ids separated by spaces, in
click order) and `test.txt` (one case per line: prefix ids, a TAB, the next id), as in
../shared/data/benchmarks. `split.json` (optional) names the protocol; the three published splits
are known by name. Ids in these files are already dense 1..n; id 0 never occurs.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from pathlib import Path

import numpy as np

from nextclick import atomic
from nextclick.data.sessions import Cases, Protocol, Sessions, Split, Vocab

DATA_ENV = "NEXTCLICK_DATA"

# The protocol of each published split (../shared/data/README.md, ../shared/docs/protocols.md).
PUBLISHED_PROTOCOLS = {
    "retailrocket": Protocol("dsan", min_prefix=2, source="DSAN (AAAI 2021) Table 1: prefixes of length >= 2"),
    "diginetica": Protocol("srgnn", min_prefix=1, source="SR-GNN (AAAI 2019) preprocess.py: every prefix"),
    "yoochoose1_64": Protocol("srgnn", min_prefix=1, source="SR-GNN (AAAI 2019): last 1/64 of training cases"),
}


class DataError(ValueError):
    """A split or data file that cannot be read; the message says which file and why."""


# The largest catalogue a split (or a checkpoint) may have. Ids in split files are dense indices, so the
# largest id sizes every item table; this bounds what a stray id can make a model allocate. Far above
# every session dataset (Yoochoose: 52,739 items).
MAX_ITEMS = 10_000_000


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: the explicit argument, then $NEXTCLICK_DATA, then ../shared/data when it
    exists (next to the working directory or next to this checkout)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    here = Path(__file__).resolve()
    for candidate in (Path.cwd() / ".." / "shared" / "data", here.parents[4] / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def available(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Named split directories under <data dir>/benchmarks (and <data dir>/prepared)."""
    base = data_dir(root)
    found: dict[str, Path] = {}
    if base is None:
        return found
    for sub in ("benchmarks", "prepared"):
        folder = base / sub
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                if child.name.startswith("."):  # a split being written (nextclick.atomic.staged_directory)
                    continue
                if (child / "train.txt").is_file() and (child / "test.txt").is_file():
                    found.setdefault(child.name, child)
    return found


def _parse_lines(path: Path, tab_label: bool) -> Sessions:
    """Parse a file of space-separated positive ints, one session per line (a TAB before the label in
    test files counts as a separator). Vectorised: one split over the whole file."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from None
    lines = raw.splitlines()
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path} holds no sessions")
    if tab_label:
        bad = next((i for i, line in enumerate(lines) if line.count(b"\t") != 1), None)
        if bad is not None:
            raise DataError(f"{path}:{bad + 1}: expected '<prefix ids> TAB <next id>'")
    lengths = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    try:
        items = np.array(b" ".join(lines).split(), dtype=np.int64)
    except (ValueError, OverflowError):  # a token that is not an integer, or one beyond int64
        bad = next((i for i, line in enumerate(lines)
                    if not all(tok.isdigit() and len(tok) <= 18 for tok in line.split())), 0)
        raise DataError(f"{path}:{bad + 1}: item ids must be positive integers up to {MAX_ITEMS:,}") from None
    if items.min() < 1:
        raise DataError(f"{path}: item id 0 is reserved for padding")
    if items.max() > MAX_ITEMS:  # ids are dense indices: the catalogue is as large as the largest id
        raise DataError(f"{path}: item ids must be dense indices up to {MAX_ITEMS:,} (got {items.max():,})")
    if tab_label and lengths.min() < 2:
        raise DataError(f"{path}: every test case needs a prefix and a label")
    return Sessions.from_lengths(items.astype(np.int32), lengths)


def load_split(path: str | os.PathLike, name: str | None = None) -> Split:
    """Load a split directory (published or prepared by `nextclick data prepare`)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"no split directory at {path}")
    name = name or path.name
    meta_file = path / "split.json"
    meta = _read_split_meta(meta_file)
    if "protocol" in meta:
        protocol = _protocol(meta["protocol"], meta_file)
    else:
        protocol = PUBLISHED_PROTOCOLS.get(name, Protocol("custom", min_prefix=1))
    train = _parse_lines(path / "train.txt", tab_label=False)
    test_sessions = _parse_lines(path / "test.txt", tab_label=True)
    n_items = int(max(train.items.max(), test_sessions.items.max()))
    if "vocab" in meta:
        vocab = _vocab(meta["vocab"], meta_file)
        if vocab.n_items < n_items:
            raise DataError(f"{meta_file}: vocab lists {vocab.n_items} items but the files use id {n_items}")
    else:
        vocab = Vocab.identity(n_items)
    return Split(
        name=name,
        train=train,
        test=Cases.whole_sessions(test_sessions),
        vocab=vocab,
        protocol=protocol,
        provenance={"path": str(path.resolve()), **{k: v for k, v in meta.items() if k not in ("vocab",)}},
    )


def _read_split_meta(meta_file: Path) -> dict:
    """split.json as a dict ({} when there is none)."""
    return atomic.read_json_object(meta_file, DataError) if meta_file.is_file() else {}


def _protocol(value, meta_file: Path) -> Protocol:
    """The protocol split.json records: {"name": str, "min_prefix": int >= 1, "source": str}."""
    if not isinstance(value, dict) or set(value) - {"name", "min_prefix", "source"} or "name" not in value:
        raise DataError(f"{meta_file}: 'protocol' must be an object with 'name', 'min_prefix' and 'source'")
    protocol = Protocol(**value)
    if not isinstance(protocol.name, str) or not isinstance(protocol.source, str):
        raise DataError(f"{meta_file}: the protocol's name and source must be strings")
    if isinstance(protocol.min_prefix, bool) or not isinstance(protocol.min_prefix, int) or protocol.min_prefix < 1:
        raise DataError(f"{meta_file}: the protocol's min_prefix must be an integer >= 1; got {protocol.min_prefix!r}")
    return protocol


def _vocab(value, meta_file: Path) -> Vocab:
    """The external ids split.json lists for indices 1..n: distinct integers."""
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise DataError(f"{meta_file}: 'vocab' must be a list of at most {MAX_ITEMS:,} item ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and abs(i) < 2**63 for i in value):
        raise DataError(f"{meta_file}: 'vocab' must list integer item ids")
    try:
        return Vocab(np.asarray([0] + value, dtype=np.int64))
    except ValueError as error:
        raise DataError(f"{meta_file}: {error}") from None


def save_split(split: Split, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a split in the published plain-text format plus `split.json` (protocol, vocab, extras), as one
    step: into a temporary sibling directory renamed into place (nextclick.atomic.staged_directory), so
    an interrupted write leaves either the previous directory or the complete new split, never a part
    that would load as another protocol without its raw-id mapping."""

    path = Path(path)
    atomic.recover_directory(path)  # a split a killed write had moved aside goes back first
    check_replaceable(path)
    with atomic.staged_directory(path) as staging:
        write_split_files(split, staging, extra)
    return path


def check_replaceable(path: Path) -> None:
    """A split is written over nothing, an empty folder or another split, never over a folder of other files
    (the whole folder is replaced)."""
    if path.is_dir() and any(path.iterdir()) and not (path / "train.txt").is_file():
        raise DataError(f"{path} holds files but no split (no train.txt): write the split to a new or empty folder")
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file, not a folder: write the split to a new or empty folder")


def write_split_files(split: Split, path: Path, extra: dict | None = None) -> None:
    """train.txt, test.txt and split.json of `split` in the existing folder `path` (save_split makes it whole).
    The text goes out a block of lines at a time: a split of 100M clicks never exists as one string."""
    train_lines = (" ".join(map(str, split.train[i])) for i in range(len(split.train)))
    _write_lines(path / "train.txt", train_lines)
    test = split.test
    test_lines = (
        " ".join(map(str, test.prefix(c))) + "\t" + str(label) for c, label in enumerate(test.labels.tolist())
    )
    _write_lines(path / "test.txt", test_lines)
    meta = {"protocol": split.protocol.to_dict(), **(extra or {})}
    if not split.vocab.dense:
        meta["vocab"] = split.vocab.ids[1:].tolist()
    (path / "split.json").write_text(json.dumps(meta, indent=1) + "\n")


def _write_lines(path: Path, lines, block: int = 100_000) -> None:
    """`"\\n".join(lines) + "\\n"` written to `path` block by block."""
    with path.open("w") as handle:
        written = 0
        while True:
            chunk = list(itertools.islice(lines, block))
            if not chunk:
                break
            handle.write("\n".join(chunk) + "\n")
            written += len(chunk)
        if not written:
            handle.write("\n")


@functools.lru_cache(maxsize=1)
def _synthetic_split() -> Split:
    """The embedded dataset, generated once per process (it is deterministic; commands only read it)."""
    from nextclick.data import synthetic

    return synthetic.generate().split


def resolve(dataset: str | None, data_root: str | os.PathLike | None = None) -> Split:
    """A dataset name or directory -> Split. No name means the embedded synthetic dataset."""
    if dataset in (None, "", "synthetic"):
        return _synthetic_split()
    if Path(dataset).is_dir() and (Path(dataset) / "train.txt").exists():
        return load_split(dataset)
    named = available(data_root)
    if dataset in named:
        return load_split(named[dataset], name=dataset)
    where = data_dir(data_root)
    known = ", ".join(["synthetic", *named]) or "synthetic"
    hint = f"under {where}" if where else f"(no data directory: set ${DATA_ENV} or --data-dir)"
    raise DataError(f"unknown dataset {dataset!r} {hint}; available: {known}")
