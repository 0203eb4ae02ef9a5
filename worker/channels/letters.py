"""The letter channel: each delivery batch's PDFs into storage as one part (``pipeline.archive`` zips them).

A batch's PDFs are stored together, as one uncompressed ZIP (a "part") under the campaign, and each
ledger row marked sent names its part (``recipients.artifact_key``). One object per batch rather than
per letter: 50 times fewer requests to the object store while sending, and the final ZIP reads a part
per 50 letters instead of an object per letter. Parts of attempts that never got recorded (a crash
between storing and marking) are named by no row, so they never reach the ZIP; all of a campaign's
parts are deleted once its ZIP is recorded.
"""

from __future__ import annotations

import gc
import io
import threading
import time
import uuid
import zipfile

from renderers.errors import RenderError
from renderers.pdf import render_each
from storage.ledger import Claimed
from storage.objectstore import ObjectStore, make_key
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.outcomes import Outcomes, Ready, Rounds


def parts_folder(campaign_id: str) -> str:
    """Where a campaign's parts are stored, until its ZIP is recorded."""
    return make_key("letters", campaign_id, "parts")


def part_key(campaign_id: str, first_row_id: int) -> str:
    """Where one batch's PDFs are stored: from ids only, unique per attempt, sorting in ledger order."""
    return f"{parts_folder(campaign_id)}/{make_key(f'{first_row_id:012d}-{uuid.uuid4().hex[:12]}.zip')}"


def pack_part(pdfs: list[tuple[int, bytes]]) -> bytes:
    """A batch's PDFs as one ZIP, each entry named by its ledger row id (``<row id>.pdf``).

    Stored, not deflated: WeasyPrint compressed the PDFs' streams already, and the final ZIP deflates.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as part:
        for row_id, pdf in pdfs:
            part.writestr(f"{row_id}.pdf", pdf)
    return buffer.getvalue()


# Laying out letters is pure CPU under the GIL: two threads of a process doing it at once interleave
# and both slow down (2 processes x 2 threads: 63 ms of worker CPU a letter; x 1 thread: 49 ms,
# benchmarks/letter_campaign.py). So a process renders one batch at a time; its other threads go on
# with I/O (storing parts, sending email) meanwhile.
_RENDERING = threading.Lock()


def render_letters(store: ObjectStore, runtime: CampaignRuntime, ready: list[Ready], rounds: Rounds) -> list[Claimed]:
    """Render each recipient's letter (laid out in batches), store the PDFs as one part, archive the
    HTML: the batch is one round. Returns the rows not attempted (the campaign stopped meanwhile)."""
    from worker.runtime.metrics import RENDER_LETTER  # prometheus_client: once sending starts

    outcomes = Outcomes()
    rendered: list[tuple[Ready, str]] = []
    with _RENDERING:
        if not rounds.still_sending():  # paused or cancelled while this batch waited for its turn
            return [item.row for item in ready]
        started = time.perf_counter()
        for item in ready:
            try:
                rendered.append((item, runtime.render(item.contact, item.user).html))
            except RenderError as exc:
                outcomes.failed.append((item.row.id, str(exc)))
        pdfs = render_each([markup for _, markup in rendered])  # a bad letter fails alone
        # Laid out together: each letter is observed as its share of the batch (HTML and layout).
        each = (time.perf_counter() - started) / max(len(ready), 1)
        gc.collect()  # what the batch left in cycles (~90 objects a letter: renderers/pdf_release); tune_gc
    for _ in ready:
        RENDER_LETTER.observe(each)
    done: list[tuple[Ready, str, bytes]] = []
    for (item, markup), pdf in zip(rendered, pdfs):
        if isinstance(pdf, RenderError):
            outcomes.failed.append((item.row.id, str(pdf)))  # "letter: the PDF could not be laid out: ..."
        else:
            done.append((item, markup, pdf))
    if done:
        key = part_key(runtime.campaign_id, done[0][0].row.id)
        try:
            store.put_bytes(key, pack_part([(item.row.id, pdf) for item, _, pdf in done]), "application/zip")
        except Exception as exc:  # noqa: BLE001 - storage unreachable: try these recipients again later
            outcomes.transient.extend((item.row, f"storage: {exc}") for item, _, _ in done)
        else:
            outcomes.artifact_key = key
            outcomes.sent.extend((item.row.id, item.contact.id, runtime.archive.pack(markup))
                                 for item, markup, _ in done)
    rounds.record(outcomes)
    return []
