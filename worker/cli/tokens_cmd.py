"""``tokens create|list|revoke``: bearer tokens of the HTTP API (only their hash is stored)."""

from __future__ import annotations

import click

from storage.timefmt import fmt, now as utcnow
from storage.tokens import create_token, list_tokens, revoke_token, token_to_json
from worker.pipeline.app import App
from worker.cli.output import emit


@click.group("tokens")
def tokens_group() -> None:
    """Bearer tokens of the HTTP API."""


@tokens_group.command("create")
@click.option("--user", "user_id", type=int, required=True, help="Id of the user the token acts as.")
@click.option("--name", default=None, help="A label to recognise the token by.")
@click.pass_obj
def tokens_create(app: App, user_id: int, name: str | None) -> None:
    """Create a token and print it: the secret is shown this once and cannot be recovered."""
    with app.sessions.begin() as session:
        token, secret = create_token(session, user_id, name, utcnow())
        emit({"id": token.id, "user_id": token.user_id, "name": token.name, "token": secret,
              "created_at": fmt(token.created_at)})


@tokens_group.command("list")
@click.pass_obj
def tokens_list(app: App) -> None:
    """Print every token (revoked ones too), without secrets."""
    with app.sessions() as session:
        emit({"data": [token_to_json(token) for token in list_tokens(session)]})


@tokens_group.command("revoke")
@click.argument("token_id")
@click.pass_obj
def tokens_revoke(app: App, token_id: str) -> None:
    """Revoke a token: the API refuses it from now on."""
    with app.sessions.begin() as session:
        revoke_token(session, token_id, utcnow())
    emit({})


COMMANDS = [tokens_group]
