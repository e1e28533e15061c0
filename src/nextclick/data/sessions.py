"""The few types every stage passes along: Sessions -> Cases -> (Batch) ; Vocab ; Protocol ; Split.

Sessions are ragged arrays (flat items + offsets), never lists of lists, so that millions of sessions
fit in memory and slice fast. A Case is a pointer into a Sessions: (session index, prefix length); its
label is the click right after the prefix. Item ids inside a Split are dense indices 1..n_items
(0 is padding); the Vocab maps them back to the ids of the raw log.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np


def ragged_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of the given lengths laid end to end: (group index, position inside the group) of
    every element, e.g. lengths [2, 0, 3] -> groups [0, 0, 2, 2, 2], positions [0, 1, 0, 1, 2]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    group = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    return group, np.arange(len(group), dtype=np.int64) - starts[group]


def random_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): a random `fraction` of range(n) held out, both index sets sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation fraction must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(n * fraction)))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


# the ways to carve validation data from training (Split.carve_validation, carve_random_cases,
# carve_random_sessions); the first is ours and the default
VALIDATIONS = ("last-sessions", "random-cases", "random-sessions")


@dataclass(frozen=True)
class Sessions:
    """Ragged int32 click sequences: session i is items[offsets[i]:offsets[i+1]].

    `times` (optional, float64 seconds, one per session) is the time of the session's last click;
    published splits carry none (their file order is chronological), prepared splits may.
    """

    items: np.ndarray  # (total_clicks,) int32
    offsets: np.ndarray  # (n_sessions + 1,) int64, offsets[0] == 0
    times: np.ndarray | None = None  # (n_sessions,) float64 or None

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", np.ascontiguousarray(self.items, dtype=np.int32))
        object.__setattr__(self, "offsets", np.ascontiguousarray(self.offsets, dtype=np.int64))
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("Sessions.offsets must be a 1-d array starting at 0")
        if self.offsets[-1] != len(self.items):
            raise ValueError(
                f"Sessions.offsets ends at {self.offsets[-1]} but there are {len(self.items)} items"
            )
        if len(self.offsets) > 1 and np.any(np.diff(self.offsets) < 0):
            raise ValueError("Sessions.offsets must be non-decreasing")
        if self.times is not None:
            times = np.ascontiguousarray(self.times, dtype=np.float64)
            if times.shape != (len(self),):
                raise ValueError(f"Sessions.times needs one value per session ({len(self)})")
            object.__setattr__(self, "times", times)

    @classmethod
    def from_lists(cls, sessions: Iterable[Sequence[int]], times: Sequence[float] | None = None) -> Sessions:
        sessions = [np.asarray(s, dtype=np.int32) for s in sessions]
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.concatenate(sessions) if sessions else np.zeros(0, dtype=np.int32)
        return cls(items, offsets, None if times is None else np.asarray(times, dtype=np.float64))

    @classmethod
    def from_lengths(cls, items: np.ndarray, lengths: np.ndarray, times: np.ndarray | None = None) -> Sessions:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(items, offsets, times)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.items[self.offsets[index] : self.offsets[index + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self[i].tolist() for i in range(len(self))]

    def select(self, indices: np.ndarray | slice) -> Sessions:
        """A new Sessions holding the chosen sessions, in the given order (vectorised gather)."""
        indices = np.arange(len(self))[indices] if isinstance(indices, slice) else np.asarray(indices, np.int64)
        lengths = self.lengths[indices]
        starts = self.offsets[indices]
        # position of every output click inside the flat input array
        out_offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        chosen, within = ragged_positions(lengths)
        source = starts[chosen] + within
        times = None if self.times is None else self.times[indices]
        return Sessions(self.items[source], out_offsets, times)

    def session_of_click(self) -> np.ndarray:
        """For every flat click, the index of its session."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)


