"""PNG figures made from loaded results: metrics by prefix length (NARM Table 5, SR-IEM Figure 2) and
validation curves. matplotlib is imported when a figure is drawn, not before (it is an extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nextclick import atomic
from nextclick.report.load import label
from nextclick.report.tables import DEFAULT_METRICS, bucket_start


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(figure, axis) -> None:
    """One legend under the panels, a line per result: run ids are long (every non-default setting),
    and a legend inside the axes would cover the curves. Saving with bbox_inches="tight" makes room."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False)


def plot_by_length(results: Sequence[dict], path: str | Path, metrics: Sequence[str] = DEFAULT_METRICS,
                   title: str | None = None) -> Path:
    """PNG: one panel per metric, one line per result over prefix lengths 1..19 and 20+, with the
    number of test cases per length as grey bars on a second axis."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(results[0]["test_by_length"], key=bucket_start)
    positions = list(range(len(keys)))
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        counts = axis.twinx()
        counts.bar(positions, [results[0]["test_by_length"][k]["cases"] for k in keys], color="0.88", zorder=0)
        counts.set_ylabel("test cases", color="0.5")
        counts.tick_params(axis="y", colors="0.5")
        axis.set_zorder(counts.get_zorder() + 1)
        axis.patch.set_visible(False)
        for result in results:
            table = result["test_by_length"]
            axis.plot(positions, [100 * table[k][metric] if k in table else float("nan") for k in keys],
                      marker="o", markersize=3, label=result.get("_label") or label(result))
        ticks = [i for i, k in enumerate(keys) if k.endswith("+") or bucket_start(k) in (1, 5, 10, 15)]
        axis.set_xticks(ticks)
        axis.set_xticklabels([keys[i] for i in ticks])
        axis.set_xlabel("prefix length (clicks before the target)")
        axis.set_ylabel(f"{metric} (%)")
        axis.grid(alpha=0.3)
    dataset = results[0].get("dataset", "")
    figure.suptitle(title or f"{dataset}: test {', '.join(metrics)} by prefix length")
    figure.tight_layout()
    _legend_below(figure, axes[0][0])
    _save_png(figure, path)
    plt.close(figure)
    return path


def plot_history(results: Sequence[dict], path: str | Path, metric: str = "HR@20") -> Path:
    """PNG: validation `metric` per epoch for each result that trained in epochs (selected epoch marked);
    results without a per-epoch history (the statistical models) are left out of the legend too."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        history = [h for h in result.get("history", []) if metric in h.get("valid", {})]
        if not history:
            continue
        line, = axis.plot([h["epoch"] for h in history], [100 * h["valid"][metric] for h in history], marker="o",
                          markersize=3, label=f"{result.get('_label') or label(result)} ({result.get('dataset', '')})")
        chosen = [h for h in history if h["epoch"] == result.get("selected_epoch")]
        if chosen:
            axis.plot([chosen[0]["epoch"]], [100 * chosen[0]["valid"][metric]], marker="*", markersize=12,
                      color=line.get_color())
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation {metric} (%)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _legend_below(figure, axis)
    _save_png(figure, path)
    plt.close(figure)
    return path


def _save_png(figure, path) -> None:
    """The figure drawn in memory, then written in one step (nextclick.atomic): never half an image."""
    atomic.write_figure(path, figure, dpi=120, bbox_inches="tight")
