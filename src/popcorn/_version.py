"""Popcorn's version, in a module of its own so that any layer may read it without importing
the package root (whose lazy exports reach the whole pipeline)."""

__version__ = "0.1.0"
