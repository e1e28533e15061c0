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
Every other item keeps its score. w (FEATURES numbers) is fitted on validation cases (the model frozen;
runs/calibrate.py, which the evaluator's layer owns, as it owns every use of validation) to minimise the cross-entropy of softmax(T s + w . f) for a temperature T from TEMPERATURES, the best
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

    def _bonus(self, scores: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(window items (B, W), distinct (B, W), bonus (B, W): w . f, 0 where not distinct)."""
        window, distinct, features = repeat_features(items.to(scores.device), scores)
        bonus = (features @ torch.tensor(self.weights, dtype=features.dtype, device=features.device)) * distinct
        return window, distinct, bonus

    def apply(self, scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """scores (B, n_items + 1) of the sessions whose right-aligned clicks are `items` (B, L) -> the
        calibrated scores (a new tensor; padding's column untouched)."""
        window, _, bonus = self._bonus(scores, items)
        return scores.clone().scatter_add_(1, window, bonus.to(scores.dtype))

    def bonuses(self, scores: torch.Tensor, items: torch.Tensor) -> list[dict[int, float]]:
        """What `apply` adds, per session: {item index: bonus} for each distinct item of its window (what
        `nextclick explain` shows of a calibrated run)."""
        window, distinct, bonus = self._bonus(scores, items)
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
