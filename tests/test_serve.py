"""`nextclick serve`: the routes, the bounds, the in-process store, reloads, metrics, the load test's
client and the approximate index, on checkpoints of the synthetic data made in milliseconds."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from nextclick import checkpoint  # noqa: E402
from nextclick.data.sessions import Vocab  # noqa: E402
from nextclick.data.synthetic import SyntheticConfig, generate  # noqa: E402
from nextclick.models import REGISTRY, build  # noqa: E402
from nextclick.models.config import LIMITS, MAX_SESSION_LENGTH  # noqa: E402
from nextclick.serve.app import ServeConfig, create_app  # noqa: E402
from nextclick.serve.limits import ServeLimits, StoreLimits  # noqa: E402
from nextclick.serve.scoring import InlineScorer, Query, load_run  # noqa: E402
from nextclick.serve.store import MemoryStore  # noqa: E402

# raw ids 1001..1050: a vocabulary that is not the identity, as a prepared click log's is
OFFSET = 1000


def small_overrides(cls) -> dict:
    """Vector widths of 8 (fast); the rest of the model's defaults."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls.Config)}
    return {name: 8 for name in names if LIMITS.get(name) is not None and LIMITS[name].high == 1024}


def save_run(directory, name: str, seed: int = 0):
    """A checkpoint of `name` on a small synthetic split (fitted when statistical, untrained otherwise)."""
    split = generate(SyntheticConfig(n_items=50, n_sessions=200)).split
    torch.manual_seed(seed)
    model = build(name, split.n_items, small_overrides(REGISTRY[name]))
    model.prepare(split.train)
    if not model.neural:
        model.fit(split.train_cases())
    vocab = Vocab(np.r_[0, OFFSET + np.arange(1, split.n_items + 1)])
    checkpoint.save(directory, model, vocab, split.protocol, split.name)
    return directory


def ids(answer: dict) -> list[int]:
    """The recommended item ids of an answer, best first (scores may differ in the last float bits
    between batches of different shapes)."""
    return [r["item"] for r in answer["items"]]


@pytest.fixture(scope="module")
def dsan_run(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("dsan"), "dsan")


@pytest.fixture
def client(dsan_run):
    with TestClient(create_app(ServeConfig(run=str(dsan_run)))) as client:
        yield client


def test_recommend_maps_raw_ids_through_the_vocabulary_and_answers_as_the_model_does(client, dsan_run):
    model, vocab, _ = checkpoint.load(dsan_run)
    answer = client.post("/v1/recommend", json={"items": [1003, 1001, 1007], "k": 5}).json()
    top, scores = model.recommend([vocab.encode([1003, 1001, 1007])], k=5)
    assert [r["item"] for r in answer["items"]] == vocab.decode(top[0]).tolist()
    assert np.allclose([r["score"] for r in answer["items"]], scores[0], atol=1e-5)
    assert answer["unknown_items"] == [] and answer["clicks_read"] == 3 and answer["model"] == "dsan"
    assert client.get("/v1/model").json()["compiled"] is False  # tests/conftest.py sets NEXTCLICK_COMPILED=0


def test_a_started_service_keeps_what_it_loaded_out_of_the_garbage_collector_s_full_passes(client):
    import gc

    assert client.get("/readyz").status_code == 200
    assert gc.get_freeze_count() > 10_000  # torch and the model: a full collection would walk them all
    gc.unfreeze()  # the rest of this test process collects as usual


def test_a_loaded_run_holds_every_blas_even_one_its_warm_up_loads_to_the_threads_asked(dsan_run, monkeypatch):
    from threadpoolctl import threadpool_info

    from nextclick.serve import scoring

    real = scoring.warm_up

    def warm_up_loading_scipy_s_blas(run):  # as numba's compiled matmuls do on their first call
        import scipy.linalg

        scipy.linalg.blas.sdot(np.ones(2, np.float32), np.ones(2, np.float32))
        real(run)

    monkeypatch.setattr(scoring, "warm_up", warm_up_loading_scipy_s_blas)
    scoring.load_run(dsan_run, threads=1)
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert pools and all(pool["num_threads"] == 1 for pool in pools), pools


