"""What `/metrics` says, in Prometheus's text format (version 0.0.4): requests by route and status,
request latency and scoring-batch histograms, requests refused for capacity, live sessions. Kept by
hand in a few dicts (one process; the event loop and the scorer thread share them under a lock)
rather than through a client library: the format is five line shapes."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Latency buckets in seconds: fine around the 10 ms goal (docs/serving.md), coarse beyond a second
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, count in zip((*self.bounds, "+Inf"), self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {cumulative}"]


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)  # (method, route, status) -> count
        self.latency: dict[str, Histogram] = {}
        self.batches = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.refused: dict[str, int] = defaultdict(int)  # reason -> count
        self.reloads = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches.observe(size)
            self.batch_seconds.observe(seconds)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def render(self, sessions: int | None, pending: int, model: str, run: str) -> str:
        with self._lock:
            lines = ["# HELP nextclick_requests_total HTTP requests answered, by method, route and status.",
                     "# TYPE nextclick_requests_total counter"]
            for (method, route, status), count in sorted(self.requests.items()):
                lines.append(f'nextclick_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}')
            lines += ["# HELP nextclick_errors_total Requests answered with a 5xx status.",
                      "# TYPE nextclick_errors_total counter",
                      f"nextclick_errors_total {sum(c for (_, _, s), c in self.requests.items() if s >= 500)}",
                      "# HELP nextclick_request_seconds Time from request to response, by route.",
                      "# TYPE nextclick_request_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("nextclick_request_seconds", f'route="{route}"')
            lines += ["# HELP nextclick_refused_total Requests refused at once for capacity, by reason.",
                      "# TYPE nextclick_refused_total counter"]
            lines += [f'nextclick_refused_total{{reason="{r}"}} {c}' for r, c in sorted(self.refused.items())]
            lines += ["# HELP nextclick_batch_size Queries scored in one model call.",
                      "# TYPE nextclick_batch_size histogram", *self.batches.lines("nextclick_batch_size", ""),
                      "# HELP nextclick_batch_seconds Time of one model call.",
                      "# TYPE nextclick_batch_seconds histogram", *self.batch_seconds.lines("nextclick_batch_seconds", ""),
                      "# HELP nextclick_pending Requests waiting for or in the scorer.",
                      "# TYPE nextclick_pending gauge", f"nextclick_pending {pending}",
                      "# HELP nextclick_reloads_total Runs loaded after the first.",
                      "# TYPE nextclick_reloads_total counter", f"nextclick_reloads_total {self.reloads}",
                      "# HELP nextclick_model_info The served run.", "# TYPE nextclick_model_info gauge",
                      f'nextclick_model_info{{model="{model}",run="{_escape(run)}"}} 1']
            if sessions is not None:
                lines += ["# HELP nextclick_sessions Live sessions in the store.", "# TYPE nextclick_sessions gauge",
                          f"nextclick_sessions {sessions}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
