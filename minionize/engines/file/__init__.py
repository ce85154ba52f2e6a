"""The file engine: one param per line of a file, with a journal beside it."""

from .engine import FileEngine

__all__ = ["FileEngine"]
