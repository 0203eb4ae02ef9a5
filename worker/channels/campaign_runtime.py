"""A campaign compiled once per process: filter, templates and sender, ready to render per recipient."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from functools import cached_property, partial
from urllib.parse import quote_plus, urlencode

from sqlalchemy.orm import Session

from renderers.context import Record, contact_record, context_of, records_of
from renderers.errors import RenderError
from renderers.mime import EmailFrame, stable_message_id
from renderers.templating import CompiledCampaign, Rendered, compile_campaign
from storage.archive import Packer
from storage.contacts import FIXED_NAMES, template_field
from storage.filter_eval import matches
from storage.filters import FilterTree, parse_filters
from storage.ledger import skip_reason_of
from storage.models import Campaign, CampaignSettings, Contact, ContactLike, Template, User, UserLike
from storage.serialize import user_to_seed
from worker.channels.addressing import Sender, UnusableSender, sender_for

if TYPE_CHECKING:  # dkimpy (and dnspython) load only when DKIM_KEYS_DIR is set: App.dkim
    from renderers.dkim import DkimSigner


SAMPLE_CONTACT_ID = "00000000-0000-0000-0000-000000000000"


def sample_contact(email: str | None = None) -> Contact:
    """A contact with no data (no names, no fields, no consent given or refused): what test emails,
    previews without recipients and the archive's dictionary render for."""
    return Contact(id=SAMPLE_CONTACT_ID, b2c=True, email=email, custom_fields={}, consent={})


@dataclass(frozen=True)
class Email:
    """One recipient's email, ready for SMTP."""

    rcpt: str
    envelope_from: str
    data: bytes
    html: str


@dataclass(frozen=True)
class CampaignRuntime:
    """What every delivery of one campaign shares; built from the database once per process."""

    campaign_id: str
    campaign_type: str
    campaign_name: str
    tree: FilterTree
    compiled: CompiledCampaign | None
    sender: Sender | None
    frame: EmailFrame | None  # From and Reply-To, checked and formatted once for every email
    owner: dict[str, Any] | None
    unsubscribe_url: str | None
    # DKIM_KEYS_DIR's keys when they hold one for the sender's domain, else None (sent unsigned).
    dkim: DkimSigner | None = field(default=None, compare=False, repr=False)
    # Compresses what is archived with the dictionary the campaign got when it fanned out.
    archive: Packer = field(default_factory=lambda: Packer(None), compare=False, repr=False)
    # id(user) -> (that user, its record for templates): a batch's contacts share a few users, loaded once per
    # batch (one object per user in the batch's session), so each is serialised once per batch
    # instead of once per recipient. Keyed by the object, not the user id: a new batch reads the
    # user afresh, so a change to the user shows in the next batch.
    _users: dict[int, tuple[UserLike, Record]] = field(default_factory=dict, compare=False, repr=False)

    def recheck(self, contact: ContactLike | None) -> str | None:
        """Why this contact must be skipped now (it changed since fan-out), or None."""
        if contact is None:
            return "contact_deleted"
        if not matches(self.tree, contact):
            return "no_longer_matches"
        return skip_reason_of(self.campaign_type, contact)

    def unsubscribe_for(self, contact_id: str) -> str | None:
        """The settings' unsubscribe URL, naming the contact and campaign so one click is enough
        (``?contact=...&campaign=...``, form-encoded)."""
        if not self.unsubscribe_url:
            return None
        head, tail = self._unsubscribe_parts
        return f"{head}{quote_plus(contact_id)}{tail}"

    @cached_property
    def _unsubscribe_parts(self) -> tuple[str, str]:
        """What every recipient's unsubscribe URL has before and after the contact's id."""
        joiner = "&" if "?" in (self.unsubscribe_url or "") else "?"
        return f"{self.unsubscribe_url}{joiner}contact=", f"&{urlencode({'campaign': self.campaign_id})}"

    @cached_property
    def _shared_context(self) -> tuple[Record, Record]:
        """The campaign's and the sender's records: the same for every recipient, made once."""
        return (records_of("campaign", {"id": self.campaign_id, "name": self.campaign_name}),
                records_of("sender", self.owner))

    def context(self, contact: ContactLike, user: UserLike | None, unsubscribe_url: str | None) -> dict[str, Any]:
        """The template context for one contact (CONTRACT section 4)."""
        campaign, sender = self._shared_context
        # Each value read from the contact when the template first asks for it (a template reads a
        # handful of a contact's ~25 names).
        record = contact_record(partial(getattr, contact), partial(template_field, contact, self._user(user)),
                                FIXED_NAMES)
        return context_of(record, campaign, sender, unsubscribe_url)

    def _user(self, user: UserLike | None) -> Record | None:
        if user is None:
            return None
        known = self._users.get(id(user))
        if known is None or known[0] is not user:
            if len(self._users) >= 256:  # forget earlier batches' users rather than grow without bound
                self._users.clear()
            known = self._users[id(user)] = (user, records_of("contact.user", user_to_seed(user)))
        return known[1]

    def render(self, contact: ContactLike, user: UserLike | None, unsubscribe_url: str | None = None) -> Rendered:
        """Subject, HTML and text for one contact; raises RenderError."""
        assert self.compiled is not None
        url = unsubscribe_url or self.unsubscribe_for(contact.id)
        # Letters carry no email unsubscribe footer, and need no text alternative.
        email = self.campaign_type == "email"
        return self.compiled.render(self.context(contact, user, url), footer=email, text=email)

    def sample(self) -> str | None:
        """The content for a contact with no data at all (no names, no fields), or None when the
        templates need data to render: the campaign's literal text as its messages will carry it,
        with no one's personal data, for the archive's dictionary (storage.archive)."""
        if self.compiled is None:
            return None
        try:
            return self.render(sample_contact(), None).html
        except RenderError:
            return None

    def email(self, contact: ContactLike, user: UserLike | None, *, to: str | None = None, subject_prefix: str = "") -> Email:
        """The MIME message for one contact; raises RenderError (including header injection)."""
        assert self.sender is not None and self.frame is not None
        unsubscribe_url = self.unsubscribe_for(contact.id)  # once: in the footer and in the header
        rendered = self.render(contact, user, unsubscribe_url)
        rcpt = to or contact.email
        data = self.frame.build(
            to_addr=rcpt, subject=subject_prefix + rendered.subject, html=rendered.html, text=rendered.text,
            message_id=stable_message_id(self.campaign_id, contact.id if to is None else f"test:{rcpt}",
                                         self.sender.domain),
            list_unsubscribe=unsubscribe_url,
        )
        if self.dkim is not None:  # after the header gate: the signature covers the checked bytes
            data = self.dkim.sign(data, self.sender.domain, crlf=True)  # built CRLF-only
        return Email(rcpt=rcpt, envelope_from=self.sender.from_addr, data=data, html=rendered.html)


