"""Configuration store on SQLAlchemy Core (async): one code path for SQLite and MySQL."""
