"""Storage: one SQL layer (SQLAlchemy Core) over SQLite and PostgreSQL, with Alembic migrations."""
