"""Neighbourhood baselines: Item-KNN, SKNN, V-SKNN and STAN, computed as sparse-matrix products.

Item-KNN (Sarwar et al., WWW 2001; the session baseline of GRU4Rec, ICLR 2016, and NARM, CIKM 2017 §4.2).
    Only the last click x_t counts. sim(i, j) = n_ij / (sqrt(n_i n_j) + λ), n_ij = training sessions
    holding both i and j, n_i = sessions holding i, λ a shrinkage against the coincidental similarity of
    rare items (model_zoo.md 2.3). z_j = sim(x_t, j) over the `neighbours` most similar items of x_t.
SKNN (Jannach & Ludewig, RecSys 2017). Candidates are the training sessions sharing an item with the
    prefix s, optionally only the `sample_size` most recent of them; sim(s, n) = |s∩n| / sqrt(|s||n|) on
    item sets; the k most similar are the neighbours N_k(s); z_i = Σ_{n∈N_k(s)} sim(s, n)·1[i∈n].
V-SKNN (Ludewig & Jannach, UMUAI 2018). The prefix is a vector of position weights w(p) (later clicks
    weigh more); sim(s, n) = Σ_{i∈s∩n} w(i) / |s|; a neighbour's contribution is decayed by how far back
    in s its most recent shared item lies, and optionally boosted by the candidate's IDF:
    z_i = Σ_n sim(s, n)·decay(step_n)·(1 + idf_weighting·idf(i))·1[i∈n].
STAN (Garg et al., SIGIR 2019; model_zoo.md 2.7). Three exponential decays on SKNN:
    w1(i) = exp((p_s(i) − |s|)/λ1) for the last position p_s(i) of i in s,
    sim(s, n) = Σ_{i∈s∩n} w1(i) / (sqrt(Σ_{i∈s} w1(i)²)·sqrt(|n|)) · exp(−age(n)/λ2),
    z_i = Σ_{n∈N_k(s)} sim(s, n)·exp(−|p_n(i) − p*_n|/λ3), p_n(i) the last position of i in n and p*_n
    the last position in n holding an item of s.

How it is computed. The training sessions become one CSR matrix, sessions x items, holding each distinct
item's last position in its session. A batch of prefixes becomes a (B, n_items + 1) CSR matrix of
weights; one sparse product with the item -> session matrix gives every prefix's weighted overlap with
every training session sharing an item, (B, n_sessions) sparse. Recency sampling and top-k are per-row
selections on that result (a partition of a padded copy of the long rows); the chosen (prefix,
neighbour) pairs are expanded to the neighbours' items and summed into dense (B, n_items + 1) scores
with one bincount. No Python loop runs per case, neighbour or item, and nothing imports torch: scoring
is numpy and scipy.sparse (models/base.py: `score` hands the scores to the evaluator as a tensor).

What differs from the papers and from session-rec (whose code we did not copy), and why:
- Time. The published splits carry no timestamps; their sessions are in chronological file order, so
  the session index is the clock: "most recent" means the highest index and STAN's age(n) is counted
  in training sessions (the newest training session has age 0). Every query is taken to happen right
  after the training log, which holds for the validation and test sessions of every split here and for
  a live session at serving time. λ2 is therefore a number of sessions; days convert through a split's
  rate (Retailrocket ≈ 960, Diginetica ≈ 1,300 training sessions per day; Yoochoose 1/64 ≈ 40,000).
- Cosine is |s∩n| / sqrt(|s||n|) on item sets; session-rec's sknn.py computes (|s∩n| / sqrt|s|)·sqrt|n|
  (operator precedence), which favours long neighbours (model_zoo.md 2.6).
- Ties. Among neighbours of equal similarity the more recent session is kept (a term below 1e-12, and
  where even that rounds away, the later session: `top_k_per_row`); among items of equal score the
  more popular ranks first (a term below 1e-9 of the click share), because evaluation ranks ties
  pessimistically.
- Items of the current session stay candidates (session-rec's remind=True, DSAN's runs; 38% of
  Retailrocket test targets repeat a prefix item). Item-KNN follows GRU4Rec's baseline and gives the last
  item no similarity to itself unless `recommend_last_item`, which scores it by
  (#sessions clicking it twice) / (n_i + λ), the same co-occurrence formula applied to a pair of clicks.
- V-SKNN's "linear" decays are clipped at 0 (session-rec lets them turn negative and zeroes every
  position past the 10th from the session start); IDF counts sessions holding the item (session-rec
  counts clicks); a session sharing only zero-weight items is no candidate.
- STAN uses the neighbour's click sequence for p_n; DSAN's STAN.py iterated the item *set* (hash order)
  and never reset its position weights between prefixes (dsan_reference.md 5.3); we do neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from nextclick.data.padded import PaddedPrefixes
from nextclick.data.sessions import Cases, Sessions
from nextclick.models.base import (StatisticalModel, check_k, compiled_in_use, item_ids, largest_in_rows,
                                  recent_clicks, row_pointers, top_items)

if TYPE_CHECKING:
    import scipy.sparse as sparse


def _csr_matrix(*args, **kwargs):
    """scipy.sparse.csr_matrix, imported on first use: scipy.sparse costs about half a second of start-up
    (on a loaded machine) to every command that imports the model registry, `nextclick recommend` too."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(*args, **kwargs)

