"""Repeat calibration: a few weights, fitted after training on held-out validation cases, that move a
trained model's scores of the session's own items up or down.

Why. A model learns how often a session's next click repeats one of its items on the cases it trains
on, where it fits them better than it will fit unseen sessions. On held-out cases the balance between
the session's items and the rest of the catalogue can be off, in either direction, and by how much
depends on the session (a session of one item clicked again and again repeats; one of distinct items
rarely does). The largest lever docs/repeat.md found was this choice (an oracle for it lifts
yoochoose1_64's best MRR@20 from 31.9 to 34); this fits it on data the model has not trained on.

What. For each distinct item j among the last WINDOW clicks of a session, the score s_j becomes
s_j + w . f_j, with f_j:
    1, log(clicks on j), [j clicked twice or more],
    [j's last click is the last click], [... the one before], [... 3rd last], [... 4th last],
    [... 5th to 10th last], [... earlier],
    log(clicks in the window), distinct items / clicks in the window,
    the model's log-probability of its top item (its softmax over the catalogue), alone and times the
    share of distinct items (the session's, the same for each of its items).
Every other item keeps its score. w (FEATURES numbers) is fitted on validation cases (the model frozen)
to minimise the cross-entropy of softmax(T s + w . f) for a temperature T from TEMPERATURES, the best
pair kept as w / T (the same ranking with the model's own scores). The temperature matters: a model
trained to scores sharper or flatter than held-out data supports (DSAN's cosine scale w_k = 20 is such a
case) would otherwise have its bonus fitted against the wrong scale, which lowered DSAN's validation
HR@20 and MRR@20 while its cross-entropy fell. w = 0 at T = 1, the model unchanged, is kept unless the fit
beats it on validation's cross-entropy. The softmax's normaliser needs only each case's log-sum-exp of
the rest of the catalogue at each T and its session items' scores, so the fit costs one pass of the
model over validation and then seconds.

This reads like RepeatNet's repeat/explore mode with the modes' probabilities per session set by the
session's statistics, but fitted on held-out cases after training instead of learned jointly (see
docs/repeat.md, "Repeat calibration"). It applies to any model's scores, with or without the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WINDOW = 50  # clicks read for the features: every published split's median prefix is far shorter
FEATURES = ("constant", "log_count", "clicked_twice", "last", "second_last", "third_last", "fourth_last",
            "fifth_to_tenth_last", "earlier", "log_window_clicks", "distinct_share",
            "top_log_probability", "top_log_probability_x_distinct_share")


def repeat_features(items: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-aligned clicks (B, L), 0 = padding, and the model's scores (B, n_items + 1) of those sessions
    -> (items, distinct, features) over the last WINDOW clicks: items (B, W) those clicks, distinct (B, W)
    True at each item's most recent click (one place per distinct item), features (B, W, len(FEATURES)),
    zero where `distinct` is False. The last two features are the session's, not the item's: how sure the
    model is of its first choice (the log-probability its softmax gives its top item, padding excluded),
    alone and times the share of distinct items: a session whose model is sure of a new item wants its
    own items moved less."""
    items = torch.nn.functional.pad(items[:, -WINDOW:], (max(0, WINDOW - items.shape[1]), 0))
    batch, width = items.shape
    real = items != 0
    same = (items.unsqueeze(2) == items.unsqueeze(1)) & real.unsqueeze(1) & real.unsqueeze(2)  # (B, W, W)
    later = torch.ones(width, width, dtype=torch.bool, device=items.device).triu(1)
    distinct = real & ~(same & later).any(dim=2)  # no later click of the same item
    count = same.sum(dim=2).clamp(min=1).float()
    back = (width - 1 - torch.arange(width, device=items.device)).expand(batch, width)  # 0 = the last click
    clicks = real.sum(dim=1, keepdim=True).clamp(min=1).float().expand(batch, width)
    distinct_items = distinct.sum(dim=1, keepdim=True).float().expand(batch, width)
    candidates = scores.float()[:, 1:]
    top = (candidates.max(dim=1).values - torch.logsumexp(candidates, dim=1)).unsqueeze(1).expand(batch, width)
    share = distinct_items / clicks
    columns = [torch.ones_like(count), count.log(), (count >= 2).float(),
               *[(back == k).float() for k in range(4)], ((back >= 4) & (back < 10)).float(), (back >= 10).float(),
               clicks.log(), share, top, top * share]
    features = torch.stack(columns, dim=2) * distinct.unsqueeze(2)
    return items, distinct, features


@dataclass(frozen=True)
class RepeatCalibration:
    """The fitted weights, one per name in FEATURES."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES) or not all(np.isfinite(self.weights)):
            raise ValueError(f"a repeat calibration has {len(FEATURES)} finite weights ({', '.join(FEATURES)}); "
                             f"got {list(self.weights)}")

    def apply(self, scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """scores (B, n_items + 1) of the sessions whose right-aligned clicks are `items` (B, L) -> the
        calibrated scores (a new tensor; padding's column untouched)."""
        window, distinct, features = repeat_features(items.to(scores.device), scores)
        bonus = (features @ torch.tensor(self.weights, dtype=scores.dtype, device=scores.device)) * distinct
        return scores.clone().scatter_add_(1, window, bonus.to(scores.dtype))

    def bonuses(self, scores: torch.Tensor, items: torch.Tensor) -> list[dict[int, float]]:
        """What `apply` adds, per session: {item index: bonus} for each distinct item of its window (what
        `nextclick explain` shows of a calibrated run)."""
        window, distinct, features = repeat_features(items.to(scores.device), scores)
        bonus = features @ torch.tensor(self.weights, dtype=features.dtype, device=features.device)
        return [{int(window[row, j]): float(bonus[row, j]) for j in distinct[row].nonzero().flatten().tolist()}
                for row in range(len(window))]

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": list(self.weights), "window": WINDOW}  # exact: JSON keeps every digit

    @classmethod
    def from_dict(cls, data: dict) -> RepeatCalibration:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"this repeat calibration names features {data.get('features')}; this version of "
                             f"nextclick computes {list(FEATURES)}")
        return cls(tuple(float(w) for w in data["weights"]))


