"""One manifest per paper, plain data: each table and figure, the runs it needs (model, dataset, the
settings that differ from the defaults, seeds), where its published numbers are (nextclick.published)
and how it is drawn (`kind`). nextclick.reproduce reads them; nothing here computes.

Item kinds: `metrics` (rows x datasets, ours beside the published number), `speed` (seconds per epoch),
`by_length` (metrics by prefix length, a table and a PNG), `sweep` (one setting varied, a PNG),
`explain` (figures `nextclick explain` writes from a checkpoint). A row's `by_dataset` replaces its keys
on that dataset; `model: None` is a row of the paper that nextclick does not implement.
"""

from nextclick.reproduce.manifests import dsan, narm, sriem

PAPERS: dict[str, dict] = {"dsan": dsan.PAPER, "sriem": sriem.PAPER, "narm": narm.PAPER}
