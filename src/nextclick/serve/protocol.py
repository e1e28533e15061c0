"""The HTTP protocol `nextclick serve` runs uvicorn with: uvicorn's httptools protocol, except that a
worker shutting down gives its idle connections a moment to deliver a request before it closes them.

Why: a worker stops (a SIGHUP's rolling restart, SIGTERM) by closing its listening socket and then, at
once, every connection with no request in progress. A connection it accepted an instant earlier, whose
client has already sent its request, is one of those: the request is lost and the client reads "server
disconnected without sending a response". With several workers behind one socket this is the moment of
every rolling restart, and `--workers 2` under load lost a request that way (tests/test_serve_redis.py).
During the grace the worker no longer accepts connections (the others, or the new worker, do); a request
that arrives on an idle connection is answered, and then the connection closes.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# long enough for a request already sent to be read on a loaded machine, short enough that a restart of
# each worker waits little for it; a client that keeps its connection idle past it is closed, as before
SHUTDOWN_GRACE_SECONDS = 1.0

# what uvicorn's `http` setting takes, by name: worker processes import it themselves
PROTOCOL = "nextclick.serve.protocol:GracefulHttpProtocol"


class GracefulHttpProtocol(HttpToolsProtocol):
    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # idle: uvicorn would close it now
            self.loop.call_later(SHUTDOWN_GRACE_SECONDS, super().shutdown)
        else:  # a request in progress: answered, then closed (uvicorn's own behaviour)
            super().shutdown()
