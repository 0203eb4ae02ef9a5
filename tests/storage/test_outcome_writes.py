"""One group write of delivery outcomes, on both databases: what each ledger row and the archive hold after it."""

from __future__ import annotations

from sqlalchemy import select

from storage.ledger import claim, open_batches
from storage.archive import Packer
from storage.campaign_messages import list_messages
from storage.models import Campaign, Recipient
from storage.outcome_writes import OutcomeRows, prepare_connection, write_outcomes
from storage.timefmt import now
from tests.storage.test_ledger import _campaign_with_rows


def _write(engine, rows: OutcomeRows) -> dict[str, str]:
    with engine.connect() as conn:
        prepare_connection(conn)
        with conn.begin():
            return write_outcomes(conn, rows, now())


def _ledger(sessions, campaign_id: str) -> list[tuple[str, str | None, str | None]]:
    with sessions() as s:
        return [(r.status, r.reason, r.artifact_key) for r in s.scalars(
            select(Recipient).where(Recipient.campaign_id == campaign_id).order_by(Recipient.id))]


def test_each_kind_of_outcome_lands_on_its_row_and_the_sent_content_is_archived(engine, sessions):
    campaign_id = _campaign_with_rows(sessions, 6)
    with sessions.begin() as s:
        (batch,) = open_batches(s, campaign_id, 10)
        rows = claim(s, batch, now())
    a, b, c, d, e, _ = rows
    statuses = _write(engine, OutcomeRows(
        archive={a.id: Packer(None).pack("<p>Hello Søren</p>"),
                 e.id: Packer(b"<p>Hello </p>").pack("<p>Hello Zoë</p>")},
        final=[(a.id, "sent", None, "letters/part-1.pdf"), (b.id, "failed", "550 no such user", None),
               (c.id, "skipped", "no_consent", None), (e.id, "sent", None, None)],
        again=[(d.id, "451 try later")],
        asking={campaign_id, "no-such-campaign"},
    ))
    assert statuses == {campaign_id: "sending"}  # an unknown campaign is simply absent
    assert _ledger(sessions, campaign_id) == [
        ("sent", None, "letters/part-1.pdf"), ("failed", "550 no such user", None),
        ("skipped", "no_consent", None), ("pending", "451 try later", None), ("sent", None, None),
        ("sending", None, None)]
    with sessions.begin() as s:
        s.get(Campaign, campaign_id).archive_dictionary = b"<p>Hello </p>"
    with sessions() as s:
        archived, total = list_messages(s, campaign_id, page=1, per_page=10)
    assert total == 2 and [(m["id"], m["contact_id"], m["content"]) for m in archived] == [
        (a.id, a.contact_id, "<p>Hello Søren</p>"), (e.id, e.contact_id, "<p>Hello Zoë</p>")]


def test_a_repeated_write_changes_nothing_and_a_final_row_never_moves(engine, sessions):
    campaign_id = _campaign_with_rows(sessions, 2)
    with sessions.begin() as s:
        (batch,) = open_batches(s, campaign_id, 10)
        first, second = claim(s, batch, now())
    sent = OutcomeRows(archive={first.id: Packer(None).pack("once")}, final=[(first.id, "sent", None, None)])
    _write(engine, sent)
    _write(engine, sent)  # the same outcomes again (a retried write that had committed)
    # the send repeated after a crash: the content first archived stays
    _write(engine, OutcomeRows(archive={first.id: Packer(None).pack("twice")}, final=[(first.id, "sent", None, None)]))
    # a late "try again" or failure for a row already sent leaves it sent
    _write(engine, OutcomeRows(final=[(first.id, "failed", "late", None)], again=[(first.id, "451")]))
    assert _ledger(sessions, campaign_id)[0] == ("sent", None, None)
    with sessions() as s:
        assert [m["content"] for m in list_messages(s, campaign_id, page=1, per_page=10)[0]] == ["once"]


def test_a_pending_row_takes_a_final_outcome_but_is_not_released_again(engine, sessions):
    # pending: its lease ran out while the database was unreachable; what was sent is recorded as sent
    campaign_id = _campaign_with_rows(sessions, 2)
    with sessions() as s:
        first, second = s.scalars(select(Recipient.id).where(Recipient.campaign_id == campaign_id)
                                  .order_by(Recipient.id)).all()
    _write(engine, OutcomeRows(final=[(first, "sent", None, None)], again=[(second, "451")]))
    assert [status for status, _, _ in _ledger(sessions, campaign_id)] == ["sent", "pending"]
    assert _ledger(sessions, campaign_id)[1][1] is None  # the release did not apply: no reason written


def test_the_status_read_sees_a_pause_committed_before_the_write(engine, sessions):
    campaign_id = _campaign_with_rows(sessions, 1)
    with sessions.begin() as s:
        s.get(Campaign, campaign_id).status = "paused"
    assert _write(engine, OutcomeRows(asking={campaign_id})) == {campaign_id: "paused"}