def build_runtime(session: Session, campaign: Campaign, domain_suffix: str,
                  dkim: DkimSigner | None = None) -> CampaignRuntime:
    """Compile a campaign's filter and templates; raises RenderError / ValidationFailed / NoSendingDomain /
    UnusableSender. ``dkim``: the process's DKIM keys (``App.dkim``), used when one is for the sender's domain."""
    message = campaign.message or {}
    template = session.get(Template, campaign.template_id) if campaign.template_id else None
    compiled = None
    if campaign.type in ("email", "letter"):
        compiled = compile_campaign(message.get("subject") if campaign.type == "email" else None,
                                    message.get("content") or "", template.content if template else None)
    settings = session.get(CampaignSettings, 1)
    sender = sender_for(settings, message.get("sender"), domain_suffix) if campaign.type == "email" else None
    frame = None
    if sender is not None:
        try:
            frame = EmailFrame(from_addr=sender.from_addr, reply_to=sender.reply_to)
        except RenderError as exc:  # no email can carry it: the campaign's fault, not each recipient's
            raise UnusableSender(f"the sender cannot be used in an email ({exc}): correct message.sender "
                                 "or the settings' domain") from None
    unsubscribe = settings.unsubscribe_url if settings is not None else None
    return CampaignRuntime(
        campaign_id=campaign.id, campaign_type=campaign.type, campaign_name=campaign.name,
        tree=parse_filters(campaign.filter or []), compiled=compiled, sender=sender, frame=frame,
        owner=user_to_seed(session.get(User, campaign.user_id)), unsubscribe_url=unsubscribe,
        dkim=dkim if dkim is not None and sender is not None and dkim.signs(sender.domain) else None,
        archive=Packer(campaign.archive_dictionary),
    )


def rendering_key(session: Session, campaign: Campaign, domain_suffix: str) -> tuple:
    """What a campaign's runtime is built from: its own fields that rendering reads, its template's
    content, the sending settings and the domain suffix, and whether it fanned out (which gives it
    its archive dictionary). Not ``updated_at``, which moves with every progress note while the
    campaign sends."""
    template = session.get(Template, campaign.template_id) if campaign.template_id else None
    settings = session.get(CampaignSettings, 1)
    return (
        campaign.id, campaign.dispatched_at is not None, campaign.type, campaign.name, campaign.user_id,
        json.dumps(campaign.message, sort_keys=True), json.dumps(campaign.filter, sort_keys=True),
        template.content if template is not None else None,
        (settings.domain, settings.domain_slug, settings.unsubscribe_url) if settings is not None else None,
        domain_suffix,
    )


class RuntimeCache:
    """Runtimes by what they are built from (``rendering_key``), so each process compiles a
    campaign once, and again only when something rendering reads has changed."""

    def __init__(self, size: int = 64, dkim: DkimSigner | None = None) -> None:
        self._dkim = dkim  # the same keys for every runtime of the process: not part of the key
        self._items: OrderedDict[tuple, CampaignRuntime] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self.builds = 0  # how many runtimes this cache compiled (tests read it)

    def get(self, session: Session, campaign: Campaign, domain_suffix: str) -> CampaignRuntime:
        key = rendering_key(session, campaign, domain_suffix)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        runtime = build_runtime(session, campaign, domain_suffix, self._dkim)
        with self._lock:
            self.builds += 1
            self._items[key] = runtime
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return runtime
