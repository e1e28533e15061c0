"""The embedded default dataset: a deterministic, seedable click-log generator with planted noise.

Catalogue: `n_items` items in `n_categories` categories, Zipf popularity inside each category.
Session: one intent category; the first click is drawn by popularity inside it; each later intent
click follows a sparse Markov chain (every item has a few favourite successors in its category, taken
with probability `markov_strength`, otherwise a popularity draw in the category). With probability
`spurious_rate` a click is replaced by a *spurious* click: a popular item from another category that
does not move the chain. Positions of spurious clicks are recorded, so tests can check that sparse
attention gives them less (or zero) weight. The last 10% of sessions (in time order) are the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclick.data.sessions import Cases, Protocol, Sessions, Split, Vocab


@dataclass(frozen=True)
class SyntheticConfig:
    n_items: int = 600
    n_categories: int = 12
    n_sessions: int = 6000
    min_length: int = 3
    max_length: int = 12
    zipf_exponent: float = 1.1
    successors: int = 3  # favourite next items per item
    markov_strength: float = 0.8
    spurious_rate: float = 0.15  # per click after the first
    test_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Synthetic:
    split: Split
    category: np.ndarray  # (n_items + 1,) category of each item index (-1 for padding)
    spurious_train: np.ndarray  # bool, aligned with split.train.items
    spurious_test: np.ndarray  # bool, aligned with split.test.sessions.items


def generate(config: SyntheticConfig = SyntheticConfig()) -> Synthetic:
    rng = np.random.default_rng(config.seed)
    n, k = config.n_items, config.n_categories
    category = np.full(n + 1, -1, dtype=np.int64)
    category[1:] = rng.integers(0, k, size=n)
    members = [np.flatnonzero(category == c) for c in range(k)]
    members = [m if len(m) else np.array([1 + c % n]) for c, m in enumerate(members)]
    # Zipf popularity within each category (rank order is random)
    popularity = [
        rng.permutation(1.0 / np.arange(1, len(m) + 1) ** config.zipf_exponent) for m in members
    ]
    popularity = [p / p.sum() for p in popularity]
    global_pop = np.zeros(n + 1)
    for m, p in zip(members, popularity):
        global_pop[m] = p / k
    successors = np.zeros((n + 1, config.successors), dtype=np.int64)
    for m, p in zip(members, popularity):
        successors[m] = rng.choice(m, size=(len(m), config.successors), p=p)

    lengths = rng.integers(config.min_length, config.max_length + 1, size=config.n_sessions)
    items = np.zeros(int(lengths.sum()), dtype=np.int32)
    spurious = np.zeros(len(items), dtype=bool)
    pos = 0
    for length in lengths:
        intent = rng.integers(0, k)
        current = rng.choice(members[intent], p=popularity[intent])
        items[pos] = current
        for j in range(1, length):
            if rng.random() < config.spurious_rate:
                other = (intent + rng.integers(1, k)) % k
                items[pos + j] = rng.choice(members[other], p=popularity[other])
                spurious[pos + j] = True
                continue
            if rng.random() < config.markov_strength:
                current = successors[current, rng.integers(0, config.successors)]
            else:
                current = rng.choice(members[intent], p=popularity[intent])
            items[pos + j] = current
        pos += length

    sessions = Sessions.from_lengths(items, lengths, times=np.arange(len(lengths), dtype=np.float64))
    n_test = max(1, int(round(len(sessions) * config.test_fraction)))
    cut = len(sessions) - n_test
    train = sessions.select(slice(0, cut))
    test_sessions = sessions.select(slice(cut, len(sessions)))
    split = Split(
        name="synthetic",
        train=train,
        test=Cases.every_prefix(test_sessions, 1),
        vocab=Vocab.identity(n),
        protocol=Protocol("synthetic", min_prefix=1, source="nextclick.data.synthetic"),
        provenance={"generator": "nextclick.data.synthetic", "config": config.__dict__},
    )
    cut_click = sessions.offsets[cut]
    return Synthetic(split, category, spurious[:cut_click], spurious[cut_click:])
