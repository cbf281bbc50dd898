"""`Database`: one engine and session factory per process, with short explicit transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from service.db.engine import READ_ONLY_OPTION, make_engine, make_sessionmaker
from service.db.migrate import upgrade


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = make_sessionmaker(self.engine)
        self._read_engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        self._read_sessions = make_sessionmaker(self._read_engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on normal exit, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reads only: on SQLite it takes no write lock (BEGIN DEFERRED under
        WAL), so many API readers run beside the workers' writes. Never write in it."""
        with self._read_sessions.begin() as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """Like `read`, for a Core statement: no ORM session around it, half the cost of one, which
        matters on the reads every poll makes (a job's version, a page of summaries)."""
        with self._read_engine.connect() as conn:
            yield conn

    def migrate(self) -> None:
        upgrade(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
