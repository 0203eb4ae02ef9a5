"""The cyclic garbage collector while a command starts, and at exit.

A command's start imports its modules (SQLAlchemy, pydantic, the models...): ~300,000 objects
that live as long as the process and are no garbage, yet the collector traces them again and
again: ~0.05 s of a ~0.45 s ``campaigns show``, and ~0.1 s more in the interpreter's last
collections at exit. Within ``running`` (``main``), ``importing`` pauses the collector during
such imports and then freezes what exists (``gc.freeze``: out of the collector's generations);
when ``running`` ends, it is collectable again, so a process that goes on (tests calling
``main``) collects as before. ``skip_final_collections`` freezes what is alive at exit.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_running = False  # within `running`: `importing` may freeze


@contextmanager
def running() -> Iterator[None]:
    """Around a command's whole run: what ``importing`` freezes within it is unfrozen after it."""
    global _running
    outer, _running = _running, True
    try:
        yield
    finally:
        _running = outer
        if not outer:
            gc.unfreeze()


@contextmanager
def importing() -> Iterator[None]:
    """The collector paused for a burst of imports, then as it was; within ``running``, every
    object then alive is frozen (a cycle made meanwhile is collected after ``running``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _running:
            gc.freeze()
        if enabled:
            gc.enable()


def skip_final_collections() -> None:
    """At interpreter exit, after the atexit handlers registered before (logging's flush), freeze
    the objects still alive: the interpreter's last collections then trace none of them."""
    atexit.unregister(gc.freeze)  # registered once, however many times main runs in a process
    atexit.register(gc.freeze)