def test_unknown_item_ids_are_ignored_and_reported(client):
    known = client.post("/v1/recommend", json={"items": [1003, 1001], "k": 5}).json()
    mixed = client.post("/v1/recommend", json={"items": [7, 1003, 99999, 1001], "k": 5}).json()
    assert mixed["unknown_items"] == [7, 99999]
    assert ids(mixed) == ids(known) and mixed["clicks_read"] == 2


def test_a_session_of_unknown_items_only_is_refused_with_422(client):
    response = client.post("/v1/recommend", json={"items": [1, 2]})
    assert response.status_code == 422 and "none of the session's 2 item ids" in response.json()["error"]


def test_exclude_seen_leaves_out_the_session_items_and_still_returns_k(client):
    session = [1003, 1001, 1007, 1003]
    every = [r["item"] for r in client.post("/v1/recommend", json={"items": session, "k": 50}).json()["items"]]
    unseen = client.post("/v1/recommend", json={"items": session, "k": 10, "exclude_seen": True}).json()["items"]
    assert [r["item"] for r in unseen] == [i for i in every if i not in session][:10]


def test_click_weights_are_each_read_click_s_weight_in_click_order(client, dsan_run):
    from nextclick.explain import explain

    model, vocab, _ = checkpoint.load(dsan_run)
    answer = client.post("/v1/recommend", json={"items": [1003, 1001, 1007], "include_weights": True}).json()
    expected = explain(model, vocab, [1003, 1001, 1007])
    weights = answer["click_weights"]
    assert weights["name"] == expected.weights_name
    assert [c["item"] for c in weights["clicks"]] == [1003, 1001, 1007]
    assert np.allclose([c["weight"] for c in weights["clicks"]], expected.weights, atol=1e-5)


def test_click_weights_of_a_model_without_attention_are_refused_with_422(tmp_path):
    with TestClient(create_app(ServeConfig(run=str(save_run(tmp_path / "stan", "stan"))))) as client:
        response = client.post("/v1/recommend", json={"items": [1003], "include_weights": True})
    assert response.status_code == 422 and "gives no click weights" in response.json()["error"]


def test_every_registered_model_is_served_and_every_attention_model_gives_one_weight_per_click_read(tmp_path):
    import math

    from nextclick.explain import attention_models

    attentive = set(attention_models())
    for name in sorted(REGISTRY):  # one service per model (each start costs): both checks on it
        with TestClient(create_app(ServeConfig(run=str(save_run(tmp_path / name, name))))) as client:
            response = client.post("/v1/recommend", json={"items": [1003, 1004], "k": 3})
            assert response.status_code == 200, (name, response.text)
            assert len(response.json()["items"]) == 3, name
            if name in attentive:
                answer = client.post("/v1/recommend", json={"items": [1003, 1004, 1009], "include_weights": True})
                assert answer.status_code == 200, (name, answer.text)
                clicks = answer.json()["click_weights"]["clicks"]
                assert [c["item"] for c in clicks] == [1003, 1004, 1009], name
                assert all(math.isfinite(c["weight"]) for c in clicks), name  # SR-GNN's soft attention may be negative
    assert attentive <= set(REGISTRY)


def test_live_session_clicks_accumulate_answer_and_can_be_read_and_deleted(client):
    for item in (1003, 1001):
        answer = client.post("/v1/sessions/s-1/clicks", json={"item": item, "k": 4})
    assert answer.status_code == 200
    body = answer.json()
    direct = client.post("/v1/recommend", json={"items": [1003, 1001], "k": 4}).json()
    assert body["session"] == [1003, 1001] and ids(body) == ids(direct)
    assert client.get("/v1/sessions/s-1").json() == {"session_id": "s-1", "items": [1003, 1001]}
    assert client.delete("/v1/sessions/s-1").status_code == 204
    assert client.get("/v1/sessions/s-1").status_code == 404
    assert client.delete("/v1/sessions/s-1").status_code == 404


