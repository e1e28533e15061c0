"""The bounds of `nextclick serve`, in one place: what one request may ask, how much work the service
takes on at once, and how much the in-process session store may hold.

Every bound is checked before any work is done, and a request past one is answered at once: 413 (body
too large), 422 (too many clicks, k out of range, a malformed id), 503 with Retry-After (the scoring
queue is full). The service never queues without limit, so overload costs latency of nobody already
admitted and memory stays where these numbers put it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nextclick.models.config import MAX_SESSION_LENGTH

# The most recommendations one request may ask for: the bound of `nextclick recommend -k`
# (nextclick.cli.common.MAX_K, which tests/test_serve.py checks is the same number).
MAX_K = 1000

# Session ids are the client's names for its sessions: short, and safe as a Redis key and in a URL path.
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# Item ids are the integers of the user's click log (the run's vocabulary maps them), as `nextclick
# recommend` takes them: they must fit the id table's int64.
ITEM_ID_LOW, ITEM_ID_HIGH = -(2**63) + 1, 2**63 - 1


@dataclass(frozen=True)
class ServeLimits:
    # clicks one request gives, and clicks a live session keeps (its most recent): the model contract's
    # cap (nextclick.models.config.MAX_SESSION_LENGTH), beyond which no model reads a click
    max_clicks: int = MAX_SESSION_LENGTH
    max_k: int = MAX_K
    # 512 clicks of 19-digit ids with their commas and the options come to about 11 KB; 64 KiB leaves
    # room for whitespace and refuses megabyte bodies before they are parsed
    max_body_bytes: int = 64 * 1024
    # requests admitted at once (queued for the scorer or being scored); one more is answered 503 at once.
    # The scorer answers ~1,000-3,000 requests/s on two cores (docs/serving.md), so a full queue is
    # 50-130 ms of work: a client that waits longer than that is better told to come back
    max_pending: int = 128
    # requests scored in one model call: the scorer takes whatever has queued while it was busy, up to
    # this many; it never waits to fill a batch, so a lone request is scored at once. On retailrocket
    # (2 cores) a batch of 16 costs STAN 0.36 ms a query against 1.0 alone and 0.6 in batches of 64
    # (sparse products grow faster than linearly), DSAN 1.6 against 5-14 alone: 16 is where both gain
    max_batch: int = 16


@dataclass(frozen=True)
class StoreLimits:
    """Bounds of the in-process session store (a Redis server has its own: maxmemory and its policy)."""

    # a session untouched this long is gone: the 30 minutes of inactivity that end a session in the
    # published benchmarks' preprocessing (and in web analytics at large)
    ttl_seconds: float = 30 * 60
    max_sessions: int = 100_000
    # the store's estimate of its own size (ids, clicks, bookkeeping); the least recently used sessions
    # are dropped past it. 100,000 sessions of 20 clicks take ~35 MB; 256 MiB bounds the worst case of
    # long sessions
    max_bytes: int = 256 * 1024 * 1024

