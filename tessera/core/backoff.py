"""How long to wait before trying again, for every retry loop in Tessera (outbox deliveries,
the HTTP action, queue workers, waiting for a Redis lock).

Exponential with "equal jitter": ``base_s`` doubling per failed attempt, capped at ``max_s``,
then a random point in the upper half of that. Callers that failed together (messages of one
outage, workers of one broker restart) do not all come back at the same instant, and none
comes back much sooner than planned.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**62 seconds is far beyond any cap; past it the float would only overflow.
_MAX_DOUBLINGS = 62


def backoff_delay(
    attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempts - 1, 0), _MAX_DOUBLINGS))
    return ceiling / 2 + rand() * ceiling / 2