# SKNN, V-SKNN and STAN score this few prefixes compiled (models/knn_compiled.py) where `base.use_compiled` is on;
# more (a batch of an evaluation) by the array form, which is the faster one there
COMPILED_ROWS = 16
ITEM_TIE_BREAK = 1e-9  # popularity term added to item scores: at most this times the click share
NEIGHBOUR_TIE_BREAK = 1e-12  # recency term for choosing among equally similar neighbours

Decay = Literal["same", "linear", "div", "log", "quadratic"]


# ---------------------------------------------------------------------------------------------------
# Sparse building blocks shared by the four models
# ---------------------------------------------------------------------------------------------------


def click_positions(sessions: Sessions) -> np.ndarray:
    """1-based position of every flat click inside its session."""
    return np.arange(len(sessions.items), dtype=np.int64) - np.repeat(sessions.offsets[:-1], sessions.lengths) + 1


def last_positions(
    rows: np.ndarray, items: np.ndarray, positions: np.ndarray, n_rows: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clicks (row, item, position), positions increasing within a row, -> CSR of distinct items per row
    (items ascending) holding each item's last position; also the number of clicks per kept entry."""
    key = rows.astype(np.int64) * width + items
    order = np.argsort(key, kind="stable")  # stable: equal keys keep click order, so the last is the latest
    key = key[order]
    boundary = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], boundary])
    ends = np.concatenate([boundary, [len(key)]])
    kept = order[ends - 1]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[kept], minlength=n_rows), out=indptr[1:])
    return indptr, items[kept].astype(np.int32), positions[kept].astype(np.int32), (ends - starts).astype(np.int32)


def click_counts(sessions: Sessions, n_items: int) -> np.ndarray:
    counts = np.bincount(sessions.items, minlength=n_items + 1).astype(np.float64)
    counts[0] = 0.0
    return counts


def popularity_tie_break(popularity: np.ndarray) -> np.ndarray:
    """(n_items + 1,) tiny scores that order otherwise equal items by training clicks."""
    return ITEM_TIE_BREAK * popularity / (popularity.max() + 1.0)


