"""What the domain refuses, and why: each error carries the text the caller is answered with.

The HTTP layer maps each kind to its status code in one place (api/errors.py); the domain
itself never speaks HTTP.
"""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(DomainError):
    """The request itself is wrong (a parameter, a workflow, a signature that recovers no one)."""


class NotAuthorized(DomainError):
    """The signer may not do this, or the nonce was used before or is too old."""


class NotFound(DomainError):
    """No such job, result or file, for this owner."""


class Gone(DomainError):
    """A result that existed and was deleted for good (its storage expired)."""


class Refused(DomainError):
    """A stored result this service will not fetch or serve (outside what the operator allows)."""


class StorageFailed(DomainError):
    """The result storage could not be reached or answered nonsense."""


class StorageTimedOut(DomainError):
    """The result storage did not answer in time."""


class RangeNotSatisfiable(DomainError):
    """A Range asking only for bytes a local result file does not have; `size` is the file's."""

    def __init__(self, message: str, size: int):
        super().__init__(message)
        self.size = size
