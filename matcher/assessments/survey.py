"""Survey responses (ODK, KoboToolbox, Google Forms exports) become needs per area.

Each row of a survey export is one respondent. The respondent's area is the area polygon
holding their point (an ODK geopoint column, or lat and lon), else the area their area
column names. Each mapped question's answers map to categories (``[sources.questions]``;
with the XLSForm, by a choice's name or its label); a respondent counts once per category,
whatever questions and choices gave it. For an area and a category reported by ``c``
respondents of the ``n`` located in the area:

    demand = c x units
    share  = 100 x c / n       (severity from the shares, as an indicator's rate)

and the demand is placed where people live, as an indicator's (never at a respondent's
point). Privacy: a cell with ``c < k`` gives no need and no count; respondents' points,
ids, dates and answers that are not choices of the form are never written; the report
shows no respondent total per area (it would reveal suppressed cells by subtraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputValidationError, Problem
from .indicators import (
    NEED_OUT,
    Areas,
    _cell,
    _closest,
    _place,
    area_of,
    numbers_in,
    placed_needs,
    read_source_table,
    severity_of,
    unused_columns,
)
from .mapping import Question, Source
from .points import _areas_of, _dates

__all__ = ["survey_needs", "Form", "read_form"]


@dataclass(frozen=True)
class Form:
    """An XLSForm's select questions: name -> (type, ((choice name, label), ...))."""

    path: Path
    questions: dict[str, tuple[str, tuple[tuple[str, str], ...]]]


def _label(value: Any) -> str:
    """Return a label as text: the default language's, else the first one given."""
    if isinstance(value, dict):
        for key in ("default", "English (en)", "English"):
            if key in value:
                return str(value[key])
        return str(next(iter(value.values()), ""))
    return "" if value is None else str(value)


def read_form(path: Path, label: str) -> Form:
    """Read an XLSForm's select questions and their choices with pyxform.

    Raises
    ------
    InputValidationError
        A workbook pyxform cannot read as an XLSForm (with pyxform's reason).
    """
    from .workbook import file_error, open_workbook_bytes

    open_workbook_bytes(path, label)  # the unpacked bound, before pyxform opens it
    try:
        from pyxform.xls2json import parse_file_to_json
    except ImportError:  # pragma: no cover - pyxform comes with the assess extra
        why = "reading an XLSForm needs pyxform: pip install 'matcher[assess]'"
        raise file_error(label, why) from None
    try:
        doc = parse_file_to_json(str(path), warnings=[])
    except Exception as exc:  # noqa: BLE001 - pyxform's errors are the form's problems
        raise file_error(label, f"not a readable XLSForm: {exc}"[:300]) from None
    questions: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    lists = doc.get("choices", {}) if isinstance(doc, dict) else {}

    def walk(node: Any) -> None:
        for child in node.get("children", []) if isinstance(node, dict) else []:
            kind = str(child.get("type", ""))
            if kind.startswith("select"):
                items = child.get("choices") or lists.get(child.get("itemset"), [])
                pairs = tuple((str(c.get("name", "")), _label(c.get("label"))) for c in items)
                questions[str(child.get("name", ""))] = (kind, pairs)
            walk(child)

    walk(doc)
    return Form(path, questions)


def _question_name(column: str, explicit: str | None, form: Form) -> str:
    """Return the form's question name for an export column.

    ``explicit`` when given, else the first the form has of: the column itself, its last
    part after ``/`` (KoboToolbox), its last part after ``-`` (ODK Central).
    """
    if explicit:
        return explicit
    tries = (column, column.rsplit("/", 1)[-1], column.rsplit("-", 1)[-1])
    return next((t for t in tries if t in form.questions), tries[1])


