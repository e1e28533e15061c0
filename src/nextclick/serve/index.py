"""Top-K over the catalogue: exact by default, approximate (faiss HNSW) for large catalogues.

- `ExactTopK`: full scores, then their top K: every model, every catalogue. For inner-product models the
  scores are query_vectors(batch) @ item rows held ready since load (the contract's identity,
  models/base.py), so a request does not rebuild the item table each time (DSAN normalises its 37k x
  100 table on every `score` call: ~5 of its ~15 ms per single request on retailrocket); others call
  the model's own `recommend`. A model with a numpy encoder (DSAN) is served without torch: the scores
  by `item_scores`, then `top_items` (compiled in a served process, `scoring.load_run`).
- `ApproximateTopK`: for inner-product models (those with `query_vectors` and `item_vectors`, whose
  scores are <query, item row>, models/base.py), a faiss HNSW graph over the item rows answers a query
  in O(log n) distance computations instead of n. Worth it from about a million items, where exact
  scoring costs tens of milliseconds per query on a CPU; `measure_recall` gives its recall@K against
  exact, which `nextclick index-bench` records (docs/serving.md).

Both return (B, k) item indices and scores, best first; an approximate index may find fewer than k,
and marks the missing places with index 0 (padding), which callers drop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextclick.data.batches import batch_from_prefixes
from nextclick.models.base import COMPILED_ENV, top_items, use_compiled

# HNSW's graph degree and search breadth. M = 32 and efConstruction = 200 are faiss's own benchmark
# settings for million-scale sets (faiss wiki, "Indexing 1M vectors"); efSearch = 256 is what reached
# recall@20 >= 0.99 on the generated 1M-item catalogue (results/serving/index/, docs/serving.md)
HNSW_NEIGHBOURS = 32
HNSW_BUILD_BREADTH = 200
HNSW_SEARCH_BREADTH = 256


def has_item_vectors(model) -> bool:
    """Inner-product models: scores are <query_vectors(batch), item_vectors()> (models/base.py); not
    a model whose repeat decoder mixes its scores with a repeat distribution."""
    return model.inner_product


class ExactTopK:
    kind = "exact"

    def __init__(self, model):
        self.model = model
        self.items = None
        self.in_numpy = numpy_query_vectors(model)
        if has_item_vectors(model):
            with torch.inference_mode():
                self.items = model.item_vectors().T.contiguous()  # (D, N + 1), row 0 padding

    def top(self, prefixes: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.items is None:
            return self.model.recommend(prefixes, k=k)
        if self.in_numpy is not None:  # no torch call at all: 0.4 against 0.6 ms for a lone query's matmul
            return top_items(item_scores(self.in_numpy(prefixes), self.items.numpy()), min(k, self.model.n_items))
        with torch.inference_mode():
            scores = self.model.query_vectors(batch_from_prefixes(prefixes, self.model.max_length)) @ self.items
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, self.model.n_items), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()


# Up to this many queries, scores are one matrix-vector product per query rather than one matrix product:
# OpenBLAS's sgemm for a (B, 100) @ (100, 37k) product packs the whole item table first, so on DSAN's
# retailrocket catalogue (one thread, queue paused) two queries took 1.7-1.8 ms and four 1.5, against
# 0.3 ms for one; one product per query takes 0.77 ms for two and 1.43 for four. From 8 on, the
# matrix product wins (16 queries: 2.9 ms against 6.7).
ROW_BY_ROW = 4


def item_scores(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(B, D) queries @ (D, N + 1) item columns -> (B, N + 1) scores, row by row for a few queries."""
    if len(queries) > ROW_BY_ROW:
        return queries @ items
    scores = np.empty((len(queries), items.shape[1]), dtype=np.result_type(queries, items))
    for row, query in enumerate(queries):
        np.matmul(query, items, out=scores[row])
    return scores


def compile_ahead() -> None:
    """Compile serving's numba code (DSAN's encoder, the compiled top_items, STAN's scores) into numba's
    cache, so that a service's first start does not spend 10-30 s compiling (`make install` runs this).
    STAN's is compiled for a checkpoint's arrays as `checkpoint.load` gives them: the types, not the
    values, select the compiled code."""
    import tempfile

    from nextclick import checkpoint
    from nextclick.data.sessions import Vocab
    from nextclick.data.synthetic import SyntheticConfig, generate
    from nextclick.models import build
    from nextclick.models.dsan import compile_ahead as compile_dsan

    compile_dsan()
    if not use_compiled():
        raise RuntimeError(f"numba is not installed, or {COMPILED_ENV}=0: nothing to compile")
    top_items(np.zeros((1, 3), dtype=np.float32), 1)
    split = generate(SyntheticConfig(n_items=20, n_sessions=50)).split
    stan = build("stan", split.n_items)
    stan.prepare(split.train)
    stan.fit(split.train_cases())
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(directory, stan, Vocab(np.arange(split.n_items + 1)), split.protocol, split.name)
        checkpoint.load(directory)[0].recommend([np.array([1, 2, 1])], k=3)


