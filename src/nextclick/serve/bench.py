"""`nextclick serve-bench`: an open-loop load test of a served run, on this machine only.

Open loop: request i is due at a time drawn in advance (Poisson arrivals at the asked rate), whether or
not earlier ones have been answered, and its latency counts from that due time. A slow server therefore
shows as latency (and, past its queue, as 503s), never as a quietly lower offered rate: the
"coordinated omission" a closed loop of waiting clients commits. Achieved throughput is what came back
per second of the window.

The client is a few dozen lines of HTTP/1.1 over asyncio streams (keep-alive connections from a pool)
rather than an HTTP library: at 1,000 requests/s on the same two cores as the server, each
millisecond of client work per request is a core the server does not get.

Bounded: loopback addresses only, at most MAX_RATE requests/s, MAX_SECONDS per rate, MAX_CONNECTIONS
open at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np

MAX_RATE = 10_000  # requests/s: beyond what one Python client can offer anyway
MAX_SECONDS = 60.0  # per rate
MAX_CONNECTIONS = 512  # open at once; a request due when all are busy waits (and its latency shows it)


def loopback_url(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL whose host is a loopback address; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"serve-bench needs an http://host:port URL; got {url!r}")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, None)}
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {parts.hostname!r}: {error}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"serve-bench loads this machine only: {parts.hostname!r} is not a loopback address")
    return parts.hostname, parts.port or 80


@dataclass
class RateResult:
    rate: float  # requests/s asked for
    seconds: float
    sent: int
    achieved_rate: float  # answers with status 200 per second of the window
    statuses: dict[str, int]  # status (or the client error) -> count
    errors: int  # every answer but 200
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # from the moment the request was written (the server's own time plus the loopback): the open-loop
    # figures above also hold the time a request waited for the client itself, which falls behind at
    # rates one Python process cannot offer
    service_p99_ms: float | None = None
    refused_service_p99_ms: float | None = None  # how fast 503s came back (overload)
    server_cpu_ms_per_request: float | None = None  # the server process's CPU time (all its threads) / requests
    # this load generator's own CPU time / requests: on a machine it shares with the server, what the
    # server did not get
    client_cpu_ms_per_request: float | None = None
    server_rss_mb: dict = field(default_factory=dict)  # before, peak, after
    # share of the machine's CPU time its hypervisor gave other guests during the window (steal time,
    # /proc/stat), so that a tail can be read beside what the machine itself lost
    steal_share: float | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection: send a POST, read status and body (Content-Length framing,
    which uvicorn always uses for these JSON answers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def post_request(host: str, port: int, path: str, body: dict) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _load(host: str, port: int, requests: list[bytes], rate: float, seconds: float, seed: int,
                watch_pid: int | None) -> RateResult:
    rng = np.random.default_rng(seed)
    count = max(1, int(rate * seconds))
    due = np.cumsum(rng.exponential(1.0 / rate, count))  # Poisson arrivals
    idle: list[Connection] = []
    slots = asyncio.Semaphore(MAX_CONNECTIONS)
    latencies, refused, statuses = [], [], {}
    service, refused_service = [], []
    rss = {"before": rss_mb(watch_pid), "peak": rss_mb(watch_pid)}
    cpu_before, client_before, steal_before = cpu_seconds(watch_pid), time.process_time(), steal_seconds()

    async def one(index: int, start: float) -> None:
        async with slots:
            status, key = 0, "client error"
            for attempt in range(2):
                reused = attempt == 0 and bool(idle)
                connection = idle.pop() if reused else None
                try:
                    if connection is None:
                        connection = await Connection.open(host, port)
                    sent = time.perf_counter()
                    status = await connection.post(requests[index % len(requests)])
                    idle.append(connection)
                    key = str(status)
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                    if connection is not None:
                        connection.close()
                    key = f"client {type(error).__name__}"
                    if not reused:  # a kept-alive connection the server had closed is tried once more afresh
                        break
            end = time.perf_counter()
            statuses[key] = statuses.get(key, 0) + 1
            (latencies if status == 200 else refused).append(end - (start + due[index]))
            if status:
                (service if status == 200 else refused_service).append(end - sent)

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.25)
            rss["peak"] = max(rss["peak"] or 0, rss_mb(watch_pid) or 0) or None

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    tasks = []
    for index in range(count):
        wait = start + due[index] - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(index, start)))
    await asyncio.gather(*tasks)
    window = time.perf_counter() - start
    watcher.cancel()
    for connection in idle:
        connection.close()
    rss["after"] = rss_mb(watch_pid)
    steal_after = steal_seconds()
    steal = None if steal_before is None or steal_after is None else \
        round((steal_after - steal_before) / (window * (os.cpu_count() or 1)), 4)
    cpu_after, client_cpu = cpu_seconds(watch_pid), round(1000 * (time.process_time() - client_before) / count, 3)
    server_cpu = None if cpu_before is None or cpu_after is None else round(1000 * (cpu_after - cpu_before) / count, 3)
    ok = np.array(latencies) * 1000
    quantile = (lambda q: round(float(np.quantile(ok, q)), 3)) if len(ok) else (lambda q: None)

    def p99(seconds: list[float]) -> float | None:
        return round(float(np.quantile(np.array(seconds) * 1000, 0.99)), 3) if seconds else None

    return RateResult(rate=rate, seconds=round(window, 3), sent=count,
                      achieved_rate=round(len(ok) / window, 1), statuses=dict(sorted(statuses.items())),
                      errors=count - len(ok), p50_ms=quantile(0.5), p90_ms=quantile(0.9), p99_ms=quantile(0.99),
                      max_ms=quantile(1.0),
                      service_p99_ms=p99(service), refused_service_p99_ms=p99(refused_service),
                      server_rss_mb={k: v for k, v in rss.items()}, server_cpu_ms_per_request=server_cpu,
                      client_cpu_ms_per_request=client_cpu, steal_share=steal)


def run_rate(url: str, bodies: list[dict], rate: float, seconds: float, path: str = "/v1/recommend",
             seed: int = 0, watch_pid: int | None = None) -> RateResult:
    """Offer `rate` requests/s for `seconds` (bodies in turn) to `url` (loopback only)."""
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE:,}] requests/s; got {rate}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:g}]; got {seconds}")
    if not bodies:
        raise ValueError("no request bodies to send")
    host, port = loopback_url(url)
    requests = [post_request(host, port, path, body) for body in bodies]
    with asyncio.Runner(loop_factory=fast_event_loop()) as runner:
        return runner.run(_load(host, port, requests, rate, seconds, seed, watch_pid))


def fast_event_loop():
    """uvloop's event loop where it is installed (the serve extra brings it for uvicorn): the client's
    CPU per request is what the server loses on a shared machine; else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc): uvicorn's workers are children of the process started."""
    found, index = [pid], 0
    while index < len(found):
        try:
            with open(f"/proc/{found[index]}/task/{found[index]}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            pass
        index += 1
    return found


def tree_total(pid: int | None, read: Callable[[int], float | None]) -> float | None:
    """The sum of `read(member)` over a process and its children (Linux /proc); members that vanished or
    cannot be read are left out; None when none could be read."""
    if pid is None:
        return None
    total = None
    for member in process_tree(pid):
        try:
            value = read(member)
        except (OSError, IndexError, ValueError):
            continue
        if value is not None:
            total = (total or 0.0) + value
    return total


def _resident_mb(pid: int) -> float | None:
    with open(f"/proc/{pid}/status") as handle:
        return next((int(line.split()[1]) / 1024 for line in handle if line.startswith("VmRSS:")), None)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children in MB (Linux /proc), None where it cannot be read."""
    total = tree_total(pid, _resident_mb)
    return None if total is None else round(total, 1)


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor has taken from this machine's cores since boot (Linux /proc/stat's
    steal column), None where it cannot be read."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process and its children (Linux /proc), None where it cannot be read."""
    return tree_total(pid, _cpu_seconds)


def scoring_profile(run, bodies: list[dict], batch_sizes: tuple[int, ...] = (1, 4, 16), queries: int = 256,
                    top_functions: int = 12) -> dict:
    """What bounds the service, measured in this process without HTTP: the time of one model call per
    batch size (p50, p99, per query) on the bench's own sessions, and the functions a lone query spends
    its time in (cProfile, cumulative)."""
    import cProfile
    import pstats

    from nextclick.serve.scoring import Query, answer

    chosen = [Query(b["items"], b.get("k", 20)) for b in bodies[:queries]]
    answer(run, chosen[:4])  # warm
    out = {}
    for size in batch_sizes:
        times = []
        for start in range(0, len(chosen), size):
            begin = time.perf_counter()
            answer(run, chosen[start : start + size])
            times.append(time.perf_counter() - begin)
        milliseconds = np.array(times) * 1000
        out[f"batch_{size}"] = {"p50_ms": round(float(np.median(milliseconds)), 3),
                                "p99_ms": round(float(np.quantile(milliseconds, 0.99)), 3),
                                "ms_per_query": round(float(milliseconds.sum()) / len(chosen), 3)}
    profiler = cProfile.Profile()
    profiler.enable()
    for query in chosen[:64]:
        answer(run, [query])
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("cumulative").stats
    ranked = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:top_functions]
    out["lone_query_functions"] = [{"function": f"{Path(file).name}:{line}({name})",
                                    "cumulative_ms_per_query": round(1000 * entry[3] / 64, 3)}
                                   for (file, line, name), entry in ranked]
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, timeout: float = 120.0, process=None) -> None:
    """Until GET /readyz answers 200; RuntimeError when the server process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {timeout:g} s")


def result_record(results: list[RateResult], **context) -> dict:
    """What serve-bench writes: the rates' figures and everything needed to read them fairly."""
    return {**context, "rates": [asdict(r) for r in results]}
