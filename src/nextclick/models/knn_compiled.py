"""The session kNN family's scores (SKNN, V-SKNN, STAN) compiled with numba, one prefix at a time:
serving's per-request neighbourhood.

`SessionKNN.score_prefixes` finds neighbours for a whole batch with sparse products and array calls: in
evaluation that is the fast way, but a served request (one to a few prefixes) spends most of its time
in the calls' overhead (STAN: 0.6 ms of a lone request, padding included; scipy builds four sparse
matrices per call; a py-spy profile of two workers at 1,000 requests/s: docs/serving.md). Here each
prefix is scored by loops over the same arrays: its distinct items and their weights, the training
sessions holding them (an item -> sessions index built once), the k most similar of those, and their
items' contributions, summed in the order the array form sums them, so that the scores agree with it
to the last bits where the elementary functions do (numpy's and libm's exp, log10 may differ in the
last place; tests/test_knn.py checks the scores and rankings of all three models).

This module imports numba (the `serve` extra); `SessionKNN.recommend` uses it only in a process that
switched the compiled forms on (`base.use_compiled`, which serving calls) and for up to
`knn.COMPILED_ROWS` prefixes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# the three models (SessionKNN._compiled_kind) and V-SKNN's decays (models/knn.py decay_by_*), as integers
SKNN, VSKNN, STAN = 0, 1, 2
DECAYS = {"same": 0, "linear": 1, "div": 2, "log": 3, "quadratic": 4}


@njit(cache=True)
def _position_weight(decay, p, length):
    """knn.decay_by_position for one click at position p of a prefix of `length` clicks."""
    p, length = float(p), float(length)
    if decay == 0:
        return 1.0
    if decay == 1:
        return max(0.0, 1.0 - 0.1 * (length - p))
    if decay == 2:
        return p / length
    if decay == 3:
        return 1.0 / math.log10(length - p + 1.7)
    return (p / length) ** 2


@njit(cache=True)
def _step_weight(decay, step):
    """knn.decay_by_step for a neighbour whose most recent shared item lies `step` clicks back."""
    step = float(step)
    if decay == 0:
        return 1.0
    if decay == 1:
        return max(0.0, 1.0 - 0.1 * step)
    if decay == 2:
        return 1.0 / step
    if decay == 3:
        return 1.0 / math.log10(step + 1.7)
    return 1.0 / step**2


@njit(cache=True)
def session_knn_scores(kind, clicks, starts, full_lengths, sessions_of_item_indptr, sessions_of_item, session_indptr,
                       session_items, session_positions, distinct, idf, tie_break, neighbours, sample_size,
                       neighbour_tie_break, position_decay, recency_decay, neighbour_position_decay,
                       position_weighting, neighbour_weighting, idf_weighting):
    """Prefixes (the clicks read of prefix b are clicks[starts[b]:starts[b + 1]], oldest first; the prefix
    had full_lengths[b] clicks in all) -> (B, n_items + 1) float64 scores, as `score_prefixes` of the
    model `kind` computes them (models/knn.py). STAN reads position_decay (lambda 1), recency_decay
    (lambda 2) and neighbour_position_decay (lambda 3); V-SKNN position_weighting, neighbour_weighting
    (DECAYS) and idf_weighting; SKNN none of them."""
    rows, width = len(full_lengths), tie_break.shape[0]
    n_sessions = distinct.shape[0]
    scores = np.zeros((rows, width))
    overlap = np.zeros(n_sessions)  # per training session, reset after each prefix
    last_position = np.zeros(width, dtype=np.int64)  # the prefix's last position of each item, 0 = absent
    for b in range(rows):
        # the prefix's distinct items (ascending, as its CSR row) and the last position of each
        length, start, stop = full_lengths[b], starts[b], starts[b + 1]
        prefix_items = np.empty(stop - start, dtype=np.int64)
        present = 0
        for e in range(start, stop):
            item = clicks[e]
            if item == 0:  # padding, as the array form's PaddedPrefixes skip it (it still holds its position)
                continue
            if last_position[item] == 0:
                prefix_items[present] = item
                present += 1
            last_position[item] = length - (stop - 1 - e)  # >= 1; later clicks overwrite
        prefix_items = np.sort(prefix_items[:present])
        weights = np.empty(present)
        squares = 0.0
        for m in range(present):
            p = last_position[prefix_items[m]]
            if kind == STAN:
                weights[m] = math.exp((p - length) / position_decay)
            elif kind == VSKNN:
                weights[m] = _position_weight(position_weighting, p, length)
            else:
                weights[m] = 1.0
            squares += weights[m] * weights[m]
        norm = math.sqrt(squares)
        # overlap with every training session holding a prefix item, summed in item order (as scipy's
        # sparse product sums it, which drops sums of 0: V-SKNN's linear decay gives old clicks weight 0);
        # the weights are not negative, so 0 marks a session not met yet
        postings = 0
        for m in range(present):
            postings += sessions_of_item_indptr[prefix_items[m] + 1] - sessions_of_item_indptr[prefix_items[m]]
        touched = np.empty(postings, dtype=np.int64)
        candidates = 0
        for m in range(present):
            item = prefix_items[m]
            if weights[m] == 0.0:
                continue
            for e in range(sessions_of_item_indptr[item], sessions_of_item_indptr[item + 1]):
                session = sessions_of_item[e]
                if overlap[session] == 0.0:
                    touched[candidates] = session
                    candidates += 1
                overlap[session] += weights[m]
        touched = touched[:candidates]
        touched.sort()  # sessions in time order
        if sample_size > 0 and candidates > sample_size:  # the m most recent candidates
            touched = touched[candidates - sample_size:]
        similarity = np.empty(len(touched))
        priority = np.empty(len(touched))
        for c in range(len(touched)):
            session = touched[c]
            if kind == STAN:
                value = overlap[session] / (norm * math.sqrt(distinct[session]))
                if recency_decay != 0.0:
                    value = value * math.exp(-(n_sessions - 1 - session) / recency_decay)
            elif kind == VSKNN:
                value = overlap[session] / present
            else:
                value = overlap[session] / math.sqrt(present * distinct[session])
            similarity[c] = value
            priority[c] = value + neighbour_tie_break * (session + 1) / (n_sessions + 1)
        for m in range(present):  # clean for the next prefix
            item = prefix_items[m]
            for e in range(sessions_of_item_indptr[item], sessions_of_item_indptr[item + 1]):
                overlap[sessions_of_item[e]] = 0.0
        # the k of highest priority; among equal ones at the cut, the most recent sessions
        keep = np.ones(len(touched), dtype=np.bool_)
        if neighbours > 0 and len(touched) > neighbours:
            kth = np.partition(priority, len(touched) - neighbours)[len(touched) - neighbours]
            room = neighbours
            for c in range(len(touched)):
                keep[c] = priority[c] > kth
                room -= keep[c]
            for c in range(len(touched) - 1, -1, -1):
                if not keep[c] and priority[c] == kth and room > 0:
                    keep[c] = True
                    room -= 1
        # each neighbour's items: its similarity (SKNN); times the decay by how many clicks back its most
        # recent item shared with the prefix lies and the items' idf (V-SKNN); times the decay by each
        # item's distance to the neighbour's last item shared with the prefix (STAN)
        for c in range(len(touched)):
            if not keep[c]:
                continue
            session = touched[c]
            start, stop = session_indptr[session], session_indptr[session + 1]
            if kind == SKNN:
                for e in range(start, stop):
                    scores[b, session_items[e]] += similarity[c]
            elif kind == VSKNN:
                most_recent_shared = 0  # in the prefix's positions
                for e in range(start, stop):
                    most_recent_shared = max(most_recent_shared, last_position[session_items[e]])
                value = similarity[c] * _step_weight(neighbour_weighting, length - most_recent_shared + 1)
                for e in range(start, stop):
                    if idf_weighting != 0.0:
                        scores[b, session_items[e]] += value * (1.0 + idf_weighting * idf[session_items[e]])
                    else:
                        scores[b, session_items[e]] += value
            else:
                last_shared = 0  # in the neighbour's positions
                for e in range(start, stop):
                    if last_position[session_items[e]] > 0:
                        last_shared = max(last_shared, session_positions[e])
                for e in range(start, stop):
                    distance = abs(session_positions[e] - last_shared)
                    scores[b, session_items[e]] += similarity[c] * math.exp(-distance / neighbour_position_decay)
        for m in range(present):
            last_position[prefix_items[m]] = 0
        for j in range(width):
            scores[b, j] += tie_break[j]
        scores[b, 0] = -np.inf
    return scores
