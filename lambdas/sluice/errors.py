"""The one exception type for errors a user can cause, and its HTTP/CLI mapping."""

from __future__ import annotations


class SluiceError(Exception):
    """A user-caused error: bad input, unknown resource, forbidden transition.

    The message names the field or the resource. ``status`` is the HTTP status an API
    returns for it (always 4xx); the CLI exits with code 2.
    """

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(SluiceError):
    status = 404


class Conflict(SluiceError):
    """A forbidden state transition or a clash with what is already stored."""

    status = 409


class IntegrityError(SluiceError):
    """A stored artifact's bytes no longer match the recorded sha256."""

    status = 409
