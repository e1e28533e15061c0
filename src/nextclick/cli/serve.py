"""Serving a trained run: `nextclick serve`, `serve-bench` (its load test) and `index-bench` (the
approximate top-K index against exact). The service itself is nextclick.serve; docs/serving.md."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from nextclick import atomic
from nextclick.cli.common import add_data_options, int_in, parse_overrides, positive_number


WORKER_START_SECONDS = 60


def server_options(args) -> list[str]:
    """The `nextclick serve` options a serve-bench passes on to the server it starts."""
    overrides = [option for pair in args.set or [] for option in ("--set", pair)]
    cache = ["--index-cache", args.index_cache] if args.index_cache else []
    return [*cache, "--store", args.store, "--index", args.index, "--threads", str(args.threads),
            "--scorer", args.scorer, "--workers",
            str(args.workers), "--max-pending", str(args.max_pending), "--max-batch", str(args.max_batch),
            "--session-ttl", str(args.session_ttl), "--max-sessions", str(args.max_sessions),
            "--store-megabytes", str(args.store_megabytes), *overrides]


def serve_config(args):
    from nextclick.serve.app import ServeConfig
    from nextclick.serve.limits import ServeLimits, StoreLimits

    limits = ServeLimits(max_pending=args.max_pending, max_batch=args.max_batch)
    store_limits = StoreLimits(ttl_seconds=args.session_ttl, max_sessions=args.max_sessions,
                               max_bytes=args.store_megabytes * 1024 * 1024)
    return ServeConfig(run=args.run, store=args.store, index=args.index, threads=args.threads, scorer=args.scorer,
                       catalogue=args.catalogue, overrides=parse_overrides(args.set), index_cache=args.index_cache,
                       limits=limits, store_limits=store_limits)


def cmd_serve(args) -> int:
    import uvicorn

    from nextclick.serve.app import CONFIG_ENV, create_app
    from nextclick.serve.protocol import PROTOCOL
    from nextclick.serve.scoring import load_run
    from nextclick.serve.store import open_store

    config = serve_config(args)
    open_store(config.store, 1)  # a malformed --store fails here, in one line, not in each worker
    if args.workers > 1 and config.store == "memory":
        raise ValueError("--workers N > 1 needs sessions every worker sees: --store redis://host:port/db")
    if args.catalogue and not Path(args.catalogue).is_file():
        raise FileNotFoundError(f"no catalogue file at {args.catalogue}")
    # a bad RUN fails now, not in a worker (and with --index-cache, the workers find the index built)
    run = load_run(config.run, config.index, config.threads, config.overrides, config.index_cache)
    print(f"serving {run.model.name} ({run.model.n_items:,} items, top-K {run.top_k.kind}, store {config.store}) "
          f"at http://{args.host}:{args.port}/ with {args.workers} worker(s)", file=sys.stderr, flush=True)
    # PROTOCOL: a worker that stops answers the requests already sent on its idle connections
    common = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log, http=PROTOCOL)
    if args.workers == 1:
        uvicorn.run(create_app(config, run=run), **common)
    else:  # each worker process builds its own app from the config (uvicorn imports the factory by name)
        del run
        os.environ[CONFIG_ENV] = config.to_json()
        # a new worker imports torch and loads the run before it is ready: seconds, more on a busy machine,
        # and uvicorn's default 5 s would abort a SIGHUP's rolling restart (it keeps the old workers then)
        uvicorn.run("nextclick.serve.app:app_from_environment", factory=True, workers=args.workers,
                    timeout_worker_healthcheck=WORKER_START_SECONDS, **common)
    return 0


def bench_sessions(args, vocab, count: int, seed: int = 0) -> list[list[int]]:
    """Request sessions: prefixes of the test cases (raw ids) of the run's dataset (or --dataset), drawn
    at random with a fixed seed, so every rate and every run of the bench sends the same mix."""
    import numpy as np

    from nextclick.data.benchmarks import resolve

    split = resolve(args.dataset or args.meta.get("dataset"), args.data_dir)
    if split.n_items != vocab.n_items:
        raise ValueError(f"the run has {vocab.n_items:,} items but {split.name} has {split.n_items:,}: "
                         "give the run's dataset with --dataset")
    cases = split.test
    chosen = np.random.default_rng(seed).choice(len(cases), size=min(count, len(cases)), replace=False)
    return [vocab.decode(cases.prefix(int(c))).tolist() for c in chosen]


def cmd_serve_bench(args) -> int:
    from nextclick.runtime import git_commit, machine_info
    from nextclick.serve import bench
    from nextclick.serve.scoring import load_run

    if args.url is not None:
        bench.loopback_url(args.url)  # before anything is loaded
    config = serve_config(args)
    run = load_run(args.run, config.index, config.threads, config.overrides, config.index_cache)
    meta = args.meta = run.meta
    sessions = bench_sessions(args, run.vocab, args.sessions)
    bodies = [{"items": s[-config.limits.max_clicks:], "k": args.k} for s in sessions]
    dataset = meta.get("dataset") or "unknown"
    dataset = Path(dataset).name if os.sep in dataset else dataset
    out = Path(args.out or f"results/serving/{dataset}/{run.model.name}.json")
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say("profiling one model call per batch size, in this process")
    profile = bench.scoring_profile(run, bodies)
    del run
    process, url = None, args.url
    if url is None:
        port = bench.free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "nextclick.cli", "serve", args.run, "--port", str(port), *server_options(args)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if args.quiet else None)
    try:
        bench.wait_ready(url, process=process)
        pid = process.pid if process is not None else None
        say(f"warming up at {args.rates[0]:g} requests/s for 2 s")
        bench.run_rate(url, bodies, args.rates[0], 2.0, seed=99, watch_pid=pid)
        results = []
        for rate in args.rates:
            result = bench.run_rate(url, bodies, rate, args.seconds, seed=int(rate), watch_pid=pid)
            say(f"{rate:>7g} req/s: achieved {result.achieved_rate:g}/s, p50 {result.p50_ms} ms, p90 {result.p90_ms} ms, "
                f"p99 {result.p99_ms} ms (from sending {result.service_p99_ms} ms), errors {result.errors} {result.statuses}"
                + (f", CPU stolen by the hypervisor {100 * result.steal_share:.1f}%" if result.steal_share is not None else ""))
            results.append(result)
            time.sleep(1.0)
        overload = recovery = None
        if args.overload_rate:
            overload = bench.run_rate(url, bodies, args.overload_rate, args.overload_seconds, seed=7, watch_pid=pid)
            say(f"overload {args.overload_rate:g} req/s: answered {overload.statuses}, refused in "
                f"{overload.refused_service_p99_ms} ms (p99 from sending), server RSS {overload.server_rss_mb}")
            time.sleep(1.0)
            recovery = bench.run_rate(url, bodies, args.rates[0], min(args.seconds, 5.0), seed=8, watch_pid=pid)
            say(f"recovery at {args.rates[0]:g} req/s: p99 {recovery.p99_ms} ms, errors {recovery.errors}")
        alive = process is None or process.poll() is None
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    threads = args.threads
    record = bench.result_record(
        results, model=meta["model"], dataset=dataset, run=str(args.run), n_items=meta["n_items"],
        request={"path": "/v1/recommend", "k": args.k, "sessions": len(bodies),
                 "source": "prefixes of the run's test cases, drawn at random", "arrivals": "Poisson (open loop)"},
        server={"url": url if args.url else "started by serve-bench", "options": server_options(args) if args.url is None else None},
        scoring_profile=profile, overload=asdict(overload) if overload else None, recovery=asdict(recovery) if recovery else None,
        server_alive_after=alive, note=args.note,
        machine=machine_info(threads), git_commit=git_commit(), command=shlex.join(["nextclick", *args.argv]))
    atomic.write_json(out, record)
    print(f"wrote {out}")
    return 0


def cmd_index_bench(args) -> int:
    from nextclick.runtime import git_commit, machine_info
    from nextclick.serve.index import (HNSW_BUILD_BREADTH, HNSW_NEIGHBOURS, HNSW_SEARCH_BREADTH, generated_catalogue,
                                       measure_recall)

    import torch

    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    items, queries = generated_catalogue(args.items, args.dim, args.queries, seed=args.seed)
    made = time.perf_counter() - start
    breadths = tuple(args.search_breadths or (HNSW_SEARCH_BREADTH,))
    build, measures = measure_recall(items, queries, k=args.k, search_breadths=breadths)
    print(f"{args.items:,} items x {args.dim}: HNSW built in {build:.1f} s; exact {measures[0].exact_ms_per_query:.3f} "
          f"ms/query (batches of 64)")
    for measure in measures:
        print(f"  efSearch {measure.search_breadth}: recall@{args.k} {measure.recall:.4f}, "
              f"{measure.approximate_ms_per_query:.3f} ms/query")
    out = Path(args.out or f"results/serving/index/generated-{args.items}x{args.dim}.json")
    atomic.write_json(out, {
        "catalogue": {"items": args.items, "dim": args.dim, "queries": args.queries, "seed": args.seed,
                      "generator": "nextclick.serve.index.generated_catalogue (clustered, lognormal norms, "
                                   "queries near items)", "seconds_to_make": round(made, 1)},
        "index": {"kind": "faiss IndexHNSWFlat, inner product", "neighbours": HNSW_NEIGHBOURS,
                  "build_breadth": HNSW_BUILD_BREADTH, "build_seconds": round(build, 1), "served_breadth": HNSW_SEARCH_BREADTH},
        "measures": [asdict(m) for m in measures],
        "machine": machine_info(args.threads), "git_commit": git_commit(),
        "command": shlex.join(["nextclick", *args.argv])})
    print(f"wrote {out}")
    return 0


def breadths(text: str) -> list[int]:
    """An argparse `type`: comma-separated HNSW search breadths, each from 1 to 10,000."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected breadths such as 64,128,256, got {text!r}") from None
    if not all(1 <= v <= 10_000 for v in values):
        raise argparse.ArgumentTypeError(f"each breadth must be from 1 to 10,000, got {text!r}")
    return values


