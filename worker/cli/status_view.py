"""``status`` as tables (rich): queues, workers alive, and each campaign in flight with a progress bar."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _queues(report: dict[str, Any]) -> RenderableType:
    if all(q["ready"] is None for q in report["queues"]):
        return Text("queues: in-process broker (memory://): the queues live inside the `run` process")
    table = Table(title="queues", title_justify="left")
    for column in ("queue", "ready", "delayed", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for q in report["queues"]:
        table.add_row(q["queue"], *(str(q[k]) for k in ("ready", "delayed", "dead")))
    return table


def _workers(report: dict[str, Any]) -> RenderableType:
    workers = report.get("workers")
    if workers is None:
        return Text("workers alive: not visible on the in-process broker")
    names = ", ".join(f"{w['host']}:{w['pid']} ({w['threads']} threads)" for w in workers)
    return Text(f"workers alive: {len(workers)}" + (f"  {names}" if names else ""))


def _campaigns(report: dict[str, Any]) -> RenderableType:
    if not report["campaigns"]:
        return Text("no campaign is sending or paused")
    table = Table(title="campaigns in flight", title_justify="left")
    for column in ("campaign", "type", "status", "progress", "done / total", "rate/s", "elapsed", "ETA",
                   "retries", "skipped (why)", "last error"):
        table.add_column(column, overflow="fold")
    for c in report["campaigns"]:
        p = c["progress"]
        done = p["sent"] + p["failed"] + p["skipped"]
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(c["skip_reasons"].items(), key=lambda i: -i[1]))
        table.add_row(
            f"{c['name']}\n{c['id']}", c["type"], c["status"],
            ProgressBar(total=max(p["total"], 1), completed=done, width=20),
            f"{done} / {p['total']}\nsent {p['sent']} failed {p['failed']}",
            "-" if c["rate"] is None else f"{c['rate']:g}", duration(c["elapsed_seconds"]),
            duration(c["eta_seconds"]), str(c["retries_waiting"]), reasons or "-",
            (c["last_error"] or "-")[:200],
        )
    return table


def render(report: dict[str, Any]) -> RenderableType:
    """The whole status report as one renderable."""
    return Group(_queues(report), _workers(report), _campaigns(report))