def finish_scores(scores: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Dense (B, n_items + 1) float64 scores, in place: plus the popularity tie-break, padding -inf."""
    scores += tie_break
    scores[:, 0] = -np.inf
    return scores


@dataclass(frozen=True)
class Prefixes:
    """A batch of prefixes as a CSR of distinct items (B, n_items + 1) with their last positions."""

    indptr: np.ndarray  # (B + 1,)
    items: np.ndarray  # (nnz,) item of each entry, ascending within a row
    positions: np.ndarray  # (nnz,) 1-based last position of the item in its prefix
    lengths: np.ndarray  # (B,) prefix length in clicks (positions count from the session start)

    @classmethod
    def from_padded(cls, padded: PaddedPrefixes, n_items: int) -> Prefixes:
        items = padded.items  # (B, L) right-aligned
        lengths = padded.full_lengths.astype(np.int64)
        rows, columns = np.nonzero(items)
        positions = lengths[rows] - (items.shape[1] - 1 - columns)
        indptr, distinct, last, _ = last_positions(rows, items[rows, columns], positions, len(items), n_items + 1)
        return cls(indptr, distinct, last, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    @property
    def distinct(self) -> np.ndarray:
        return np.diff(self.indptr)

    def matrix(self, weights: np.ndarray, width: int) -> sparse.csr_matrix:
        return _csr_matrix((weights, self.items, self.indptr), shape=(len(self), width))

    def positions_of(self, rows: np.ndarray, items: np.ndarray, width: int) -> np.ndarray:
        """Last position of `items[e]` in prefix `rows[e]`, 0 where absent (a sorted-key lookup; a dense
        (B, n_items) table would cost more in page faults than the whole lookup)."""
        keys = self.rows * width + self.items  # ascending: CSR rows in order, items ascending within a row
        wanted = rows * width + items
        where = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = keys[where] == wanted if len(keys) else np.zeros(len(wanted), dtype=bool)
        return np.where(found, self.positions[where] if len(keys) else 0, 0)


def top_k_per_row(indptr: np.ndarray, priority: np.ndarray, k: int) -> np.ndarray:
    """Flat indices (ascending) of the k entries of highest priority in every CSR row; among equal
    priorities at the cut, the later entries of the row (neighbours: the more recent sessions; Item-KNN's
    similar items: the higher indices), where torch.topk, used before, kept whichever it met first."""
    counts = np.diff(indptr)
    if k <= 0 or len(priority) == 0 or counts.max() <= k:
        return np.arange(len(priority))
    long_rows = np.flatnonzero(counts > k)
    keep = np.repeat(counts <= k, counts)  # short rows are kept whole
    width = int(counts[long_rows].max())
    padded = np.full((len(long_rows), width), -np.inf)
    lengths = counts[long_rows]
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = np.repeat(indptr[long_rows], lengths) + within
    padded[np.repeat(np.arange(len(long_rows)), lengths), within] = priority[source]
    top = np.nonzero(largest_in_rows(padded, k, ties_to_last=True))  # k per row; padding (-inf) never
    keep[indptr[long_rows][top[0]] + top[1]] = True
    return np.flatnonzero(keep)


def decay_by_position(weighting: str, positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """V-SKNN's weight of a click at 1-based position p of a prefix of length L (later = heavier)."""
    p, length = positions.astype(np.float64), lengths.astype(np.float64)
    if weighting == "same":
        return np.ones_like(p)
    if weighting == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * (length - p))
    if weighting == "div":
        return p / length
    if weighting == "log":
        return 1.0 / np.log10(length - p + 1.7)
    if weighting == "quadratic":
        return (p / length) ** 2
    raise ValueError(f"unknown position weighting {weighting!r}")


def decay_by_step(weighting: str, steps: np.ndarray) -> np.ndarray:
    """V-SKNN's neighbour decay by step = how many clicks back (1 = the last click) the neighbour's most
    recent shared item lies."""
    step = steps.astype(np.float64)
    if weighting == "same":
        return np.ones_like(step)
    if weighting == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * step)
    if weighting == "div":
        return 1.0 / step
    if weighting == "log":
        return 1.0 / np.log10(step + 1.7)
    if weighting == "quadratic":
        return 1.0 / step**2
    raise ValueError(f"unknown neighbour weighting {weighting!r}")


# ---------------------------------------------------------------------------------------------------
# Item-KNN
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbours: int = 100  # similar items kept per item (GRU4Rec baselines.py ItemKNN n_sims; model_zoo 2.3); 0 = all
    shrinkage: float = 20.0  # λ in n_ij / (sqrt(n_i n_j) + λ) (GRU4Rec baseline lmbd; NARM §4.2 "regularization")
    recommend_last_item: bool = False  # GRU4Rec's ItemKNN zeroes self-similarity; True: see the module docstring
    tune: bool = False  # search `search_space` on validation before fitting (nextclick.runs.search)


