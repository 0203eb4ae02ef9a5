"""Errors raised by storage that the entry point maps to exit codes (CONTRACT section 3)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of the errors a user can act on."""


class ValidationFailed(StorageError):
    """Invalid input. ``errors`` maps a dotted field path to its reasons (exit code 2)."""

    def __init__(self, errors: dict[str, list[str]], message: str = "The given data was invalid.") -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors

    def as_dict(self) -> dict:
        return {"message": self.message, "errors": self.errors}


class NotFound(StorageError):
    """An id that does not exist (exit code 3)."""


class Conflict(StorageError):
    """The resource is in a state that forbids the action (exit code 4)."""


def prefixed(errors: dict[str, list[str]], prefix: str) -> dict[str, list[str]]:
    """Return ``errors`` with every key put under ``prefix`` (``"filter"`` + ``"0.field"``)."""
    return {f"{prefix}.{key}" if key else prefix: reasons for key, reasons in errors.items()}
