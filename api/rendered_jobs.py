"""Job bodies already serialised, keyed by their ETag: a job that has not changed since the last
read is answered without loading its JSON columns or serialising it again.

Safe because the ETag changes with every write to the job row (`updated_at`); an entry can only
be stale by being unused, and the least recently used entries go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_ENTRIES = 512  # bodies are a few kB to a few tens of kB (the report)


class RenderedJobs:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(etag)
            if body is not None:
                self._bodies.move_to_end(etag)
            return body

    def put(self, etag: str, body: bytes) -> None:
        with self._lock:
            self._bodies[etag] = body
            self._bodies.move_to_end(etag)
            while len(self._bodies) > self.max_entries:
                self._bodies.popitem(last=False)
