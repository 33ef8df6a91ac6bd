"""Small pieces shared by every record."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime

import msgspec

DEFAULT_TENANT = "default"


class Ref(msgspec.Struct, frozen=True):
    """A pointer to another record by id."""

    id: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(seconds: float) -> datetime:
    """A moment stored as Unix seconds (the SQL stores' time columns), in UTC."""
    return datetime.fromtimestamp(seconds, UTC)


class _TimeOrderedIds:
    """UUID strings of version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Ids that grow with time are appended at the end of every index they key instead of landing
    on a random page, so a group commit of many new records touches a few pages instead of one
    per record (measured: benchmarks/RESULTS.md). 74 random bits keep them unguessable.

    Reading the OS's random source once per id costs a system call each time (about 20 µs on
    virtual machines), several times per tracked request; reading 4 KiB at once makes it rare.
    """

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0

    def next(self) -> str:
        with self._lock:
            if self._position + 16 > len(self._buffer):
                self._buffer = os.urandom(self._CHUNK)
                self._position = 0
            raw = bytearray(self._buffer[self._position : self._position + 16])
            self._position += 16
        raw[0:6] = (time.time_ns() // 1_000_000).to_bytes(6, "big")
        return uuid_text(raw, version=7)


_ids = _TimeOrderedIds()


def new_id() -> str:
    return _ids.next()


def uuid_text(raw: bytes | bytearray, *, version: int) -> str:
    """16 bytes as a UUID string of ``version`` (RFC 9562 variant bits set)."""
    data = bytearray(raw[:16])
    data[6] = (data[6] & 0x0F) | (version << 4)
    data[8] = (data[8] & 0x3F) | 0x80
    text = data.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def derived_id(*parts: str) -> str:
    """An id made from ``parts`` (a UUID of version 8): the same parts give the same id. What
    a request makes (internal events, delayed steps, destination messages) is named from the
    request's own ids this way, so a retry of the request makes the same records again, and
    storing them twice changes nothing."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()
    return uuid_text(digest, version=8)
