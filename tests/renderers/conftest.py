"""The WeasyPrint speed hooks on for every renderer test, as the worker installs them; off again after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from renderers import pdf_hooks


@pytest.fixture(autouse=True)
def weasyprint_hooks() -> Iterator[None]:
    pdf_hooks.install()
    yield
    pdf_hooks.uninstall()
