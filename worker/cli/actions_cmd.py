"""``campaigns send|pause|resume|cancel|test-email|preview|messages``: acting on a campaign."""

from __future__ import annotations

import click

from storage import campaigns as repo, lifecycle
from storage.addresses import is_email
from storage.campaign_messages import get_message, list_messages, message_to_seed
from storage.errors import ValidationFailed
from storage.serialize import pagination
from storage.timefmt import now as utcnow
from worker.pipeline import side_jobs
from worker.pipeline.app import App
from worker.pipeline.campaign_service import campaign_problems
from worker.pipeline.dispatcher import InlineDispatcher
from worker.cli.campaigns_cmd import PAGE, PER_PAGE, campaigns_group, emit_campaign
from worker.cli.output import emit, read_json_file


@campaigns_group.command("send")
@click.argument("campaign_id")
@click.pass_obj
def send(app: App, campaign_id: str) -> None:
    """Dispatch now (the API's execute_now). With BROKER_URL=memory:// it is made due for `run`."""
    with app.sessions.begin() as session:
        campaign = repo.get_campaign(session, campaign_id, for_update=True)
        problems = campaign_problems(session, campaign)
        if problems:
            raise ValidationFailed({"campaign": problems}, "The campaign cannot be sent as it is.")
        lifecycle.send_now(session, campaign, utcnow())
    app.dispatcher.dispatch(campaign.id)
    emit_campaign(app, campaign_id)


def _transition(name: str, action, help_text: str, then=None) -> click.Command:
    @click.argument("campaign_id")
    @click.pass_obj
    def command(app: App, campaign_id: str) -> None:
        with app.sessions.begin() as session:
            campaign = action(session, repo.get_campaign(session, campaign_id, for_update=True), utcnow())
        if then is not None:
            then(app, campaign.id)
        emit_campaign(app, campaign_id)

    command.__doc__ = help_text
    return campaigns_group.command(name)(command)


_transition("pause", lifecycle.pause, "Stop taking new recipients (each worker thread finishes its SMTP round).")
_transition("resume", lifecycle.resume, "Go on after a pause (or a brake), with the recipients not sent yet.",
            then=lambda app, campaign_id: app.dispatcher.resume(campaign_id))
_transition("cancel", lifecycle.cancel, "Stop for good; recipients not yet taken are skipped (reason: cancelled).")


@campaigns_group.command("test-email")
@click.argument("args", nargs=-1, required=True)
@click.option("--payload", type=click.Path(dir_okay=False), help="A create payload instead of a stored campaign.")
@click.option("--user", "user_id", type=int, default=None, help="The sender user for --payload.")
@click.pass_obj
def test_email(app: App, args: tuple[str, ...], payload: str | None, user_id: int | None) -> None:
    """Queue a test send: `test-email ID EMAIL` or `test-email --payload FILE EMAIL`.

    With BROKER_URL=memory:// it is sent in the command; with no SMTP_URL too, it is captured in the
    local Maildir var/mail, as `run` captures mail."""
    expected = 1 if payload else 2
    if len(args) != expected:
        usage = "test-email --payload FILE EMAIL" if payload else "test-email ID EMAIL"
        raise ValidationFailed({"arguments": [f"usage: campaign-dispatch campaigns {usage}"]})
    email = args[-1]
    if not is_email(email):
        raise ValidationFailed({"email": ["The email must be a valid email address."]})
    campaign_id = None if payload else args[0]
    body = read_json_file(payload, "payload") if payload else None
    with app.sessions() as session:  # validate now, so a mistake is an exit 2 and not a dead message
        if campaign_id:
            repo.get_campaign(session, campaign_id)
        else:
            side_jobs.campaign_from_payload(session, body, user_id)
    dispatcher = app.dispatcher
    if isinstance(dispatcher, InlineDispatcher) and not app.smtp_configured:
        # Sent in this command with no SMTP server set: captured locally, as `run` and `demo` do.
        with side_jobs.capturing_mail(app) as maildir:
            dispatcher.test_email(email, campaign_id=campaign_id, payload=body, user_id=user_id)
        click.echo(f"no SMTP_URL: test email captured in {maildir}", err=True)
    else:
        dispatcher.test_email(email, campaign_id=campaign_id, payload=body, user_id=user_id)
    emit({"email": email})


@campaigns_group.command("preview")
@click.argument("campaign_id")
@click.pass_obj
def preview(app: App, campaign_id: str) -> None:
    """Render and store a preview; print a download URL valid for 300 s (email: HTML, letter: PDF,
    telephone: an HTML page of its first recipient and its task)."""
    emit(side_jobs.build_preview(app, campaign_id))


@campaigns_group.command("messages")
@click.argument("campaign_id")
@click.argument("message_id", type=int, required=False)
@PAGE
@PER_PAGE
@click.pass_obj
def messages(app: App, campaign_id: str, message_id: int | None, page: int, per_page: int) -> None:
    """The content actually sent, per contact: a list, or one message."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        if message_id is not None:
            emit(message_to_seed(get_message(session, campaign.id, message_id)))
            return
        rows, total = list_messages(session, campaign.id, page=page, per_page=per_page)
        emit({"data": [message_to_seed(m) for m in rows],
              "pagination": pagination(total, page, per_page, f"/campaigns/{campaign.id}/messages")})


COMMANDS: list[click.Command] = []  # these commands live on the `campaigns` group
