"""The Redis session store against a real redis-server (Debian's package; .ci/run installs it): the
store's contract, two service processes sharing sessions, `--workers 2`, and a killed service that
loses no session. Skipped, saying why, only where redis-server is not installed and this is no CI run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("redis")
httpx = pytest.importorskip("httpx")

from nextclick.serve.bench import free_port, wait_ready  # noqa: E402
from nextclick.serve.limits import StoreLimits  # noqa: E402
from nextclick.serve.store import RedisStore  # noqa: E402
from test_serve import save_run  # noqa: E402


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing on CI: .ci/run must install it (apt-get install redis-server)")
        pytest.skip("redis-server not installed here (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path_factory.mktemp("redis"))], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


def test_the_redis_store_keeps_the_most_recent_clicks_counts_and_forgets(redis_url):
    async def scenario():
        store = RedisStore(redis_url, max_clicks=3, limits=StoreLimits(ttl_seconds=60), prefix="test-contract:")
        assert await store.get("a") is None
        assert await store.append("a", [1, 2]) == [1, 2]
        assert await store.append("a", [3, 4]) == [2, 3, 4]
        await store.append("b", [9])
        assert await store.count() == 2 and await store.ping()
        assert await store.delete("a") and not await store.delete("a")
        assert await store.get("a") is None and await store.count() == 1
        await store.close()

    asyncio.run(scenario())


def test_a_redis_session_expires_its_ttl_after_the_last_click(redis_url):
    async def scenario():
        store = RedisStore(redis_url, max_clicks=3, limits=StoreLimits(ttl_seconds=1), prefix="test-ttl:")
        await store.append("a", [1])
        await asyncio.sleep(1.6)
        assert await store.get("a") is None and await store.count() == 0
        await store.close()

    asyncio.run(scenario())


class Service:
    """`nextclick serve RUN --store URL` as a process of its own, on a free loopback port."""

    def __init__(self, run, store: str, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "nextclick.cli", "serve", str(run), "--port", str(self.port),
                                         "--store", store, *options], stderr=subprocess.DEVNULL)
        wait_ready(self.url, timeout=60, process=self.process)

    def click(self, session: str, item: int) -> dict:
        # a fresh connection per request, so that uvicorn's workers take turns
        response = httpx.post(f"{self.url}/v1/sessions/{session}/clicks", json={"item": item, "k": 3}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def session(self, session: str) -> list[int] | None:
        response = httpx.get(f"{self.url}/v1/sessions/{session}", timeout=10)
        return response.json()["items"] if response.status_code == 200 else None

    def model(self) -> dict:
        return httpx.get(self.url + "/v1/model", timeout=10).json()

    def worker_pids(self, count: int, timeout: float = 90) -> set[int]:
        """The pids of `count` workers, asked until each has answered (readyz answered once one was up)."""
        deadline, seen = time.monotonic() + timeout, set()
        while len(seen) < count and time.monotonic() < deadline:
            seen.add(self.model()["worker_pid"])
        return seen

    def stop(self, sig=signal.SIGINT) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=20)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("run") / "dsan", "dsan")


@pytest.mark.services
def test_services_on_one_redis_share_sessions_and_a_killed_one_loses_none(redis_url, run):
    first, second = Service(run, redis_url), Service(run, redis_url)
    try:
        first.click("shared", 1003)
        assert second.session("shared") == [1003]
        assert second.click("shared", 1001)["session"] == [1003, 1001]
        assert first.session("shared") == [1003, 1001]
        first.stop(signal.SIGKILL)
        first = Service(run, redis_url)  # restarted
        assert first.session("shared") == [1003, 1001]
        assert first.click("shared", 1005)["session"] == [1003, 1001, 1005]
    finally:
        first.stop()
        second.stop()


@pytest.mark.services
def test_workers_of_one_service_see_each_other_s_clicks(redis_url, run):
    service = Service(run, redis_url, "--workers", "2")

    try:
        seen = service.worker_pids(2)
        answered_by = set()
        for item in range(1001, 1031):
            service.click("workers", item)
            answered_by.add(service.model()["worker_pid"])
        assert len(seen) == 2 and len(answered_by) == 2  # both workers took part
        assert service.session("workers") == list(range(1001, 1031))
    finally:
        service.stop()


def test_readiness_and_session_routes_answer_503_when_redis_does_not_answer(run):
    from fastapi.testclient import TestClient

    from nextclick.serve.app import ServeConfig, create_app

    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with TestClient(create_app(ServeConfig(run=str(run), store=nobody))) as client:
        assert client.get("/readyz").status_code == 503
        clicked = client.post("/v1/sessions/x/clicks", json={"item": 1003})
        assert clicked.status_code == 503 and "session store unavailable" in clicked.json()["error"]
        assert client.post("/v1/recommend", json={"items": [1003]}).status_code == 200  # stateless requests go on


@pytest.mark.services
def test_sighup_replaces_every_worker_with_the_new_run_without_dropping_a_request(redis_url, tmp_path):
    import threading

    current = tmp_path / "current"
    current.symlink_to(save_run(tmp_path / "dsan", "dsan"))
    service = Service(current, redis_url, "--workers", "2")
    body = {"items": [1003, 1001], "k": 5}

    try:
        old_workers = service.worker_pids(2)
        assert len(old_workers) == 2
        statuses, stop = [], threading.Event()

        def keep_asking():
            while not stop.is_set():
                try:  # a fresh connection each time, as a client whose kept-alive one was closed reconnects
                    statuses.append(httpx.post(service.url + "/v1/recommend", json=body, timeout=30).status_code)
                except httpx.HTTPError as error:
                    statuses.append(type(error).__name__)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        link = tmp_path / "next"
        link.symlink_to(save_run(tmp_path / "stan", "stan"))
        link.replace(current)  # the operator moves the link to another run, then sends SIGHUP
        service.process.send_signal(signal.SIGHUP)  # uvicorn starts each new worker before it stops an old one
        # done when uvicorn has retired (terminated and reaped) both old workers; until then one old worker
        # may still answer beside a new one, however many answers in a row came from the new ones
        deadline = time.monotonic() + 120
        while any(alive(pid) for pid in old_workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        asker.join()
        assert not any(alive(pid) for pid in old_workers)
        assert {service.model()["model"] for _ in range(20)} == {"stan"}  # every worker now serves the new run
        assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(map(str, statuses)))
    finally:
        service.stop()


def test_a_reload_sent_to_one_process_reloads_every_process_on_the_same_redis(redis_url, tmp_path):
    from fastapi.testclient import TestClient

    from nextclick.serve.app import ServeConfig, create_app

    current = tmp_path / "current"
    current.symlink_to(save_run(tmp_path / "dsan", "dsan"))
    config = ServeConfig(run=str(current), store=redis_url)
    with TestClient(create_app(config)) as first, TestClient(create_app(config)) as second:
        assert first.get("/v1/model").json()["model"] == second.get("/v1/model").json()["model"] == "dsan"
        link = tmp_path / "next"
        link.symlink_to(save_run(tmp_path / "stan", "stan"))
        link.replace(current)  # the operator moves the link, then asks one process to reload
        answer = first.post("/v1/reload").json()
        assert answer["model"] == "stan" and answer["processes_told"] >= 1  # the second process (and any other)
        deadline = time.monotonic() + 30
        while second.get("/v1/model").json()["model"] != "stan" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.get("/v1/model").json()["model"] == "stan"
        assert second.post("/v1/recommend", json={"items": [1003], "k": 3}).status_code == 200


@pytest.mark.services
def test_a_reload_sent_to_one_worker_reloads_every_worker(redis_url, tmp_path):
    current = tmp_path / "current"
    current.symlink_to(save_run(tmp_path / "dsan", "dsan"))
    service = Service(current, redis_url, "--workers", "2")

    def served() -> tuple[int, str]:
        answer = httpx.get(service.url + "/v1/model", timeout=10).json()  # a fresh connection: workers take turns
        return answer["worker_pid"], answer["model"]

    try:
        deadline, seen = time.monotonic() + 90, {}
        while len(seen) < 2 and time.monotonic() < deadline:
            pid, model = served()
            seen[pid] = model
        assert set(seen.values()) == {"dsan"} and len(seen) == 2
        link = tmp_path / "next"
        link.symlink_to(save_run(tmp_path / "stan", "stan"))
        link.replace(current)
        assert httpx.post(service.url + "/v1/reload", timeout=60).json()["processes_told"] >= 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.update(dict(served() for _ in range(10)))
            if set(seen.values()) == {"stan"}:
                break
            time.sleep(0.2)
        assert set(seen.values()) == {"stan"}, seen  # both workers, without a restart
    finally:
        service.stop()
