"""Pure data: the records Tessera keeps. No I/O here."""