def _answer_map(
    q: Question, form: Form | None, where: str, problems: list[Problem], mapping: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Return (answer text -> category or None, answer text -> choice name) for one question.

    Without a form, the mapping's texts are the answers. With one, each choice's name and
    label stand for it; a mapping text that is neither is a problem.
    """
    mapped = dict(q.choices)
    if form is None:
        return dict(mapped), {}
    name = _question_name(q.column, q.question, form)
    if name not in form.questions:
        problems.append(
            Problem(
                mapping,
                None,
                f"{where}.question",
                name,
                _closest("select question", name, set(form.questions), "the form"),
            )  # fmt: skip
        )
        return {}, {}
    out: dict[str, str | None] = {}
    canon: dict[str, str] = {}
    used: set[str] = set()
    for choice, label in form.questions[name][1]:
        texts = [t for t in (choice.strip().casefold(), label.strip().casefold()) if t]
        category = next((mapped[t] for t in texts if t in mapped), None)
        used.update(t for t in texts if t in mapped)
        for t in texts:
            out.setdefault(t, category)
            canon.setdefault(t, choice)
    for text in mapped:
        if text not in used:
            shown = ", ".join(c for c, _ in form.questions[name][1][:12])
            problems.append(
                Problem(
                    mapping,
                    None,
                    f"{where}.choices.{text}"[:120],
                    text,
                    f"is no choice (name or label) of question {name!r}; its choices are {shown}",
                )  # fmt: skip
            )
    return out, canon


def _answers(cell: str, q: Question, known: dict[str, str | None]) -> list[str]:
    """Split a cell into answers: the whole cell when it is one, else by the separator.

    Pieces are joined back greedily where a known answer holds the separator (a Google
    Forms label with a comma).
    """
    whole = cell.strip().casefold()
    if not whole:
        return []
    if whole in known:
        return [whole]
    pieces = [
        p.strip() for p in (whole.split() if q.separator == " " else whole.split(q.separator))
    ]
    pieces = [p for p in pieces if p]
    out = []
    i = 0
    joiner = " " if q.separator == " " else q.separator + " "
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            text = joiner.join(pieces[i:j])
            if text in known or j == i + 1:
                out.append(text)
                i = j
                break
    return out


def survey_needs(source: Source, index: int, areas: Areas) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs, report rows) of one survey-responses source.

    Raises
    ------
    InputValidationError
        A bad coordinate or date, an area cell naming no area, a form that cannot be read,
        a question or choice of the mapping not in the form; every one at once.
    """
    spec = source.survey
    assert spec is not None  # a survey source always has its spec
    label = str(source.file)
    mapping = f"sources[{index}]"
    problems: list[Problem] = []
    form = read_form(spec.form, str(spec.form)) if spec.form is not None else None
    maps = [
        _answer_map(q, form, f"{mapping}.questions[{j}]", problems, "the mapping file")
        for j, q in enumerate(spec.questions)
    ]
    frame, lines = read_source_table(source, index)
    located = _locations(source, frame, lines, areas, form, problems)
    day = _dates(frame, spec.date, lines, label, problems) if spec.date else None
    if problems:
        raise InputValidationError(problems[:1000])
    keep = located != ""
    if day is not None:
        keep &= (day >= (spec.start or "")) & (day <= (spec.end or "9999-99-99"))
    if spec.id is not None:
        keep &= ~frame[spec.id].astype(str).str.strip().duplicated().to_numpy()
    # respondent x category, and answers that are no mapped choice
    reported: set[tuple[int, str]] = set()
    stray: dict[tuple[str, str], int] = {}
    for q, (known, choices) in zip(spec.questions, maps, strict=True):
        for text, category in known.items():  # every unmapped choice of the form is named
            if category is None and text in choices:
                stray.setdefault((q.column, choices[text]), 0)
        cells = frame[q.column].astype(str).tolist()
        for i in np.flatnonzero(keep).tolist():
            for text in _answers(cells[i], q, known):
                category = known.get(text)
                if category is not None:
                    reported.add((i, category))
                else:
                    key = (q.column, choices.get(text, ""))
                    stray[key] = stray.get(key, 0) + 1
    respondents = pd.Series(located[keep]).value_counts()
    cells = pd.DataFrame(sorted(reported), columns=["row", "category"])
    cells["area"] = located[cells["row"].to_numpy(dtype=np.int64)] if len(cells) else ""
    counts = cells.groupby(["category", "area"], sort=True).size()
    return _build(source, spec.k, spec.units, counts, respondents, stray, areas, frame, keep)


def _locations(
    source: Source,
    frame: pd.DataFrame,
    lines: list[int],
    areas: Areas,
    form: Form | None,
    problems: list[Problem],
) -> np.ndarray:
    """Return each respondent's area id ('' when none): the point's polygon, else the area cell."""
    spec = source.survey
    assert spec is not None
    label = str(source.file)
    n = len(frame)
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    if spec.point is not None:
        parts = frame[spec.point].astype(str).str.strip().str.split(n=2)
        first = parts.str[0].fillna("")
        second = parts.str[1].fillna("")
        why = 'a geopoint is "latitude longitude [altitude accuracy]" in WGS84 degrees'
        lat = numbers_in(first, -90, 90, why, spec.point, lines, label, problems, empty_ok=True)
        bad_lon = (first.str.strip() != "") & (second.str.strip() == "")
        for i in np.flatnonzero(bad_lon.to_numpy()).tolist():
            problems.append(
                Problem(label, lines[i], spec.point, _cell(frame[spec.point].iloc[i]), why)
            )
        lon = numbers_in(second, -180, 180, why, spec.point, lines, label, problems, empty_ok=True)
    elif spec.lat is not None and spec.lon is not None:
        why = "must be a number from -{0} to {0} (WGS84 degrees; empty: no point)"
        lat = numbers_in(frame[spec.lat], -90, 90, why.format(90), spec.lat, lines, label,
                         problems, empty_ok=True)  # fmt: skip
        lon = numbers_in(frame[spec.lon], -180, 180, why.format(180), spec.lon, lines, label,
                         problems, empty_ok=True)  # fmt: skip
    has_point = np.isfinite(lat) & np.isfinite(lon)
    out = np.full(n, "", dtype=object)
    if has_point.any():
        out[has_point] = _areas_of(areas, lat[has_point], lon[has_point])
    if source.area:
        known = dict(zip(areas.table["area"], areas.table["name"], strict=True))
        labels = _choice_labels(form, source.area)
        cells = frame[source.area].astype(str).str.strip().tolist()
        for i in np.flatnonzero(out == "").tolist():
            raw = cells[i]
            if not raw:
                continue
            key, reason = area_of(labels.get(raw, raw), known, areas.by_name)
            if reason is not None:
                problems.append(Problem(label, lines[i], source.area, _cell(raw), reason))
            out[i] = key if reason is None else ""
    return out


def _choice_labels(form: Form | None, column: str) -> dict[str, str]:
    """Return choice name -> label of the form's question behind an area column."""
    if form is None:
        return {}
    found = form.questions.get(_question_name(column, None, form))
    return {name: label for name, label in found[1] if label} if found else {}


def _build(
    source: Source,
    k: int,
    units: float,
    counts: pd.Series,
    respondents: pd.Series,
    stray: dict[tuple[str, str], int],
    areas: Areas,
    frame: pd.DataFrame,
    keep: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = source.survey
    assert spec is not None
    names = dict(zip(areas.table["area"], areas.table["name"], strict=True))
    questions = "+".join(q.column for q in spec.questions)
    needs: list[pd.DataFrame] = []
    report: list[dict[str, object]] = []
    for category, group in counts.groupby(level="category", sort=True):
        by_area = group.droplevel("category")
        shown = by_area[by_area >= k]
        share = 100.0 * shown / respondents.reindex(shown.index).to_numpy(dtype=float)
        severity = dict(zip(shown.index, severity_of(share.to_numpy(), spec.severity), strict=True))
        for area, c in by_area.items():
            row: dict[str, object] = {
                "source": source.name,
                "indicator": questions,
                "category": category,
                "area": area,
                "area_name": names.get(area),
                "units_per_affected": units,
            }
            if c < k:
                report.append(row | {"needs": 0, "note": f"suppressed: fewer than {k} respondents"})
                continue
            demand = float(c) * units
            placed = _place(str(area), demand, areas)
            total = round(sum(p[2] for p in placed), 6)
            report.append(
                row
                | {
                    "respondents": int(c),
                    "demand": round(demand, 4),
                    "placed": total,
                    "severity": int(severity[area]),
                    "needs": len(placed),
                    "note": "",
                }
            )
            if not placed:
                continue
            needs.append(
                placed_needs(
                    f"{source.name}:{category}:{area}",
                    placed,
                    str(category),
                    int(severity[area]),
                    str(area),
                    f"{source.name}/{questions}",
                )  # fmt: skip
            )
    report += _stray_rows(source, stray)
    outside = int((~keep).sum())
    if outside:
        report.append(
            {
                "source": source.name,
                "indicator": questions,
                "note": f"{outside} respondent(s) not counted: no area (no point in an area and "
                "no area named), outside the date window, or a repeated id",
            }
        )
    report += unused_columns(source, frame)
    out = pd.concat(needs, ignore_index=True) if needs else pd.DataFrame(columns=NEED_OUT)
    return out, pd.DataFrame(report)


def _stray_rows(source: Source, stray: dict[tuple[str, str], int]) -> list[dict[str, object]]:
    """Report answers that map to no category: a form's choices by name, any other text never."""
    rows: list[dict[str, object]] = []
    for (column, text), n in sorted(stray.items()):
        if text:
            note = f"choice {text!r}: maps to no category ({n} answer(s))"
        else:
            note = f"{n} answer(s) that are no choice of the mapping or the form (not shown)"
        rows.append({"source": source.name, "indicator": column, "note": note})
    return rows