class ItemKNN(StatisticalModel):
    name = "item-knn"
    Config = ItemKNNConfig
    citation = "Item-KNN (Sarwar et al., WWW 2001) as the session baseline of GRU4Rec (ICLR 2016) and NARM (CIKM 2017)"
    state_fields = ("neighbour_indptr", "neighbour_items", "neighbour_similarity", "popularity")
    state_checks = {**StatisticalModel.state_checks, "neighbour_items": item_ids,
                    "neighbour_indptr": row_pointers("neighbour_items", "neighbour_similarity", per_item=True)}
    search_space = {"shrinkage": (20.0, 100.0, 500.0), "recommend_last_item": (False, True)}

    neighbour_indptr: np.ndarray | None = None
    neighbour_items: np.ndarray | None = None
    neighbour_similarity: np.ndarray | None = None
    popularity: np.ndarray | None = None
    _similar: sparse.csr_matrix | None = None

    def fit(self, train: Cases, **options) -> ItemKNN:
        sessions, width = train.sessions, self.n_items + 1
        indptr, items, _, clicks = last_positions(
            sessions.session_of_click(), sessions.items, click_positions(sessions), len(sessions), width)
        in_session = _csr_matrix((np.ones(len(items)), items, indptr), shape=(len(sessions), width))
        together = (in_session.T @ in_session).tocoo()  # (width, width): sessions holding both items
        support = np.bincount(items, minlength=width).astype(np.float64)  # n_i
        first, second, count = together.row, together.col, together.data
        off_diagonal = first != second
        first, second, count = first[off_diagonal], second[off_diagonal], count[off_diagonal]
        similarity = count / (np.sqrt(support[first] * support[second]) + self.config.shrinkage)
        if self.config.recommend_last_item:
            twice = np.bincount(items[clicks >= 2], minlength=width).astype(np.float64)
            repeated = np.flatnonzero(twice)
            first = np.concatenate([first, repeated])
            second = np.concatenate([second, repeated])
            similarity = np.concatenate([similarity, twice[repeated] / (support[repeated] + self.config.shrinkage)])
        self.popularity = click_counts(sessions, self.n_items)
        order = np.lexsort((second, first))
        first, second, similarity = first[order], second[order], similarity[order]
        row_indptr = np.zeros(width + 1, dtype=np.int64)
        np.cumsum(np.bincount(first, minlength=width), out=row_indptr[1:])
        chosen = top_k_per_row(row_indptr, similarity + popularity_tie_break(self.popularity)[second],
                               self.config.neighbours)
        self.neighbour_indptr = np.zeros(width + 1, dtype=np.int64)
        np.cumsum(np.bincount(first[chosen], minlength=width), out=self.neighbour_indptr[1:])
        self.neighbour_items = second[chosen].astype(np.int32)
        self.neighbour_similarity = similarity[chosen]
        self._similar = None
        return self

    def load_state_arrays(self, arrays) -> None:
        super().load_state_arrays(arrays)
        self._similar = None

    def score_prefixes(self, prefixes: PaddedPrefixes) -> np.ndarray:
        width = self.n_items + 1
        if self._similar is None:
            self._similar = _csr_matrix(
                (self.neighbour_similarity, self.neighbour_items, self.neighbour_indptr), shape=(width, width))
        last = prefixes.items[:, -1]  # right-aligned: the most recent click
        scores = self._similar[last].toarray()  # (B, n_items + 1)
        return finish_scores(scores, popularity_tie_break(self.popularity))


# ---------------------------------------------------------------------------------------------------
# Session-based kNN: SKNN, V-SKNN, STAN share the neighbour search
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKNNConfig:
    neighbours: int = 500  # k (DSAN's SKNN.py run, dsan_reference.md 5.2; session-rec used 50 on Diginetica)
    sample_size: int = 0  # m most recent candidate sessions; 0 = all (DSAN: no sampling; session-rec: 500)
    tune: bool = False  # search `search_space` on validation before fitting (nextclick.runs.search)


