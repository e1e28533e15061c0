"""The HTTP service of `nextclick serve`: FastAPI routes over a Scorer (serve/scoring.py) and a session
store (serve/store.py).

    POST   /v1/recommend                 {"items": [ids], "k": 20, "exclude_seen": false, "include_weights": false}
    POST   /v1/sessions/{id}/clicks      {"item": id, "k": 20, ...}  appends the click, answers as /v1/recommend
    GET    /v1/sessions/{id}             the session's clicks          DELETE /v1/sessions/{id}
    GET    /v1/model                     the served run                POST   /v1/reload  (RUN again, every process)
    GET    /v1/items?query=&limit=       catalogue items (names from --catalogue) for the page
    GET    /healthz  /readyz  /metrics   GET /  (the page)             GET /docs (OpenAPI)

Every bound of serve/limits.py is enforced before work is done: the body size here, in the ASGI layer
(413), the clicks and k by the request models (422), the scoring queue by the Scorer (503 with
Retry-After).

`POST /v1/recommend`, the route live traffic hits, is answered in the ASGI layer itself (BoundedApp's
direct route): the body is decoded and validated by the request model in one compiled call
(pydantic's `model_validate_json`) and the answer written as bytes, without Starlette's request,
routing and response objects or FastAPI's dependency machinery, which cost about half of a request's
server time at 1,000 requests/s (docs/serving.md). The FastAPI route stays for the OpenAPI docs and
answers the same (tests/test_serve.py checks both).

No route reads a file the client names: /v1/reload reads the path given on the command line again (a
symlink the operator moved, or a directory rewritten in place).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Path as PathParameter, Query as QueryParameter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from nextclick.serve.broadcast import ReloadChannel
from nextclick.serve.limits import ITEM_ID_HIGH, ITEM_ID_LOW, MAX_K, SESSION_ID, ServeLimits, StoreLimits
from nextclick.serve.metrics import Metrics
from nextclick.serve.scoring import SCORERS, NothingKnown, Overloaded, Query, load_run
from nextclick.serve.store import open_store

ItemId = Annotated[int, Field(ge=ITEM_ID_LOW, le=ITEM_ID_HIGH, strict=True)]
SessionId = Annotated[str, PathParameter(pattern=f"^{SESSION_ID.pattern}$", min_length=1, max_length=128)]
GIL_SWITCH_SECONDS = 0.0005
# the variable through which `--workers N` hands each uvicorn worker process its ServeConfig
CONFIG_ENV = "NEXTCLICK_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    run: str  # checkpoint directory, read at start and on every reload
    store: str = "memory"  # or a redis:// URL
    index: str = "exact"  # or hnsw (inner-product models)
    threads: int = 1  # torch threads of the scorer
    # where model calls run: inline on the event loop, or a thread of their own. Inline by default: STAN at
    # 1,000 requests/s, two workers, three alternating runs each, p99 12.7-15.4 ms against 20.6-130 (docs/serving.md)
    scorer: str = "inline"
    catalogue: str | None = None  # CSV of item id, name (the page shows the names)
    overrides: dict = field(default_factory=dict)  # config values changed for serving (--set)
    index_cache: str | None = None  # where HNSW indexes are kept between starts
    limits: ServeLimits = field(default_factory=ServeLimits)
    store_limits: StoreLimits = field(default_factory=StoreLimits)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        values = json.loads(text)
        return cls(**{**values, "limits": ServeLimits(**values["limits"]),
                      "store_limits": StoreLimits(**values["store_limits"])})


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(20, ge=1, le=MAX_K, description="how many items to return (at most the catalogue)")
    exclude_seen: bool = Field(False, description="leave out items already in the session")
    include_weights: bool = Field(False, description="each click's weight in the session vector (attention models)")


class RecommendRequest(Options):
    items: list[ItemId] = Field(..., min_length=1, max_length=ServeLimits().max_clicks,
                                description="the session's raw item ids, oldest first")


class ClickRequest(Options):
    item: ItemId = Field(..., description="the item clicked (raw id)")


def keep_out_of_garbage_collection() -> None:
    """Move every object alive now (torch's, the libraries' and the model's: 202k in a served STAN run)
    out of the cyclic collector's sight: each full collection would otherwise walk them all, 62-68 ms on
    this machine (0.0 ms after the freeze), a pause that lands on whichever requests are in flight. Called
    once the run is loaded, and again after a reload, which first hands the frozen objects back so that
    the old run's reference cycles can be collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(config: ServeConfig, run=None) -> FastAPI:
    """The app for `config`; `run` (a ServedRun) skips loading, for tests and tools that have one."""
    import redis.exceptions as redis_errors  # the redis client is a dependency of the serve extra

    limits = config.limits
    metrics = Metrics()
    state: dict = {"scorer": None, "store": None, "names": {}, "channel": None}
    reload_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The event loop and the scorer thread share the GIL; CPython hands it over every 5 ms by default,
        # which a request answered in 1-2 ms would wait on. 0.5 ms keeps the hand-over below the scoring time.
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        served = run or await asyncio.to_thread(load_run, config.run, config.index, config.threads,
                                                  config.overrides, config.index_cache)
        state["names"] = read_catalogue(config.catalogue) if config.catalogue else {}
        state["store"] = open_store(config.store, limits.max_clicks, config.store_limits)
        state["scorer"] = SCORERS[config.scorer](served, limits, metrics.observe_batch)
        keep_out_of_garbage_collection()
        listener = None
        if state["store"].kind == "redis":  # reloads reach every process on this Redis (serve/broadcast.py)
            state["channel"] = ReloadChannel(config.store)
            listener = asyncio.create_task(state["channel"].listen(reload_here))
        try:
            yield
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                await state["channel"].close()
            state["scorer"].close()
            await state["store"].close()

    app = FastAPI(title="nextclick", summary="What next? Session-based next-item recommendations.",
                  lifespan=lifespan)

    async def recommend(query: Query) -> dict:
        answer = (await state["scorer"].submit(query)).to_dict()
        if state["names"]:  # the catalogue's names beside the ids, for the page and for people reading answers
            for entry in answer["items"] + (answer.get("click_weights") or {}).get("clicks", []):
                entry["name"] = state["names"].get(entry["item"], "")
        return answer

    @app.post("/v1/recommend", summary="top-K next items for the session given in the body")
    async def recommend_route(body: RecommendRequest):
        return JSONResponse(await recommend(Query(body.items, body.k, body.exclude_seen, body.include_weights)))

    async def recommend_direct(body: bytes) -> tuple[int, bytes, list]:
        """/v1/recommend from its raw body: (status, JSON body, extra headers), as recommend_route and the
        exception handlers below answer it."""
        try:
            request = RecommendRequest.model_validate_json(body)
        except ValidationError as exc:  # FastAPI's 422 shape: {"detail": [{"loc": ["body", ...], ...}]}
            detail = [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False, include_context=False)]
            return 422, to_json({"detail": detail}), []
        query = Query(request.items, request.k, request.exclude_seen, request.include_weights)
        try:
            return 200, to_json(await recommend(query)), []
        except (Overloaded, ValueError) as exc:  # NothingKnown among them
            status, message, headers = refusal(exc)
            return status, to_json({"error": message}), [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    @app.post("/v1/sessions/{session_id}/clicks", summary="append a click to a live session; its top-K next items")
    async def click_route(session_id: SessionId, body: ClickRequest):
        if state["scorer"].full:  # refuse before storing: a client that retries must not click twice
            raise Overloaded(f"{limits.max_pending} requests are already waiting to be scored")
        items = await state["store"].append(session_id, [body.item])
        payload = await recommend(Query(items, body.k, body.exclude_seen, body.include_weights))
        return JSONResponse({"session_id": session_id, "session": items, **payload})

    @app.get("/v1/sessions/{session_id}", summary="a live session's clicks (the most recent, oldest first)")
    async def get_session(session_id: SessionId):
        items = await state["store"].get(session_id)
        if items is None:
            return error(404, f"no session {session_id!r} (never clicked, deleted, or expired)")
        return {"session_id": session_id, "items": items}

    @app.delete("/v1/sessions/{session_id}", status_code=204, summary="forget a live session")
    async def delete_session(session_id: SessionId):
        if not await state["store"].delete(session_id):
            return error(404, f"no session {session_id!r}")
        return Response(status_code=204)

    @app.get("/v1/model", summary="the served run")
    async def model_route():
        return {**state["scorer"].run.describe(), "store": state["store"].kind, "limits": asdict(limits),
                "worker_pid": os.getpid()}  # which process answered, under --workers N

    async def reload_here():
        """Load RUN again in a thread and swap it in between two batches (after any reload under way)."""
        async with reload_lock:
            scorer = state["scorer"]
            served = await asyncio.to_thread(load_run, config.run, scorer.run.top_k.kind, config.threads,
                                             config.overrides, config.index_cache)
            scorer.swap(served)
            keep_out_of_garbage_collection()
            metrics.reloads += 1
            return served

    @app.post("/v1/reload", summary="load the run at the command line's RUN path again, in every process of the "
                                    "service (through Redis); requests keep being served")
    async def reload_route():
        if reload_lock.locked():
            return error(409, "a reload is already under way")
        served = await reload_here()
        told = None  # the in-process store: this process is the whole service
        if state.get("channel") is not None:
            try:
                told = await state["channel"].announce()
            except redis_errors.RedisError:  # this process reloaded; the others could not be told (null)
                pass
        return {**served.describe(), "processes_told": told}

    @app.get("/v1/items", summary="catalogue items for the page: ids (with names from --catalogue) matching a query")
    async def items_route(query: Annotated[str, QueryParameter(max_length=100)] = "",
                          limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20):
        # in a thread: a query that matches nothing reads the whole (capped) vocabulary
        return {"items": await asyncio.to_thread(catalogue_items, state["scorer"].run, state["names"], query, limit)}

    @app.get("/healthz", summary="the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="a run is loaded and the session store answers")
    async def readyz():
        scorer, store = state["scorer"], state["store"]
        if scorer is None or store is None or not await store.ping():
            return error(503, "not ready: the run is loading or the session store does not answer")
        return {"status": "ready", "model": scorer.run.model.name}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def metrics_route():
        store = state["store"]
        try:
            sessions = await store.count()
        except Exception:  # an unreachable Redis must not take the metrics down with it
            sessions = None
        scorer = state["scorer"]
        return PlainTextResponse(metrics.render(sessions, scorer.pending, scorer.run.model.name, scorer.run.path),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    def refusal(exc: Exception) -> tuple[int, str, dict]:
        """(status, message, headers) for a scoring request that raised `exc`: the exception handlers'
        answer and the direct route's."""
        if isinstance(exc, Overloaded):
            metrics.refuse("scoring queue full")
            return 503, f"over capacity: {exc}; retry shortly", {"Retry-After": "1"}
        return 422, str(exc), {}  # a ValueError: NothingKnown, or click weights asked of a model without them

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return error(*refusal(exc))

    @app.exception_handler(NothingKnown)
    async def nothing_known(request: Request, exc: NothingKnown):
        return error(*refusal(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return error(*refusal(exc))

    @app.exception_handler(redis_errors.RedisError)
    async def store_down(request: Request, exc: Exception):
        metrics.refuse("session store unavailable")
        return error(503, f"session store unavailable: {type(exc).__name__}", {"Retry-After": "1"})

    return BoundedApp(app, limits, metrics, busy=lambda: state["scorer"] is not None and state["scorer"].full,
                      direct={"/v1/recommend": recommend_direct})


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def read_catalogue(path: str, max_items: int = 2_000_000) -> dict[int, str]:
    """Item names from a CSV/TSV of `id,name` lines (a header line is skipped when its id is no integer);
    the operator names the file on the command line, never a client."""
    names: dict[int, str] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            head, _, name = line.rstrip("\n").replace("\t", ",").partition(",")
            try:
                names[int(head)] = name.strip()[:200]
            except ValueError:
                continue
            if len(names) >= max_items:
                break
    return names


# /v1/items reads at most this many vocabulary entries per request (a page's search box, not a search
# engine): ~0.1 s of Python on a slow core, the cost a client can ask for at most
CATALOGUE_SCAN = 200_000


def catalogue_items(run, names: dict[int, str], query: str, limit: int) -> list[dict]:
    """Items whose id starts with `query` or whose name contains it (all items when it is empty), in
    vocabulary order, at most `limit`, among the first CATALOGUE_SCAN of the vocabulary."""
    query = query.strip().lower()
    found = []
    for item in run.vocab.ids[1 : CATALOGUE_SCAN + 1]:
        item = int(item)
        name = names.get(item, "")
        if not query or str(item).startswith(query) or query in name.lower():
            found.append({"item": item, "name": name})
            if len(found) >= limit:
                break
    return found


PAGE = resources.files("nextclick.serve").joinpath("page.html").read_text(encoding="utf-8")


# the routes that need the scorer: refused here, before routing and validation, while its queue is full
SCORING_PATHS = ("/v1/recommend", "/v1/sessions/")


class BoundedApp:
    """ASGI wrapper: refuses bodies over `max_body_bytes` (413) before the app reads them, and scoring
    requests while the scorer's queue is full (503) before FastAPI spends anything on them (under
    overload the event loop's time is what runs out); answers the POST routes of `direct` (path ->
    async function of the raw body giving status, JSON bytes and extra headers) itself; times every
    request into the metrics under its route's template (so /v1/sessions/{session_id} is one series)."""

    def __init__(self, app: FastAPI, limits: ServeLimits, metrics: Metrics, busy=lambda: False,
                 direct: dict | None = None):
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self.busy = busy
        self.direct = direct or {}

    def __getattr__(self, name):  # tests and uvicorn read .state, .routes, .openapi() through the wrapper
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if scope["method"] == "POST" and scope["path"].startswith(SCORING_PATHS) and self.busy():
            self.metrics.refuse("scoring queue full")
            response = error(503, f"over capacity: {self.limits.max_pending} requests are already waiting to be "
                                  "scored; retry shortly", {"Retry-After": "1"})
            await response(scope, receive, send_and_note)
        else:
            receive = await self._bounded_body(scope, receive, send_and_note)
            handler = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
            if receive is not None and handler is not None:
                scope["route"] = _DirectRoute(scope["path"])
                await self._answer_directly(handler, receive, send_and_note)
            elif receive is not None:
                await self.app(scope, receive, send_and_note)
        route = scope.get("route")
        self.metrics.observe_request(scope["method"], getattr(route, "path", "unmatched"), status["code"],
                                     time.perf_counter() - start)

    async def _answer_directly(self, handler, receive, send) -> None:
        chunks = []
        while True:  # the body is within its bound here (_bounded_body)
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            code, body, headers = await handler(b"".join(chunks))
        except Exception:
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error":"internal server error"}'})
            raise  # for uvicorn's log, as for any route
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def _bounded_body(self, scope, receive, send):
        """`receive` when the body fits (a replay of it when it came without a length), else None after
        answering 413."""
        limit = self.limits.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > limit:
                await self._too_large(scope, receive, send)
                return None
            return receive
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            size += len(message.get("body", b""))
            if size > limit:
                await self._too_large(scope, receive, send)
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replay = iter([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])

        async def replayed():
            return next(replay, None) or await receive()

        return replayed

    async def _too_large(self, scope, receive, send):
        self.metrics.refuse("body too large")
        response = error(413, f"request body over {self.limits.max_body_bytes:,} bytes")
        await response(scope, receive, send)


@dataclass(frozen=True)
class _DirectRoute:
    """What the metrics read of a route (its template) for the routes BoundedApp answers itself."""

    path: str


def app_from_environment() -> BoundedApp:
    """What each uvicorn worker process builds under `--workers N` (uvicorn imports it by name)."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))
