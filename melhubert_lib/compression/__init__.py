"""Compression: the level driver, the method registry and one module per method."""