def test_a_live_session_keeps_its_most_recent_clicks_up_to_the_contract_s_cap():
    store = MemoryStore(max_clicks=MAX_SESSION_LENGTH)
    clicks = asyncio.run(store.append("long", list(range(1, MAX_SESSION_LENGTH + 11))))
    assert clicks == list(range(11, MAX_SESSION_LENGTH + 11))


@pytest.mark.parametrize("body, why", [
    ({"items": [1003], "k": 0}, "k"), ({"items": [1003], "k": 1001}, "k"),
    ({"items": [1003] * (MAX_SESSION_LENGTH + 1)}, "items"), ({"items": []}, "items"),
    ({"items": ["1003"]}, "items"), ({"items": [1003.0]}, "items"), ({"items": [True]}, "items"),
    ({"items": [2**63]}, "items"), ({"items": [1003], "extra": 1}, "extra"),
])
def test_requests_past_a_bound_are_refused_with_422_naming_the_field(client, body, why):
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 422 and why in response.text


@pytest.mark.parametrize("body", [
    {"items": [1003, 1001, 1007], "k": 5}, {"items": [1003, 1001], "k": 3, "exclude_seen": True, "include_weights": True},
    {"items": [7, 99999]}, {"items": [1003], "k": 0}, {"items": ["1003"]}, {"items": [1003], "extra": 1}, {},
])
def test_the_direct_recommend_route_answers_as_the_fastapi_route(dsan_run, body):
    """BoundedApp answers POST /v1/recommend itself; the FastAPI route it stands in for (the unwrapped
    app, also what the OpenAPI docs describe) gives the same status and body."""
    app = create_app(ServeConfig(run=str(dsan_run)))
    with TestClient(app) as direct, TestClient(app.app) as routed:
        fast, slow = direct.post("/v1/recommend", json=body), routed.post("/v1/recommend", json=body)
    assert fast.status_code == slow.status_code
    if fast.status_code == 422 and "detail" in slow.json():
        assert [(e["loc"], e["type"]) for e in fast.json()["detail"]] == [(e["loc"], e["type"]) for e in slow.json()["detail"]]
    elif fast.status_code == 200:
        assert ids(fast.json()) == ids(slow.json())
    else:
        assert fast.json() == slow.json()
    assert fast.headers["content-type"] == "application/json" and int(fast.headers["content-length"]) == len(fast.content)


