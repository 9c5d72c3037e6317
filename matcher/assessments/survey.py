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

import math
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


#: Deepest nesting of groups read from an XLSForm.
MAX_FORM_DEPTH = 64
#: What a problem shows instead of a respondent's answer.
HIDDEN = "(a respondent's answer, not shown)"


@dataclass(frozen=True)
class FormQuestion:
    """A select question of an XLSForm: its name, its group path and its choices."""

    name: str
    path: str
    kind: str
    choices: tuple[tuple[str, tuple[str, ...]], ...]  # (choice name, its labels, every language)


@dataclass(frozen=True)
class Form:
    """An XLSForm's select questions, by name (None: two groups hold the name) and by path."""

    path: Path
    questions: dict[str, FormQuestion | None]


def _labels(value: Any) -> tuple[str, ...]:
    """Return a choice's labels: one per language (``label::English (en)`` ...)."""
    if isinstance(value, dict):
        return tuple(str(v) for v in value.values() if v is not None)
    return () if value is None else (str(value),)


def read_form(path: Path, label: str) -> Form:
    """Read an XLSForm's select questions and their choices with pyxform.

    Raises
    ------
    InputValidationError
        A workbook pyxform cannot read as an XLSForm (with pyxform's reason), or groups
        nested deeper than :data:`MAX_FORM_DEPTH`.
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
    lists = doc.get("choices", {}) if isinstance(doc, dict) else {}
    questions: dict[str, FormQuestion | None] = {}
    stack: list[tuple[Any, tuple[str, ...]]] = [(doc, ())]
    while stack:  # depth first, in the form's order
        node, groups = stack.pop()
        if len(groups) > MAX_FORM_DEPTH:
            raise file_error(label, f"groups nest deeper than {MAX_FORM_DEPTH} levels")
        children = node.get("children", []) if isinstance(node, dict) else []
        for child in reversed(children if isinstance(children, list) else []):
            if not isinstance(child, dict):
                continue
            name = str(child.get("name", ""))
            kind = str(child.get("type", ""))
            if kind.startswith("select"):
                items = child.get("choices") or lists.get(child.get("itemset"), [])
                pairs = tuple((str(c.get("name", "")), _labels(c.get("label"))) for c in items)
                q = FormQuestion(name, "/".join((*groups, name)), kind, pairs)
                questions[q.path] = q
                other = questions.get(name, q)
                questions[name] = q if other is q or (other and other.path == q.path) else None
            stack.append((child, (*groups, name)))
    return Form(path, questions)


def _form_question(column: str, explicit: str | None, form: Form) -> str:
    """Return the key of an export column's question in the form.

    ``explicit`` when given; else the first the form knows of: the column, the column with
    ODK Central's ``-`` read as ``/``, then the parts after each ``/`` or ``-``.
    """
    if explicit:
        return explicit
    tries = [column, column.replace("-", "/")]
    tries += [column[i + 1 :] for i, ch in enumerate(column) if ch in "/-"]
    return next((t for t in tries if form.questions.get(t)), column.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class _Answers:
    """How one question's answer texts (compared without case) read."""

    categories: dict[str, str | None]  # answer -> category (None: a choice mapped to none)
    choices: tuple[str, ...]  # the form's choices mapped to no category
    words: int  # most separator-pieces one answer text holds
    notes: tuple[str, ...]  # what the report says about the question's choices


def _pieces(text: str, separator: str) -> int:
    return max(1, len(text.split() if separator == " " else text.split(separator)))


def _answer_map(
    q: Question, form: Form | None, where: str, problems: list[Problem], mapping: str
) -> _Answers:
    """Return how a question's answers read.

    Without a form, the mapping's texts are the answers. With one, an answer is a choice's
    name (as ODK and KoboToolbox export it) or, when no choice has that name, a label
    (any language) that only one choice has; a mapping text is read the same way, and
    one that is neither is a problem.
    """
    mapped = dict(q.choices)
    if form is None:
        words = max(_pieces(t, q.separator) for t in mapped)
        return _Answers(dict(mapped), (), words, ())
    key = _form_question(q.column, q.question, form)
    found = form.questions.get(key)
    if found is None:
        names = {k for k, v in form.questions.items() if v is not None and "/" not in k}
        reason = (
            f"two groups have a question named {key!r}; give its path (group/{key})"
            if key in form.questions
            else _closest("select question", key, names, "the form")
        )
        problems.append(Problem(mapping, None, f"{where}.question", key, reason))
        return _Answers({}, (), 1, ())
    by_name: dict[str, str] = {}
    for choice, _ in found.choices:
        folded = choice.strip().casefold()
        if folded in by_name and by_name[folded] != choice:
            problems.append(
                Problem(mapping, None, f"{where}.question", found.name,
                        f"choices {by_name[folded]!r} and {choice!r} differ only in case; "
                        "answers are compared without case")  # fmt: skip
            )
        by_name.setdefault(folded, choice)
    by_label: dict[str, str | None] = {}
    for choice, labels in found.choices:
        for text in {t.strip().casefold() for t in labels if t.strip()}:
            if text in by_name:
                continue  # a name wins over another choice's label
            by_label[text] = choice if by_label.get(text, choice) == choice else None
    overlap = sorted(
        {
            t
            for c, labels in found.choices
            for t in (text.strip().casefold() for text in labels)
            if t in by_name and by_name[t] != c
        }
    )
    category: dict[str, str | None] = {}  # choice name -> category
    for text, code in mapped.items():
        picked = by_name.get(text) or by_label.get(text)
        if picked is None:
            shown = ", ".join(c for c, _ in found.choices[:12])
            why = (
                "is the label of more than one choice; map their names"
                if text in by_label
                else f"is no choice (name or label) of question {found.name!r}; its choices "
                f"are {shown}"
            )
            problems.append(Problem(mapping, None, f"{where}.choices.{text}"[:120], text, why))
            continue
        category[picked] = code
    answers = {t: category.get(c) for t, c in by_name.items()}
    answers.update({t: category.get(c) for t, c in by_label.items() if c is not None})
    unmapped = tuple(c for c, _ in found.choices if c not in category)
    notes = (
        (f"labels that are also choice names ({', '.join(overlap[:8])}): such an answer is read "
         "as the choice of that name",)  # fmt: skip
        if overlap
        else ()
    )
    words = max((_pieces(t, q.separator) for t in answers), default=1)
    return _Answers(answers, unmapped, words, notes)