class SessionKNN(StatisticalModel):
    name = "sknn"
    Config = SessionKNNConfig
    citation = "SKNN (Jannach & Ludewig, RecSys 2017)"
    state_fields = ("session_indptr", "session_items", "session_positions", "popularity")
    state_checks = {**StatisticalModel.state_checks, "session_items": item_ids,
                    "session_indptr": row_pointers("session_items", "session_positions")}
    search_space = {"neighbours": (500, 100, 50), "sample_size": (0, 500)}  # DSAN, session-rec: k 50, m 500

    session_indptr: np.ndarray | None = None  # (n_sessions + 1,) CSR rows: training sessions
    session_items: np.ndarray | None = None  # distinct items of each session, ascending
    session_positions: np.ndarray | None = None  # 1-based last position of each item in its session
    popularity: np.ndarray | None = None  # (n_items + 1,) training clicks
    _index: dict | None = None

    def fit(self, train: Cases, **options) -> SessionKNN:
        sessions = train.sessions
        self.session_indptr, self.session_items, self.session_positions, _ = last_positions(
            sessions.session_of_click(), sessions.items, click_positions(sessions), len(sessions), self.n_items + 1)
        self.popularity = click_counts(sessions, self.n_items)
        self._index = None
        return self

    def load_state_arrays(self, arrays) -> None:
        super().load_state_arrays(arrays)
        self._index = None

    # -- derived, not saved: rebuilt from the state on first use --
    def _lookup(self) -> dict:
        if self._index is None:
            width = self.n_items + 1
            n_sessions = len(self.session_indptr) - 1
            in_session = _csr_matrix(
                (np.ones(len(self.session_items)), self.session_items, self.session_indptr), shape=(n_sessions, width))
            holding = np.bincount(self.session_items, minlength=width)  # sessions holding each item
            self._index = {
                "sessions_of_item": in_session.T.tocsr(),  # (width, n_sessions) binary
                "distinct": np.diff(self.session_indptr),  # |n|
                "n_sessions": n_sessions,
                "idf": np.log(max(n_sessions, 1) / np.maximum(holding, 1)),
                "tie_break": popularity_tie_break(self.popularity),
            }
        return self._index

    def recommend(self, prefixes: list[np.ndarray], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """`StatisticalModel.recommend`; a few prefixes in a process that switched the compiled forms on
        (serving) are scored by models/knn_compiled.py: the same scores without the array calls' overhead
        (STAN: 0.18 against 1.10 ms for a lone retailrocket recommend, in process)."""
        if not compiled_in_use() or len(prefixes) > COMPILED_ROWS:
            return super().recommend(prefixes, k)
        from nextclick.models import knn_compiled

        check_k(k)
        clicks, kept, full_lengths = recent_clicks(prefixes, self.max_length, self.n_items)
        starts = np.concatenate([[0], np.cumsum(kept)])
        lookup, c = self._lookup(), self.config
        if "sessions_of_item_int64" not in lookup:  # the index in the compiled code's dtype, made once
            index = lookup["sessions_of_item"]
            lookup["sessions_of_item_int64"] = (index.indptr.astype(np.int64), index.indices.astype(np.int64))
        settings = {"position_decay": 1.0, "recency_decay": 0.0, "neighbour_position_decay": 1.0,
                    "position_weighting": "same", "neighbour_weighting": "same", "idf_weighting": 0.0,
                    **self._compiled_settings()}
        kinds = {"sknn": knn_compiled.SKNN, "v-sknn": knn_compiled.VSKNN, "stan": knn_compiled.STAN}
        scores = knn_compiled.session_knn_scores(
            kinds[settings["kind"]], clicks, starts, full_lengths,
            *lookup["sessions_of_item_int64"], self.session_indptr, self.session_items, self.session_positions,
            lookup["distinct"], lookup["idf"], lookup["tie_break"], c.neighbours, c.sample_size, NEIGHBOUR_TIE_BREAK,
            float(settings["position_decay"]), float(settings["recency_decay"]),
            float(settings["neighbour_position_decay"]), knn_compiled.DECAYS[settings["position_weighting"]],
            knn_compiled.DECAYS[settings["neighbour_weighting"]], float(settings["idf_weighting"]))
        return top_items(scores, min(k, self.n_items))

    def _compiled_settings(self) -> dict:
        """Which model the compiled scores compute (models/knn_compiled.py), with its config values."""
        return {"kind": "sknn"}

    # -- the three places where SKNN, V-SKNN and STAN differ --
    def _prefix_weights(self, prefixes: Prefixes) -> np.ndarray:
        return np.ones(len(prefixes.items))

    def _similarity(self, rows, neighbours, overlap, prefixes: Prefixes, weights) -> np.ndarray:
        distinct = self._lookup()["distinct"]
        return overlap / np.sqrt(prefixes.distinct[rows] * distinct[neighbours])

    def _contributions(self, pair_rows, similarity, element_pair, items, positions, prefixes: Prefixes) -> np.ndarray:
        """Score added to `items[e]` by neighbour pair `element_pair[e]` (per expanded element)."""
        return similarity[element_pair]

    def neighbours(self, padded: PaddedPrefixes) -> tuple[np.ndarray, np.ndarray, np.ndarray, Prefixes]:
        """(row, training session, similarity) of every chosen neighbour of the padded prefixes."""
        lookup = self._lookup()
        prefixes = Prefixes.from_padded(padded, self.n_items)
        weights = self._prefix_weights(prefixes)
        overlap = prefixes.matrix(weights, self.n_items + 1) @ lookup["sessions_of_item"]  # (B, n_sessions)
        overlap = overlap.tocsr()
        overlap.sort_indices()  # within a row, sessions in time order
        indptr, neighbours, values = overlap.indptr.astype(np.int64), overlap.indices.astype(np.int64), overlap.data
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(len(prefixes), dtype=np.int64), counts)
        if self.config.sample_size > 0:  # keep the m most recent candidates of every row
            from_end = np.repeat(indptr[1:], counts) - np.arange(len(neighbours))  # 1 = the newest
            recent = from_end <= self.config.sample_size
            rows, neighbours, values = rows[recent], neighbours[recent], values[recent]
            indptr = np.zeros(len(prefixes) + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=len(prefixes)), out=indptr[1:])
        similarity = self._similarity(rows, neighbours, values, prefixes, weights)
        recency = NEIGHBOUR_TIE_BREAK * (neighbours + 1) / (lookup["n_sessions"] + 1)
        chosen = top_k_per_row(indptr, similarity + recency, self.config.neighbours)
        return rows[chosen], neighbours[chosen], similarity[chosen], prefixes

    def score_prefixes(self, padded: PaddedPrefixes) -> np.ndarray:
        lookup = self._lookup()
        width = self.n_items + 1
        pair_rows, pair_sessions, similarity, prefixes = self.neighbours(padded)
        if len(pair_sessions) == 0:  # no prefix shares an item with the training sessions
            return finish_scores(np.zeros((len(prefixes), width)), lookup["tie_break"])
        # expand every (prefix, neighbour) pair to the neighbour's distinct items
        counts = lookup["distinct"][pair_sessions]
        element_pair = np.repeat(np.arange(len(pair_sessions), dtype=np.int64), counts)
        pair_start = np.cumsum(counts) - counts
        flat = np.repeat(self.session_indptr[pair_sessions], counts) + np.arange(int(counts.sum())) \
            - np.repeat(pair_start, counts)
        items = self.session_items[flat].astype(np.int64)
        positions = self.session_positions[flat]
        values = self._contributions(pair_rows, similarity, element_pair, items, positions, prefixes)
        scores = np.bincount(pair_rows[element_pair] * width + items, weights=values, minlength=len(prefixes) * width)
        return finish_scores(scores.reshape(len(prefixes), width), lookup["tie_break"])


