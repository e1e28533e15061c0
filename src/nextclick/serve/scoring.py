"""A served run and the one thread that scores with it.

`load_run` reads a checkpoint directory with `nextclick.checkpoint.load`, as `nextclick recommend`
does, and keeps what every request needs ready: the model, its vocabulary (sorted once, for lookups), and a
top-K strategy (serve/index.py). `answer` turns a batch of queries (raw item ids) into recommendations.

`Scorer` runs `answer` on its own thread. Requests queue for it (at most `max_pending`; one more is
refused at once with `Overloaded`); each time it is free it takes everything queued, up to `max_batch`,
and scores it in one model call, so a burst costs one batched forward pass rather than one per
request, and a lone request waits for nothing. `swap` replaces the run between two batches: requests
already taken finish on the run they started with, later ones get the new one, none is dropped.
`InlineScorer` keeps the same promises on the event loop itself (`nextclick serve --scorer inline`):
no thread hand-over and no GIL passed back and forth per request, but the loop reads no request while it
scores.

Unknown item ids (not in the run's vocabulary) are ignored and reported back in `unknown_items`; a
session none of whose items is known has nothing to score from, which is an error (422).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Vocab
from nextclick.models.base import compiled_in_use, use_compiled
from nextclick.serve.index import ApproximateTopK, ExactTopK
from nextclick.serve.limits import ServeLimits


class Overloaded(Exception):
    """The scoring queue is full: answer 503 now rather than later."""


class NothingKnown(ValueError):
    """None of a session's items is in the run's catalogue."""


def known_items(vocab: Vocab, external: list[int]) -> tuple[np.ndarray, list[int]]:
    """(indices of the known ids in click order, the unknown ids in click order): serving ignores and
    reports unknown ids where `Vocab.encode` refuses them. The vocabulary is sorted once (Vocab caches
    it), so a request costs a binary search per click."""
    values = np.asarray(external, dtype=np.int64)
    indices, known = vocab.lookup(values)
    return indices[known], values[~known].tolist()


@dataclass(frozen=True)
class ServedRun:
    path: str
    model: object
    meta: dict
    vocab: Vocab  # the run's: external ids <-> indices
    top_k: ExactTopK | ApproximateTopK
    loaded_at: float  # time.time()

    @property
    def has_click_weights(self) -> bool:
        return hasattr(self.model, "click_weights")

    def describe(self) -> dict:
        return {"run": self.path, "model": self.model.name, "n_items": self.model.n_items,
                "dataset": self.meta.get("dataset"), "index": self.top_k.kind,
                "click_weights": self.has_click_weights, "serving_overrides": self.meta.get("serving_overrides"),
                "compiled": compiled_in_use(),  # numba's forms on (base.use_compiled), or numpy's array calls
                "calibrated": getattr(self.model, "calibration", None) is not None,  # calibration.json (docs/repeat.md)
                "loaded_at": self.loaded_at}


def load_run(path: str | Path, index: str = "exact", threads: int = 1, overrides: dict | None = None,
             index_cache: str | Path | None = None) -> ServedRun:
    """A checkpoint directory made ready to serve. `index`: exact, or hnsw for inner-product models (kept
    in `index_cache` between starts when given); `overrides`: config values changed for serving (see
    `with_config`), on top of the model's own `serving_config` (the same scores, computed faster)."""
    from threadpoolctl import threadpool_limits

    from nextclick import checkpoint

    torch.set_num_threads(threads)
    use_compiled()  # every model's top K (models/top_compiled.py), where numba is installed
    model, vocab, meta = checkpoint.load(path)
    overrides = {**type(model).serving_config, **(overrides or {})}
    if overrides:
        model = with_config(model, overrides)
        meta = {**meta, "serving_overrides": dict(overrides)}
    if index == "hnsw":
        top_k = ApproximateTopK(model, cache_dir=index_cache)
    elif index == "exact":
        top_k = ExactTopK(model)
    else:
        raise ValueError(f"--index must be exact or hnsw; got {index!r}")
    served = ServedRun(path=str(path), model=model, meta=meta, vocab=vocab, top_k=top_k, loaded_at=time.time())
    warm_up(served)
    # every BLAS loaded by now (numpy's, and scipy's, which numba's compiled matmuls call) would otherwise
    # run a thread per core: on two busy cores a 40-click DSAN query took 5.5 ms instead of 1.9 in numpy,
    # and two served workers whose compiled encoders ran scipy's BLAS on 2 threads each answered DSAN at
    # 500 requests/s with a p50 of 0.8-1.0 s (serve-bench, before this was called after the warm-up)
    threadpool_limits(limits=threads, user_api="blas")
    return served


