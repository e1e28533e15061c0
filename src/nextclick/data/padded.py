"""Cases -> right-aligned padded numpy arrays: the part of batching that needs no torch.

Padding (0) is on the left, the most recent click at items[:, -1]; the width is the longest prefix,
capped at `max_length`, and truncation keeps the most recent clicks. `nextclick.data.batches` wraps
these arrays as a torch `Batch` for the trainer, the evaluator and the neural models; statistical
models score them as they are (models/base.py), so that `nextclick recommend` on POP or STAN never
imports torch (2-3 s of start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclick.data.sessions import Cases, Sessions

# The most clicks one served session (`recommend`, `explain`, serving) may give. Models read at most
# their last 512 (nextclick.models.config.MAX_SESSION_LENGTH); a longer request is refused with a
# message rather than silently cut, so a client sending whole histories learns that they are not read.
MAX_REQUEST_CLICKS = 10_000


@dataclass(frozen=True)
class PaddedPrefixes:
    items: np.ndarray  # (B, L) int64, right-aligned, 0 = padding
    lengths: np.ndarray  # (B,) int64, number of real clicks kept (<= L)
    labels: np.ndarray  # (B,) int64, the next click (0 for a raw session: unknown)
    full_lengths: np.ndarray  # (B,) int64, prefix length before truncation (positions from the start)

    def __len__(self) -> int:
        return self.items.shape[0]


def pad_cases(cases: Cases, indices: np.ndarray | None = None, max_length: int | None = None) -> PaddedPrefixes:
    """The cases (all, or those at `indices`) as right-aligned padded arrays: one vectorised gather, no
    per-case Python loop."""
    session = cases.session if indices is None else cases.session[indices]
    length = cases.length if indices is None else cases.length[indices]
    flat = cases.sessions.items
    starts = cases.sessions.offsets[session]
    ends = starts + length  # index of the label click
    kept = length if max_length is None else np.minimum(length, max_length)
    width = int(kept.max()) if len(kept) else 1
    columns = np.arange(width, dtype=np.int64)
    source = ends[:, None] - width + columns[None, :]  # (B, L)
    valid = columns[None, :] >= (width - kept)[:, None]
    items = np.where(valid, flat[np.clip(source, 0, len(flat) - 1)], 0).astype(np.int64)
    return PaddedPrefixes(items=items, lengths=kept.astype(np.int64), labels=flat[ends].astype(np.int64),
                          full_lengths=length.astype(np.int64))


def pad_prefixes(prefixes: list[np.ndarray], max_length: int | None = None) -> PaddedPrefixes:
    """Raw sessions (serving, `recommend`, `explain`) as padded arrays, labels 0 (unknown). Each keeps
    its most recent `max_length` clicks; more than MAX_REQUEST_CLICKS is an error."""
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("a session needs at least one click")
    longest = max(len(p) for p in prefixes) if prefixes else 0
    if longest > MAX_REQUEST_CLICKS:
        raise ValueError(f"a session may give at most {MAX_REQUEST_CLICKS:,} clicks; got {longest:,}")
    sessions = Sessions.from_lists([list(p) + [0] for p in prefixes])
    return pad_cases(Cases.whole_sessions(sessions), max_length=max_length)
