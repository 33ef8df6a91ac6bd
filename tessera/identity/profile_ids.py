"""Profile ids that prove where they come from.

A public client (a browser) keeps the profile id Tessera answered and sends it back. Tessera
must tell an id it issued from one the client made up: a made-up id would let anyone create a
profile under an id of their choosing — one an operator's server source uses later, say — and
take it over. Looking the id up is not always possible (async intake reads nothing but the
queue), so the ids Tessera issues to public clients carry their own proof: a UUID (version 8)
whose last 48 bits are a keyed MAC of the first 80, made with the installation's secret.

- ``mint()``: a new visitor's id; its first 48 bits are the time in milliseconds (ids of new
  profiles grow with time, like version 7 UUIDs, for the storage indices' sake);
- ``for_session(tenant, session_id)``: the id async intake promises a session that names no
  profile; the same for every request of that session (workers/intake.py);
- ``minted(profile_id)``: whether Tessera issued it.

Guessing a valid id takes about 2**47 tries per hit, each a request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from tessera.model.common import uuid_text

_VERSION = 8
MAC_BYTES = 6


class ProfileIds:
    def __init__(self, secret: Callable[[], str]) -> None:
        """``secret``: the installation's key, read at each call (it is loaded from the
        configuration store when the server starts)."""
        self._secret = secret

    def mint(self) -> str:
        head = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(4)
        return self._signed(head)

    def for_session(self, tenant: str, session_id: str) -> str:
        head = self._mac(f"session\x00{tenant}\x00{session_id}".encode())[:10]
        return self._signed(head)

    def answers_promise(self, named: str | None, public: bool) -> bool:
        """Whether async intake answers the session's promised id rather than the profile id
        the request names (``named``): when it names none, or a public request names one
        Tessera did not issue (workers/intake.py). The worker asks the same question."""
        return named is None or (public and not self.minted(named))

    def minted(self, profile_id: str) -> bool:
        raw = _uuid_bytes(profile_id)
        if raw is None or raw[6] >> 4 != _VERSION or raw[8] >> 6 != 0b10:
            return False
        return hmac.compare_digest(raw[10:], self._mac(b"minted\x00" + raw[:10])[:MAC_BYTES])

    def _signed(self, head: bytes) -> str:
        # The version and variant bits are set before the MAC is taken, so the proof covers
        # exactly the bytes the id shows.
        first = bytearray(head[:10])
        first[6] = (first[6] & 0x0F) | (_VERSION << 4)
        first[8] = (first[8] & 0x3F) | 0x80
        mac = self._mac(b"minted\x00" + bytes(first))[:MAC_BYTES]
        return uuid_text(bytes(first) + mac, version=_VERSION)

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self._secret().encode(), message, hashlib.sha256).digest()


def _uuid_bytes(text: str) -> bytes | None:
    if len(text) != 36 or text.count("-") != 4:
        return None
    try:
        return bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return None