def warm_up(run: ServedRun) -> None:
    """Answer one query before the run serves: the first model call pays for what libraries load lazily
    (scipy.sparse's modules under STAN, ~0.1 s, seen in a py-spy profile of the first seconds of
    traffic) and first-use allocations, which the first clients would otherwise wait on."""
    if len(run.vocab.ids) > 1:
        answer(run, [Query([int(run.vocab.ids[1])], k=1, include_weights=run.has_click_weights)])


def with_config(model, overrides: dict):
    """The same weights under a config with `overrides` (`nextclick serve --set`): for values that change
    how a model computes rather than what it learned, such as DSAN's fast_entmax (2-6 Newton steps for entmax's
    threshold instead of 50 halvings, the same threshold: tests/test_dsan.py). An override that the weights do not
    fit (a vector width) is refused."""
    from nextclick.models.config import config_from_overrides

    config = config_from_overrides(type(model).Config, overrides, base=model.config)
    served = type(model)(model.n_items, config)
    try:
        served.load_state_tensors(model.state_tensors())
    except (KeyError, RuntimeError, ValueError) as error:
        changed = ", ".join(sorted(overrides))
        raise ValueError(f"--set {changed}: the run's weights do not fit that config ({str(error).splitlines()[0]})") from None
    if served.neural:
        served.eval()
        served.calibration = model.calibration  # a saved repeat calibration goes with the weights
    return served


@dataclass(frozen=True)
class Query:
    items: list[int]  # raw item ids, oldest first
    k: int = 20
    exclude_seen: bool = False
    include_weights: bool = False


@dataclass
class Answer:
    items: list[int]
    scores: list[float]
    unknown_items: list[int]
    clicks_read: int  # known clicks the model read (the most recent, at most its max_length)
    weights: list[dict] | None = None
    weights_name: str | None = None
    model: str = ""
    run: str = ""

    def to_dict(self) -> dict:
        out = {"items": [{"item": i, "score": s} for i, s in zip(self.items, self.scores)],
               "unknown_items": self.unknown_items, "clicks_read": self.clicks_read,
               "model": self.model, "run": self.run}
        if self.weights is not None:
            out["click_weights"] = {"name": self.weights_name, "clicks": self.weights}
        return out


def answer(run: ServedRun, queries: list[Query]) -> list[Answer | Exception]:
    """Recommendations for each query, in one model call for all those with a known item; a query that
    cannot be answered gets its exception in its place (the others are unaffected)."""
    model = run.model
    results: list[Answer | Exception] = [None] * len(queries)  # type: ignore[list-item]
    prefixes, scored = [], []
    for position, query in enumerate(queries):
        indices, unknown = known_items(run.vocab, query.items)
        if len(indices) == 0:
            results[position] = NothingKnown(f"none of the session's {len(query.items)} item ids is in this "
                                             f"run's catalogue (unknown: {unknown[:5]})")
            continue
        if query.include_weights and not run.has_click_weights:
            from nextclick.explain import attention_models

            results[position] = ValueError(f"{model.name} gives no click weights (attention models: "
                                           f"{', '.join(attention_models())})")
            continue
        prefixes.append(indices)
        scored.append((position, query, indices, unknown))
    if not prefixes:
        return results
    # seen items are dropped after the top-K, so ask for as many more as the session has distinct items
    wanted = max(q.k + (len(np.unique(i)) if q.exclude_seen else 0) for _, q, i, _ in scored)
    top, scores = run.top_k.top(prefixes, min(wanted, model.n_items))
    weighed = [n for n, (_, q, _, _) in enumerate(scored) if q.include_weights]
    weights = click_weights(model, [prefixes[n] for n in weighed]) if weighed else []
    weights_of = dict(zip(weighed, weights))
    read = model.max_length
    for n, (position, query, indices, unknown) in enumerate(scored):
        keep = top[n] != 0  # an approximate index marks places it could not fill with 0
        if query.exclude_seen:
            keep &= ~np.isin(top[n], indices)
        chosen = np.flatnonzero(keep)[: query.k]
        result = Answer(items=run.vocab.decode(top[n][chosen]).tolist(), scores=scores[n][chosen].astype(float).tolist(),
                        unknown_items=unknown, clicks_read=min(len(indices), read), model=model.name, run=run.path)
        if n in weights_of:
            name, values = weights_of[n]
            clicks = run.vocab.decode(indices[-len(values):]).tolist()
            result.weights = [{"item": c, "weight": round(float(w), 6)} for c, w in zip(clicks, values)]
            result.weights_name = name
        results[position] = result
    return results


