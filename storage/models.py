"""SQLAlchemy 2 models: one DeclarativeBase, typed columns, the same schema on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeAlias

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Row,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.fields import FIXED_FIELDS
from storage.statuses import CampaignStatus, ExportStatus, RecipientStatus
from storage.timefmt import now


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# JSONB on PostgreSQL (indexable, fast containment), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# BIGINT identity on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """The one declarative base of the project."""


class CampaignSettings(Base):
    """The single row behind ``/campaigns/settings``."""

    __tablename__ = "campaign_settings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    domain: Mapped[str | None] = mapped_column(String(255))
    domain_slug: Mapped[str | None] = mapped_column(String(255))
    consent_custom: Mapped[bool] = mapped_column(Boolean, default=False)
    unsubscribe_url: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))


class User(Base):
    """A CRM user: campaign owner, sender, task assignee, responsible user of contacts."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    phone_number: Mapped[str | None] = mapped_column(String(64))
    job_title: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_notifications: Mapped[bool | None] = mapped_column(Boolean)
    profile_picture: Mapped[str | None] = mapped_column(Text)
    system_user: Mapped[bool | None] = mapped_column(Boolean)
    team_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(16))
    company_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text, default="")


class RelationsPath(Base):
    __tablename__ = "relations_paths"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))


class Contact(Base):
    """A contact. Fixed fields are columns (indexable); custom fields are JSON(B) of text values.

    ``user_id`` and ``team_id`` carry no foreign key on purpose: contacts stream in from
    JSON Lines before or after the users they name, and a filter on them needs only the id.
    """

    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    b2c: Mapped[bool | None] = mapped_column(Boolean)
    account_id: Mapped[str | None] = mapped_column(String(36))
    account_name: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    team_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str | None] = mapped_column(String(64))
    custom_fields: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Consent per channel, lifted out of ``consent`` so fan-out decides skips in SQL.
    consent_email: Mapped[bool | None] = mapped_column(Boolean)
    consent_letter: Mapped[bool | None] = mapped_column(Boolean)
    consent_call: Mapped[bool | None] = mapped_column(Boolean)
    social_profile: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    latest_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# One text column per fixed field, named like the field.
for _field in FIXED_FIELDS:
    setattr(Contact, _field.name, mapped_column(_field.name, Text, nullable=True))
del _field

# What reads a contact or a user without changing it (filters, re-checks, templates) takes either the
# ORM object or a row of its table (delivery loads rows: storage.contacts.contacts_by_id): both have
# the columns as attributes.
ContactLike: TypeAlias = "Contact | Row[Any]"
UserLike: TypeAlias = "User | Row[Any]"

Index("ix_contacts_custom_fields", Contact.__table__.c.custom_fields, postgresql_using="gin")


class Campaign(Base):
    """A campaign: every seed field, plus its lifecycle status, progress counters and error."""

    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    team_id: Mapped[int | None] = mapped_column(Integer)
    group_id: Mapped[int | None] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(32), default="global")
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    approved: Mapped[bool] = mapped_column(Boolean, default=True)
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"))
    filter: Mapped[list[Any] | None] = mapped_column(JSON)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total_sent: Mapped[int | None] = mapped_column(Integer)
    task: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a recipient of the campaign last reached a final state: reconcile re-enqueues a stalled campaign.
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    letters_file_id: Mapped[str | None] = mapped_column(String(36))
    # When the letters ZIP was last asked for, so finalise does not ask again while it is being built.
    archive_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When finalise closed it: completed or failed, or cancelled and settled (see storage.lifecycle.finalise).
    finalised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When `resume` last ran: MAX_SEND_ERRORS counts the recipients failed since (or since dispatch).
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # JSON [[unix seconds, recipients done], ...], one every 10 s in flight (storage.progress).
    progress_samples: Mapped[str | None] = mapped_column(Text)
    # The DEFLATE dictionary the campaign's archived contents are compressed with (storage.archive),
    # set once when it fans out; loaded only when asked for.
    archive_dictionary: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


Index("ix_campaigns_due", Campaign.__table__.c.status, Campaign.__table__.c.send_at)


class Recipient(Base):
    """The per-recipient ledger: the truth of what happened to each (campaign, contact)."""

    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_recipients_campaign_contact"),
        Index("ix_recipients_campaign_status", "campaign_id", "status"),
        # Keyset pages and id-range batches of one campaign walk this.
        Index("ix_recipients_campaign_id_id", "campaign_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: its check was ~4 s of a million-recipient fan-out (the INSERT, 13 s). Rows are
    # only written by the fan-out, under the campaign's row lock, and a campaign that has them can no
    # longer be deleted (storage.campaigns.delete_campaign deletes any with it all the same).
    campaign_id: Mapped[str] = mapped_column(String(36))
    contact_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default=RecipientStatus.PENDING.value)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Letters: the object holding this recipient's PDF (one per delivery batch), set when sent.
    artifact_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    # The exact content sent (an email's HTML, a letter's markup), compressed (storage.archive): the
    # campaign's messages (GET /campaigns/:id/messages), whose ids are these rows'. Written with the
    # row's final status, in the same statement; loaded only when asked for.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class Task(Base):
    """A telephone or follow-up task created for one delivered recipient."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("campaign_id", "contact_id", name="uq_tasks_campaign_contact"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    relations_path: Mapped[str | None] = mapped_column(String(36))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class StoredFile(Base):
    """A file in the object store (letters ZIP, previews, exports), addressed by id."""

    __tablename__ = "stored_files"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Export(Base):
    """An XLSX export of a campaign's recipients."""

    __tablename__ = "exports"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.PENDING.value)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("stored_files.id"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class ApiToken(Base):
    """A bearer token of the HTTP API. Only the SHA-256 hex digest of the secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    # Written at most once a minute (storage.tokens.authenticate), not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
