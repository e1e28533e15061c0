"""Explanations for attention models: which clicks a recommendation rests on.

Every attention model gives the weight of each click in its session representation
(`click_weights`): DSAN its target attention, SR-IEM its importance beta, NARM its local attention.
DSAN and SR-IEM also give a click-by-click matrix (DSAN's self-attention over [clicks..., target
token], SR-IEM's affinity C), and DSAN both adaptive alphas. Exact zeros (alpha-entmax drops a click
entirely; SR-IEM's masked diagonal) are drawn in plain grey, as in the DSAN technical appendix's
Figures 1 and 2. `summarise` reads the weights of every case of a test set: how far they are from
uniform, how much goes to the last click, how many clicks get none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextclick import atomic
from nextclick.data.batches import batch_from_prefixes, iterate_batches
from nextclick.data.sessions import Cases, Vocab
from nextclick.models.base import check_k


@dataclass
class Explanation:
    model: str
    items: list[int]  # external ids of the clicks the model read, oldest first
    weights: np.ndarray  # (L,) each click's weight in the session representation
    weights_name: str
    pairs: np.ndarray | None  # (L + len(extra), L + len(extra)), rows = queries
    pairs_name: str
    extra: list[str]  # labels of the rows and columns of `pairs` after the clicks
    scalars: dict[str, float]
    recommendations: list[dict]
    # a calibrated run's score bonus for each distinct item of the session (models/calibration.py), else None
    calibration_bonus: dict[int, float] | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "items": self.items,
            "weights_name": self.weights_name,
            "weights": np.round(self.weights, 6).tolist(),
            "zero_weight_clicks": [int(i) for i, w in zip(self.items, self.weights) if w == 0.0],
            "pairs_name": self.pairs_name or None,
            "pair_labels": [str(i) for i in self.items] + self.extra if self.pairs is not None else None,
            "pairs": np.round(self.pairs, 6).tolist() if self.pairs is not None else None,
            **{name: round(value, 6) for name, value in self.scalars.items()},
            "recommendations": self.recommendations,
            **({"calibration_bonus": {str(i): round(b, 6) for i, b in self.calibration_bonus.items()}}
               if self.calibration_bonus is not None else {}),
        }


def attention_models() -> list[str]:
    from nextclick.models import REGISTRY

    return sorted(name for name, cls in REGISTRY.items() if hasattr(cls, "click_weights"))


def require_attention(model) -> None:
    if not hasattr(model, "click_weights"):
        raise ValueError(f"{model.name} has no attention to explain (attention models: {', '.join(attention_models())})")


def explain(model, vocab: Vocab, external_items: list[int], k: int = 10) -> Explanation:
    require_attention(model)
    if not external_items:
        raise ValueError("an empty session has nothing to explain: give at least one item id")
    check_k(k)
    indices = vocab.encode(external_items)
    read = model.click_weights(batch_from_prefixes([indices], model.max_length))
    items = read.items[0].cpu().numpy()
    kept = np.flatnonzero(items != 0)  # positions of the clicks the model read, in their order
    pairs = None
    if read.pairs is not None:
        rows = np.concatenate([kept, len(items) + np.arange(len(read.extra))])
        pairs = read.pairs[0].cpu().numpy()[np.ix_(rows, rows)]
    top, scores = model.recommend([indices], k=k)
    bonus = None
    if getattr(model, "calibration", None) is not None:  # what the saved repeat calibration adds per session item
        batch = batch_from_prefixes([indices], model.max_length)
        with model.evaluating():
            raw = model(batch.to(model.device))[0]  # the model's own scores, which the features read
        by_index = model.calibration.bonuses(raw, batch.items)[0]
        bonus = dict(zip(vocab.decode(np.array(list(by_index))).tolist(), by_index.values()))
    return Explanation(
        model=model.name,
        items=[int(i) for i in vocab.decode(items[kept])],
        weights=read.weights[0].cpu().numpy()[kept],
        weights_name=read.name,
        pairs=pairs,
        pairs_name=read.pairs_name,
        extra=list(read.extra),
        scalars={name: float(value[0]) for name, value in read.scalars.items()},
        recommendations=[{"item": int(i), "score": float(s)} for i, s in zip(vocab.decode(top[0]), scores[0])],
        calibration_bonus=bonus,
    )


def summarise(model, cases: Cases, batch_size: int = 1000, progress: bool = False) -> dict:
    """How a model spreads its click weights over the cases (`nextclick explain --test`).

    Session-level figures count sessions of two clicks or more (one click always takes weight 1).
    peak_over_uniform = t * (largest weight of a session of t clicks): 1 when the weights are uniform
    (average pooling), t when one click takes everything; quantiles over sessions of two clicks or more."""
    require_attention(model)
    clicks = zeros = uniform = sessions = 0
    deviation, last, peaks, scalars, name = 0.0, 0.0, [], {}, None
    from tqdm.auto import tqdm

    from nextclick.runtime import progress_interval

    bar = tqdm(total=len(cases), desc="click weights", unit="case", disable=not progress, leave=False,
               mininterval=progress_interval())
    for batch in iterate_batches(cases, batch_size, model.max_length):
        read = model.click_weights(batch)
        name = read.name
        bar.update(len(batch))
        real = (read.items != 0).cpu()
        weights = read.weights.cpu().masked_fill(~real, 0.0)  # (B, L)
        t = real.sum(dim=1)  # (B,) clicks read
        gap = ((weights - 1.0 / t.unsqueeze(1)).abs() * real).amax(dim=1)  # (B,) largest distance from 1/t
        last_position = (real * torch.arange(1, real.shape[1] + 1)).argmax(dim=1)  # (B,) the most recent click, any alignment
        several = t >= 2
        clicks += int(t.sum())
        zeros += int(((weights == 0) & real).sum())
        deviation = max(deviation, float(gap.max()))
        last += float(weights.gather(1, last_position.unsqueeze(1)).squeeze(1)[several].sum())
        sessions += int(several.sum())
        uniform += int((several & (gap < 1e-6)).sum())
        peaks.append((weights.amax(dim=1) * t)[several].numpy())
        for scalar, value in read.scalars.items():
            scalars[scalar] = scalars.get(scalar, 0.0) + float(value.sum())
    bar.close()
    peak = np.concatenate(peaks) if peaks else np.zeros(0)
    quantile = (lambda q: round(float(np.quantile(peak, q)), 4)) if len(peak) else (lambda q: None)
    return {
        "model": model.name, "cases": len(cases), "clicks_read": clicks,
        "weights_name": name,
        "zero_weight_share": round(zeros / max(clicks, 1), 6),
        "last_click_mean_weight": round(last / max(sessions, 1), 6),  # sessions of two clicks or more
        "largest_distance_from_uniform": round(deviation, 6),
        "sessions_of_two_or_more_clicks": sessions,
        "uniform_share": round(uniform / max(sessions, 1), 6),  # every weight within 1e-6 of 1/t
        "peak_over_uniform": {"median": quantile(0.5), "p90": quantile(0.9), "max": quantile(1.0)},
        **{f"mean_{scalar}": round(total / max(len(cases), 1), 6) for scalar, total in scalars.items()},
    }


def plot(explanation: Explanation, path: str | Path) -> Path:
    """Heatmaps of the click-by-click matrix (if the model has one) and of the weight of each click;
    exact zeros in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = [str(i) for i in explanation.items]
    n = len(labels)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#b0b0b0")  # exact zeros are masked -> grey
    size = max(4.0, 0.45 * n + 2)
    if explanation.pairs is not None:
        side = n + len(explanation.extra)
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(size + 1.5, size + 1.6),
                                             gridspec_kw={"height_ratios": [side, 1.6]})
        ticks = labels + explanation.extra
        shown = np.ma.masked_equal(explanation.pairs, 0.0)
        # the colours span the non-zero values: SR-IEM's affinities all lie near sigmoid's middle
        image = top.imshow(shown, cmap=cmap, vmin=float(shown.min()) if shown.count() else 0.0,
                           vmax=max(1e-9, float(explanation.pairs.max())))
        top.set_xticks(range(side), ticks, rotation=90, fontsize=8)
        top.set_yticks(range(side), ticks, fontsize=8)
        top.set_xlabel("key (clicked item)")
        top.set_ylabel("query")
        top.set_title(f"{explanation.pairs_name}; grey = exactly 0", fontsize=9)
        figure.colorbar(image, ax=top, fraction=0.046, pad=0.04)
    else:
        figure, bottom = plt.subplots(1, 1, figsize=(size + 1.5, 2.2))
    weights = explanation.weights
    bottom.imshow(np.ma.masked_equal(weights[None, :], 0.0), cmap=cmap, vmin=0,
                  vmax=max(1e-9, float(weights.max())), aspect="auto")
    bottom.set_xticks(range(n), labels, rotation=90, fontsize=8)
    bottom.set_yticks([])
    for j, weight in enumerate(weights):
        bottom.text(j, 0, f"{weight:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if weight < 0.6 * weights.max() else "black")
    bottom.set_title(f"{explanation.weights_name} per click", fontsize=9)
    scalars = ", ".join(f"{name} = {value:.3f}" for name, value in explanation.scalars.items())
    figure.suptitle(explanation.model + (f" ({scalars})" if scalars else ""), fontsize=10)
    figure.tight_layout()
    atomic.write_figure(path, figure, dpi=120)  # drawn in memory, written in one step
    plt.close(figure)
    return path
