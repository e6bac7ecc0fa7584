"""Files this package writes and reads: atomic writes (and, beside them, image files)."""

from .atomic import atomic_path, atomic_write

__all__ = ["atomic_path", "atomic_write"]
