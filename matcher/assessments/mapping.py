"""The assessment mapping file: which sources, which indicators, which categories, which model.

A mapping file is TOML (``tomllib``, Python's own reader). It names the area polygons,
an optional population layer (where people live inside each area) and the assessment
sources; each indicator of a source maps to a matcher category with a demand model.
Every problem of the file is reported at once, naming the key and what would be valid.
The module :mod:`matcher.assessments` shows a mapping file with every key.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from .._errors import InputValidationError, Problem
from ..limits import MAX_UNITS, check_file, file_limit
from ..taxonomy import Taxonomy

__all__ = [
    "AreaLayer",
    "AssessmentMapping",
    "Overlap",
    "Indicator",
    "PopulationLayer",
    "Points",
    "Priorities",
    "Question",
    "Source",
    "Survey",
    "read_mapping",
    "MAX_MAPPING_BYTES",
    "MAX_SOURCES",
    "MAX_INDICATORS",
]

#: Largest mapping file, in bytes.
MAX_MAPPING_BYTES = 256 * 1024
#: Most sources in one mapping file, and most indicators of one source.
MAX_SOURCES = 64
MAX_INDICATORS = 256
#: The kinds of source this version reads.
SOURCE_KINDS = ("area_indicators", "priorities", "points", "survey")
#: The smallest and the default suppression threshold k of a survey (see :class:`Survey`).
MIN_K = 3
DEFAULT_K = 5
#: Most questions of one survey source.
MAX_QUESTIONS = 64
#: Most issues counted per area of a priorities source, and most severity raised.
MAX_TOP = 20
MAX_RAISE = 4
#: How an indicator's rate reads: a higher rate is worse (``higher``) or a lower one is.
WORSE = ("higher", "lower")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class AreaLayer:
    """The area polygons: ``file`` (GeoJSON or GeoPackage), the ``id`` field, a ``name`` field."""

    file: Path
    id: str
    name: str | None


@dataclass(frozen=True)
class PopulationLayer:
    """Where people live: units (e.g. tracts) with the ``area`` they lie in and a ``count``.

    A layer of points or polygons places each area's demand on its units; a table (CSV,
    ``.xlsx``, JSON: counts per area, rows kept by ``where``) gives each area's population,
    its demand then placed at the area's point.
    """

    file: Path
    area: str
    count: str
    where: tuple[tuple[str, str], ...] = ()
    sheet: str | None = None


@dataclass(frozen=True)
class Indicator:
    """One indicator column of a source mapped to a category, with its demand model.

    Attributes
    ----------
    column : str
        The column holding the rate (% of adults, 0 to 100) per area.
    category : str
        The matcher category (canonical code).
    worse : {"higher", "lower"}
        Whether a higher rate is worse (``higher``: the rate of adults affected) or a
        lower one (``lower``: ``100 - rate`` are affected, e.g. reliable internet).
    units_per_affected : float
        Units of demand per affected adult per week.
    baseline : float
        The affected rate (%) that needs no help; only the excess counts.
    severity : "percentile" or tuple of float
        Severity from the area's standing among the source's areas (quintiles of the
        affected rate) or from four ascending thresholds on the affected rate.
    """

    column: str
    category: str
    worse: str
    units_per_affected: float
    baseline: float
    severity: str | tuple[float, ...]


@dataclass(frozen=True)
class Priorities:
    """How a ranked-priorities source reads (``kind = "priorities"``).

    Attributes
    ----------
    issue : str
        The column naming each row's issue.
    rank, votes : str or None
        The column of the issue's rank in its area (1 is the top) or of its votes (more is
        higher); exactly one is given.
    top : int
        The issues that count: ranks 1 to ``top``, or the ``top`` most voted of an area.
    raise_severity : int
        Added to the severity (at most 5) of the area's needs of the issue's category.
    create_units : float or None
        When the area has no need of that category: create one of this many units
        (placed like an indicator's demand), at severity 3 plus ``raise_severity``.
    issues : tuple of (str, str)
        Issue text (compared without case) and the category it maps to.
    """

    issue: str
    rank: str | None
    votes: str | None
    top: int
    raise_severity: int
    create_units: float | None
    issues: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Points:
    """How a point-reports source reads (``kind = "points"``: 311 exports, incident feeds).

    Attributes
    ----------
    lat, lon : str
        The coordinate columns (WGS84).
    type : str
        The column of the report's type; ``types`` maps type text (compared without
        case) to a category, and a type it does not name is counted in the report.
    date : str or None
        The column of the report's date (ISO ``YYYY-MM-DD``, a time after it ignored);
        with ``start``/``end`` (inclusive ISO dates) only reports in that window count.
    units : float
        Demand of one report.
    id : str or None
        The column of the report's own id (the need id is ``<source>:<id>``; else the
        line number).
    """

    lat: str
    lon: str
    type: str
    date: str | None
    start: str | None
    end: str | None
    units: float
    id: str | None
    types: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Question:
    """One question of a survey export whose answers map to categories.

    Attributes
    ----------
    column : str
        The export's column of the answers.
    question : str or None
        The question's name in the XLSForm (default: the column, or its last part after
        ``/`` or ``-``, as KoboToolbox and ODK Central join group paths).
    separator : str
        What separates the answers of a select-multiple cell: ``" "`` (ODK, KoboToolbox:
        choice names) or ``","`` (Google Forms: labels).
    choices : tuple of (str, str)
        Answer text (a choice name or label, compared without case) and its category.
    """

    column: str
    question: str | None
    separator: str
    choices: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Survey:
    """How a survey-responses source reads (``kind = "survey"``: ODK, KoboToolbox, Google Forms).

    Attributes
    ----------
    form : Path or None
        The XLSForm the survey was made from (read with pyxform): choice names and labels.
    point, lat, lon : str or None
        The respondent's location: an ODK geopoint column (``"lat lon alt accuracy"``) or
        two coordinate columns. Used only to find the respondent's area, never written.
    id, date, start, end : str or None
        The respondent's id (a repeated one counted once) and the date window, as for
        point reports.
    units : float
        Demand per respondent who reported a category.
    k : int
        An area x category reported by fewer than ``k`` respondents is suppressed: no
        need, no count, in any output.
    severity : str or tuple of float
        From the share of the area's respondents who reported the category, as for an
        indicator (``"percentile"`` or four thresholds).
    questions : tuple of Question
    """

    form: Path | None
    point: str | None
    lat: str | None
    lon: str | None
    id: str | None
    date: str | None
    start: str | None
    end: str | None
    units: float
    k: int
    severity: str | tuple[float, ...]
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Source:
    """An assessment source: rates per area, ranked priorities, point reports or a survey."""

    name: str
    kind: str
    file: Path
    area: str
    population: str | None
    where: tuple[tuple[str, str], ...]
    weight: float
    indicators: tuple[Indicator, ...]
    priorities: Priorities | None = None
    points: Points | None = None
    survey: Survey | None = None
    sheet: str | None = None

    def columns(self) -> list[str]:
        """Return the columns of the source's table that the mapping uses, in order."""
        out = [self.area] if self.area else []
        out += [c for c, _ in self.where]
        out += [self.population] if self.population else []
        out += [i.column for i in self.indicators]
        if self.priorities is not None:
            p = self.priorities
            out += [c for c in (p.issue, p.rank, p.votes) if c is not None]
        if self.points is not None:
            q = self.points
            out += [c for c in (q.lat, q.lon, q.type, q.date, q.id) if c is not None]
        if self.survey is not None:
            v = self.survey
            out += [c for c in (v.point, v.lat, v.lon, v.id, v.date) if c is not None]
            out += [q.column for q in v.questions]
        return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Overlap:
    """Sources that measure the same thing for a category, and how to count them.

    ``rule``: ``"sum"`` keeps every source's demand (the overlap is only reported),
    ``"max"`` keeps, in each area, the needs of the source with the most demand there,
    ``"first"`` those of the first listed source with demand there.
    """

    category: str
    sources: tuple[str, ...]
    rule: str


