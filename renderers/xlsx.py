"""XLSX writing in XlsxWriter's constant-memory mode: rows are flushed to disk as they are written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_xlsx(path: Path, sheet: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write ``header`` then ``rows`` to a new workbook at ``path``; return the number of data rows.

    Memory stays flat in the number of rows (constant_memory writes each row out once the next
    begins). Strings are written as text, never as formulas or URLs, so a contact named
    ``=HYPERLINK(...)`` cannot turn into a formula in the user's spreadsheet.
    """
    import xlsxwriter  # here, not at the top: only exports need it, and the CLI starts without it

    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False,
                                               "strings_to_urls": False, "strings_to_numbers": False})
    try:
        worksheet = workbook.add_worksheet(sheet[:31])
        bold = workbook.add_format({"bold": True})
        worksheet.write_row(0, 0, list(header), bold)
        worksheet.freeze_panes(1, 0)
        count = 0
        for count, row in enumerate(rows, start=1):
            worksheet.write_row(count, 0, ["" if value is None else value for value in row])
        return count
    finally:
        workbook.close()
