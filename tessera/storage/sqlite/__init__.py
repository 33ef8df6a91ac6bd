"""Embedded backend for events, sessions and profiles: one SQLite file in WAL mode, one writer
thread that commits in groups, and a small pool of reader threads."""
