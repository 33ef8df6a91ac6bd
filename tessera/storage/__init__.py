"""Storage: small ports (``ports.py``) and one package per backend; ``factory.py`` picks them."""
