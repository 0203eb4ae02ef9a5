"""The composition root's state: settings plus the adapters built from them, created lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_sessionmaker
from worker.settings import Settings


@dataclass
class App:
    """Everything a command needs, wired from one Settings object."""

    settings: Settings
    _closers: list = field(default_factory=list)

    @cached_property
    def engine(self) -> Engine:
        engine = make_engine(self.settings.database_url)
        self._closers.append(engine.dispose)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    def close(self) -> None:
        """Release pools and connections."""
        while self._closers:
            self._closers.pop()()