def test_malformed_json_is_refused_with_422_and_the_direct_route_is_counted_in_the_metrics(client):
    response = client.post("/v1/recommend", content=b'{"items": [1003,', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    assert client.post("/v1/recommend", json={"items": [1003]}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'nextclick_requests_total{method="POST",route="/v1/recommend",status="200"} 1' in metrics
    assert 'nextclick_requests_total{method="POST",route="/v1/recommend",status="422"} 1' in metrics


def test_a_body_over_the_size_bound_is_refused_with_413_with_or_without_its_length(client):
    big = b'{"items": [' + b" " * ServeLimits().max_body_bytes + b"1003]}"
    assert client.post("/v1/recommend", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():
        yield big[:1000]
        yield big[1000:]

    assert client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    small = b'{"items": [1003]}'
    assert client.post("/v1/recommend", content=iter([small]), headers={"content-type": "application/json"}).status_code == 200


def test_session_ids_outside_letters_digits_and_punctuation_are_refused(client):
    assert client.post("/v1/sessions/a%20b/clicks", json={"item": 1003}).status_code == 422
    assert client.get("/v1/sessions/" + "x" * 129).status_code == 422


def test_a_full_scoring_queue_answers_503_at_once_and_the_service_recovers(dsan_run, monkeypatch):
    from nextclick.serve import scoring

    release = threading.Event()
    real = scoring.answer
    app = create_app(ServeConfig(run=str(dsan_run), scorer="thread", limits=ServeLimits(max_pending=2, max_batch=1)))
    with TestClient(app) as client:
        # held from here: the run's warm-up query at start (scoring.warm_up) must not wait on it
        monkeypatch.setattr(scoring, "answer", lambda run, queries: release.wait(10) and real(run, queries))
        results = []
        workers = [threading.Thread(target=lambda: results.append(
            client.post("/v1/recommend", json={"items": [1003]}).status_code)) for _ in range(3)]
        for worker in workers:  # the first is taken by the scorer, the next two fill the queue
            worker.start()
            time.sleep(0.2)
        deadline = time.monotonic() + 20  # on a loaded machine the threads may take longer than the pauses
        while "nextclick_pending 2" not in client.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.perf_counter()
        refused = client.post("/v1/recommend", json={"items": [1003]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert time.perf_counter() - start < 2  # at once: not after the held request's 10 s
        assert client.post("/v1/sessions/busy/clicks", json={"item": 1003}).status_code == 503
        assert client.get("/v1/sessions/busy").status_code == 404  # a refused click is not stored
        release.set()
        for worker in workers:
            worker.join()
        assert results == [200, 200, 200]
        assert client.post("/v1/recommend", json={"items": [1003]}).status_code == 200
        assert 'nextclick_refused_total{reason="scoring queue full"} 2' in client.get("/metrics").text


def test_the_inline_scorer_scores_a_burst_in_one_call_and_refuses_past_its_bound_at_once(dsan_run):
    sizes = []
    scorer = InlineScorer(load_run(dsan_run), ServeLimits(max_pending=3, max_batch=16),
                          observe_batch=lambda size, seconds: sizes.append(size))

    async def burst():  # four requests in one turn of the loop, before any model call
        return await asyncio.gather(*[scorer.submit(Query([1003])) for _ in range(4)], return_exceptions=True)

    results = asyncio.run(burst())
    assert [type(result).__name__ for result in results] == ["Answer", "Answer", "Answer", "Overloaded"]
    assert sizes == [3] and scorer.pending == 0


def test_the_memory_store_drops_the_least_recently_clicked_sessions_past_its_bounds():
    store = MemoryStore(max_clicks=10, limits=StoreLimits(max_sessions=2))
    for name in ("a", "b", "a", "c"):  # "b" is now the least recently clicked
        asyncio.run(store.append(name, [1]))
    assert asyncio.run(store.get("b")) is None and asyncio.run(store.get("a")) == [1, 1]
    assert asyncio.run(store.count()) == 2
    one = store.bytes_used / 2
    small = MemoryStore(max_clicks=10, limits=StoreLimits(max_bytes=int(2.5 * one)))
    for name in ("a", "b", "c", "d"):
        asyncio.run(small.append(name, [1]))
    assert asyncio.run(small.count()) == 2 and small.bytes_used <= 2.5 * one


def test_a_session_expires_its_ttl_after_its_last_click():
    now = [0.0]
    store = MemoryStore(max_clicks=10, limits=StoreLimits(ttl_seconds=60), clock=lambda: now[0])
    asyncio.run(store.append("a", [1]))
    now[0] = 50.0
    asyncio.run(store.append("a", [2]))  # a click renews the session
    now[0] = 100.0
    assert asyncio.run(store.get("a")) == [1, 2]
    now[0] = 111.0
    assert asyncio.run(store.get("a")) is None and store.bytes_used == 0


def test_health_readiness_and_metrics_in_prometheus_text(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/sessions/m/clicks", json={"item": 1003})
    text = client.get("/metrics").text
    assert 'nextclick_requests_total{method="POST",route="/v1/sessions/{session_id}/clicks",status="200"} 1' in text
    assert 'nextclick_request_seconds_bucket{route="/v1/sessions/{session_id}/clicks",le="+Inf"} 1' in text
    assert "nextclick_sessions 1" in text and "nextclick_errors_total 0" in text
    assert "/v1/recommend" in client.get("/openapi.json").json()["paths"]


def test_a_reload_serves_the_new_run_without_dropping_a_request(tmp_path):
    current = tmp_path / "current"
    current.symlink_to(save_run(tmp_path / "dsan", "dsan"))
    body = {"items": [1003, 1001], "k": 5}
    with TestClient(create_app(ServeConfig(run=str(current)))) as client:
        statuses, stop = [], threading.Event()

        def keep_asking():
            while not stop.is_set():
                statuses.append(client.post("/v1/recommend", json=body).status_code)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        link = tmp_path / "next"
        link.symlink_to(save_run(tmp_path / "stan", "stan"))
        link.replace(current)  # the operator moves the link to another run, then asks for a reload
        assert client.post("/v1/reload").json()["model"] == "stan"
        deadline, wanted = time.monotonic() + 30, len(statuses) + 3  # some requests after the reload too
        while len(statuses) < max(wanted, 6) and time.monotonic() < deadline:  # a loaded machine is slow
            time.sleep(0.02)
        stop.set()
        asker.join()
        after = ids(client.post("/v1/recommend", json=body).json())
        assert client.get("/v1/model").json()["model"] == "stan"
    assert len(statuses) > 5 and set(statuses) == {200}
    with TestClient(create_app(ServeConfig(run=str(tmp_path / "stan")))) as fresh:
        assert after == ids(fresh.post("/v1/recommend", json=body).json())


@pytest.mark.services
def test_a_stopping_worker_answers_a_request_sent_on_a_connection_it_had_just_accepted(tmp_path):
    import json
    import signal
    import socket
    import subprocess
    import sys

    from nextclick.serve.bench import free_port, wait_ready

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nextclick.cli", "serve", str(save_run(tmp_path / "pop", "pop")),
                               "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, process=server)
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(0.3)  # accepted by the worker, no request yet: what a rolling restart finds
        server.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the worker has begun to stop; the client's request arrives now
        body = json.dumps({"items": [1003], "k": 3}).encode()
        connection.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 OK")  # uvicorn alone closes it unread: b""
        assert server.wait(timeout=20) == -signal.SIGTERM  # and it still stops (uvicorn re-raises the signal)
    finally:
        server.kill()


def test_serving_s_k_bound_is_nextclick_recommend_s():
    from nextclick.cli.common import MAX_K
    from nextclick.serve.limits import MAX_K as SERVE_MAX_K

    assert SERVE_MAX_K == MAX_K


def test_serve_refuses_an_in_process_store_shared_by_several_workers(dsan_run, capsys):
    from nextclick.cli import main

    assert main(["serve", str(dsan_run), "--workers", "2"]) == 2
    assert "--store redis://" in capsys.readouterr().err
    assert main(["serve", str(dsan_run), "--store", "mysql://x"]) == 2
    assert "--store must be 'memory' or a redis://" in capsys.readouterr().err


def test_the_load_test_loads_loopback_addresses_only():
    from nextclick.serve.bench import loopback_url

    assert loopback_url("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert loopback_url("http://localhost:9") == ("localhost", 9)
    for url in ("http://8.8.8.8:80", "http://10.0.0.1:80", "https://127.0.0.1:1"):
        with pytest.raises(ValueError):
            loopback_url(url)


def test_the_open_loop_client_measures_every_answer_of_a_live_server(dsan_run):
    from nextclick.serve.bench import run_rate

    with live_server(create_app(ServeConfig(run=str(dsan_run)))) as url:
        result = run_rate(url, [{"items": [1003, 1001], "k": 5}, {"items": [1]}], rate=40, seconds=1.0)
    assert result.sent == 40 and result.statuses == {"200": 20, "422": 20} and result.errors == 20
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert result.steal_share is None or 0 <= result.steal_share <= 1  # read from /proc/stat on Linux


def test_the_approximate_index_finds_the_exact_top_20_on_a_generated_catalogue():
    pytest.importorskip("faiss")
    from nextclick.serve.index import generated_catalogue, measure_recall

    items, queries = generated_catalogue(5_000, 32, 200, clusters=50)
    _, (measure,) = measure_recall(items, queries, k=20)
    assert measure.recall >= 0.99


@pytest.mark.parametrize("k", [1, 3, 20])
def test_the_compiled_top_items_ranks_as_top_items_ties_and_padding_included(k):
    pytest.importorskip("numba")
    from nextclick.models.base import top_items
    from nextclick.models.top_compiled import top_columns

    rng = np.random.default_rng(k)
    random = rng.standard_normal((3, 500)).astype(np.float32)
    tied = rng.integers(0, 4, (3, 500)).astype(np.float32)  # hundreds of equal scores per row
    tied[0, 0] = 99.0  # the padding column is never chosen, whatever it holds
    for scores in (random, tied, np.full((2, k + 1), -np.inf, dtype=np.float32)):
        expected, found = top_items(scores, k), top_columns(scores, k)
        assert found[0].tolist() == expected[0].tolist()
        assert found[1].tolist() == expected[1].tolist()


def test_the_compiled_top_items_refuses_a_k_its_rows_cannot_hold(monkeypatch):
    pytest.importorskip("numba")
    from nextclick.models import base

    monkeypatch.setenv(base.COMPILED_ENV, "1")
    monkeypatch.setattr(base, "_compiled_top_items", None)  # and back off after this test
    assert base.use_compiled()
    scores = np.zeros((2, 6), dtype=np.float32)  # five items
    assert base.top_items(scores, 5)[0].tolist() == [[1, 2, 3, 4, 5]] * 2
    for k in (0, 6):
        with pytest.raises(ValueError, match="k must be in 1..5"):
            base.top_items(scores, k)


@pytest.mark.parametrize("name", ["dsan", "stan"])
def test_a_served_run_ranks_with_the_compiled_top_items_as_the_model_does_without(name, tmp_path, monkeypatch):
    pytest.importorskip("numba")
    from nextclick.models import base

    path = save_run(tmp_path, name)
    model, _, _ = checkpoint.load(path)
    prefixes = [np.array([3, 1, 7]), np.array([5]), np.array([2, 2, 9, 4]), np.array([8, 1])] * 2
    batches = (prefixes[:1], prefixes[:3], prefixes)  # DSAN: scored row by row, then by one matrix product
    expected = [model.recommend(batch, k=10) for batch in batches]  # numpy's top_items, or torch.topk
    monkeypatch.setenv(base.COMPILED_ENV, "1")  # tests/conftest.py turns the compiled forms off elsewhere
    monkeypatch.setattr(base, "_compiled_top_items", None)  # and back off after this test
    run = load_run(path)
    assert base._compiled_top_items is not None and run.describe()["compiled"] is True
    for batch, (top, scores) in zip(batches, expected):
        found, found_scores = run.top_k.top(batch, 10)
        assert found.tolist() == top.tolist()
        assert np.allclose(found_scores, scores, atol=1e-5)


def test_item_scores_row_by_row_are_the_matrix_product():
    from nextclick.serve.index import ROW_BY_ROW, item_scores

    rng = np.random.default_rng(0)
    items = rng.standard_normal((8, 300)).astype(np.float32)
    for rows in (1, ROW_BY_ROW, ROW_BY_ROW + 1):
        queries = rng.standard_normal((rows, 8)).astype(np.float32)
        assert np.allclose(item_scores(queries, items), queries @ items, atol=1e-5)


def test_the_approximate_index_serves_inner_product_models_and_refuses_others(dsan_run, tmp_path):
    pytest.importorskip("faiss")
    with TestClient(create_app(ServeConfig(run=str(dsan_run)))) as exact, \
            TestClient(create_app(ServeConfig(run=str(dsan_run), index="hnsw"))) as approximate:
        body = {"items": [1003, 1001], "k": 10, "exclude_seen": True}
        assert approximate.get("/v1/model").json()["index"] == "hnsw"
        assert ids(approximate.post("/v1/recommend", json=body).json()) == ids(exact.post("/v1/recommend", json=body).json())
    from nextclick.serve.scoring import load_run

    with pytest.raises(ValueError, match="no approximate index"):
        load_run(save_run(tmp_path / "stan", "stan"), index="hnsw")


class live_server:
    """A uvicorn server on a free loopback port in a thread, for the tests that speak real HTTP."""

    def __init__(self, app):
        import uvicorn

        from nextclick.serve.bench import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_a_serving_override_keeps_the_weights_and_is_recorded_and_one_they_do_not_fit_is_refused(dsan_run):
    from nextclick.serve.scoring import load_run

    with TestClient(create_app(ServeConfig(run=str(dsan_run), overrides={"fast_entmax": "true"}))) as fast, \
            TestClient(create_app(ServeConfig(run=str(dsan_run)))) as reference:
        body = {"items": [1003, 1001, 1007], "k": 10}
        assert fast.get("/v1/model").json()["serving_overrides"] == {"fast_entmax": "true"}
        assert ids(fast.post("/v1/recommend", json=body).json()) == ids(reference.post("/v1/recommend", json=body).json())
    # DSAN's serving default is the Newton entmax; --set fast_entmax=false gives the reference bisection
    assert load_run(dsan_run).model.config.fast_entmax is True
    assert load_run(dsan_run, overrides={"fast_entmax": "false"}).model.config.fast_entmax is False
    with pytest.raises(ValueError, match="weights do not fit"):
        load_run(dsan_run, overrides={"embedding_dim": "16"})


@pytest.mark.services
def test_serve_bench_starts_a_server_loads_it_and_writes_the_figures_with_the_machine(dsan_run, tmp_path, capsys):
    import json

    from nextclick.cli import main

    split = generate().split  # the run's dataset, "synthetic", is where the bench draws its sessions
    checkpoint.save(tmp_path / "pop", build("pop", split.n_items).fit(split.train_cases()), split.vocab,
                    split.protocol, split.name)
    out = tmp_path / "serving" / "pop.json"
    assert main(["serve-bench", str(tmp_path / "pop"), "--rates", "20,40", "--seconds", "1", "--sessions", "50",
                 "--out", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert [r["rate"] for r in result["rates"]] == [20.0, 40.0]
    assert all(r["statuses"] == {"200": r["sent"]} and r["p99_ms"] > 0 for r in result["rates"])
    assert result["model"] == "pop" and result["dataset"] == "synthetic" and result["server_alive_after"]
    assert {"cpu", "cores", "load_average_1m"} <= set(result["machine"]) and result["scoring_profile"]["batch_1"]
    assert main(["serve-bench", str(dsan_run), "--rates", "20", "--out", str(out)]) == 2  # 50 items, not synthetic's 600
    assert "the run has 50 items but synthetic has 600" in capsys.readouterr().err


def test_an_index_cache_builds_the_hnsw_index_once_and_new_weights_get_their_own(dsan_run, tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    from nextclick.serve import index
    from nextclick.serve.scoring import load_run

    first = load_run(dsan_run, index="hnsw", index_cache=tmp_path / "cache")
    saved = sorted((tmp_path / "cache").iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".faiss"
    monkeypatch.setattr(index, "build_hnsw", lambda *a, **k: pytest.fail("the saved index was not used"))
    again = load_run(dsan_run, index="hnsw", index_cache=tmp_path / "cache")
    prefixes = [np.array([3, 1, 7])]
    assert np.array_equal(first.top_k.top(prefixes, 10)[0], again.top_k.top(prefixes, 10)[0])
    monkeypatch.undo()
    load_run(save_run(tmp_path / "other", "dsan", seed=3), index="hnsw", index_cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2
