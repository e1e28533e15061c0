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
    # data-parallel training (torchrun, nextclick.training.distributed): this process takes cases rank,
    # rank + world_size, ... of every global batch of `batch_size`
    rank: int = 0
    world_size: int = 1


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


def shards_by_rank(stream) -> bool:
    """Whether `stream` deals each global batch out by `StreamOptions.rank` (a PrefixStream, or a stream
    that passes one's batches on as `inner`): the others cannot train under torchrun."""
    while stream is not None:
        if isinstance(stream, PrefixStream):
            return True
        stream = getattr(stream, "inner", None)
    return False


class PrefixStream:
    """Every prefix case once per epoch, in padded batches: what NARM, SR-IEM and DSAN train on. Under
    torchrun each process takes its share of every global batch (cases rank, rank + N, ...); a last
    global batch with fewer cases than processes is left out, so every process takes the same steps."""

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
        if self.options.world_size > 1:
            return sum(len(share) for share in self._shares(self.order(epoch)))
        return len(self.order(epoch)) if self.options.max_batches else len(self.cases_)

    def _shares(self, order: np.ndarray) -> Iterator[np.ndarray]:
        size, rank, world = self.options.batch_size, self.options.rank, self.options.world_size
        for start in range(0, len(order), size):
            chosen = order[start : start + size]
            if world > 1:
                if len(chosen) < world:  # some process would get no case: none takes this last step
                    return
                chosen = chosen[rank::world]
            yield chosen

    def batches(self, epoch: int) -> Iterator[Batch]:
        for chosen in self._shares(self.order(epoch)):
            yield self.collate(self.cases_, chosen)
