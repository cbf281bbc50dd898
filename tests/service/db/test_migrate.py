"""Alembic migrations: they match the models, and go down and up again, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db.database import Database
from service.db.migrate import downgrade
from service.db.models import Base


def test_migrations_match_models_and_round_trip(db: Database) -> None:
    db.migrate()  # a second upgrade is a no-op
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade(db.engine)
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    db.migrate()
    assert {"jobs", "job_events", "api_keys", "idempotency_keys"} <= set(inspect(db.engine).get_table_names())
