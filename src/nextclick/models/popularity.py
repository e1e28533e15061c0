"""POP and S-POP: the popularity baselines of every session-based paper.

POP ranks every item by its number of training clicks, the same list for every session.
S-POP ranks the items of the current session by how often they occur in it, ties broken by global
popularity, then the rest of the catalogue by global popularity (NARM section 4.2; model_zoo.md 2.2):
score_i = count_in_session(i) + pop(i) / (max pop + 1), which keeps the in-session count dominant.
Counts come from training clicks only (the DSAN repository's pop.py also counted test clicks, a
leak we do not reproduce; dsan_reference.md 5.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from nextclick.data.padded import PaddedPrefixes
from nextclick.data.sessions import Cases
from nextclick.models.base import StatisticalModel


def click_counts(cases: Cases, n_items: int) -> np.ndarray:
    """Training clicks per item over the full training sessions behind the cases."""
    counts = np.bincount(cases.sessions.items, minlength=n_items + 1).astype(np.float64)
    counts[0] = 0.0
    return counts


@dataclass(frozen=True)
class PopConfig:
    pass


@dataclass(frozen=True)
class SessionPopConfig:
    max_length: int | None = None  # None: the whole prefix counts (NARM's S-POP), up to the last 512 clicks
    # "canonical": in-session count, ties by popularity, then the catalogue by popularity (NARM 4.2).
    # "dsan-code": the DSAN repository's pop.py (dsan_reference.md 5.1): only the distinct items of the
    # last 20 clicks, ranked by global popularity, no fallback (its test-click counting is not copied).
    variant: Literal["canonical", "dsan-code"] = "canonical"


class Pop(StatisticalModel):
    name = "pop"
    Config = PopConfig
    citation = "Most-popular baseline (e.g. NARM, CIKM 2017, section 4.2)"
    state_fields = ("popularity",)
    popularity: np.ndarray | None = None

    def fit(self, train: Cases, **options) -> "Pop":
        self.popularity = click_counts(train, self.n_items)
        return self

    def _global_scores(self) -> np.ndarray:
        """(n_items + 1,) float64 training clicks, padding -inf."""
        scores = self.popularity.astype(np.float64)  # a copy
        scores[0] = -np.inf
        return scores

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        """The same list for every prefix: one row, broadcast (a read-only view, not B copies)."""
        return np.broadcast_to(self._global_scores(), (len(prefixes), self.n_items + 1))


class SessionPop(Pop):
    name = "s-pop"
    Config = SessionPopConfig
    citation = "Session popularity (NARM, CIKM 2017, section 4.2)"

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        if self.config.variant == "dsan-code":
            return self._dsan_code_scores(prefixes)
        base = self._global_scores() / (float(np.max(self.popularity)) + 1.0)  # each < 1, padding -inf
        scores = np.tile(base, (len(prefixes), 1))  # (B, n+1) float64: exact tie-breaks
        # + in-session click counts, one click at a time (base + 1 + 1 may round otherwise than base + 2);
        # padding clicks land on column 0, which stays -inf
        rows = np.broadcast_to(np.arange(len(prefixes))[:, None], prefixes.items.shape)
        np.add.at(scores, (rows, prefixes.items), 1.0)
        return scores

    def _dsan_code_scores(self, prefixes: PaddedPrefixes) -> np.ndarray:
        """Prefix items (last 20) by global popularity; every other item ties at the bottom, so under
        pessimistic ranking a target outside the prefix is a miss, as in the DSAN code."""
        recent = prefixes.items[:, -20:]
        popularity = self._global_scores()
        scores = np.full((len(prefixes), self.n_items + 1), -1.0)
        np.put_along_axis(scores, recent, popularity[recent], axis=1)
        scores[:, 0] = -np.inf
        return scores
