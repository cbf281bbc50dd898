"""API keys the process has checked recently, so a polling client costs no key lookup per request.

A key is remembered for `ttl_s` after a successful lookup (by its SHA-256, never the plaintext);
unknown keys are never remembered. So a key revoked with `compressor keys revoke` (another
process) stops working within `ttl_s`; `ttl_s = 0` looks every request up.
"""

from __future__ import annotations

import threading
import time

from service.db.keys import hash_key

MAX_KEYS = 10_000


class KeyCache:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._owners: dict[str, tuple[str, float]] = {}  # key hash -> (owner id, expires at)
        self._lock = threading.Lock()

    def get(self, plaintext: str) -> str | None:
        if self.ttl_s <= 0:
            return None
        entry = self._owners.get(hash_key(plaintext))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, plaintext: str, owner: str) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._owners) >= MAX_KEYS:
                self._owners.clear()
            self._owners[hash_key(plaintext)] = (owner, time.monotonic() + self.ttl_s)
