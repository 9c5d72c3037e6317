"""Excel workbooks (``.xlsx``): a sheet read as a table of text cells, bounded.

Survey tools export responses as ``.xlsx`` (KoboToolbox, ODK Central, Google Sheets) and
an XLSForm is an ``.xlsx`` file. A workbook is a zip of XML parts: before openpyxl opens it,
the sum of its parts' uncompressed sizes is checked against a bound, so a small file cannot
unpack to gigabytes (openpyxl parses the XML with defusedxml when it is installed, which
pyxform requires).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import InputValidationError, Problem
from ..limits import read_file

__all__ = ["read_sheet", "open_workbook_bytes", "file_error", "MAX_UNPACKED_BYTES"]

#: Most bytes the parts of one workbook may unpack to.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
#: Most rows, columns and cells (rows x header columns, empty rows too) of one sheet.
MAX_SHEET_ROWS = 1_000_000
MAX_SHEET_COLUMNS = 1_000
MAX_SHEET_CELLS = 5_000_000


def file_error(label: str, reason: str) -> InputValidationError:
    """Return the error of a file as a whole (no row or field)."""
    return InputValidationError([Problem(label, None, None, None, reason)])


def open_workbook_bytes(path: Path, label: str) -> bytes:
    """Return a workbook's bytes once its zip parts are checked against the unpacked bound.

    Raises
    ------
    InputValidationError
        A file that is not a zip workbook, or whose parts unpack past the bound.
    """
    data = read_file(path, label)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(info.file_size for info in z.infolist())
    except zipfile.BadZipFile:
        raise file_error(label, "not an .xlsx workbook (not a zip file)") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise file_error(
            label,
            f"the workbook unpacks to {unpacked:,} bytes; at most {MAX_UNPACKED_BYTES:,} "
            "(save the sheet as CSV)",
        )
    return data


def _text(value: Any) -> str:
    """Return a cell as text, the way a CSV export of the sheet writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def read_sheet(path: Path, label: str, sheet: str | None) -> tuple[pd.DataFrame, list[int]]:
    """Read one sheet (the first when ``sheet`` is None) as text cells, with row numbers.

    The first row is the header; empty rows are skipped; numbers are written as a CSV
    export would (``12``, ``41.88``), dates as ISO text.

    Raises
    ------
    InputValidationError
        An unknown sheet (naming the sheets), a repeated or empty column name, too many
        rows or columns. (The caller checks the cells as it checks a CSV's.)
    """
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - openpyxl comes with the assess extra
        raise file_error(
            label, "reading .xlsx needs openpyxl: pip install 'matcher[assess]' (or save as CSV)"
        ) from None
    data = open_workbook_bytes(path, label)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        raise file_error(label, f"cannot read the workbook: {exc}"[:300]) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            names = ", ".join(repr(s) for s in book.sheetnames[:20])
            raise InputValidationError(
                [Problem(label, None, "sheet", sheet, f"no such sheet; the sheets are {names}")]
            )
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        if not hasattr(ws, "iter_rows"):
            raise file_error(label, f"sheet {ws.title!r} is a chart, not a table of cells")
        ws.reset_dimensions()  # a workbook may declare a smaller size than it holds
        header, body, numbers = _rows(ws, label)
    except InputValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - the sheet's XML is parsed while it is read
        raise file_error(label, f"cannot read the sheet: {exc}"[:300]) from None
    finally:
        book.close()
    frame = pd.DataFrame(body, columns=header, dtype=object)
    if not len(header):
        frame = pd.DataFrame()
    return frame, numbers


def _rows(ws: Any, label: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Return (header, rows of text cells, row numbers) of a sheet, bounded."""
    rows = ws.iter_rows(values_only=True, max_col=MAX_SHEET_COLUMNS + 1)
    header = [_text(v).strip() for v in next(rows, None) or ()]
    while header and not header[-1]:
        header.pop()
    problems = _header_problems(header, label)
    if problems:
        raise InputValidationError(problems)
    width = len(header)
    body: list[list[str]] = []
    numbers: list[int] = []
    for number, cells in enumerate(rows, start=2):
        if number > MAX_SHEET_ROWS + 1 or number * width > MAX_SHEET_CELLS:
            why = f"at most {MAX_SHEET_ROWS:,} rows and {MAX_SHEET_CELLS:,} cells; save as CSV"
            raise InputValidationError([Problem(label, number, None, None, why)])
        texts = [_text(v) for v in cells]
        beyond = [j for j in range(width, len(texts)) if texts[j].strip()]
        if beyond:
            why = f"a cell beyond the header's {width} columns (column {beyond[0] + 1})"
            raise InputValidationError([Problem(label, number, None, None, why)])
        texts = texts[:width]
        if not any(t.strip() for t in texts):
            continue
        body.append(texts + [""] * (width - len(texts)))
        numbers.append(number)
    return header, body, numbers


def _header_problems(header: list[str], label: str) -> list[Problem]:
    if not header:
        return [Problem(label, 1, None, None, "the sheet is empty; expected a header row")]
    if len(header) > MAX_SHEET_COLUMNS:
        return [Problem(label, 1, None, None, f"at most {MAX_SHEET_COLUMNS:,} columns")]
    problems = []
    seen: set[str] = set()
    for j, name in enumerate(header, start=1):
        if not name:
            problems.append(Problem(label, 1, f"column {j}", None, "a column needs a name"))
        elif name in seen:
            problems.append(Problem(label, 1, name, None, "another column has this name"))
        seen.add(name)
    return problems
