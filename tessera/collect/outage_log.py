"""The log lines of the 503s /track and /collect answer: what the public answer leaves out.

During an outage every request fails the same way, thousands a second; one line per request
would bury everything else. So each kind of failure (its error type and public message) is
written at most once per interval, with the count of the ones left out since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tessera.errors import StorageUnavailable

INTERVAL_S = 10.0


class OutageLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        # kind → (when it was last written, how many were left out since)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def answered_503(self, path: str, error: StorageUnavailable) -> None:
        kind = (type(error).__name__, error.public_message)
        now = self._clock()
        written, left_out = self._last.get(kind, (float("-inf"), 0))
        if now - written < self._interval_s:
            self._last[kind] = (written, left_out + 1)
            return
        self._last[kind] = (now, 0)
        more = f" ({left_out} more like it since the last report)" if left_out else ""
        self._log.warning("%s: answered 503: %s%s", path, error.message, more)
