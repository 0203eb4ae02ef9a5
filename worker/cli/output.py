"""Printing JSON documents and mapping errors to the contract's exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4


def emit(document: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def fail(code: int, message: str, errors: dict[str, list[str]] | None = None) -> None:
    """Print the error document (stdout) and its one-line reason (stderr), then exit with ``code``."""
    document: dict[str, Any] = {"message": message}
    if errors is not None:
        document["errors"] = errors
    emit(document)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def read_json_file(path: str, field_name: str = "file") -> Any:
    """Read a JSON file given on the command line; a bad file is invalid input naming ``field_name``."""
    from storage.errors import ValidationFailed

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValidationFailed({field_name: [f"file not found: {path}"]}) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed({field_name: [f"not valid JSON: {exc}"]}) from None