def _answers(cell: str, q: Question, known: _Answers) -> list[str]:
    """Split a cell into answers: the whole cell when it is one, else by the separator.

    Pieces are joined back, the longest first, where a known answer holds the separator
    (a Google Forms label with a comma); an answer is at most as many pieces as the
    longest known one, so a cell costs time linear in its length.
    """
    whole = cell.strip().casefold()
    if not whole:
        return []
    if whole in known.categories:
        return [whole]
    split = whole.split() if q.separator == " " else whole.split(q.separator)
    pieces = [p.strip() for p in split if p.strip()]
    out = []
    i = 0
    joiner = " " if q.separator == " " else q.separator + " "
    while i < len(pieces):
        for j in range(min(len(pieces), i + known.words), i, -1):
            text = joiner.join(pieces[i:j])
            if text in known.categories or j == i + 1:
                out.append(text)
                i = j
                break
    return out


def _hidden(problems: list[Problem], label: str) -> list[Problem]:
    """Return problems with every respondent's answer of the data file hidden, once each."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for p in problems:
        if p.file == label and p.value is not None:
            p = Problem(p.file, p.row, p.field, HIDDEN, p.reason)
        key = (p.file, p.row, p.field, p.reason)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.file != label, p.row or 0, p.field or ""))


def survey_needs(source: Source, index: int, areas: Areas) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs, report rows) of one survey-responses source.

    Raises
    ------
    InputValidationError
        A bad coordinate or date, an area cell naming no area, a form that cannot be read,
        a question or choice of the mapping not in the form; every one at once. A
        respondent's answer is never shown in a problem (row and column only).
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
    try:
        frame, lines = read_source_table(source, index, show_values=False)
    except InputValidationError as exc:
        raise InputValidationError(_hidden([*problems, *exc.problems], label)) from None
    located = _locations(source, frame, lines, areas, form, problems)
    day = _dates(frame, spec.date, lines, label, problems) if spec.date else None
    if problems:
        raise InputValidationError(_hidden(problems, label)[:1000])
    keep = located != ""
    if day is not None:
        keep &= (day >= (spec.start or "")) & (day <= (spec.end or "9999-99-99"))
    if spec.id is not None:  # a respondent again (same id, counted): an empty id is no id
        ids = frame[spec.id].astype(str).str.strip()
        repeat = ids[keep].duplicated() & (ids[keep] != "")
        keep[np.flatnonzero(keep)[repeat.to_numpy()]] = False
    # respondent x category, and whether any answer is no choice
    reported: set[tuple[int, str]] = set()
    strays: set[str] = set()
    for q, known in zip(spec.questions, maps, strict=True):
        cells = frame[q.column].astype(str).tolist()
        for i in np.flatnonzero(keep).tolist():
            for text in _answers(cells[i], q, known):
                if text not in known.categories:
                    strays.add(q.column)
                elif (category := known.categories[text]) is not None:
                    reported.add((i, category))
    respondents = pd.Series(located[keep]).value_counts()
    cells = pd.DataFrame(sorted(reported), columns=["row", "category"])
    cells["area"] = located[cells["row"].to_numpy(dtype=np.int64)] if len(cells) else ""
    counts = cells.groupby(["category", "area"], sort=True).size()
    report = _left_out(source, spec.questions, maps, strays)
    return _build(source, counts, respondents, areas, frame, keep, report)


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
        lat, lon = _geopoints(frame[spec.point], spec.point, lines, label, problems)
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
            key, reason = area_of(raw, known, areas.by_name)
            for text in labels.get(raw.casefold(), ()) if reason is not None else ():
                key, reason = area_of(text, known, areas.by_name)  # the choice's label
                if reason is None:
                    break
            if reason is not None:
                problems.append(Problem(label, lines[i], source.area, _cell(raw), reason))
            out[i] = key if reason is None else ""
    return out


def _geopoints(
    raw: pd.Series, column: str, lines: list[int], label: str, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (lat, lon) of ODK geopoints: "lat lon [altitude [accuracy]]"; NaN when empty."""
    why = 'a geopoint is "latitude longitude [altitude accuracy]" in WGS84 degrees'
    lat = np.full(len(raw), np.nan)
    lon = np.full(len(raw), np.nan)
    for i, cell in enumerate(raw.astype(str).tolist()):
        parts = cell.split()
        if not parts:
            continue
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        ok = 2 <= len(numbers) <= 4 and all(math.isfinite(v) for v in numbers)
        if not ok or abs(numbers[0]) > 90 or abs(numbers[1]) > 180:
            problems.append(Problem(label, lines[i], column, _cell(cell), why))
            continue
        lat[i], lon[i] = numbers[0], numbers[1]
    return lat, lon


