"""An assessment's tables: CSV, an ``.xlsx`` sheet or a JSON table, as text cells.

Publishers serve the same table in different files: a CSV download, an Excel workbook, or
JSON (open-data portals: an array of records; NYC's Environment & Health Data Portal: an
object of equal-length column arrays). Each is read as text cells with a number per row, so
that every later rule (``where`` filters, rates, areas) reads them alike:

* CSV: as matcher reads a needs file (:mod:`matcher.io`); rows are line numbers;
* ``.xlsx``: :func:`~matcher.assessments.workbook.read_sheet`; rows are sheet rows;
* ``.json``: records numbered from 1; a cell is a number, text, true/false or null (empty).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputValidationError, Problem
from ..limits import check_file, file_limit, read_file

__all__ = ["read_table", "keep_where", "TABLE_SUFFIXES"]

#: The file types read as tables.
TABLE_SUFFIXES = (".csv", ".xlsx", ".json")
#: Most columns of a JSON table.
MAX_JSON_COLUMNS = 1_000


def read_table(path: Path, label: str, sheet: str | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Read a CSV, ``.xlsx`` or JSON table as text cells, with each row's number.

    Raises
    ------
    InputValidationError
        A file that cannot be read (missing, too large, not UTF-8), a repeated column, a row
        of another width, a cell over the length bound, a JSON value that is no table.
    """
    from ..io import _check_cells, _decode, _read_bytes, _read_csv_text
    from .workbook import read_sheet

    reason = check_file(path, file_limit())
    if reason is not None:
        raise InputValidationError([Problem(label, None, None, None, reason)])
    suffix = path.suffix.lower()
    rows: Sequence[int] | np.ndarray
    if suffix == ".xlsx":
        frame, rows = read_sheet(path, label, sheet)
        _check_cells(frame, rows, label)
    elif suffix == ".json":
        frame, rows = _read_json(path, label)
        _check_cells(frame, rows, label)
    else:
        text = _decode(_read_bytes(path, label), label)
        frame, rows = _read_csv_text(text, label, ())
        _check_cells(frame, rows, label, text)
    return frame, np.asarray(rows, dtype=np.int64).tolist()


def _fail(label: str, reason: str, row: int | None = None) -> InputValidationError:
    return InputValidationError([Problem(label, row, None, None, reason)])


def _cell(value: Any) -> str | None:
    """Return a JSON scalar as a CSV cell's text (None for a value that is no scalar)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        return None if _SURROGATE.search(value) else value
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


_SHAPE = "a JSON table is an array of flat objects or an object of equal-length arrays"


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a repeated or empty key (a CSV refuses such columns)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out or not key.strip() or len(out) >= MAX_JSON_COLUMNS:
            why = (
                f"an object has more than {MAX_JSON_COLUMNS:,} keys"
                if len(out) >= MAX_JSON_COLUMNS
                else f"an object repeats the key {key[:40]!r}"
                if key in out
                else "an object has an empty key"
            )
            raise _JsonShape(why)
        out[key] = value
    return out


class _JsonShape(ValueError):
    """A JSON object that cannot be a table's row or columns."""


def _read_json(path: Path, label: str) -> tuple[pd.DataFrame, list[int]]:
    """Read a JSON table: ``[{"col": value, ...}, ...]`` or ``{"col": [values], ...}``.

    Every record has the same keys (a key one record lacks or adds is a problem naming the
    record and the closest key); no object repeats a key.
    """
    data = read_file(path, label)
    try:
        doc = json.loads(data.decode("utf-8-sig"), object_pairs_hook=_pairs)
    except _JsonShape as exc:
        raise _fail(label, f"{exc}; {_SHAPE}") from None
    except UnicodeDecodeError:
        raise _fail(label, "not UTF-8; save the file as UTF-8") from None
    except RecursionError:
        raise _fail(label, f"nested too deep; {_SHAPE}") from None
    except ValueError as exc:
        raise _fail(label, f"not valid JSON: {exc}"[:300]) from None
    if isinstance(doc, dict) and all(isinstance(v, list) for v in doc.values()) and doc:
        lengths = {len(v) for v in doc.values()}
        if len(lengths) != 1:
            raise _fail(label, f"its column arrays have different lengths; {_SHAPE}")
        columns = {str(k): v for k, v in doc.items()}
    elif isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        names = list(doc[0]) if doc else []
        for i, record in enumerate(doc, start=1):
            if list(record) != names and set(record) != set(names):
                odd = sorted(set(record) ^ set(names))[0]
                hint = difflib.get_close_matches(odd, [*names, *record], n=2, cutoff=0.6)
                hint = [h for h in hint if h != odd]
                raise InputValidationError(
                    [Problem(label, i, odd[:40], None,
                             "every record has the same keys as the first; "
                             + (f"did you mean {hint[0]!r}?" if hint else "this key is not "
                                "in every record"))]  # fmt: skip
                )
        columns = {c: [r[c] for r in doc] for c in names}
    else:
        raise _fail(label, _SHAPE)
    texts: dict[str, list[str]] = {}
    for name, values in columns.items():
        out: list[str] = []
        for i, value in enumerate(values):
            text = _cell(value)
            if text is None:
                raise InputValidationError(
                    [Problem(label, i + 1, name, str(value)[:40],
                             "a cell is a number, text, true/false or null")]  # fmt: skip
                )
            out.append(text)
        texts[name] = out
    frame = pd.DataFrame(texts, dtype=object)
    return frame, list(range(1, len(frame) + 1))


def keep_where(
    frame: pd.DataFrame,
    rows: list[int],
    where: tuple[tuple[str, str], ...],
    label: str,
    key: str,
    *,
    show_values: bool = True,
) -> tuple[pd.DataFrame, list[int]]:
    """Keep the rows where every ``column = value`` of ``where`` holds (``key`` names it).

    Raises
    ------
    InputValidationError
        A filter that keeps no row, naming the values the column holds (unless
        ``show_values`` is false: a survey's cells are respondents' answers).
    """
    keep = np.ones(len(frame), dtype=bool)
    for col, value in where:
        cells = frame[col].astype(str).str.strip()
        keep &= (cells == value).to_numpy()
        if not keep.any():
            seen = ", ".join(repr(v) for v in list(dict.fromkeys(cells.tolist()))[:8])
            if not show_values:
                seen = f"{cells.nunique()} other value(s), not shown"
            raise InputValidationError(
                [
                    Problem(
                        label, None, col, value,
                        f"no row is kept by {key}.{col}; this column holds {seen}",
                    )  # fmt: skip
                ]
            )
    numbers = np.asarray(rows, dtype=np.int64)
    return frame.loc[keep].reset_index(drop=True), numbers[keep].tolist()
