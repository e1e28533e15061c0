"""Where live sessions are kept between requests: their clicks as the client's raw item ids, oldest first.

Raw ids, not vocabulary indices: a session outlives a reload of another run, whose catalogue may know
items the previous one did not. A session keeps its most recent `max_clicks` clicks (the models read
no more) and ends `ttl_seconds` after its last click.

- `MemoryStore` (the default): one process's dict in least-recently-clicked order, bounded by a session
  count and an estimate of its bytes; past either, the least recently clicked sessions go.
- `RedisStore` (`--store redis://host:port/db`): a list per session on a Redis (or Valkey) server, so
  several workers, and a restarted service, see the same sessions. The server bounds its own memory
  (maxmemory with an LRU policy, docs/serving.md).

Both are used through the same four coroutines, so the app never knows which it has.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections import OrderedDict
from typing import Callable, Protocol

from nextclick.serve.limits import StoreLimits


class SessionStore(Protocol):
    kind: str

    async def get(self, session_id: str) -> list[int] | None: ...

    async def append(self, session_id: str, items: list[int]) -> list[int]:
        """Add clicks to the session (made if new); returns its clicks after, at most `max_clicks`."""

    async def delete(self, session_id: str) -> bool: ...

    async def count(self) -> int: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


# What a session costs besides its clicks: the OrderedDict entry and its links, the array's header, the
# deadline; measured with sys.getsizeof on CPython 3.11 and rounded up
SESSION_OVERHEAD_BYTES = 200


class MemoryStore:
    """Sessions in this process, least recently clicked first. `clock` is injectable for tests."""

    kind = "memory"

    def __init__(self, max_clicks: int, limits: StoreLimits = StoreLimits(), clock: Callable[[], float] = time.monotonic):
        self.max_clicks = max_clicks
        self.limits = limits
        self.clock = clock
        self._sessions: OrderedDict[str, tuple[array, float]] = OrderedDict()  # id -> (clicks, deadline)
        self._bytes = 0
        self._lock = threading.Lock()  # the app calls from its event loop; tests and tools from threads too

    @staticmethod
    def _size(session_id: str, clicks: array) -> int:
        return sys.getsizeof(session_id) + sys.getsizeof(clicks) + SESSION_OVERHEAD_BYTES

    @property
    def bytes_used(self) -> int:
        return self._bytes

    async def get(self, session_id: str) -> list[int] | None:
        with self._lock:
            self._expire()
            entry = self._sessions.get(session_id)
            return None if entry is None else entry[0].tolist()

    async def append(self, session_id: str, items: list[int]) -> list[int]:
        with self._lock:
            self._expire()
            entry = self._sessions.pop(session_id, None)
            clicks = entry[0] if entry is not None else array("q")
            if entry is not None:
                self._bytes -= self._size(session_id, clicks)
            clicks.extend(items)
            if len(clicks) > self.max_clicks:
                del clicks[: len(clicks) - self.max_clicks]  # the most recent are the ones models read
            self._sessions[session_id] = (clicks, self.clock() + self.limits.ttl_seconds)  # now the most recent
            self._bytes += self._size(session_id, clicks)
            self._evict()
            return clicks.tolist()

    async def delete(self, session_id: str) -> bool:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
            if entry is not None:
                self._bytes -= self._size(session_id, entry[0])
            return entry is not None

    async def count(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._bytes = 0

    def _expire(self) -> None:
        """Drop sessions past their deadline: the oldest clicked come first, so stop at the first alive."""
        now = self.clock()
        while self._sessions:
            session_id, (clicks, deadline) = next(iter(self._sessions.items()))
            if deadline > now:
                break
            self._sessions.popitem(last=False)
            self._bytes -= self._size(session_id, clicks)

    def _evict(self) -> None:
        """Drop the least recently clicked sessions until both bounds hold (the newest always stays)."""
        while len(self._sessions) > 1 and (len(self._sessions) > self.limits.max_sessions
                                           or self._bytes > self.limits.max_bytes):
            session_id, (clicks, _) = self._sessions.popitem(last=False)
            self._bytes -= self._size(session_id, clicks)


class RedisStore:
    """Sessions on a Redis server: `<prefix>session:<id>` is a list of clicks with an expiry, and
    `<prefix>sessions` a sorted set of ids by last click, which `count` reads (ids the server evicted
    under maxmemory stay counted until their TTL passes: the count is an upper bound)."""

    kind = "redis"

    def __init__(self, url: str, max_clicks: int, limits: StoreLimits = StoreLimits(), prefix: str = "nextclick:"):
        import redis.asyncio as redis

        self.url = url
        self.max_clicks = max_clicks
        self.limits = limits
        self.prefix = prefix
        # short timeouts: a server that hangs makes requests fail fast (503 via readyz), never pile up
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._errors = (redis.RedisError, OSError)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    async def get(self, session_id: str) -> list[int] | None:
        clicks = await self._client.lrange(self._key(session_id), 0, -1)
        return [int(c) for c in clicks] if clicks else None

    async def append(self, session_id: str, items: list[int]) -> list[int]:
        key, ttl = self._key(session_id), max(1, round(self.limits.ttl_seconds))
        # one transaction: a click sent to another worker at the same moment lands before or after, whole
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *items).ltrim(key, -self.max_clicks, -1).expire(key, ttl).lrange(key, 0, -1)
            pipe.zadd(self.prefix + "sessions", {session_id: time.time()})
            *_, clicks, _ = await pipe.execute()
        return [int(c) for c in clicks]

    async def delete(self, session_id: str) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(session_id)).zrem(self.prefix + "sessions", session_id)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def count(self) -> int:
        index = self.prefix + "sessions"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(index, "-inf", time.time() - self.limits.ttl_seconds).zcard(index)
            _, count = await pipe.execute()
        return int(count)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except self._errors:
            return False

    async def close(self) -> None:
        await self._client.aclose()


def open_store(spec: str, max_clicks: int, limits: StoreLimits = StoreLimits()) -> SessionStore:
    """`memory` or a redis:// (rediss://, unix://) URL -> a store; ValueError for anything else."""
    if spec == "memory":
        return MemoryStore(max_clicks, limits)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec, max_clicks, limits)
    raise ValueError(f"--store must be 'memory' or a redis://host:port/db URL; got {spec!r}")
