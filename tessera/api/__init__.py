"""The management REST API (FastAPI), behind bearer tokens."""