@dataclass(frozen=True)
class VectorSessionKNNConfig:
    neighbours: int = 1500  # k (session-rec's tuned Diginetica config, model_zoo.md 2.6)
    sample_size: int = 10_000  # m most recent candidates (same source); 0 = all
    position_weighting: Decay = "quadratic"  # weight of a prefix click by position (same source)
    neighbour_weighting: Decay = "linear"  # decay by the step of the most recent shared item (same source)
    idf_weighting: float = 10.0  # z_i scaled by 1 + this x idf(i) (same source); 0 = off
    tune: bool = False  # search `search_space` on validation before fitting (nextclick.runs.search)


class VectorSessionKNN(SessionKNN):
    name = "v-sknn"
    Config = VectorSessionKNNConfig
    citation = "V-SKNN (Ludewig & Jannach, User Modeling and User-Adapted Interaction 2018)"
    search_space = {"neighbours": (1500, 200), "position_weighting": ("quadratic", "div"),
                    "idf_weighting": (10.0, 0.0)}

    def _compiled_settings(self) -> dict:
        c = self.config
        return {"kind": "v-sknn", "position_weighting": c.position_weighting,
                "neighbour_weighting": c.neighbour_weighting, "idf_weighting": c.idf_weighting}

    def _prefix_weights(self, prefixes: Prefixes) -> np.ndarray:
        return decay_by_position(self.config.position_weighting, prefixes.positions, prefixes.lengths[prefixes.rows])

    def _similarity(self, rows, neighbours, overlap, prefixes: Prefixes, weights) -> np.ndarray:
        return overlap / prefixes.distinct[rows]

    def _contributions(self, pair_rows, similarity, element_pair, items, positions, prefixes: Prefixes) -> np.ndarray:
        in_prefix = prefixes.positions_of(pair_rows[element_pair], items, self.n_items + 1)  # 0: not in the prefix
        pair_start = np.flatnonzero(np.r_[True, np.diff(element_pair) != 0])
        most_recent_shared = np.maximum.reduceat(in_prefix, pair_start)  # per pair, >= 1
        step = prefixes.lengths[pair_rows] - most_recent_shared + 1
        values = (similarity * decay_by_step(self.config.neighbour_weighting, step))[element_pair]
        if self.config.idf_weighting:
            values = values * (1.0 + self.config.idf_weighting * self._lookup()["idf"][items])
        return values


