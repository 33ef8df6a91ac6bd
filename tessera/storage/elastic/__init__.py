"""Elasticsearch record storage (events, sessions, profiles)."""
