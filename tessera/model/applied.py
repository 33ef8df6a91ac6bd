"""Apply once: which requests a profile or a session already contains.

Elasticsearch has no transactions: a request's change set can be stored in part (the profile
written, one of its events refused), and the request is then retried — by the queue worker, by
the client, by the delayed-step runner. Counters must not grow twice. So every request has a
*mark* (its first event id, which async intake stamps and a retrying client sends again; a
delayed step's id), and the profile and the session it changed remember the marks of the last
requests they took in (``metadata.applied``), in the same write as the change itself. A retry
whose mark a record holds leaves that record's counters alone and only completes what is
missing; stored events carry their request's mark too (``metadata.request``), so a retry can
tell its own half-stored events (to count) from events another request stored (to drop).

Marks are kept as short digests: a ring of the last few on each record bounds the size, and a
retry comes within seconds or minutes, long before its mark would leave the ring.
"""

from __future__ import annotations

import base64
import hashlib

# How many marks a profile keeps: requests of other sessions of the person may be taken in
# between a request's first attempt and its retry.
PROFILE_MARKS = 32
# One session's requests are taken in order (the queue keys by session), so few are needed.
SESSION_MARKS = 8


def request_token(mark: str) -> str:
    """The digest kept for a request mark: 72 bits, 12 characters."""
    digest = hashlib.blake2b(mark.encode("utf-8", "surrogatepass"), digest_size=9).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def remember(applied: list[str], token: str, keep: int) -> None:
    """Add ``token`` to a record's marks, dropping the oldest beyond ``keep``."""
    if token not in applied:
        applied.append(token)
    del applied[:-keep]


def united(first: list[str], second: list[str], keep: int) -> list[str]:
    """The marks of two merged profiles: both records' requests are in the survivor."""
    marks = list(dict.fromkeys([*second, *first]))
    return marks[-keep:]
