"""``campaigns …``: the seed's campaign endpoints as commands printing the seed's JSON shapes."""

from __future__ import annotations

import click

from storage import campaigns as repo
from storage.errors import ValidationFailed
from storage.recipients import list_recipients
from storage.serialize import pagination
from storage.statuses import IN_FLIGHT, CampaignStatus
from storage.timefmt import now as utcnow
from worker.pipeline import campaign_service
from worker.pipeline.app import App
from worker.cli.output import emit, read_json_file

PAGE = click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
PER_PAGE = click.option("--per-page", "per_page", type=click.IntRange(1, 500), default=15, show_default=True)


@click.group("campaigns")
def campaigns_group() -> None:
    """Create, change, inspect and send campaigns."""


@campaigns_group.command("create")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--user", "user_id", type=int, required=True, help="Id of the user creating the campaign.")
@click.pass_obj
def create(app: App, file: str, user_id: int) -> None:
    """POST /campaigns from the JSON payload in FILE."""
    payload = read_json_file(file)
    with app.sessions.begin() as session:
        campaign = campaign_service.create(session, payload, user_id)
        emit(repo.campaign_to_seed(session, campaign, repo.progress_of(session, campaign)))


@campaigns_group.command("update")
@click.argument("campaign_id")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def update(app: App, campaign_id: str, file: str) -> None:
    """PUT /campaigns/:id from the JSON payload in FILE (refused once sent)."""
    payload = read_json_file(file)
    with app.sessions.begin() as session:
        campaign = campaign_service.update(session, campaign_id, payload)
        emit(repo.campaign_update_shape(session, campaign))


@campaigns_group.command("show")
@click.argument("campaign_id")
@click.pass_obj
def show(app: App, campaign_id: str) -> None:
    """GET /campaigns/:id with status and progress."""
    emit_campaign(app, campaign_id)


def emit_campaign(app: App, campaign_id: str) -> None:
    """Print the campaign in the seed's shape, with status and progress counted from the ledger."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        emit(repo.campaign_to_seed(session, campaign, repo.progress_of(session, campaign)))


@campaigns_group.command("list")
@click.option("--status", type=click.Choice([*(s.value for s in CampaignStatus), "sent"]))
@click.option("--type", "ctype", type=click.Choice(["email", "letter", "telephone"]))
@click.option("--teams", help="Comma-separated team ids.")
@click.option("--search")
@PAGE
@PER_PAGE
@click.pass_obj
def list_(app: App, status, ctype, teams, search, page, per_page) -> None:
    """GET /campaigns."""
    team_ids = None
    if teams:
        try:
            team_ids = [int(t) for t in teams.split(",") if t.strip()]
        except ValueError:
            raise ValidationFailed({"teams": ["The teams must be a comma-separated list of integer ids."]}) from None
    with app.sessions() as session:
        rows, total = repo.list_campaigns(session, status=status, type=ctype, teams=team_ids, search=search,
                                          page=page, per_page=per_page)
        query = {"status": status, "type": ctype, "teams": teams, "search": search}
        # Campaigns in flight count their ledger; the others show the counters kept at finalise.
        emit({"data": [repo.campaign_to_seed(session, c, repo.progress_of(session, c)
                                             if c.status in IN_FLIGHT else None) for c in rows],
              "pagination": pagination(total, page, per_page, "/campaigns", query)})


@campaigns_group.command("copy")
@click.argument("campaign_id")
@click.pass_obj
def copy(app: App, campaign_id: str) -> None:
    """POST /campaigns/:id/copy."""
    with app.sessions.begin() as session:
        campaign = repo.copy_campaign(session, repo.get_campaign(session, campaign_id), utcnow())
        emit(repo.campaign_to_seed(session, campaign, repo.progress_of(session, campaign)))


@campaigns_group.command("delete")
@click.argument("campaign_id")
@click.pass_obj
def delete(app: App, campaign_id: str) -> None:
    """DELETE /campaigns/:id (refused once sent)."""
    with app.sessions.begin() as session:
        repo.delete_campaign(session, repo.get_campaign(session, campaign_id, for_update=True))
    emit({})


@campaigns_group.command("recipients")
@click.argument("campaign_id")
@click.option("--search")
@PAGE
@PER_PAGE
@click.pass_obj
def recipients(app: App, campaign_id: str, search, page, per_page) -> None:
    """GET /campaigns/:id/recipients, each with its delivery state."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        items, total = list_recipients(session, campaign, page=page, per_page=per_page, search=search)
        emit({"data": items, "pagination": pagination(total, page, per_page, f"/campaigns/{campaign.id}/recipients",
                                                       {"search": search})})


COMMANDS = [campaigns_group]
