"""The error hierarchy, and the one place that decides which HTTP status each error means."""

from __future__ import annotations


class TesseraError(Exception):
    """Base of every error Tessera raises on purpose."""

    status_code = 500
    # Seconds a client should wait before it tries again (the Retry-After header), if any.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(TesseraError):
    """A setting is missing or wrong; start-up stops with this message."""


class BadRequest(TesseraError):
    """The request cannot be read (malformed JSON, invalid UTF-8, too deep)."""

    status_code = 400


class Unauthorized(TesseraError):
    """Missing or bad credentials, or an unknown or disabled event source."""

    status_code = 401


class Forbidden(TesseraError):
    status_code = 403


class NotFound(TesseraError):
    status_code = 404


class Conflict(TesseraError):
    status_code = 409


class RequestTimeout(TesseraError):
    """The client did not send its request (headers or body) in time."""

    status_code = 408


class PayloadTooLarge(TesseraError):
    status_code = 413


class TooManyRequests(TesseraError):
    """A throttle's bucket is empty (core/throttle.py): 429 with Retry-After."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidPayload(TesseraError):
    """The request is well-formed JSON but breaks the payload's rules."""

    status_code = 422


class StorageUnavailable(TesseraError):
    """The store could not keep the data; the client should retry later.

    ``message`` says what failed and where (server addresses, client errors): it is for the
    log and the management API. ``public_message`` says only which kind of service is away:
    it is what /track and /collect, open to anyone, answer. Subclasses name their service.
    """

    status_code = 503
    # Seconds the client is told to wait (the Retry-After header of the 503).
    retry_after: int | None = 2
    public_message = "storage is unavailable; retry later"


class Busy(StorageUnavailable):
    """The record is in use by other requests right now (a lock, a merge): 503, and the
    message is written for anyone (it names no server), so it is also the public one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.public_message = message


class SearchTimedOut(StorageUnavailable):
    """A search ran longer than TESSERA_SEARCH_TIMEOUT_SECONDS and was stopped. A 503 with
    Retry-After like an outage: under less load it may finish in time; a narrower condition
    or a smaller page helps in any case."""


class RecordRejected(TesseraError):
    """The record store refused a record for what it is (a mapping error, a value it cannot
    hold): sending it again cannot help. A queue worker gives such a message up to the dead
    letters after its attempts instead of retrying it forever; a request is answered 422."""

    status_code = 422


class StorageRefused(TesseraError):
    """The store refused a request Tessera made (Elasticsearch answered 400 to a read): not an
    outage, so not "retry later" (a retry gets the same answer), and not the client's input,
    which is checked before any read. A defect to report; the message names the refusal."""

    status_code = 500
