"""The statuses of campaigns, ledger rows and exports, as enums.

They are ``StrEnum``: each member is the very string stored in the database and printed in JSON,
so a row read back as a plain ``str`` compares equal to its member. Which status may follow which
is written in ``storage.lifecycle`` (campaigns) and ``storage.ledger`` (recipients).
"""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    """Where a campaign is in its life (CONTRACT section 3, ``campaigns show``)."""

    DRAFT = "draft"          # not approved, or approved without a send time
    PENDING = "pending"      # approved with a send time: the scheduler takes it when due
    SENDING = "sending"      # claimed: fanned out or about to be, recipients being delivered
    PAUSED = "paused"        # by a person, or by a brake; `resume` goes on
    CANCELLED = "cancelled"  # stopped for good; settled once its rows in flight are done
    FAILED = "failed"        # nothing could be sent (before sending, or every recipient failed)
    COMPLETED = "completed"  # no recipient left open


class RecipientStatus(StrEnum):
    """One ledger row: ``pending -> sending -> sent | failed | skipped``."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class ExportStatus(StrEnum):
    """An XLSX export of a campaign's recipients (the seed's statuses)."""

    PENDING = "pending"
    FAILED = "failed"
    DONE = "done"


# A campaign may be changed or deleted only before it is dispatched.
EDITABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.PENDING})
# Campaigns with work under way (listed by `status`, progress counted live).
IN_FLIGHT = (CampaignStatus.SENDING, CampaignStatus.PAUSED)
# Ledger rows still to be decided.
OPEN = (RecipientStatus.PENDING, RecipientStatus.SENDING)
