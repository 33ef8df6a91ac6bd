"""Segments: live membership on profile changes, and re-segmentation jobs over all profiles."""
