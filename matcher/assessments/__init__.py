"""Needs from assessments: area indicators, priorities, point reports and survey responses.

``matcher.assess(mapping)`` reads a TOML mapping file (:mod:`matcher.assessments.mapping`)
and the sources it names: rates per area by each indicator's demand model
(:mod:`~matcher.assessments.indicators`), point reports (:mod:`~matcher.assessments.points`),
survey responses counted per area and suppressed below k (:mod:`~matcher.assessments.survey`),
then overlaps between sources and ranked priorities. It returns an :class:`Assessment`:
a needs table that ``matcher plan`` reads unchanged and a report of every area, indicator,
category, figure and model, and of every column the mapping does not use.

A mapping file::

    [areas]                       # the area polygons
    file = "community_areas.geojson"
    id = "area_num_1"             # the field the sources' area column matches
    name = "community"            # optional: names (a source may give names instead)

    [population]                  # optional: where people live inside the areas
    file = "tracts.geojson"
    area = "commarea"             # the area id of each unit
    count = "Pop2014"             # its population

    [[sources]]
    name = "hcs-2021-22"
    kind = "area_indicators"
    file = "healthy_chicago_survey.csv"
    area = "GEOID"                # the column naming each row's area
    population = "Population"     # optional with a [population] layer
    where = { Layer = "Community area" }   # optional: the rows to read
    weight = 1.0                  # optional: scales every demand of the source

      [[sources.indicators]]
      column = "HCSNVP_2021-2022"
      category = "crime_prevention"
      worse = "higher"            # "lower" when a low rate is the problem
      units_per_affected = 0.01   # units per affected adult per week
      baseline = 0                # optional: the affected rate that needs no help
      severity = "percentile"     # or four thresholds: [20, 35, 50, 65]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._errors import InputValidationError, Problem
from ..taxonomy import Taxonomy, default_taxonomy
from .indicators import NEED_OUT, load_areas, source_needs
from .mapping import AssessmentMapping, read_mapping
from .overlaps import resolve_overlaps
from .points import point_needs
from .priorities import apply_priorities
from .survey import survey_needs

__all__ = ["Assessment", "assess", "read_assessment_report", "REPORT_COLUMNS"]

logger = logging.getLogger("matcher.assess")

#: The columns of the assessment report, in order.
REPORT_COLUMNS = [
    "source",
    "indicator",
    "category",
    "area",
    "area_name",
    "rank",
    "population",
    "respondents",
    "rate",
    "affected_rate",
    "baseline",
    "units_per_affected",
    "weight",
    "demand",
    "placed",
    "severity",
    "needs",
    "note",
]


@dataclass(frozen=True)
class Assessment:
    """Needs made from assessment sources, with the report of how.

    Attributes
    ----------
    needs : pandas.DataFrame
        ``need_id, category, lat, lon, demand, severity, neighborhood, source``: the
        neighborhood is the area id, the source ``<source name>/<indicator column>``.
    report : pandas.DataFrame
        One row per source x indicator x area (:data:`REPORT_COLUMNS`), then one per
        column of a source that the mapping does not use (``note``: not in the mapping).
    mapping : AssessmentMapping
        The validated mapping file.
    """

    needs: pd.DataFrame
    report: pd.DataFrame
    mapping: AssessmentMapping

    def write(self, needs_path: str | Path, report_path: str | Path | None = None) -> None:
        """Write the needs CSV (and the report CSV).

        Each file is written whole beside its target, then both are moved into place:
        a failure while writing changes neither.

        Raises
        ------
        InputValidationError
            When both paths name the same file.
        """
        from ..output import csv_bytes

        out = Path(needs_path).resolve()
        files = {out: csv_bytes(self.needs)}
        if report_path is not None:
            report = Path(report_path).resolve()
            if report == out:
                raise InputValidationError(
                    [
                        Problem(
                            None,
                            None,
                            "report",
                            str(report_path),
                            "is the needs file too; give the report a file of its own",
                        )
                    ]
                )
            files[report] = csv_bytes(self.report)
        staged: list[tuple[Path, Path]] = []
        try:
            for path, content in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                stage = path.with_name(f".matcher-{os.getpid()}-{path.name}")
                staged.append((stage, path))
                stage.write_bytes(content)
            for stage, path in staged:
                os.replace(stage, path)
        finally:
            for stage, _ in staged:
                stage.unlink(missing_ok=True)


def assess(mapping: str | Path, *, taxonomy: Taxonomy | None = None) -> Assessment:
    """Turn the assessment sources of a mapping file into needs.

    Parameters
    ----------
    mapping : str or Path
        A TOML mapping file (see :mod:`matcher.assessments`).
    taxonomy : Taxonomy, optional
        The categories indicators may map to; the default taxonomy when omitted.

    Returns
    -------
    Assessment

    Raises
    ------
    InputValidationError
        With every problem of the mapping file, then every problem of the layers and
        sources (file, row, field, value, what would be valid).
    """
    from ..io import read_needs

    tax = taxonomy or default_taxonomy()
    m = read_mapping(mapping, tax)
    areas = load_areas(m.areas, m.population)
    needs: list[pd.DataFrame] = []
    reports: list[pd.DataFrame] = []
    problems: list[Problem] = []
    for index, source in enumerate(m.sources):
        if source.kind == "priorities":
            continue
        make = {"points": point_needs, "survey": survey_needs}.get(source.kind, source_needs)
        try:
            n, r = make(source, index, areas)
        except InputValidationError as exc:
            problems.extend(exc.problems)
            continue
        needs.append(n)
        reports.append(r)
        logger.info("%s: %d need(s), %.4g units", source.name, len(n), n["demand"].sum())
    full = [n for n in needs if len(n)]
    table = pd.concat(full, ignore_index=True) if full else pd.DataFrame(columns=NEED_OUT)
    if not problems:
        table, r = resolve_overlaps(table, m.overlaps, areas)
        reports.append(r)
    # priorities act on the needs of every other source, in the mapping's order
    for index, source in enumerate(m.sources):
        if source.kind != "priorities":
            continue
        try:
            table, r = apply_priorities(source, index, areas, table)
        except InputValidationError as exc:
            problems.extend(exc.problems)
            continue
        reports.append(r)
        logger.info("%s: %d priority row(s) read", source.name, len(r))
    if problems:
        raise InputValidationError(problems)
    report = pd.concat(reports, ignore_index=True).reindex(columns=REPORT_COLUMNS)
    for col in ("severity", "needs", "rank", "respondents"):
        report[col] = report[col].astype("Int64")  # whole numbers; empty for unused columns
    if table.empty:
        raise InputValidationError(
            [
                Problem(
                    str(m.path),
                    None,
                    "sources",
                    None,
                    "no need came out: every area's demand is 0 or has no value (see the "
                    "baselines, the population and the rates)",
                )
            ]
        )
    # what a plan would refuse is refused here, before any file is written
    read_needs(table, taxonomy=tax, name="the assessed needs", points=False)
    return Assessment(table, report, m)


#: The report's columns read back as numbers (the others are text).
_NUMBER_COLUMNS = (
    "rank", "population", "respondents", "rate", "affected_rate", "baseline",
    "units_per_affected", "weight", "demand", "placed", "severity", "needs",
)  # fmt: skip


def read_assessment_report(path: str | Path) -> pd.DataFrame:
    """Read an assessment report CSV written by :meth:`Assessment.write` (for ``report.html``).

    Parameters
    ----------
    path : str or Path
        The report (``matcher assess --report``).

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`REPORT_COLUMNS`; numbers as floats, text cells restored
        (:func:`matcher.output.restore_cell`).

    Raises
    ------
    InputValidationError
        A file that is not such a report: too large, not UTF-8, a column missing, a figure
        that is not a number (naming the line and column).
    """
    from ..io import _decode, _read_bytes, _read_csv_text
    from ..output import restore_cell

    label = str(path)
    text = _decode(_read_bytes(Path(path), label), label)
    frame, rows = _read_csv_text(text, label, ())
    missing = [c for c in REPORT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputValidationError(
            [
                Problem(label, 1, ", ".join(missing), None,
                        "missing: not an assessment report (matcher assess --report)")  # fmt: skip
            ]
        )
    frame = frame[REPORT_COLUMNS].copy()
    problems: list[Problem] = []
    for col in _NUMBER_COLUMNS:
        cells = frame[col].fillna("").astype(str).str.strip()
        values = pd.to_numeric(cells, errors="coerce")
        bad = (cells != "") & ~values.between(-1e12, 1e12)
        for i in bad.to_numpy().nonzero()[0][:20].tolist():
            problems.append(Problem(label, int(rows[i]), col, cells.iloc[i][:40],
                                    "must be a number (or empty)"))  # fmt: skip
        frame[col] = values
    if problems:
        raise InputValidationError(problems)
    for col in ("source", "indicator", "category", "area", "area_name", "note"):
        frame[col] = frame[col].map(lambda v: restore_cell(v) if isinstance(v, str) and v else None)
    return frame.reset_index(drop=True)
