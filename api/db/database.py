"""`Database`: one engine and session factory per process, with short explicit transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.db.engine import make_engine, make_sessionmaker
from api.db.migrate import upgrade


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = make_sessionmaker(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on normal exit, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        upgrade(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