class ApproximateTopK:
    """An HNSW graph (inner product) over rows 1..N of `item_vectors()`; queries from `query_vectors`."""

    kind = "hnsw"

    def __init__(self, model, search_breadth: int = HNSW_SEARCH_BREADTH, cache_dir: str | Path | None = None):
        if not has_item_vectors(model):
            raise ValueError(f"{model.name} scores are not inner products of query and item vectors: "
                             "it has no approximate index (use --index exact)")
        self.model = model
        with torch.inference_mode():
            items = np.ascontiguousarray(model.item_vectors()[1:].float().cpu().numpy())  # (N, D), row 0 is padding
        self.index = cached_hnsw(items, Path(cache_dir)) if cache_dir is not None else build_hnsw(items)
        self.index.hnsw.efSearch = max(search_breadth, 1)
        self.in_numpy = numpy_query_vectors(model)

    def top(self, prefixes: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            queries = query_vectors(self.model, prefixes, self.in_numpy).float().cpu().numpy()  # (B, D)
        return search(self.index, queries, min(k, self.model.n_items))


def numpy_query_vectors(model):
    """The model's `query_vectors` in numpy (`numpy_query_vectors()`, DSAN's), else None."""
    make = getattr(model, "numpy_query_vectors", None)
    return make() if make is not None else None


def query_vectors(model, prefixes: list[np.ndarray], in_numpy=None) -> torch.Tensor:
    """(B, D) query vectors of the prefixes (item indices), by the model's numpy encoder where it has one:
    a serving batch holds at most --max-batch (16) sessions, and for those torch's time is mostly
    per-operator overhead (DSAN: docs/serving.md)."""
    if in_numpy is not None:
        return torch.from_numpy(in_numpy(prefixes))
    return model.query_vectors(batch_from_prefixes(prefixes, model.max_length))


def build_hnsw(items: np.ndarray, search_breadth: int = HNSW_SEARCH_BREADTH):
    """An inner-product HNSW index over `items` (N, D); faiss id j is item index j + 1."""
    import faiss

    index = faiss.IndexHNSWFlat(items.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_BUILD_BREADTH
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    index.hnsw.efSearch = max(search_breadth, 1)
    return index


def cached_hnsw(items: np.ndarray, cache_dir: Path):
    """The HNSW index of `items` from `cache_dir` when it was built before, else built and saved there
    (temporary file, then rename): a million items take minutes to index, and every start of the
    service would pay them. The file is named after a hash of the item vectors and the build settings,
    so new weights never meet an old index."""
    import hashlib
    import os

    import faiss

    digest = hashlib.sha256(items.tobytes()).hexdigest()[:20]
    path = cache_dir / f"hnsw-{digest}-{items.shape[0]}x{items.shape[1]}-M{HNSW_NEIGHBOURS}-ef{HNSW_BUILD_BREADTH}.faiss"
    if path.is_file():
        return faiss.read_index(str(path))
    index = build_hnsw(items)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(partial))
    os.replace(partial, path)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) item indices (0 where fewer than k were found) and scores, best first."""
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.where(ids >= 0, ids + 1, 0), scores


def exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(B, k) item indices (1-based) of the largest inner products, by brute force in torch."""
    scores = torch.from_numpy(queries) @ torch.from_numpy(items).T  # (B, N)
    return torch.topk(scores, k, dim=1).indices.numpy() + 1


@dataclass(frozen=True)
class RecallMeasure:
    search_breadth: int  # HNSW efSearch
    recall: float  # share of the exact top-k found by the index, over all queries
    k: int
    queries: int
    approximate_ms_per_query: float  # one query at a time, as a request is served
    exact_ms_per_query: float  # the same queries in batches of 64, brute force


def measure_recall(items: np.ndarray, queries: np.ndarray, k: int = 20,
                   search_breadths: tuple[int, ...] = (HNSW_SEARCH_BREADTH,)) -> tuple[float, list[RecallMeasure]]:
    """(seconds to build, recall@k and time per query at each search breadth) of one HNSW index over
    `items`, against brute force."""
    start = time.perf_counter()
    index = build_hnsw(items)
    build = time.perf_counter() - start
    start = time.perf_counter()
    exact = np.concatenate([exact_top(items, queries[i : i + 64], k) for i in range(0, len(queries), 64)])
    brute = 1000 * (time.perf_counter() - start) / len(queries)
    measures = []
    for breadth in search_breadths:
        index.hnsw.efSearch = breadth
        start = time.perf_counter()
        found = np.concatenate([search(index, queries[i : i + 1], k)[0] for i in range(len(queries))])
        approximate = 1000 * (time.perf_counter() - start) / len(queries)
        hits = sum(len(np.intersect1d(f, e)) for f, e in zip(found, exact))
        measures.append(RecallMeasure(search_breadth=breadth, recall=hits / (k * len(queries)), k=k,
                                      queries=len(queries), approximate_ms_per_query=approximate,
                                      exact_ms_per_query=brute))
    return build, measures


def generated_catalogue(n_items: int, dim: int, n_queries: int, seed: int = 0,
                        clusters: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors and queries shaped like a trained item table: items around `clusters` centres
    (categories), norms spread as popularity spreads them, and queries near items (a session vector
    sits near the items it clicked). Uniform random vectors would be easier to make and harder than
    any trained table: their nearest neighbours are all nearly equally far."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    items = centres[rng.integers(0, clusters, n_items)] + 0.6 * rng.standard_normal((n_items, dim)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.25, (n_items, 1)).astype(np.float32)
    anchors = items[rng.integers(0, n_items, n_queries)]
    queries = anchors + 0.5 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return items, queries.astype(np.float32)
