"""Bring a database to the newest schema with Alembic (run by every process at start).

`python -m service.db.migrate [URL]` does the same by hand. Concurrent starts are safe: on
PostgreSQL the migration holds an advisory lock, on SQLite the immediate transaction is one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_LOCK_ID = 0x636F6D70  # "comp"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
            try:
                conn.commit()
                command.upgrade(_with_connection(engine, conn), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
                conn.commit()
        return
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


def _with_connection(engine: Engine, conn) -> Config:  # noqa: ANN001
    cfg = alembic_config(engine)
    cfg.attributes["connection"] = conn
    return cfg


if __name__ == "__main__":
    from service.db.engine import make_engine
    from service.settings import Settings

    url = sys.argv[1] if len(sys.argv) > 1 else Settings().database_url
    upgrade(make_engine(url))
    print(f"database at head: {make_engine(url).url.render_as_string(hide_password=True)}")
