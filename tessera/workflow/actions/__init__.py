"""The built-in workflow actions, one module per family, each ending with ``ACTIONS``."""