def _choice_labels(form: Form | None, column: str) -> dict[str, tuple[str, ...]]:
    """Return each text of a choice (its name, any label; without case) -> all its texts.

    For the form's question behind a column: an area asked as a choice.
    """
    if form is None:
        return {}
    found = form.questions.get(_form_question(column, None, form))
    out: dict[str, tuple[str, ...]] = {}
    for name, labels in found.choices if found else ():
        texts = (name, *labels)
        for text in texts:
            out.setdefault(text.strip().casefold(), texts)
    return out


def _left_out(
    source: Source, questions: tuple[Question, ...], maps: list[_Answers], strays: set[str]
) -> list[dict[str, object]]:
    """Report what the mapping leaves out, without any count (counts could be differenced)."""
    rows: list[dict[str, object]] = []
    for q, known in zip(questions, maps, strict=True):
        for note in known.notes:
            rows.append({"source": source.name, "indicator": q.column, "note": note})
        for choice in known.choices:
            note = f"choice {choice!r} maps to no category: its answers are not counted"
            rows.append({"source": source.name, "indicator": q.column, "note": note})
        if q.column in strays:
            note = "answers that are no choice of the mapping or the form are not counted"
            rows.append({"source": source.name, "indicator": q.column, "note": note})
    return rows


def _build(
    source: Source,
    counts: pd.Series,
    respondents: pd.Series,
    areas: Areas,
    frame: pd.DataFrame,
    keep: np.ndarray,
    report: list[dict[str, object]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Needs and report rows of every area x mapped category, suppressed below k."""
    spec = source.survey
    assert spec is not None
    k = spec.k
    questions = "+".join(q.column for q in spec.questions)
    categories = sorted({code for q in spec.questions for _, code in q.choices})
    needs: list[pd.DataFrame] = []
    rows: list[dict[str, object]] = []
    for category in categories:
        has = len(counts) and category in counts.index.get_level_values("category")
        by_area = counts.xs(category, level="category") if has else pd.Series(dtype=np.int64)
        shown = by_area[by_area >= k]
        share = 100.0 * shown / respondents.reindex(shown.index).to_numpy(dtype=float)
        severity = dict(zip(shown.index, severity_of(share.to_numpy(), spec.severity), strict=True))
        # every area, so that a suppressed count and no respondent at all read the same
        for area, name in zip(areas.table["area"], areas.table["name"], strict=True):
            c = int(by_area.get(area, 0))
            row: dict[str, object] = {
                "source": source.name,
                "indicator": questions,
                "category": category,
                "area": area,
                "area_name": name,
                "units_per_affected": spec.units,
            }
            if c < k:
                rows.append(row | {"needs": 0, "note": f"suppressed: fewer than {k} respondents"})
                continue
            demand = float(c) * spec.units
            placed = _place(str(area), demand, areas)
            rows.append(
                row
                | {
                    "respondents": c,
                    "demand": round(demand, 4),
                    "placed": round(sum(p[2] for p in placed), 6),
                    "severity": int(severity[area]),
                    "needs": len(placed),
                    "note": "",
                }
            )
            if placed:
                prefix = f"{source.name}:{category}:{area}"
                origin = f"{source.name}/{questions}"
                needs.append(
                    placed_needs(prefix, placed, category, int(severity[area]), area, origin)
                )
    rows += report
    outside = int((~keep).sum())
    if outside:
        rows.append(
            {
                "source": source.name,
                "indicator": questions,
                "note": f"{outside} respondent(s) not counted: no area (no point in an area and "
                "no area named), outside the date window, or a repeated id",
            }
        )
    rows += unused_columns(source, frame)
    out = pd.concat(needs, ignore_index=True) if needs else pd.DataFrame(columns=NEED_OUT)
    return out, pd.DataFrame(rows)
