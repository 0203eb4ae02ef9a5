"""What a delivery batch produced, per claimed ledger row."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.ledger import Claimed
from storage.models import Contact, User


@dataclass
class Outcomes:
    """What happened to each claimed row of a batch."""

    sent: list[tuple[int, str, str]] = field(default_factory=list)  # (row id, contact id, content)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    transient: list[tuple[Claimed, str]] = field(default_factory=list)
    artifact_key: str | None = None  # where the sent rows' artifacts are stored (letters: their PDFs)


@dataclass(frozen=True)
class Ready:
    """A claimed row whose contact passed the re-check, with what rendering needs."""

    row: Claimed
    contact: Contact
    user: User | None