@dataclass(frozen=True)
class Cases:
    """Prediction cases: for case c, the prefix is the first `length[c]` clicks of session
    `session[c]` of `sessions`, and the label is the click that follows it."""

    sessions: Sessions
    session: np.ndarray  # (n_cases,) int64
    length: np.ndarray  # (n_cases,) int64, >= 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "session", np.ascontiguousarray(self.session, dtype=np.int64))
        object.__setattr__(self, "length", np.ascontiguousarray(self.length, dtype=np.int64))
        if self.session.shape != self.length.shape:
            raise ValueError("Cases.session and Cases.length must have the same shape")
        if len(self.length):
            if self.length.min() < 1:
                raise ValueError("every case needs a prefix of at least one click")
            if np.any(self.length >= self.sessions.lengths[self.session]):
                raise ValueError("a case's prefix must leave a label click in its session")

    def __len__(self) -> int:
        return len(self.session)

    @property
    def labels(self) -> np.ndarray:
        return self.sessions.items[self.sessions.offsets[self.session] + self.length]

    def repeats(self) -> np.ndarray:
        """(n_cases,) bool: the label is an item already clicked in the prefix (a repeat click, which
        popularity-in-session models catch by construction)."""
        case, position = ragged_positions(self.length)  # one row per prefix click
        clicked = self.sessions.items[self.sessions.offsets[self.session][case] + position]
        found = np.zeros(len(self), dtype=bool)
        found[case[clicked == self.labels[case]]] = True
        return found

    def select(self, indices: np.ndarray) -> Cases:
        return Cases(self.sessions, self.session[indices], self.length[indices])

    def prefix(self, case: int) -> np.ndarray:
        start = self.sessions.offsets[self.session[case]]
        return self.sessions.items[start : start + self.length[case]]

    @classmethod
    def every_prefix(cls, sessions: Sessions, min_prefix: int = 1) -> Cases:
        """Every prefix of length >= min_prefix with the next click as label, sessions in order and,
        within a session, the longest prefix first (the order of the SR-GNN and DSAN pickles)."""
        counts = np.maximum(sessions.lengths - min_prefix, 0)
        session, rank_in_session = ragged_positions(counts)
        length = sessions.lengths[session] - 1 - rank_in_session
        return cls(sessions, session, length)

    @classmethod
    def whole_sessions(cls, sessions: Sessions) -> Cases:
        """One case per session: everything but its last click predicts the last click
        (how a published test file, one case per line, is stored)."""
        return cls(sessions, np.arange(len(sessions), dtype=np.int64), sessions.lengths - 1)


@dataclass(frozen=True)
class Vocab:
    """External item id <-> dense index. `ids[i]` is the external id of index i; index 0 is padding."""

    ids: np.ndarray  # (n_items + 1,) int64; ids[0] is a placeholder for padding

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", np.ascontiguousarray(self.ids, dtype=np.int64))
        if len(np.unique(self.ids[1:])) != len(self.ids) - 1:
            raise ValueError("Vocab ids must be unique")

    @classmethod
    def identity(cls, n_items: int) -> Vocab:
        """Published splits are already dense 1..n: external id == index."""
        return cls(np.arange(n_items + 1, dtype=np.int64))

    @property
    def n_items(self) -> int:
        return len(self.ids) - 1

    @functools.cached_property
    def dense(self) -> bool:
        """ids are 0..n: an id is its own index (the published splits)."""
        return bool(np.array_equal(self.ids, np.arange(len(self.ids))))

    @functools.cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids[1:] sorted, order) with sorted[j] == ids[order[j] + 1]: sorted once, searched per lookup
        (serving looks up every request)."""
        order = np.argsort(self.ids[1:], kind="stable")
        return self.ids[1:][order], order

    def lookup(self, external: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices, known) for external ids: known (bool) marks the ids in the vocabulary; indices
        are meaningful only there."""
        external = np.asarray(external, dtype=np.int64)
        if self.dense:
            return external, (external >= 1) & (external <= self.n_items)
        sorted_ids, order = self._sorted
        if not len(sorted_ids):
            return np.zeros(len(external), np.int64), np.zeros(len(external), bool)
        position = np.clip(np.searchsorted(sorted_ids, external), 0, len(sorted_ids) - 1)
        return order[position] + 1, sorted_ids[position] == external

    def encode(self, external: Sequence[int] | np.ndarray) -> np.ndarray:
        """External ids -> indices; raises KeyError naming the first unknown id."""
        indices, known = self.lookup(external)
        if not known.all():
            first = int(np.asarray(external, dtype=np.int64)[np.argmin(known)])
            where = f" (this catalogue has ids 1..{self.n_items})" if self.dense else ""
            raise KeyError(f"unknown item id {first}{where}")
        return indices

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(indices, dtype=np.int64)]


