"""Reloads told to every process of a service through its Redis server.

`POST /v1/reload` reaches one process. With `--workers N` (and so a Redis store) that process reloads,
then publishes on the channel `<prefix>reload`; every other process on the same Redis server is
subscribed and reloads its own RUN path in turn. This covers the workers of one `nextclick serve` and
services on other machines that share the Redis server. Each process names itself in what it publishes
and skips its own messages. A process that was down when the message went out loads RUN as it is when
it starts, so it misses nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Awaitable, Callable


class ReloadChannel:
    """Publish and receive reload messages on `<prefix>reload` of the Redis server at `url`."""

    def __init__(self, url: str, prefix: str = "nextclick:"):
        import redis.asyncio as redis

        self.channel = prefix + "reload"
        self.sender = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process, this start
        self._client = redis.Redis.from_url(url, socket_connect_timeout=2.0)
        self._errors = (redis.RedisError, OSError)

    async def announce(self) -> int:
        """Tell the other processes to reload; how many received it (this one not counted)."""
        receivers = await self._client.publish(self.channel, self.sender)
        return max(0, int(receivers) - 1)

    async def listen(self, reload: Callable[[], Awaitable[object]], retry_seconds: float = 1.0) -> None:
        """Call `reload()` for every message another process publishes, until cancelled. If the
        connection to Redis drops, it subscribes again every `retry_seconds`. A failed reload keeps the
        run being served (the operator sees the error in this process's log)."""
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message" or message.get("data", b"").decode() == self.sender:
                            continue
                        try:
                            await reload()
                        except Exception as error:  # noqa: BLE001: a bad run on disk must not end the listener
                            print(f"nextclick serve: a reload told by another process failed: {error!r}", flush=True)
            except self._errors:
                await asyncio.sleep(retry_seconds)

    async def close(self) -> None:
        await self._client.aclose()
