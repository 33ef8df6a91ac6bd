"""Stopping an API process without failing a request a client already sent.

uvicorn's graceful shutdown lets requests in flight finish, but closes every *idle* keep-alive
connection at once. A client that sent its next request on such a connection a moment earlier
(its bytes still on the way, or a connection accepted but not yet read from) sees the
connection close under it: a failed request, at every restart, although nothing was wrong. So
while its process drains, an idle connection stays open a little longer: a request that
arrives on it is served and answered with ``Connection: close`` (the client reconnects, to
another process), and a connection that stays idle is closed after ``DRAIN_IDLE_S`` (or its
keep-alive time, if shorter). Requests in flight end as before, also with ``Connection:
close``. The process itself waits for all of this up to ``TESSERA_SHUTDOWN_GRACE_SECONDS``.
"""

from __future__ import annotations

from tessera.serving.header_deadline import HeaderDeadlineProtocol

# Long enough for a client that keeps its connections busy to send its next request (and get
# its close), short enough that a restart does not wait on connections nobody uses.
DRAIN_IDLE_S = 1.0


class DrainingProtocol(HeaderDeadlineProtocol):
    _draining = False

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()  # the answer in progress says Connection: close, then closes
            return
        self._draining = True
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        linger = min(float(self.timeout_keep_alive), DRAIN_IDLE_S)
        self.timeout_keep_alive_task = self.loop.call_later(linger, self.timeout_keep_alive_handler)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # served, then closed: the client goes elsewhere