@dataclass(frozen=True)
class Protocol:
    """Which prefixes are cases, as fixed by the paper that defined the benchmark."""

    name: str
    min_prefix: int = 1  # shortest training prefix (test cases come as given)
    source: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "min_prefix": self.min_prefix, "source": self.source}


@dataclass(frozen=True)
class Split:
    """Training sessions, test cases, the item vocabulary and the protocol that ties them."""

    name: str
    train: Sessions
    test: Cases
    vocab: Vocab
    protocol: Protocol
    provenance: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    def train_cases(self) -> Cases:
        return Cases.every_prefix(self.train, self.protocol.min_prefix)

    def carve_validation(self, fraction: float = 0.1) -> tuple[Cases, Cases]:
        """(training cases, validation cases): the last `fraction` of training sessions in file order
        (chronological in every published split) become validation sessions, so model selection
        never sees the test set and never mixes a session across the two."""
        if not 0.0 < fraction < 1.0:
            raise ValueError("validation fraction must be in (0, 1)")
        n_valid = max(1, int(round(len(self.train) * fraction)))
        cut = len(self.train) - n_valid
        return self._cases_of(np.arange(cut)), self._cases_of(np.arange(cut, len(self.train)))

    def carve_random_sessions(self, fraction: float = 0.1, seed: int = 0) -> tuple[Cases, Cases]:
        """(training cases, validation cases) with a random `fraction` of training *sessions* held out
        whole: training keeps sessions from every period, the most recent included (what the random
        case carve buys), and no validation prefix has a longer prefix of its own session in training
        (what the random case carve leaks).
        Both sides stay in file order, so unshuffled training still sees sessions by date."""
        fit, valid = random_holdout(len(self.train), fraction, seed)
        return self._cases_of(fit), self._cases_of(valid)

    def _cases_of(self, sessions: np.ndarray) -> Cases:
        return Cases.every_prefix(self.train.select(sessions), self.protocol.min_prefix)

    def carve_random_cases(self, fraction: float = 0.1, seed: int = 0) -> tuple[Cases, Cases]:
        """(training cases, validation cases) with a random `fraction` of all training *cases* held
        out, as NARM's and SR-GNN's official codes do (`valid_portion=0.1`): training keeps cases of
        the most recent sessions, but a session's prefixes can fall on both sides, so validation
        scores read optimistic. Offered for fidelity to those codes; `carve_validation` is the default."""
        cases = self.train_cases()
        fit, valid = random_holdout(len(cases), fraction, seed)
        return cases.select(fit), cases.select(valid)

    def carve(self, validation: str, fraction: float = 0.1, seed: int = 0) -> tuple[Cases, Cases]:
        """(training cases, validation cases) by one of VALIDATIONS."""
        if validation == "last-sessions":
            return self.carve_validation(fraction)
        if validation == "random-cases":
            return self.carve_random_cases(fraction, seed)
        if validation == "random-sessions":
            return self.carve_random_sessions(fraction, seed)
        raise ValueError(f"validation must be one of {VALIDATIONS}, got {validation!r}")

    def stats(self) -> dict:
        train_lengths = self.train.lengths
        test_items = np.union1d(self.test.labels, self.test.sessions.items)
        seen = np.zeros(self.n_items + 1, dtype=bool)
        seen[self.train.items] = True
        return {
            "train_sessions": len(self.train),
            "train_clicks": int(train_lengths.sum()),
            "train_cases": int(np.maximum(train_lengths - self.protocol.min_prefix, 0).sum()),
            "test_cases": len(self.test),
            "items": self.n_items,
            "train_items": int(seen[1:].sum()),
            "test_items_unseen_in_train": int((~seen[test_items[test_items > 0]]).sum()),
            "protocol": self.protocol.to_dict(),
        }
