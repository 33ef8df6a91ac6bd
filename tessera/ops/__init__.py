"""Operations: installation, health."""
