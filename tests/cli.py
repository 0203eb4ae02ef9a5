"""Run the real ``campaign-dispatch`` entry point in-process and read its JSON and exit code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from worker.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class CliRunner:
    """Calls ``main(argv)`` with DATABASE_URL (and other variables) set, as a user would run it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, **env: str) -> None:
        self._capsys = capsys
        monkeypatch.setenv("LOG_FORMAT", "json")
        monkeypatch.setenv("LOG_LEVEL", "WARNING")  # keep background threads (aiosmtpd) quiet
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    def __call__(self, *args: str) -> Result:
        self._capsys.readouterr()
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)