TEMPERATURES = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # steps of sqrt(2) around the model's own scale


@dataclass
class _ValidationTerms:
    """What the fit needs of each validation case: at each of TEMPERATURES the log-sum-exp of the
    model's scaled scores over the items that get no bonus (the catalogue less the session's window),
    the target's score, and per distinct session item its score, features and whether it is the target."""

    rest_log_normaliser: torch.Tensor  # (C, len(TEMPERATURES))
    target_score: torch.Tensor  # (C,)
    item_scores: torch.Tensor  # (C, W), -inf where no distinct item
    features: torch.Tensor  # (C, W, F)
    is_target: torch.Tensor  # (C, W) bool

    def select(self, rows: torch.Tensor) -> _ValidationTerms:
        return _ValidationTerms(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


def _terms(score, batches) -> _ValidationTerms:
    parts = []
    for batch in batches:
        scores = score(batch).float()
        window, distinct, features = repeat_features(batch.items.to(scores.device), scores)
        labels = batch.labels.to(scores.device)
        rest = scores.clone()
        rest[:, 0] = -torch.inf  # padding never counts
        rest.scatter_(1, window, -torch.inf)  # the window's items (padding's 0 included) are summed apart
        parts.append((torch.stack([torch.logsumexp(t * rest, dim=1) for t in TEMPERATURES], dim=1),
                      scores.gather(1, labels.unsqueeze(1)).squeeze(1),
                      scores.gather(1, window).masked_fill(~distinct, -torch.inf), features,
                      distinct & (window == labels.unsqueeze(1))))
    return _ValidationTerms(*(torch.cat(columns) for columns in zip(*parts)))


def _cross_entropy(terms: _ValidationTerms, temperature: int, weights: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the softmax of T * s + w . f (T = TEMPERATURES[temperature]): the
    normaliser is the log-sum-exp of the rest of the catalogue's and the session items' terms, each
    computed apart, so no mass is ever subtracted (no cancellation however much the session holds)."""
    scale = TEMPERATURES[temperature]
    logits = (scale * terms.item_scores + terms.features @ weights)  # (C, W), -inf where no distinct item
    log_normaliser = torch.logsumexp(torch.cat([terms.rest_log_normaliser[:, temperature:temperature + 1], logits],
                                               dim=1), dim=1)
    in_window = terms.is_target.any(dim=1)
    target = torch.where(in_window, logits.masked_fill(~terms.is_target, 0.0).sum(dim=1), scale * terms.target_score)
    return (log_normaliser - target).mean()


def fit_repeat_calibration(score, batches, max_iterations: int = 200) -> tuple[RepeatCalibration, dict]:
    """Fit on validation `batches` (Batch objects with labels) scored by `score` (a frozen model's
    `score`); returns the calibration and a record of the fit (cases, cross-entropy before and after, the
    temperature chosen). For each of TEMPERATURES, w minimises the cross-entropy of softmax(T s + w . f)
    (L-BFGS from w = 0, float64); the pair with the lowest cross-entropy is kept as w / T, which ranks
    every session as T s + w . f does. The temperature lets the bonus be measured against scores on the
    scale held-out data wants (a model trained to sharp or flat scores), not on the training scale."""
    with torch.inference_mode():
        terms = _terms(score, batches)
    terms = _ValidationTerms(*(t.clone().double() if t.is_floating_point() else t.clone()
                               for t in (terms.rest_log_normaliser, terms.target_score, terms.item_scores,
                                         terms.features, terms.is_target)))
    known = torch.isfinite(terms.target_score)  # a target the model gives -inf cannot be fitted
    terms = terms.select(known)
    if not len(terms.target_score):
        raise ValueError("no validation case with a finite target score to fit a repeat calibration on")
    plain = TEMPERATURES.index(1.0)
    with torch.no_grad():
        before = float(_cross_entropy(terms, plain, torch.zeros(len(FEATURES), dtype=torch.float64)))
    fits = {}
    for temperature, scale in enumerate(TEMPERATURES):
        weights = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=max_iterations, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = _cross_entropy(terms, temperature, weights)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            loss = float(_cross_entropy(terms, temperature, weights))
        if np.isfinite(loss) and torch.isfinite(weights).all():
            fits[scale] = (loss, weights.detach() / scale)
    scale = min(fits, key=lambda t: fits[t][0]) if fits else 1.0
    after, weights = fits.get(scale, (before, None))
    if after > before or weights is None:  # never worse than the model as it is
        scale, after, weights = 1.0, before, torch.zeros(len(FEATURES), dtype=torch.float64)
    calibration = RepeatCalibration(tuple(float(w) for w in weights))
    return calibration, {"cases": int(known.sum()), "cases_skipped": int((~known).sum()),
                         "valid_cross_entropy_before": round(before, 6), "valid_cross_entropy_after": round(after, 6),
                         "temperature": scale,
                         "valid_cross_entropy_by_temperature": {str(t): round(fit[0], 6) for t, fit in fits.items()}}
