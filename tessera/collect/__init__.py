"""Collection: read and check what clients send (/track, /collect). Never touches a backend."""
