"""``campaigns letters|tasks|export|export-status`` and ``files url``: what a campaign produced."""

from __future__ import annotations

import click
from sqlalchemy import select

from storage import campaigns as repo
from storage.errors import Conflict, NotFound
from storage.models import Contact, StoredFile, Task, User
from storage.objectstore import URL_SECONDS
from storage.serialize import user_to_seed
from storage.statuses import CampaignStatus
from storage.timefmt import fmt
from worker.pipeline.app import App
from worker.pipeline.exports import export_to_seed, get_export, start_export
from worker.cli.campaigns_cmd import campaigns_group
from worker.cli.output import emit



def _file_url(app: App, file: StoredFile) -> str:
    return app.store.url(file.key, URL_SECONDS, filename=file.name)


@campaigns_group.command("letters")
@click.argument("campaign_id")
@click.pass_obj
def letters(app: App, campaign_id: str) -> None:
    """A fresh URL to the ZIP of a letter campaign's PDFs, valid for 300 s."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        if campaign.type != "letter":
            raise Conflict(f"campaign {campaign.id} is a {campaign.type} campaign: it has no letters")
        file = session.get(StoredFile, campaign.letters_file_id) if campaign.letters_file_id else None
        # The ZIP is built before a campaign is completed, and before a cancelled one is settled
        # (finalised_at): then none means no letter was sent, as for one cancelled before its fan-out.
        closed = (campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.FAILED)
                  or campaign.finalised_at is not None
                  or (campaign.status == CampaignStatus.CANCELLED and campaign.dispatched_at is None))
        if file is None and closed:
            raise Conflict(f"campaign {campaign.id} is {campaign.status} and has no letters ZIP: no letter was sent")
        if file is None:
            raise Conflict("letters are not ready yet")
        emit({"url": _file_url(app, file)})


@campaigns_group.command("tasks")
@click.argument("campaign_id")
@click.pass_obj
def tasks(app: App, campaign_id: str) -> None:
    """The telephone / follow-up tasks the campaign created."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        rows = session.execute(
            select(Task, User, Contact).outerjoin(User, User.id == Task.user_id)
            .outerjoin(Contact, Contact.id == Task.contact_id)
            .where(Task.campaign_id == campaign.id).order_by(Task.id)).all()
        emit({"data": [{
            "id": task.id, "campaign_id": task.campaign_id,
            "user": user_to_seed(user) or {"id": task.user_id},
            "contact": {"id": task.contact_id, "first_name": getattr(contact, "first_name", None),
                        "last_name": getattr(contact, "last_name", None),
                        "phone_number": getattr(contact, "mobile_phone_number", None)
                        or getattr(contact, "landline_phone_number", None)},
            "relations_path": task.relations_path, "start_at": fmt(task.start_at), "end_at": fmt(task.end_at),
            "created_at": fmt(task.created_at),
        } for task, user, contact in rows]})


@campaigns_group.command("export")
@click.argument("campaign_id")
@click.pass_obj
def export(app: App, campaign_id: str) -> None:
    """Queue an XLSX export of the recipients (with memory:// it runs in the command)."""
    with app.sessions.begin() as session:
        job = start_export(session, campaign_id)
        shape = export_to_seed(job)
    app.dispatcher.export(job.campaign_id, job.id)
    emit(shape)


@campaigns_group.command("export-status")
@click.argument("campaign_id")
@click.argument("export_id")
@click.pass_obj
def export_status(app: App, campaign_id: str, export_id: str) -> None:
    """pending, failed (with the reason) or done with a file_id."""
    with app.sessions() as session:
        emit(export_to_seed(get_export(session, campaign_id, export_id)))


@click.group("files")
def files_group() -> None:
    """Stored files (exports, letter archives, previews)."""


@files_group.command("url")
@click.argument("file_id")
@click.pass_obj
def file_url(app: App, file_id: str) -> None:
    """A presigned download URL of a stored file, valid for 300 s."""
    with app.sessions() as session:
        file = session.get(StoredFile, file_id)
        if file is None:
            raise NotFound(f"file {file_id} not found")
        emit({"url": _file_url(app, file)})


COMMANDS = [files_group]
