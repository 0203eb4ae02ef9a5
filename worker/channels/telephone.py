"""The telephone channel: a recipient is delivered once it passed the re-check.

Its task is dealt when the campaign is finalised, from the ledger (``storage.tasks.deal_tasks``),
so crashes and duplicate messages cannot skew who gets which call.
"""

from __future__ import annotations

from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.outcomes import Outcomes, Ready


def create_tasks(runtime: CampaignRuntime, ready: list[Ready], outcomes: Outcomes) -> None:
    """Record each recipient that passed the re-check as delivered (no content is sent)."""
    outcomes.sent += [(item.row.id, item.contact.id, None) for item in ready]
