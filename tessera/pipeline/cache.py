"""A bounded in-process cache with a time-to-live, for hot profiles and sessions."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

import msgspec

V = TypeVar("V")
R = TypeVar("R", bound=msgspec.Struct)


class TtlCache(Generic[V]):
    """Least recently used entries go first when full; an entry unused for ``ttl_s`` expires.

    Not thread-safe: it lives on the event loop, like every caller of it.
    """

    def __init__(self, *, max_entries: int, ttl_s: float) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0 and self._ttl_s > 0

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        now = time.monotonic()
        if expires < now:
            del self._entries[key]
            return None
        self._entries[key] = (now + self._ttl_s, value)
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        self._entries[key] = (time.monotonic() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class RecordCache(Generic[R]):
    """Records kept encoded, as bytes.

    Bytes are invisible to Python's cycle collector, so a cache of a hundred thousand profiles
    does not make every full collection walk a hundred thousand object graphs (which showed as
    100+ ms pauses under load). Each hit decodes a private copy, so a request can change its
    copy freely and only a committed state is ever put back.
    """

    def __init__(self, record_type: type[R], *, max_entries: int, ttl_s: float) -> None:
        self._entries = TtlCache[bytes](max_entries=max_entries, ttl_s=ttl_s)
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(record_type).decode

    def get(self, key: str) -> R | None:
        raw = self._entries.get(key)
        return self._decode(raw) if raw is not None else None

    def put(self, key: str, record: R) -> None:
        self._entries.put(key, self._encode(record))

    def discard(self, key: str) -> None:
        self._entries.discard(key)

    def __len__(self) -> int:
        return len(self._entries)
