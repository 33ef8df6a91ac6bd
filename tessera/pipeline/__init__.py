"""The processing stages between collection and storage. Never imports a concrete backend."""
