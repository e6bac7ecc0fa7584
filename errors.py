"""Errors raised to users. Each message says what went wrong and what to do about it."""


class MeticulousError(Exception):
    """Base class of every error this package raises on purpose."""


class WeightsError(MeticulousError, ValueError):
    """A weight file is missing, unreadable, corrupt, or not the architecture it should be."""


class InputError(MeticulousError, ValueError):
    """An image, mask or parameter that the library cannot work with."""
