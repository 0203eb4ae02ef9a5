"""Files in the object store: running a recipients export from its message (only a pending export of
the campaign runs; no run leaves a file that no export points to) and previews (those whose URL has
expired are cleared); on SQLite and the local object store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from storage.loader import load_bundle
from storage.migrate import upgrade
from storage.models import Export, StoredFile
from storage.objectstore import URL_SECONDS
from storage.statuses import ExportStatus
from storage.timefmt import now
from worker.cli.demo import demo_bundle, email_payload
from worker.pipeline import campaign_service
from worker.pipeline.app import App
from worker.pipeline.exports import run_export, start_export
from worker.pipeline.side_jobs import build_preview
from worker.runtime.settings import Settings


@pytest.fixture
def app(tmp_path: Path):
    app = App(Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url="memory://",
                       storage_url=f"file://{tmp_path / 'objects'}", _env_file=None))
    upgrade(app.engine)
    load_bundle(app.sessions, demo_bundle(contacts=5))
    try:
        yield app
    finally:
        app.close()


def _campaign(app: App) -> str:
    with app.sessions.begin() as session:
        return campaign_service.create(session, email_payload() | {"execute_now": False, "send_at": "2099-01-01 00:00:00"}, 1).id


def _stored(app: App, tmp_path: Path) -> tuple[int, list[Path]]:
    """Files recorded, and files in the object store's folder."""
    with app.sessions() as session:
        recorded = session.scalar(select(func.count()).select_from(StoredFile))
    return recorded, [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]


def test_a_message_naming_no_export_of_the_campaign_stores_nothing(app, tmp_path):
    campaign_id = _campaign(app)
    with app.sessions.begin() as session:
        other = start_export(session, _campaign(app)).id  # an export, but of another campaign

    run_export(app, campaign_id, "5f0c1d2e-0000-4000-8000-000000000000")
    run_export(app, campaign_id, other)

    assert _stored(app, tmp_path) == (0, [])
    with app.sessions() as session:
        assert session.get(Export, other).status == ExportStatus.PENDING  # untouched


def test_an_export_delivered_twice_is_written_once(app, tmp_path):
    campaign_id = _campaign(app)
    with app.sessions.begin() as session:
        export_id = start_export(session, campaign_id).id

    run_export(app, campaign_id, export_id)
    run_export(app, campaign_id, export_id)  # a redelivered message: the export is done already

    recorded, files = _stored(app, tmp_path)
    assert recorded == 1 and len(files) == 1 and files[0].suffix == ".xlsx"
    with app.sessions() as session:
        export = session.get(Export, export_id)
        assert export.status == ExportStatus.DONE
        assert session.get(StoredFile, export.file_id).key.endswith(files[0].name)


def test_previews_whose_url_expired_are_cleared_by_the_next_preview(app, tmp_path):
    campaign_id = _campaign(app)
    build_preview(app, campaign_id)
    build_preview(app, campaign_id)
    assert _stored(app, tmp_path)[0] == 2 and len(_stored(app, tmp_path)[1]) == 2
    with app.sessions.begin() as session:  # the first two were made longer ago than their URLs live
        session.execute(update(StoredFile).values(created_at=now() - timedelta(seconds=URL_SECONDS + 1)))

    url = build_preview(app, campaign_id)["download_url"]

    recorded, files = _stored(app, tmp_path)
    assert recorded == 1 and [f.as_uri() for f in files] == [url.split("?")[0]]
