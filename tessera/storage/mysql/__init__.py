"""The MySQL/MariaDB configuration store: the same SQLAlchemy Core stores as the embedded SQLite
file (tessera/storage/sql), on a pooled ``mysql+asyncmy`` engine, with the schema managed by the
Alembic migrations in tessera/storage/mysql/migrations."""
