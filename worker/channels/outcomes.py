"""What a delivery round produced, per claimed ledger row, and how a channel hands rounds over."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from storage.ledger import Claimed
from storage.models import ContactLike, UserLike


@dataclass
class Outcomes:
    """What happened to each claimed row of a round."""

    # (row id, contact id, the content sent as archived: storage.archive.Packer.pack; None: telephone)
    sent: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    transient: list[tuple[Claimed, str]] = field(default_factory=list)
    artifact_key: str | None = None  # where the sent rows' artifacts are stored (letters: their PDFs)

    def __bool__(self) -> bool:
        return bool(self.sent or self.failed or self.skipped or self.transient)


@dataclass(frozen=True)
class Ready:
    """A claimed row whose contact passed the re-check, with what rendering needs."""

    row: Claimed
    contact: ContactLike  # the contact as loaded for delivery (storage.contacts.contacts_by_id)
    user: UserLike | None


class Rounds(Protocol):
    """Where a channel hands outcomes as soon as they are known (the pipeline writes them to the
    ledger), so a crash can repeat only what was on the wire, and learns between rounds whether
    the campaign still takes recipients."""

    size: int  # how many recipients a round sends at most

    def submit(self, outcomes: Outcomes, wake: asyncio.Future | None = None) -> object:
        """Hand outcomes over to be written; returns at once (callable from the SMTP event loop);
        ``wake`` is resolved, in its own event loop, once they are written."""

    def settle(self, submitted: list) -> bool:
        """Wait until the submitted outcomes are written; False when the campaign stopped taking
        recipients (paused, cancelled): then the channel stops and returns the rows it did not attempt."""

    def record(self, outcomes: Outcomes) -> bool:
        """``submit`` and ``settle`` one round's outcomes."""

    def still_sending(self) -> bool:
        """Whether the campaign still takes recipients (asked before work that waited its turn)."""


class CampaignFault(Exception):
    """A fault of the whole campaign, not of one recipient (the relay refuses our login, a template
    no longer renders...): the campaign is paused with this sentence. ``rest`` are the rows of the
    batch not attempted; the rounds before were recorded."""

    def __init__(self, sentence: str, rest: list[Claimed]) -> None:
        super().__init__(sentence)
        self.rest = rest
