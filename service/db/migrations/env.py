"""Alembic environment: the engine (or an open connection) comes from `service.db.migrate`."""

from __future__ import annotations

from alembic import context

from service.db.models import Base

config = context.config


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
    connection.commit()
else:
    engine = config.attributes["engine"]
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
