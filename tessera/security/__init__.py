"""Passwords and access tokens."""