@dataclass(frozen=True)
class STANConfig:
    neighbours: int = 500  # k (DSAN's STAN.py, dsan_reference.md 5.3; session-rec's Diginetica config too)
    sample_size: int = 0  # m most recent candidates; 0 = all (DSAN; session-rec used 5000)
    position_decay: float = 1.25  # λ1 (DSAN's Retailrocket value; session-rec's MRR-tuned Diginetica value)
    # λ2 in training sessions (the splits have no timestamps): DSAN's Retailrocket 80 days x ≈960 sessions/day
    recency_decay: float = 77_000.0  # 0 = no recency factor
    neighbour_position_decay: float = 2.5  # λ3 (DSAN's Retailrocket value; session-rec Diginetica: 5)
    tune: bool = False  # search `search_space` on validation before fitting (nextclick.runs.search)


class STAN(SessionKNN):
    name = "stan"
    Config = STANConfig
    citation = "STAN: Sequence and Time Aware Neighborhood (Garg et al., SIGIR 2019)"
    # DSAN's Retailrocket (1.25, 80 d, 2.5) and Diginetica (3.54, 20 d ≈ 26,000 sessions, 3.54) values,
    # and session-rec's Diginetica λ3 = 5
    search_space = {"position_decay": (1.25, 3.54), "recency_decay": (77_000.0, 26_000.0),
                    "neighbour_position_decay": (2.5, 5.0)}

    def _prefix_weights(self, prefixes: Prefixes) -> np.ndarray:
        back = prefixes.positions - prefixes.lengths[prefixes.rows]  # 0 for the last click
        return np.exp(back / self.config.position_decay)

    def _similarity(self, rows, neighbours, overlap, prefixes: Prefixes, weights) -> np.ndarray:
        lookup = self._lookup()
        norm = np.sqrt(np.bincount(prefixes.rows, weights=weights**2, minlength=len(prefixes)))
        similarity = overlap / (norm[rows] * np.sqrt(lookup["distinct"][neighbours]))
        if self.config.recency_decay:
            age = lookup["n_sessions"] - 1 - neighbours  # sessions between n and the end of training
            similarity = similarity * np.exp(-age / self.config.recency_decay)
        return similarity

    def _compiled_settings(self) -> dict:
        return {"kind": "stan", "position_decay": self.config.position_decay, "recency_decay": self.config.recency_decay,
                "neighbour_position_decay": self.config.neighbour_position_decay}

    def _contributions(self, pair_rows, similarity, element_pair, items, positions, prefixes: Prefixes) -> np.ndarray:
        in_prefix = prefixes.positions_of(pair_rows[element_pair], items, self.n_items + 1) > 0
        pair_start = np.flatnonzero(np.r_[True, np.diff(element_pair) != 0])
        last_shared = np.maximum.reduceat(np.where(in_prefix, positions, 0), pair_start)  # p*_n, per pair
        distance = np.abs(positions - last_shared[element_pair])
        return similarity[element_pair] * np.exp(-distance / self.config.neighbour_position_decay)
