"""The telephone channel: a recipient is delivered once it passed the re-check.

Its task is dealt when the campaign is finalised, from the ledger (``storage.tasks.deal_tasks``),
so crashes and duplicate messages cannot skew who gets which call.
"""

from __future__ import annotations

from storage.ledger import Claimed
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.outcomes import Outcomes, Ready, Rounds


def create_tasks(runtime: CampaignRuntime, ready: list[Ready], rounds: Rounds) -> list[Claimed]:
    """Record each recipient that passed the re-check as delivered (no content is sent)."""
    rounds.record(Outcomes(sent=[(item.row.id, item.contact.id, None) for item in ready]))
    return []
