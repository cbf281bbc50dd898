"""Storage: SQLAlchemy tables, the engine factory, Alembic migrations, guarded job updates."""
