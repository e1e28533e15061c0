"""Cases -> padded tensors, shared by every model.

A Batch is right-aligned: padding (0) on the left, the most recent click at items[:, -1]. Its width
is the longest prefix in the batch, capped at `max_length`; truncation keeps the most recent clicks.
The arrays are built in numpy (nextclick.data.padded: one vectorised gather, no per-case Python loop)
and shared with the tensors here, not copied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from nextclick.data.padded import PaddedPrefixes, pad_cases, pad_prefixes
from nextclick.data.sessions import Cases


@dataclass(frozen=True)
class Batch:
    items: torch.Tensor  # (B, L) int64, right-aligned, 0 = padding
    lengths: torch.Tensor  # (B,) int64, number of real clicks kept (<= L)
    labels: torch.Tensor  # (B,) int64, the next click
    full_lengths: torch.Tensor  # (B,) int64, prefix length before truncation (positions from the start)

    @classmethod
    def from_padded(cls, padded: PaddedPrefixes) -> Batch:
        """The padded arrays as tensors sharing their memory."""
        return cls(items=torch.from_numpy(padded.items), lengths=torch.from_numpy(padded.lengths),
                   labels=torch.from_numpy(padded.labels), full_lengths=torch.from_numpy(padded.full_lengths))

    def numpy(self) -> PaddedPrefixes:
        """The same cases as numpy arrays on the CPU (what statistical models score)."""
        return PaddedPrefixes(items=self.items.cpu().numpy(), lengths=self.lengths.cpu().numpy(),
                              labels=self.labels.cpu().numpy(), full_lengths=self.full_lengths.cpu().numpy())

    def __len__(self) -> int:
        return self.items.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        """(B, L) bool, True at real clicks."""
        return self.items != 0

    def left_aligned(self) -> torch.Tensor:
        """(B, L) the same clicks with padding on the right (for RNN packing / first-click indexing)."""
        width = self.items.shape[1]
        shift = (torch.arange(width, device=self.items.device).unsqueeze(0) + (width - self.lengths).unsqueeze(1)) % width
        return torch.gather(self.items, 1, shift)

    def recent(self, n: int | None) -> Batch:
        """The same cases cut to their last n clicks (a model reading fewer clicks than its batch holds:
        the repeat decoder sees the whole prefix, the model's encoder its own window)."""
        if n is None or n >= self.items.shape[1]:
            return self
        return dataclasses.replace(self, items=self.items[:, -n:], lengths=self.lengths.clamp(max=n))

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device` (every tensor field, so Batch subclasses with more inputs move whole)."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})


def make_batch(cases: Cases, indices: np.ndarray | None = None, max_length: int | None = None) -> Batch:
    """Gather cases (all, or those at `indices`) into a right-aligned Batch."""
    return Batch.from_padded(pad_cases(cases, indices, max_length))


def batch_from_prefixes(prefixes: list[np.ndarray], max_length: int | None = None) -> Batch:
    """A Batch for raw sessions (serving, `recommend`, `explain`): labels are set to 0 (unknown).
    Each session keeps its most recent `max_length` clicks (nextclick.data.padded.pad_prefixes)."""
    return Batch.from_padded(pad_prefixes(prefixes, max_length))


def iterate_batches(
    cases: Cases,
    batch_size: int,
    max_length: int | None = None,
    order: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Batches in `order` (default: file order). Evaluation uses file order; its results never
    depend on the order because every case is scored independently."""
    order = np.arange(len(cases)) if order is None else order
    for start in range(0, len(order), batch_size):
        yield make_batch(cases, order[start : start + batch_size], max_length)
