"""``campaigns send|pause|resume|cancel|test-email|preview|messages``: acting on a campaign.

Imported with every ``campaigns`` command (``show`` too): the write side is imported by the command
that runs it (see ``campaigns_cmd``).
"""

from __future__ import annotations

import click

from storage.errors import ValidationFailed
from worker.pipeline import queries
from worker.pipeline.app import App
from worker.cli.campaigns_cmd import PAGE, PER_PAGE, campaign_command, campaigns_group
from worker.cli.output import emit, read_json_file

campaign_command("send", "worker.pipeline.commands:send_campaign",
                 "Dispatch now (the API's execute_now). With BROKER_URL=memory:// it is made due for `run`.")
campaign_command("pause", "worker.pipeline.commands:pause_campaign",
                 "Stop taking new recipients (each worker thread finishes its SMTP round).")
campaign_command("resume", "worker.pipeline.commands:resume_campaign",
                 "Go on after a pause (or a brake), with the recipients not sent yet.")
campaign_command("cancel", "worker.pipeline.commands:cancel_campaign",
                 "Stop for good; recipients not yet taken are skipped (reason: cancelled).")
campaign_command("preview", "worker.pipeline.commands:preview_campaign",
                 "Render and store a preview; print a download URL valid for 300 s (email: HTML, letter: PDF, "
                 "telephone: an HTML page of its first recipient and its task).")


@campaigns_group.command("test-email")
@click.argument("args", nargs=-1, required=True)
@click.option("--payload", type=click.Path(dir_okay=False), help="A create payload instead of a stored campaign.")
@click.option("--user", "user_id", type=int, default=None, help="The sender user for --payload.")
@click.pass_obj
def test_email(app: App, args: tuple[str, ...], payload: str | None, user_id: int | None) -> None:
    """Queue a test send: `test-email ID EMAIL` or `test-email --payload FILE EMAIL`.

    With BROKER_URL=memory:// it is sent in the command; with no SMTP_URL too, it is captured in the
    local Maildir var/mail, as `run` captures mail."""
    # Lazy: the write side, the dispatcher and the mail capture (see campaigns_cmd).
    from worker.pipeline import commands, side_jobs
    from worker.pipeline.campaign_actions import check_email, check_test_email
    from worker.pipeline.dispatcher import InlineDispatcher

    expected = 1 if payload else 2
    if len(args) != expected:
        usage = "test-email --payload FILE EMAIL" if payload else "test-email ID EMAIL"
        raise ValidationFailed({"arguments": [f"usage: campaign-dispatch campaigns {usage}"]})
    email = args[-1]
    check_email(email)  # a bad address is the error reported, whatever the payload file holds
    test = {"campaign_id": None if payload else args[0],
            "payload": read_json_file(payload, "payload") if payload else None, "user_id": user_id}
    if isinstance(app.dispatcher, InlineDispatcher) and not app.smtp_configured:
        # Sent in this command with no SMTP server set: captured locally, as `run` and `demo` do.
        # Checked first, so a mistake starts no capturing server and leaves no Maildir behind.
        check_test_email(app, email, **test)
        with side_jobs.capturing_mail(app) as maildir:
            shape = commands.queue_test_email(app, email, **test)
        click.echo(f"no SMTP_URL: test email captured in {maildir}", err=True)
    else:
        shape = commands.queue_test_email(app, email, **test)
    emit(shape)


@campaigns_group.command("messages")
@click.argument("campaign_id")
@click.argument("message_id", type=int, required=False)
@PAGE
@PER_PAGE
@click.pass_obj
def messages(app: App, campaign_id: str, message_id: int | None, page: int, per_page: int) -> None:
    """The content actually sent, per contact: a list, or one message."""
    if message_id is not None:
        emit(queries.message(app, campaign_id, message_id))
    else:
        emit(queries.messages(app, campaign_id, page=page, per_page=per_page))


COMMANDS: list[click.Command] = []  # these commands live on the `campaigns` group