def rates(text: str) -> list[float]:
    """An argparse `type`: comma-separated request rates, each in (0, serve.bench.MAX_RATE]."""
    from nextclick.serve.bench import MAX_RATE

    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates such as 100,500,1000, got {text!r}") from None
    if not values or not all(0 < v <= MAX_RATE for v in values):
        raise argparse.ArgumentTypeError(f"each rate must be in (0, {MAX_RATE:,}] requests/s, got {text!r}")
    return values


def add_server_options(p: argparse.ArgumentParser) -> None:
    from nextclick.serve.limits import ServeLimits, StoreLimits

    limits, store = ServeLimits(), StoreLimits()
    p.add_argument("--store", default="memory",
                   help="where live sessions live: memory (this process; the default) or redis://host:port/db "
                        "(shared by workers and kept across restarts)")
    p.add_argument("--index", choices=("exact", "hnsw"), default="exact",
                   help="top-K: exact (full scores; every model) or hnsw (faiss, inner-product models, for "
                        "catalogues of about a million items)")
    p.add_argument("--index-cache", default=None, metavar="DIR",
                   help="keep HNSW indexes here between starts (named by a hash of the item vectors; "
                        "default: built at every start)")
    p.add_argument("--threads", type=int_in(1, 256), default=1,
                   help="torch threads of the scorer (1: batches are small, and the event loop needs a core)")
    p.add_argument("--scorer", choices=("inline", "thread"), default="inline",
                   help="where model calls run: inline (on the event loop, no hand-over between threads per "
                        "request; the default) or thread (their own thread beside the event loop)")
    p.add_argument("--workers", type=int_in(1, 64), default=1, help="server processes (more than 1 needs --store redis://)")
    p.add_argument("--max-pending", type=int_in(1, 100_000), default=limits.max_pending,
                   help=f"requests admitted at once; more are answered 503 at once ({limits.max_pending})")
    p.add_argument("--max-batch", type=int_in(1, 4096), default=limits.max_batch,
                   help=f"queued requests scored in one model call ({limits.max_batch})")
    p.add_argument("--set", "-s", action="append", metavar="KEY=VALUE",
                   help="serve under a changed config value that the weights still fit; a model's serving "
                        "defaults (DSAN: fast_entmax=true, entmax's threshold by Newton, the same scores) apply "
                        "unless set here (fast_entmax=false: the reference bisection); /v1/model and "
                        "serve-bench record them")
    p.add_argument("--session-ttl", type=positive_number, default=store.ttl_seconds,
                   help=f"seconds a session lives after its last click ({store.ttl_seconds:g})")
    p.add_argument("--max-sessions", type=int_in(1, 100_000_000), default=store.max_sessions,
                   help=f"sessions the memory store keeps; the least recently clicked go first ({store.max_sessions:,})")
    p.add_argument("--store-megabytes", type=int_in(1, 1_000_000), default=store.max_bytes // 2**20,
                   help=f"memory store size bound in MiB ({store.max_bytes // 2**20})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an HTTP service answering 'what next?' for live sessions (FastAPI + uvicorn)",
                       description="Serves a checkpoint directory: POST /v1/recommend, live sessions under "
                                   "/v1/sessions/{id}, /healthz, /readyz, /metrics, a page at / and OpenAPI docs "
                                   "at /docs. See docs/serving.md.")
    p.add_argument("run", help="checkpoint directory (reloaded from the same path by POST /v1/reload, in every worker when the store is Redis)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_in(1, 65_535), default=8000)
    add_server_options(p)
    p.add_argument("--catalogue", default=None, help="CSV of item id,name: the page shows the names")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--access-log", action="store_true", help="a line per request (costs time under load)")
    p.set_defaults(func=cmd_serve, keeps_freed_memory=False)  # a service gives back what a burst took

    p = sub.add_parser("serve-bench", help="open-loop load test of a served run on this machine; writes "
                                           "results/serving/<dataset>/<model>.json",
                       description="Starts `nextclick serve RUN` on a free loopback port (or loads --url, which must "
                                   "be a loopback address), offers each rate for --seconds with Poisson arrivals, and "
                                   "records p50/p90/p99 latency, achieved throughput, errors and the machine.")
    p.add_argument("run", help="checkpoint directory")
    p.add_argument("--rates", type=rates, default=[100.0, 500.0, 1000.0], help="requests/s, in turn (100,500,1000)")
    p.add_argument("--seconds", type=positive_number, default=10.0, help="per rate (10; at most 60)")
    p.add_argument("--overload-rate", type=positive_number, default=None,
                   help="then offer this rate (say 5x capacity) and record the refusals, the server's memory and "
                        "a recovery run at the first rate")
    p.add_argument("--overload-seconds", type=positive_number, default=10.0)
    p.add_argument("--sessions", type=int_in(1, 100_000), default=2000, help="test prefixes drawn for requests (2,000)")
    p.add_argument("-k", type=int_in(1, 1000), default=20)
    p.add_argument("--url", default=None, help="load a server already running here instead (loopback only)")
    add_server_options(p)
    add_data_options(p)
    p.add_argument("--out", default=None, help="result file (results/serving/<dataset>/<model>.json)")
    p.add_argument("--note", default=None, help="a sentence the result carries (how the run was trained, say)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_serve_bench, catalogue=None)

    p = sub.add_parser("index-bench", help="recall@K and latency of the approximate top-K index against exact on "
                                           "a generated catalogue; writes results/serving/index/")
    p.add_argument("--items", type=int_in(1000, 10_000_000), default=1_000_000)
    p.add_argument("--dim", type=int_in(2, 1024), default=100, help="vector width (100: DSAN's and NARM's d)")
    p.add_argument("--queries", type=int_in(1, 100_000), default=1000)
    p.add_argument("-k", type=int_in(1, 1000), default=20)
    p.add_argument("--search-breadths", type=breadths, default=None,
                   help="HNSW efSearch values to measure on one build, comma-separated (the served default, "
                        "nextclick.serve.index.HNSW_SEARCH_BREADTH)")
    p.add_argument("--seed", type=int_in(0), default=0)
    p.add_argument("--threads", type=int_in(1, 256), default=2)
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_index_bench)