def click_weights(model, prefixes: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(what the weights are, each read click's weight, oldest first) per prefix, from the model's
    `click_weights` (the material of `nextclick explain`)."""
    with torch.inference_mode():
        read = model.click_weights(batch_from_prefixes(prefixes, model.max_length))
    items, weights = read.items.cpu().numpy(), read.weights.float().cpu().numpy()
    return [(read.name, weights[row][items[row] != 0]) for row in range(len(prefixes))]


def answer_batch(run: ServedRun, queries: list[Query], observe_batch) -> list[Answer | Exception]:
    """`answer` for one model call of a scorer, timed for `observe_batch(size, seconds)`; a bug in the model
    call fails its batch (each query gets the exception), not the scorer serving everyone."""
    start = time.perf_counter()
    try:
        results = answer(run, queries)
    except Exception as error:
        results = [error] * len(queries)
    observe_batch(len(queries), time.perf_counter() - start)
    return results


@dataclass
class _Pending:
    query: Query
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)


class Scorer:
    """The thread that scores queued queries in batches (see the module's docstring)."""

    def __init__(self, run: ServedRun, limits: ServeLimits = ServeLimits(), observe_batch=None):
        self.run = run
        self.limits = limits
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=limits.max_pending)
        self._observe_batch = observe_batch or (lambda size, seconds: None)
        self._thread = threading.Thread(target=self._work, name="nextclick-scorer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        return self._queue.full()

    def swap(self, run: ServedRun) -> None:
        """Later batches use `run`; the batch being scored finishes on the one it started with."""
        self.run = run

    async def submit(self, query: Query) -> Answer:
        loop = asyncio.get_running_loop()
        pending = _Pending(query, loop.create_future(), loop)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise Overloaded(f"{self.limits.max_pending} requests are already waiting to be scored") from None
        result = await pending.future
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.limits.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # close after this batch
                    break
                batch.append(item)
            # one run for the whole batch, whatever `swap` does meanwhile
            results = answer_batch(self.run, [p.query for p in batch], self._observe_batch)
            for pending, result in zip(batch, results):
                pending.loop.call_soon_threadsafe(_settle, pending.future, result)


class InlineScorer:
    """`Scorer`'s batching, bound and swap on the event loop: a request queues and, if no batch is due,
    schedules one with `call_soon`, which runs after the callbacks already ready, so the requests that
    arrived in the same turn of the loop share the model call."""

    def __init__(self, run: ServedRun, limits: ServeLimits = ServeLimits(), observe_batch=None):
        self.run = run
        self.limits = limits
        self._queue: collections.deque[tuple[Query, asyncio.Future]] = collections.deque()
        self._observe_batch = observe_batch or (lambda size, seconds: None)
        self._due = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.limits.max_pending

    def swap(self, run: ServedRun) -> None:
        self.run = run

    async def submit(self, query: Query) -> Answer:
        if self.full:
            raise Overloaded(f"{self.limits.max_pending} requests are already waiting to be scored")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((query, future))
        if not self._due:
            self._due = True
            loop.call_soon(self._score)
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def _score(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.limits.max_batch))]
        if self._queue:
            asyncio.get_running_loop().call_soon(self._score)
        else:
            self._due = False
        results = answer_batch(self.run, [query for query, _ in batch], self._observe_batch)
        for (_, future), result in zip(batch, results):
            _settle(future, result)


SCORERS = {"thread": Scorer, "inline": InlineScorer}


def _settle(future: asyncio.Future, result) -> None:
    if not future.done():  # the client may have gone (its request cancelled)
        future.set_result(result)
