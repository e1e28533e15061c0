"""What one training epoch is made of: a stream of batches, chosen by the model.

    stream = model.training_stream(cases, StreamOptions(batch_size=512, seed=1))
    for batch in stream.batches(epoch): ...        # the trainer's only view of the training data

`PrefixStream` is the default: every training case (a session prefix and its next click) once per
epoch, in an order drawn from `default_rng([seed, epoch])`, so a resumed run sees the same order,
cut into padded batches by the model's `collate`. Other ways to train (GRU4Rec's session-parallel
mini-batches, BERT4Rec's masked whole sequences) are other `Stream`s, with the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from nextclick.data.batches import Batch
from nextclick.data.sessions import Cases


@dataclass(frozen=True)
class StreamOptions:
    batch_size: int
    seed: int = 1
    shuffle: bool = True  # False: file order every epoch (SR-IEM's official code)
    length_buckets: int = 0  # >0: sort by length within this many batches (less padding, less random)
    max_batches: int | None = None  # cap per epoch (smoke runs)


class Stream(Protocol):
    def batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch `epoch` (0-based), the same for the same seed and epoch."""
        ...

    def cases(self, epoch: int) -> int:
        """How many training cases epoch `epoch` holds (the progress bar's total)."""
        ...


def epoch_order(n_cases: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n_cases)
    return np.random.default_rng([seed, epoch]).permutation(n_cases)


def bucket_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, group: int, seed: int, epoch: int) -> np.ndarray:
    """Within chunks of `group` batches, sort by prefix length so batches pad little; then shuffle
    the batches. Every case is still seen once per epoch."""
    chunk = batch_size * group
    pieces = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        pieces.append(part[np.argsort(lengths[part], kind="stable")])
    sorted_order = np.concatenate(pieces)
    batches = [sorted_order[i : i + batch_size] for i in range(0, len(sorted_order), batch_size)]
    rng = np.random.default_rng([seed, epoch, 1])
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


class PrefixStream:
    """Every prefix case once per epoch, in padded batches: what NARM, SR-IEM and DSAN train on."""

    def __init__(self, cases: Cases, options: StreamOptions, collate: Callable[[Cases, np.ndarray], Batch]):
        self.cases_, self.options, self.collate = cases, options, collate

    def order(self, epoch: int) -> np.ndarray:
        o = self.options
        order = epoch_order(len(self.cases_), o.seed, epoch, o.shuffle)
        if o.length_buckets:
            order = bucket_by_length(order, self.cases_.length, o.batch_size, o.length_buckets, o.seed, epoch)
        if o.max_batches:
            order = order[: o.max_batches * o.batch_size]
        return order

    def cases(self, epoch: int) -> int:
        return len(self.order(epoch)) if self.options.max_batches else len(self.cases_)

    def batches(self, epoch: int) -> Iterator[Batch]:
        order, size = self.order(epoch), self.options.batch_size
        for start in range(0, len(order), size):
            yield self.collate(self.cases_, order[start : start + size])
