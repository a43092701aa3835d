"""Exceptions raised by emo-prep. The library raises; the CLI translates at the edge.

    EmoPrepError
    +-- InputError          the input is at fault: carries a check code, a hint and a value
    +-- ModelError          a model file is missing or its sha256 does not match MANIFEST
    +-- UsageError          misuse of our API (closed checker, bad option combination)
"""

from __future__ import annotations

__all__ = ["EmoPrepError", "InputError", "ModelError", "UsageError"]


class EmoPrepError(Exception):
    """Base of every error emo-prep raises on purpose."""


class InputError(EmoPrepError):
    """The photo (or its source) cannot be used; `code` is one of the check codes."""

    def __init__(self, code: str, message: str, *, hint: str = "", value: float | None = None,
                 limit: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.value = value
        self.limit = limit


class ModelError(EmoPrepError):
    """A model file under models/ is missing or altered."""


class UsageError(EmoPrepError, RuntimeError):
    """The API was used in a way it does not support."""
