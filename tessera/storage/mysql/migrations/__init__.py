"""Alembic migrations of the configuration schema (applied to MySQL/MariaDB by `tessera migrate`).

``env.py`` is Alembic's environment; ``versions/`` holds one file per schema revision. A change
to a table in tessera/storage/sql needs a new revision here: tests/unit/test_mysql_schema.py
fails while the migrated schema and the tables' definitions differ. To write one:
``alembic -c tessera/storage/mysql/migrations/alembic.ini revision -m "what changes"`` (with
``MYSQL_*`` pointing at a database at head, ``--autogenerate`` drafts it; read and fix the
draft, never keep it blindly).
"""
