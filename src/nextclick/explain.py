"""Explanations for attention models: which clicks a recommendation rests on.

For DSAN: the self-attention matrix over [clicks..., target token], the target-attention weight of
each click, and both adaptive alphas. Exact zeros (alpha-entmax drops a click entirely) are drawn in
plain grey, as in the DSAN technical appendix's Figures 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Vocab


@dataclass
class Explanation:
    items: list[int]  # external ids, oldest first
    self_attention: np.ndarray  # (L+1, L+1): rows are queries (clicks, then the target token)
    target_attention: np.ndarray  # (L,) weight of each click in the session representation
    alpha_self: float
    alpha_target: float
    recommendations: list[dict]

    def to_dict(self) -> dict:
        return {
            "items": self.items,
            "labels": [str(i) for i in self.items] + ["target"],
            "self_attention": np.round(self.self_attention, 6).tolist(),
            "target_attention": np.round(self.target_attention, 6).tolist(),
            "zero_weight_clicks": [int(i) for i, w in zip(self.items, self.target_attention) if w == 0.0],
            "alpha_self": round(self.alpha_self, 6),
            "alpha_target": round(self.alpha_target, 6),
            "recommendations": self.recommendations,
        }


def explain(model, vocab: Vocab, external_items: list[int], k: int = 10) -> Explanation:
    if not hasattr(model, "attention"):
        raise ValueError(f"{model.name} has no attention to explain (attention models: dsan)")
    if not external_items:
        raise ValueError("an empty session has nothing to explain: give at least one item id")
    indices = vocab.encode(external_items)
    batch = batch_from_prefixes([indices], model.max_length)
    attention = model.attention(batch)
    kept = int(batch.lengths[0])
    top, scores = model.recommend([indices], k=k)
    return Explanation(
        items=[int(i) for i in external_items[-kept:]],
        self_attention=attention.self_attention[0].numpy(),
        target_attention=attention.target_attention[0].numpy(),
        alpha_self=float(attention.alpha_self[0]),
        alpha_target=float(attention.alpha_target[0]),
        recommendations=[{"item": int(i), "score": float(s)} for i, s in zip(vocab.decode(top[0]), scores[0])],
    )


def plot(explanation: Explanation, path: str | Path) -> Path:
    """Heatmaps of both attentions; exact zeros in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = [str(i) for i in explanation.items]
    n = len(labels)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#b0b0b0")  # exact zeros are masked -> grey
    size = max(4.0, 0.45 * n + 2)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(size + 1.5, size + 1.6),
                                         gridspec_kw={"height_ratios": [n + 1, 1.6]})
    matrix = np.ma.masked_equal(explanation.self_attention, 0.0)
    image = top.imshow(matrix, cmap=cmap, vmin=0, vmax=max(1e-9, float(explanation.self_attention.max())))
    top.set_xticks(range(n + 1), labels + ["target"], rotation=90, fontsize=8)
    top.set_yticks(range(n + 1), labels + ["target"], fontsize=8)
    top.set_xlabel("key (clicked item)")
    top.set_ylabel("query")
    top.set_title(f"sparse self-attention (alpha = {explanation.alpha_self:.3f}); grey = exactly 0", fontsize=9)
    figure.colorbar(image, ax=top, fraction=0.046, pad=0.04)
    row = np.ma.masked_equal(explanation.target_attention[None, :], 0.0)
    bottom.imshow(row, cmap=cmap, vmin=0, vmax=max(1e-9, float(explanation.target_attention.max())), aspect="auto")
    bottom.set_xticks(range(n), labels, rotation=90, fontsize=8)
    bottom.set_yticks([])
    for j, weight in enumerate(explanation.target_attention):
        bottom.text(j, 0, f"{weight:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if weight < 0.6 * explanation.target_attention.max() else "black")
    bottom.set_title(f"target attention per click (alpha = {explanation.alpha_target:.3f})", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