#: How an overlap is counted (see :class:`Overlap`).
OVERLAP_RULES = ("sum", "max", "first")


@dataclass(frozen=True)
class AssessmentMapping:
    """A validated mapping file (see :func:`read_mapping`)."""

    path: Path
    areas: AreaLayer
    population: PopulationLayer | None
    sources: tuple[Source, ...]
    overlaps: tuple[Overlap, ...] = ()


class _Checker:
    """Collects the problems of one mapping file, each naming its key."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.problems: list[Problem] = []

    def add(self, key: str, value: Any, reason: str) -> None:
        self.problems.append(Problem(self.label, None, key, _shown(value), reason))

    def table(
        self, doc: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> dict[str, Any]:
        if not isinstance(doc, dict):
            self.add(key, doc, "must be a table")
            return {}
        for k in doc:
            if k not in allowed:
                hint = difflib.get_close_matches(k, allowed, n=1)
                self.add(
                    f"{key}.{k}" if key else k,
                    None,
                    f"unknown key; the keys here are {', '.join(allowed)}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
        for k in required:
            if k not in doc:
                self.add(f"{key}.{k}" if key else k, None, "is required")
        return doc

    def text(self, doc: dict[str, Any], key: str, path: str, limit: int = 200) -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            self.add(path, value, f"must be non-empty text of at most {limit} characters")
            return None
        if _CONTROL.search(value):
            self.add(path, value, "must not hold control characters (newline, tab, NUL, ...)")
            return None
        return value.strip()

    def number(
        self, doc: dict[str, Any], key: str, path: str, low: float, high: float, default: float,
        *, open_low: bool = False,
    ) -> float:  # fmt: skip
        value = doc.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > low if open_low else value >= low)
        if not ok or value > high:
            side = ">" if open_low else ">="
            self.add(path, value, f"must be a number {side} {low:g} and <= {high:g}")
            return default
        return float(value)

    def file(self, doc: dict[str, Any], key: str, path: str, base: Path) -> Path | None:
        name = self.text(doc, key, path, limit=1000)
        if name is None:
            return None
        where = (base / name).resolve() if not Path(name).is_absolute() else Path(name)
        reason = check_file(where, file_limit())
        if reason is not None:
            self.add(path, name, reason)
            return None
        return where


def _shown(value: Any) -> Any:
    """Return a value as a problem shows it: long text and big tables cut short."""
    if isinstance(value, str):
        return value[:80]
    if isinstance(value, dict | list):
        return str(value)[:80]
    return value


def read_mapping(path: str | Path, taxonomy: Taxonomy) -> AssessmentMapping:
    """Read and validate an assessment mapping file (TOML).

    Parameters
    ----------
    path : str or Path
        The mapping file. Relative file names in it are relative to its directory.
    taxonomy : Taxonomy
        The categories indicators may map to (codes or aliases).

    Returns
    -------
    AssessmentMapping

    Raises
    ------
    InputValidationError
        With every problem of the file (key, value, what would be valid).
    """
    path = Path(path)
    label = str(path)
    reason = check_file(path, MAX_MAPPING_BYTES)
    if reason is not None:
        raise InputValidationError([Problem(label, None, None, None, reason)])
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputValidationError(
            [Problem(label, None, None, None, "not UTF-8; save the mapping file as UTF-8")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputValidationError(
            [Problem(label, None, None, None, f"not valid TOML: {exc}")]
        ) from None
    base = path.parent.resolve()
    c = _Checker(label)
    top = c.table(doc, "", ("areas", "population", "sources", "overlaps"), ("areas", "sources"))
    areas = _areas(c, top.get("areas", {}), base)
    population = None
    if "population" in top:
        population = _population(c, top["population"], base)
    sources = _sources(c, top.get("sources", []), base, taxonomy, population is not None)
    overlaps = _overlaps(c, top.get("overlaps", []), taxonomy, sources)
    if c.problems or areas is None:
        raise InputValidationError(c.problems or [Problem(label, None, "areas", None, "invalid")])
    return AssessmentMapping(path, areas, population, tuple(sources), overlaps)


def _overlaps(
    c: _Checker, doc: Any, taxonomy: Taxonomy, sources: list[Source]
) -> tuple[Overlap, ...]:
    if not isinstance(doc, list):
        c.add("overlaps", _shown(doc), "must be [[overlaps]] tables")
        return ()
    names = [s.name for s in sources if s.kind != "priorities"]
    out = []
    seen: set[str] = set()
    for i, raw in enumerate(doc[:MAX_SOURCES]):
        key = f"overlaps[{i}]"
        t = c.table(raw, key, ("category", "sources", "rule"), ("category", "sources", "rule"))
        cat = c.text(t, "category", f"{key}.category")
        code = taxonomy.resolve(cat) if cat else None
        if cat and code is None:
            c.add(f"{key}.category", cat, taxonomy.describe_unknown(cat))
        elif code in seen:
            c.add(f"{key}.category", cat, "another overlap names this category")
        seen.add(code or "")
        raw_list = t.get("sources")
        listed: list[Any] = raw_list if isinstance(raw_list, list) else []
        ok = len(listed) >= 2 and len(set(map(str, listed))) == len(listed)
        if "sources" in t and not ok:
            c.add(
                f"{key}.sources", _shown(raw_list), "must list two or more different source names"
            )
        for name in listed if ok else []:
            if name not in names:
                hint = difflib.get_close_matches(str(name), names, n=1)
                c.add(f"{key}.sources", name, "names no area_indicators or points source"
                      + (f"; did you mean {hint[0]!r}?" if hint else ""))  # fmt: skip
        rule = t.get("rule")
        if "rule" in t and rule not in OVERLAP_RULES:
            c.add(f"{key}.rule", rule, f"must be one of: {', '.join(OVERLAP_RULES)}")
        if code and ok and rule in OVERLAP_RULES:
            out.append(Overlap(code, tuple(map(str, listed)), str(rule)))
    return tuple(out)


def _areas(c: _Checker, doc: Any, base: Path) -> AreaLayer | None:
    t = c.table(doc, "areas", ("file", "id", "name"), ("file", "id"))
    file = c.file(t, "file", "areas.file", base) if "file" in t else None
    ident = c.text(t, "id", "areas.id")
    name = c.text(t, "name", "areas.name")
    if file is None or ident is None:
        return None
    return AreaLayer(file, ident, name)


def _population(c: _Checker, doc: Any, base: Path) -> PopulationLayer | None:
    keys = ("file", "area", "count", "where", "sheet")
    t = c.table(doc, "population", keys, ("file", "area", "count"))
    file = c.file(t, "file", "population.file", base) if "file" in t else None
    area = c.text(t, "area", "population.area")
    count = c.text(t, "count", "population.count")
    where = _where(c, t.get("where", {}), "population.where")
    sheet = c.text(t, "sheet", "population.sheet", limit=31)
    table = file is not None and file.suffix.lower() in (".csv", ".xlsx", ".json")
    if where and file is not None and not table:
        c.add("population.where", None, "where applies to a table (CSV, .xlsx, JSON)")
    if sheet and file is not None and file.suffix.lower() != ".xlsx":
        c.add("population.sheet", sheet, "a sheet is chosen only in an .xlsx file")
    if file is None or area is None or count is None:
        return None
    return PopulationLayer(file, area, count, where, sheet)


_COMMON_KEYS = ("name", "kind", "file", "sheet", "area", "where")
_KIND_KEYS = {
    "area_indicators": ("population", "weight", "indicators"),
    "priorities": ("issue", "rank", "votes", "top", "raise_severity", "create_units", "issues"),
    "points": ("lat", "lon", "type", "date", "start", "end", "units", "id", "types"),
    "survey": (
        "form", "point", "lat", "lon", "id", "date", "start", "end", "units", "k", "severity",
        "questions",
    ),
}
_KIND_REQUIRED = {
    "area_indicators": ("indicators",),
    "priorities": ("issue", "issues"),
    "points": ("lat", "lon", "type", "types"),
    "survey": ("questions",),
}
_INDICATOR_KEYS = ("column", "category", "worse", "units_per_affected", "baseline", "severity")


def _sources(
    c: _Checker, doc: Any, base: Path, taxonomy: Taxonomy, has_layer: bool
) -> list[Source]:
    if not isinstance(doc, list) or not doc:
        c.add("sources", _shown(doc), "must be one or more [[sources]] tables")
        return []
    if len(doc) > MAX_SOURCES:
        c.add("sources", len(doc), f"at most {MAX_SOURCES} sources make one mapping")
        return []
    out: list[Source] = []
    names: set[str] = set()
    for i, raw in enumerate(doc):
        key = f"sources[{i}]"
        kind = raw.get("kind") if isinstance(raw, dict) else None
        known = kind if isinstance(kind, str) and kind in _KIND_KEYS else None
        allowed = _COMMON_KEYS + (
            _KIND_KEYS[known] if known else tuple(k for v in _KIND_KEYS.values() for k in v)
        )
        required = ("name", "kind", "file") + ("area",) * (known not in ("points", "survey"))
        required += _KIND_REQUIRED[known] if known else ()
        t = c.table(raw, key, allowed, required)
        name = c.text(t, "name", f"{key}.name", limit=64)
        if name is not None:
            if not _NAME.fullmatch(name):
                c.add(f"{key}.name", name, "letters, digits, '_', '.' and '-', starting with a "
                      "letter or digit, at most 64")  # fmt: skip
            elif name in names:
                c.add(f"{key}.name", name, "another source has this name")
            names.add(name)
        if "kind" in t and known is None:
            c.add(f"{key}.kind", kind, f"must be one of: {', '.join(SOURCE_KINDS)}")
        file = c.file(t, "file", f"{key}.file", base) if "file" in t else None
        area = c.text(t, "area", f"{key}.area")
        where = _where(c, t.get("where", {}), f"{key}.where")
        sheet = c.text(t, "sheet", f"{key}.sheet", limit=31)
        if sheet is not None and file is not None and file.suffix.lower() != ".xlsx":
            c.add(f"{key}.sheet", sheet, "a sheet is chosen only in an .xlsx file")
        if known == "points":
            if "area" in t:
                c.add(f"{key}.area", t["area"], "a point report's area is the polygon it lies in")
            found = _points(c, t, key, taxonomy)
            if name and file and found:
                out.append(Source(name, known, file, "", None, where, 1.0, (), None, found,
                                  sheet=sheet))  # fmt: skip
            continue
        if known == "survey":
            survey = _survey(c, t, key, base, taxonomy, has_area="area" in t)
            if name and file and survey:
                out.append(Source(name, known, file, area or "", None, where, 1.0, (),
                                  survey=survey, sheet=sheet))  # fmt: skip
            continue
        if known == "priorities":
            spec = _priorities(c, t, key, taxonomy)
            if name and file and area and spec:
                out.append(Source(name, known, file, area, None, where, 1.0, (), spec, sheet=sheet))
            continue
        pop = c.text(t, "population", f"{key}.population")
        if pop is None and "population" not in t and not has_layer and known:
            c.add(f"{key}.population", None, "give a population column, or a [population] layer")
        weight = c.number(t, "weight", f"{key}.weight", 0.0, 100.0, 1.0, open_low=True)
        indicators = _indicators(c, t.get("indicators", []), f"{key}.indicators", taxonomy)
        if name and known and file and area and indicators:
            out.append(Source(name, known, file, area, pop, where, weight, indicators,
                              sheet=sheet))  # fmt: skip
    return out


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _window(c: _Checker, t: dict[str, Any], key: str, has_date: bool) -> dict[str, str | None]:
    """Return the ``start`` and ``end`` dates of a source (ISO text), checked."""
    window: dict[str, str | None] = {}
    for k in ("start", "end"):
        value: Any = t.get(k)
        text = value.isoformat() if isinstance(value, date) else value
        if value is not None and not (isinstance(text, str) and _DATE.fullmatch(text)):
            c.add(f"{key}.{k}", _shown(value), "must be a date, YYYY-MM-DD")
            text = None
        window[k] = text
    if (window["start"] or window["end"]) and not has_date:
        c.add(f"{key}.date", None, "give the date column that start and end apply to")
    if window["start"] and window["end"] and window["start"] > window["end"]:
        c.add(f"{key}.end", window["end"], f"is before start {window['start']}")
    return window


def _points(c: _Checker, t: dict[str, Any], key: str, taxonomy: Taxonomy) -> Points | None:
    cols = {k: c.text(t, k, f"{key}.{k}") for k in ("lat", "lon", "type", "date", "id")}
    window = _window(c, t, key, bool(cols["date"]))
    units = c.number(t, "units", f"{key}.units", 0.0, MAX_UNITS, 1.0, open_low=True)
    types = _text_map(c, t.get("types", {}), f"{key}.types", taxonomy, "type")
    if not (cols["lat"] and cols["lon"] and cols["type"] and types):
        return None
    return Points(
        cols["lat"], cols["lon"], cols["type"], cols["date"], window["start"], window["end"],
        units, cols["id"], types,
    )  # fmt: skip


_QUESTION_KEYS = ("column", "question", "separator", "choices")
SEPARATORS = (" ", ",", ";")


def _survey(
    c: _Checker, t: dict[str, Any], key: str, base: Path, taxonomy: Taxonomy, has_area: bool
) -> Survey | None:
    cols = {k: c.text(t, k, f"{key}.{k}") for k in ("point", "lat", "lon", "id", "date")}
    form = c.file(t, "form", f"{key}.form", base) if "form" in t else None
    if form is not None and form.suffix.lower() != ".xlsx":
        c.add(f"{key}.form", t["form"], "an XLSForm is an .xlsx file")
        form = None
    if ("lat" in t) != ("lon" in t):
        c.add(f"{key}.lat", None, "give both lat and lon, or neither")
    if "point" in t and "lat" in t:
        c.add(f"{key}.point", t["point"], "give a geopoint column or lat and lon, not both")
    if not (has_area or "point" in t or "lat" in t):
        c.add(f"{key}.area", None, "say where respondents are: an area column, a geopoint "
              "column (point) or lat and lon")  # fmt: skip
    window = _window(c, t, key, bool(cols["date"]))
    units = c.number(t, "units", f"{key}.units", 0.0, MAX_UNITS, 1.0, open_low=True)
    k = c.number(t, "k", f"{key}.k", MIN_K, 1000, DEFAULT_K)
    if k != int(k):
        c.add(f"{key}.k", k, f"must be a whole number from {MIN_K} to 1000")
    severity = _severity(c, t.get("severity", "percentile"), f"{key}.severity")
    raw = t.get("questions", [])
    questions: list[Question] = []
    if not isinstance(raw, list) or not raw or len(raw) > MAX_QUESTIONS:
        c.add(f"{key}.questions", _shown(raw),
              f"must be 1 to {MAX_QUESTIONS} [[sources.questions]] tables")  # fmt: skip
        raw = []
    seen: set[str] = set()
    for j, doc in enumerate(raw):
        qk = f"{key}.questions[{j}]"
        q = c.table(doc, qk, _QUESTION_KEYS, ("column", "choices"))
        column = c.text(q, "column", f"{qk}.column")
        if column is not None and column in seen:
            c.add(f"{qk}.column", column, "this source maps the column twice")
        seen.add(column or "")
        name = c.text(q, "question", f"{qk}.question")
        sep = q.get("separator", " ")
        if sep not in SEPARATORS:
            c.add(f"{qk}.separator", sep, 'must be " " (ODK, KoboToolbox), "," or ";"')
        choices = _text_map(c, q.get("choices", {}), f"{qk}.choices", taxonomy, "choice")
        if column and choices and sep in SEPARATORS:
            questions.append(Question(column, name, str(sep), choices))
    wanted = (has_area or "point" in t or "lat" in t) and questions and severity is not None
    if not wanted or len(questions) != len(raw) or k != int(k):
        return None
    assert severity is not None
    return Survey(
        form, cols["point"], cols["lat"], cols["lon"], cols["id"], cols["date"], window["start"],
        window["end"], units, int(k), severity, tuple(questions),
    )  # fmt: skip


def _text_map(
    c: _Checker, raw: Any, key: str, taxonomy: Taxonomy, what: str
) -> tuple[tuple[str, str], ...]:
    """Return a validated table of text (compared without case) -> category."""
    out: list[tuple[str, str]] = []
    if not isinstance(raw, dict) or not raw:
        c.add(key, _shown(raw), f'must be a table of "{what} text" = "category"')
        return ()
    if len(raw) > MAX_INDICATORS:
        c.add(key, len(raw), f"at most {MAX_INDICATORS} entries make one table")
        return ()
    seen: set[str] = set()
    for text, cat in raw.items():
        where = f"{key}.{text}"[:120]
        folded = str(text).strip().casefold()
        code = taxonomy.resolve(cat) if isinstance(cat, str) else None
        if code is None:
            c.add(where, cat, taxonomy.describe_unknown(str(cat)))
        elif not folded or _CONTROL.search(folded) or len(folded) > 200:
            c.add(where, text, f"a {what} is text of 1 to 200 characters")
        elif folded in seen:
            c.add(where, text, f"another {what} has this text (case is ignored)")
        else:
            out.append((folded, code))
        seen.add(folded)
    return tuple(out)


def _priorities(c: _Checker, t: dict[str, Any], key: str, taxonomy: Taxonomy) -> Priorities | None:
    issue = c.text(t, "issue", f"{key}.issue")
    rank = c.text(t, "rank", f"{key}.rank")
    votes = c.text(t, "votes", f"{key}.votes")
    if ("rank" in t) == ("votes" in t):
        c.add(f"{key}.rank", None, "give exactly one of rank (1 is the top) and votes")
    top = c.number(t, "top", f"{key}.top", 1, MAX_TOP, 3)
    if top != int(top):
        c.add(f"{key}.top", top, f"must be a whole number from 1 to {MAX_TOP}")
    lift = c.number(t, "raise_severity", f"{key}.raise_severity", 1, MAX_RAISE, 1)
    if lift != int(lift):
        c.add(f"{key}.raise_severity", lift, f"must be a whole number from 1 to {MAX_RAISE}")
    create = None
    if "create_units" in t:
        create = c.number(t, "create_units", f"{key}.create_units", 0.0, MAX_UNITS, 0.0,
                          open_low=True)  # fmt: skip
    issues = _text_map(c, t.get("issues", {}), f"{key}.issues", taxonomy, "issue")
    if issue is None or (rank is None) == (votes is None) or not issues:
        return None
    return Priorities(issue, rank, votes, int(top), int(lift), create, issues)


def _where(c: _Checker, doc: Any, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(doc, dict):
        c.add(key, doc, 'must be a table of column = "value" (rows kept where every one holds)')
        return ()
    out = []
    for col, value in doc.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            c.add(f"{key}.{col}", value, "must be text or a whole number")
            continue
        out.append((str(col), str(value).strip()))
    return tuple(out)


def _indicators(c: _Checker, doc: Any, key: str, taxonomy: Taxonomy) -> tuple[Indicator, ...]:
    if not isinstance(doc, list) or not doc:
        c.add(key, _shown(doc), "must be one or more [[sources.indicators]] tables")
        return ()
    if len(doc) > MAX_INDICATORS:
        c.add(key, len(doc), f"at most {MAX_INDICATORS} indicators make one source")
        return ()
    out = []
    columns: set[str] = set()
    for i, raw in enumerate(doc):
        k = f"{key}[{i}]"
        t = c.table(raw, k, _INDICATOR_KEYS, ("column", "category", "worse", "units_per_affected"))
        column = c.text(t, "column", f"{k}.column")
        if column is not None and column in columns:
            c.add(f"{k}.column", column, "this source maps the column twice")
        columns.add(column or "")
        category = None
        raw_cat = c.text(t, "category", f"{k}.category")
        if raw_cat is not None:
            category = taxonomy.resolve(raw_cat)
            if category is None:
                c.add(f"{k}.category", raw_cat, taxonomy.describe_unknown(raw_cat))
        worse = t.get("worse")
        if "worse" in t and worse not in WORSE:
            c.add(f"{k}.worse", worse, 'must be "higher" (a higher rate is worse) or "lower"')
        upa = c.number(t, "units_per_affected", f"{k}.units_per_affected", 0.0, MAX_UNITS, 0.0,
                       open_low=True)  # fmt: skip
        baseline = c.number(t, "baseline", f"{k}.baseline", 0.0, 100.0, 0.0)
        severity = _severity(c, t.get("severity", "percentile"), f"{k}.severity")
        if column and category and worse in WORSE and upa > 0 and severity is not None:
            out.append(Indicator(column, category, str(worse), upa, baseline, severity))
    return tuple(out)


def _severity(c: _Checker, value: Any, key: str) -> str | tuple[float, ...] | None:
    if value == "percentile":
        return "percentile"
    ok = isinstance(value, list) and len(value) == 4
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ok = ok and all(0 <= v <= 100 for v in value) and list(value) == sorted(set(value))
    if not ok:
        c.add(key, _shown(value), 'must be "percentile" or four rising affected rates from 0 to '
              "100 where severity 2, 3, 4 and 5 begin")  # fmt: skip
        return None
    return tuple(float(v) for v in value)
