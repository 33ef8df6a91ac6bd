"""A bounded in-process cache with a time-to-live, for hot profiles and sessions.

Bounded twice: by entries (``TESSERA_CACHE_MAX_ENTRIES``) and by bytes
(``TESSERA_CACHE_MAX_BYTES``, the records' encoded size), since a client that makes large
profiles would otherwise fill memory with a few thousand entries. A record larger than
``TESSERA_CACHE_MAX_ENTRY_BYTES`` is not kept at all: it is read from storage each time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from tessera.core.clock import SYSTEM_CLOCK, Clock
from tessera.model.decoding import json_decoder

V = TypeVar("V")
R = TypeVar("R", bound=msgspec.Struct)


class RecordCachePort(Protocol[R]):
    """Committed profiles or sessions by key: ``RecordCache`` in the process, or one shared by
    every API process (``tessera/storage/redis/cache.py``). Async, because a shared one is a
    network hop away.

    ``put`` keeps what was just committed (the caller holds the record's lock); ``fill`` keeps
    what was just read from storage, unless something is there already — a read that raced a
    commit must not overwrite the newer record the committer put back. ``discard`` turns
    entries into misses before a commit (``VisitorDirectory.commit``), so a process that dies
    between its commit and its ``put`` leaves a miss, never the version before.
    """

    async def get(self, key: str) -> R | None: ...

    async def put(self, key: str, record: R) -> None: ...

    async def fill(self, key: str, record: R) -> None: ...

    async def discard(self, *keys: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """Entries of one cache that a lock set reads or turns into misses in its own round trips
    (``LockSetLike``): the records its locks guard."""

    cache: RecordCachePort[Any]
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CachePut(Generic[R]):
    """A committed record for a lock set to put back in its cache before letting go."""

    cache: RecordCachePort[R]
    key: str
    record: R


@dataclass(frozen=True, slots=True)
class Found(Generic[R]):
    """What a lock set read ahead for a key: the cached record, or None for a miss."""

    record: R | None


def _no_size(_value: object) -> int:
    return 0


class TtlCache(Generic[V]):
    """Least recently used entries go first when full (more than ``max_entries``, or more than
    ``max_bytes`` by ``size_of``); an entry unused for ``ttl_s`` expires.

    Not thread-safe: it lives on the event loop, like every caller of it.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        max_bytes: int | None = None,
        size_of: Callable[[V], int] = _no_size,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0 and self._ttl_s > 0

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        now = self._clock.monotonic()
        if expires < now:
            self._drop(key)
            return None
        self._entries[key] = (now + self._ttl_s, value)
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        self._drop(key)
        self._entries[key] = (self._clock.monotonic() + self._ttl_s, value)
        self.bytes += self._size_of(value)
        while len(self._entries) > self._max_entries or (
            self._max_bytes is not None and self.bytes > self._max_bytes
        ):
            _key, (_expires, oldest) = self._entries.popitem(last=False)
            self.bytes -= self._size_of(oldest)

    def discard(self, key: str) -> None:
        self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= self._size_of(entry[1])

    def __len__(self) -> int:
        return len(self._entries)


_TOMBSTONE = b""


class RecordCache(Generic[R]):
    """Records kept encoded, as bytes.

    Bytes are invisible to Python's cycle collector, so a cache of a hundred thousand profiles
    does not make every full collection walk a hundred thousand object graphs (which showed as
    100+ ms pauses under load). Each hit decodes a private copy, so a request can change its
    copy freely and only a committed state is ever put back.
    """

    def __init__(
        self,
        record_type: type[R],
        *,
        max_entries: int,
        ttl_s: float,
        max_bytes: int | None = None,
        max_entry_bytes: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._entries = TtlCache[bytes](
            max_entries=max_entries, ttl_s=ttl_s, max_bytes=max_bytes, size_of=len, clock=clock
        )
        self._max_entry_bytes = max_entry_bytes
        self._encode = msgspec.json.Encoder().encode
        self._decode = json_decoder(record_type)

    def _fits(self, encoded: bytes) -> bool:
        return self._max_entry_bytes is None or len(encoded) <= self._max_entry_bytes

    async def get(self, key: str) -> R | None:
        raw = self._entries.get(key)
        return self._decode(raw) if raw else None

    async def put(self, key: str, record: R) -> None:
        encoded = self._encode(record)
        # Too large to keep: a tombstone, so that no racing read fills an older copy back.
        self._entries.put(key, encoded if self._fits(encoded) else _TOMBSTONE)

    async def fill(self, key: str, record: R) -> None:
        if self._entries.get(key) is None:
            encoded = self._encode(record)
            if self._fits(encoded):
                self._entries.put(key, encoded)

    async def discard(self, *keys: str) -> None:
        # A tombstone, not a removal: a read that began before the discard must not ``fill``
        # the old record back. It reads as a miss; the next ``put`` replaces it.
        for key in keys:
            self._entries.put(key, _TOMBSTONE)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Encoded bytes held (what TESSERA_CACHE_MAX_BYTES bounds)."""
        return self._entries.bytes
