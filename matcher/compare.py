"""Compare two finished plans from their output files: clusters, partners, neighborhoods.

The one comparison core of ``matcher compare`` (two plan directories) and of the service
(``GET /api/v1/plans/{plan_id}/compare/{other_id}``): both hand :func:`compare_plans` the
files of each plan by name, as ``matcher plan`` writes them and the store keeps them.
Every number is read from the files (6 decimals) and every difference is rounded to that
precision, so the comparison has no float noise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import InputValidationError, Problem
from .equity import natural_order
from .output import csv_bytes, restore_cell, write_files

__all__ = [
    "COMPARE_FILES",
    "OPTIONAL_PLAN_FILES",
    "REQUIRED_PLAN_FILES",
    "PlanComparison",
    "compare_plans",
    "headline",
    "load_changes",
    "served_changes",
]

logger = logging.getLogger(__name__)

#: The files of a plan a comparison reads; it cannot do without these.
REQUIRED_PLAN_FILES = ("summary.json", "clusters.csv", "assignments.csv")
#: Files read when a plan has them: the neighborhoods' names.
OPTIONAL_PLAN_FILES = ("gaps.csv", "floors.csv")
#: The files of a comparison (:meth:`PlanComparison.files`).
COMPARE_FILES = (
    "compare.json",
    "compare_clusters.csv",
    "compare_neighborhoods.csv",
    "compare_partners.csv",
)
#: Decimals of the numbers in a plan's files (matcher.output rounds to 6).
DECIMALS = 6
#: The parameters that decide which clusters a plan forms, hence what its cluster ids name.
CLUSTERING_PARAMETERS = ("cluster_km", "min_samples", "max_cluster_radius_km", "seed")
#: The columns that identify a cluster: equal in both plans, a cluster id names one cluster.
_CLUSTER_KEY = ("cluster_id", "category", "demand", "n_needs", "centroid_lat", "centroid_lon")

_CLUSTER_COLUMNS = ("cluster_id", "category", "neighborhood", "neighborhood_name", "demand",
                    "served_a", "served_b", "delta", "change")  # fmt: skip
_PARTNER_COLUMNS = ("partner_id", "name", "kind", "units_a", "units_b", "delta",
                    "capacity_a", "capacity_b")  # fmt: skip
_HOOD_COLUMNS = ("neighborhood_id", "name", "demand_a", "demand_b", "served_a", "served_b",
                 "coverage_a", "coverage_b", "delta_served")  # fmt: skip


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Return the headline figures of a plan from its summary's ``metrics``.

    Parameters
    ----------
    metrics : mapping
        ``summary.json``'s ``metrics`` (or :attr:`matcher.Plan.metrics`).

    Returns
    -------
    dict
        ``units_demand``, ``units_served``, ``units_unmet``, ``coverage``, ``clusters``,
        ``assignments``, ``cost_total``, ``coverage_min``, ``coverage_gini`` and
        ``floors_met`` (None without floors), as the summary has them.
    """
    units, counts = metrics["units"], metrics["counts"]
    equity = metrics.get("equity", {})
    return {
        "units_demand": units["demand"],
        "units_served": units["served"],
        "units_unmet": units["unmet"],
        "coverage": units["coverage"],
        "clusters": counts["clusters"],
        "assignments": counts["assignments"],
        "cost_total": metrics.get("cost", {}).get("total"),
        "coverage_min": equity.get("coverage_min"),
        "coverage_gini": equity.get("coverage_gini"),
        "floors_met": metrics.get("floors", {}).get("met"),
    }


def served_changes(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Return the served units of ``a``'s clusters in both plans.

    Parameters
    ----------
    a, b : pandas.DataFrame
        Cluster tables (``cluster_id, category, neighborhood, demand, served``) of two
        plans whose cluster ids name the same clusters.

    Returns
    -------
    pandas.DataFrame
        ``cluster_id, category, neighborhood, demand, served_a, served_b, delta, change``
        in ``a``'s order: ``served_b`` NaN for a cluster ``b`` does not have, ``delta``
        rounded to 6 decimals and ``change`` ``"gained"`` (more units served in ``b``),
        ``"lost"`` or ``"same"``.
    """
    ca, cb = a.set_index("cluster_id"), b.set_index("cluster_id")
    out = pd.DataFrame(
        {
            "category": ca["category"],
            "neighborhood": ca["neighborhood"],
            "demand": ca["demand"],
            "served_a": ca["served"],
            "served_b": cb["served"].reindex(ca.index),
        }
    )
    out["delta"] = (out["served_b"] - out["served_a"]).round(DECIMALS) + 0.0  # never -0.0
    out["change"] = np.select(
        [out["delta"] > 1e-9, out["delta"] < -1e-9], ["gained", "lost"], "same"
    ).astype(object)
    return out.reset_index(names="cluster_id")


def load_changes(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """Return partners' loads in two plans, sorted by partner id.

    Parameters
    ----------
    a, b : pandas.Series
        Units used per partner (indexed by partner id) in each plan.

    Returns
    -------
    pandas.DataFrame
        Indexed by partner id: ``units_a``, ``units_b`` (NaN where a plan has no such
        partner), ``delta`` (missing counted as 0, rounded to 6 decimals) and ``status``:
        ``"added"`` (only in ``b``), ``"removed"`` (only in ``a``), ``"changed"`` or
        ``"same"``.
    """
    out = pd.DataFrame({"units_a": a, "units_b": b}).sort_index()
    out["delta"] = (out["units_b"].fillna(0) - out["units_a"].fillna(0)).round(DECIMALS) + 0.0
    out["status"] = np.where(
        out["units_a"].isna(),
        "added",
        np.where(
            out["units_b"].isna(),
            "removed",
            np.where(out["delta"].abs() > 1e-9, "changed", "same"),
        ),
    ).astype(object)
    return out


@dataclass(frozen=True)
class PlanComparison:
    """Two finished plans compared: what plan ``b`` serves differently from plan ``a``.

    Attributes
    ----------
    clusters_comparable : bool
        Whether the plans have the same clusters (same cluster ids with the same
        category, demand, needs and centre), so that they are compared per cluster.
    reason : str or None
        Why the clusters are not comparable (None when they are).
    totals : dict
        ``units_demand_a/_b``, ``units_served_a/_b/_delta``, ``units_unmet_a/_b``,
        ``coverage_a/_b/_delta``, ``assignments_a/_b``, ``clusters_a/_b``,
        ``clusters_gained``, ``clusters_lost``, ``clusters_same`` (None when the clusters
        are not comparable) and ``partners_changed``.
    clusters : pandas.DataFrame
        Every cluster (none when not comparable): ``cluster_id, category, neighborhood,
        neighborhood_name, demand, served_a, served_b, delta, change`` (``"gained"``:
        more units served in ``b``; ``"lost"``; ``"same"``).
    partners : pandas.DataFrame
        Partners whose load (units in ``assignments.csv``) differs: ``partner_id, name,
        kind, units_a, units_b, delta, capacity_a, capacity_b``. A partner with no
        assignment in a plan has 0 units and no known capacity (NaN) there.
    neighborhoods : pandas.DataFrame
        Every neighborhood with demand in either plan (``summary.json``'s
        ``coverage_by_neighborhood``): ``neighborhood_id, name, demand_a, demand_b,
        served_a, served_b, coverage_a, coverage_b, delta_served``.

    Every table is in the natural order of its ids (:func:`matcher.equity.natural_order`).
    """

    clusters_comparable: bool
    reason: str | None
    totals: dict[str, Any]
    clusters: pd.DataFrame
    partners: pd.DataFrame
    neighborhoods: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON: the totals and every table as a list of rows."""
        return {
            "format": "matcher.compare/1",
            "clusters_comparable": self.clusters_comparable,
            "reason": self.reason,
            "totals": dict(self.totals),
            "clusters": _records(self.clusters),
            "partners": _records(self.partners),
            "neighborhoods": _records(self.neighborhoods),
        }

    def files(self) -> dict[str, bytes]:
        """Return :data:`COMPARE_FILES`: ``compare.json`` and a CSV file of each table.

        The CSV files are written as the plan's own (:func:`matcher.output.csv_bytes`:
        text cells neutralised against spreadsheet formulas).
        """
        doc = {k: v for k, v in self.to_dict().items()
               if k not in ("clusters", "partners", "neighborhoods")}  # fmt: skip
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False)
        return {
            "compare.json": (text + "\n").encode(),
            "compare_clusters.csv": csv_bytes(self.clusters),
            "compare_neighborhoods.csv": csv_bytes(self.neighborhoods),
            "compare_partners.csv": csv_bytes(self.partners),
        }

    def to_dir(self, path: str | Path) -> dict[str, Path]:
        """Write :meth:`files` into directory ``path`` (created if missing).

        Every file is built first, then written as a plan's files are
        (:func:`matcher.output.write_files`: the usual permissions, all or nothing); no
        other file of the directory is touched (it may be a plan's own directory).

        Returns
        -------
        dict of str to Path
            The written files by name.
        """
        return write_files(self.files(), path, drop_stale=False)


@np.errstate(over="ignore", invalid="ignore")  # an overflow is reported (_check_finite)
def compare_plans(
    a: Mapping[str, bytes | None],
    b: Mapping[str, bytes | None],
    *,
    labels: tuple[str, str] = ("a", "b"),
) -> PlanComparison:
    """Compare two finished plans from their files.

    Parameters
    ----------
    a, b : mapping of str to bytes
        Each plan's files by name (:data:`REQUIRED_PLAN_FILES`, and
        :data:`OPTIONAL_PLAN_FILES` when the plan has them), as ``matcher plan`` writes
        them and ``Store.plan_file`` returns them; a missing file may be absent or None.
    labels : tuple of str
        Names of the two plans in messages (their directories, or plan ids).

    Returns
    -------
    PlanComparison
        ``b`` against ``a``: a positive delta means more in ``b``.

    Raises
    ------
    InputValidationError
        A required file is missing or unreadable, or a figure of a file is not a finite
        number (every problem of both plans at once).
    """
    problems: list[Problem] = []
    tables = []
    for files, label in ((a, labels[0]), (b, labels[1])):
        try:
            tables.append(_read_plan(files, label))
        except InputValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputValidationError(problems)
    pa, pb = tables
    names = pb.names | pa.names
    reason = _incomparable(pa, pb)
    comparable = reason is None
    if comparable:
        clusters = served_changes(pa.clusters, pb.clusters)
        clusters.insert(3, "neighborhood_name", clusters["neighborhood"].map(names))
        clusters = _natural(clusters, "cluster_id")
    else:
        clusters = pd.DataFrame({c: pd.Series(dtype=object) for c in _CLUSTER_COLUMNS})
    partners = _partners(pa.assignments, pb.assignments)
    hoods = _neighborhoods(pa.summary, pb.summary, names)
    ha, hb = headline(pa.summary["metrics"]), headline(pb.summary["metrics"])
    counts = clusters["change"].value_counts()
    totals: dict[str, Any] = {
        "units_demand_a": ha["units_demand"],
        "units_demand_b": hb["units_demand"],
        "units_served_a": ha["units_served"],
        "units_served_b": hb["units_served"],
        "units_served_delta": _round(hb["units_served"] - ha["units_served"]),
        "units_unmet_a": ha["units_unmet"],
        "units_unmet_b": hb["units_unmet"],
        "coverage_a": ha["coverage"],
        "coverage_b": hb["coverage"],
        "coverage_delta": _round(hb["coverage"] - ha["coverage"]),
        "assignments_a": ha["assignments"],
        "assignments_b": hb["assignments"],
        "clusters_a": ha["clusters"],
        "clusters_b": hb["clusters"],
        **{
            f"clusters_{c}": int(counts.get(c, 0)) if comparable else None
            for c in ("gained", "lost", "same")
        },
        "partners_changed": int(len(partners)),
    }
    logger.debug(
        "compared %s with %s: served %g -> %g units; %s",
        labels[0],
        labels[1],
        ha["units_served"],
        hb["units_served"],
        f"{totals['clusters_gained']} clusters gained, {totals['clusters_lost']} lost"
        if comparable
        else "clusters not comparable",
    )
    _check_finite(totals, (clusters, partners, hoods), labels)
    return PlanComparison(comparable, reason, totals, clusters, partners, hoods)


def _check_finite(
    totals: Mapping[str, Any], tables: tuple[pd.DataFrame, ...], labels: tuple[str, str]
) -> None:
    """Raise when a sum or difference of finite figures overflowed (to infinity)."""
    bad = [k for k, v in totals.items() if isinstance(v, float) and math.isinf(v)]
    for table in tables:
        numeric = table.select_dtypes("number")
        bad += [str(c) for c in numeric.columns if np.isinf(numeric[c].to_numpy()).any()]
    if bad:
        raise InputValidationError(
            [Problem(f"{labels[0]} and {labels[1]}", None, ", ".join(bad), None,
                     "too large to compare: a sum or difference of the plans' figures "
                     "overflows (figures are units per week, far below 1e300)")]
        )  # fmt: skip


@dataclass(frozen=True)
class _PlanTables:
    """What a comparison reads of one plan."""

    label: str
    summary: dict[str, Any]
    clusters: pd.DataFrame
    #: the key columns of the clusters as written (exact text)
    cluster_key: pd.DataFrame
    assignments: pd.DataFrame
    #: neighborhood id -> name
    names: dict[str, str]


def _read_plan(files: Mapping[str, bytes | None], label: str) -> _PlanTables:
    """Read the files of one plan; raise naming every missing, unreadable or invalid one."""
    problems = [
        Problem(f"{label}/{name}", None, None, None,
                "missing: not a finished plan (matcher plan writes this file)")
        for name in REQUIRED_PLAN_FILES
        if files.get(name) is None
    ]  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    where = f"{label}/summary.json"
    try:
        summary = json.loads(files["summary.json"] or b"")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputValidationError(
            [Problem(where, None, None, None,
                     f"not a plan summary: not valid JSON ({type(exc).__name__} {exc})")]
        ) from None  # fmt: skip
    problems.extend(_summary_problems(summary, where))
    tables: dict[str, pd.DataFrame] = {}
    for name, columns, numbers, optional in (
        ("clusters.csv", ("cluster_id", "category", "demand", "served"), ("demand", "served"), ()),
        ("assignments.csv", ("partner_id", "units"), ("units",),
         ("capacity_used", "capacity_left")),  # not in files of older plans; may be empty
    ):  # fmt: skip
        try:
            table = _csv(files, name, label, columns)
        except InputValidationError as exc:
            problems.extend(exc.problems)
            continue
        content = files[name] or b""
        problems += _numbers(table, numbers, f"{label}/{name}", content)
        problems += _numbers(table, optional, f"{label}/{name}", content, empty=True)
        tables[name] = table
    if problems:
        raise InputValidationError(problems)
    clusters, assignments = tables["clusters.csv"], tables["assignments.csv"]
    key = clusters[[c for c in _CLUSTER_KEY if c in clusters.columns]].copy()
    if "neighborhood" not in clusters.columns:
        clusters["neighborhood"] = ""
    names: dict[str, str] = {}
    for name, id_col, name_col in (("floors.csv", "neighborhood_id", "name"),
                                   ("gaps.csv", "neighborhood", "neighborhood_name")):  # fmt: skip
        if files.get(name) is not None:
            table = _csv(files, name, label, ())
            if {id_col, name_col} <= set(table.columns):
                names.update(zip(table[id_col], table[name_col], strict=True))
    return _PlanTables(label, summary, clusters, key, assignments, names)


#: The figures of a summary's ``metrics`` a comparison reads: (section, key, required).
#: A required one is a finite number; another is a finite number, null or absent.
_SUMMARY_FIGURES = (
    ("units", "demand", True),
    ("units", "served", True),
    ("units", "unmet", True),
    ("units", "coverage", True),
    ("counts", "clusters", True),
    ("counts", "assignments", True),
    ("cost", "total", False),
    ("equity", "coverage_min", False),
    ("equity", "coverage_gini", False),
    ("floors", "met", False),
)
#: The parameters a comparison reads as numbers (finite, null or absent).
_NUMBER_PARAMETERS = ("min_coverage", "max_partner_share")
_A_NUMBER = "expected a finite number (such as 12.5; not text, true/false, inf or nan)"


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite JSON number (bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _summary_problems(summary: Any, where: str) -> list[Problem]:
    """Every problem of a plan summary's structure and figures a comparison reads."""

    def problem(field: str | None, value: Any, reason: str) -> Problem:
        return Problem(where, None, field, value, reason)

    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    if not isinstance(metrics, dict):
        return [problem("metrics", None, "not a plan summary: expected an object 'metrics' "
                                         "(matcher plan writes it)")]  # fmt: skip
    problems = []
    for section in dict.fromkeys(s for s, _, _ in _SUMMARY_FIGURES):
        required = any(r for s, _, r in _SUMMARY_FIGURES if s == section)
        if not isinstance(metrics.get(section), dict) and (required or section in metrics):
            problems.append(problem(f"metrics.{section}", None, "expected an object"))
    for section, key, required in _SUMMARY_FIGURES:
        part = metrics.get(section)
        if not isinstance(part, dict) or (not required and part.get(key) is None):
            continue
        if key not in part:
            problems.append(problem(f"metrics.{section}.{key}", None, f"missing: {_A_NUMBER}"))
        elif not _finite(part[key]):
            problems.append(problem(f"metrics.{section}.{key}", part[key], _A_NUMBER))
    hoods = metrics.get("coverage_by_neighborhood")
    if hoods is not None and not isinstance(hoods, dict):
        problems.append(problem("metrics.coverage_by_neighborhood", None,
                                "expected an object of neighborhoods by id"))  # fmt: skip
    for hid, entry in (hoods or {}).items() if isinstance(hoods, dict) else ():
        field = f"metrics.coverage_by_neighborhood.{hid}"
        if not isinstance(entry, dict):
            problems.append(problem(field, None, "expected an object: demand, served, coverage"))
            continue
        for key in ("demand", "served", "coverage"):
            if key == "coverage" and entry.get(key) is None:
                continue  # no demand: no coverage
            if key not in entry:
                problems.append(problem(f"{field}.{key}", None, f"missing: {_A_NUMBER}"))
            elif not _finite(entry[key]):
                reason = _A_NUMBER + (" or null" if key == "coverage" else "")
                problems.append(problem(f"{field}.{key}", entry[key], reason))
    for section in ("parameters", "input_hashes"):
        if summary.get(section) is not None and not isinstance(summary[section], dict):
            problems.append(problem(section, None, "expected an object or null"))
    parameters = summary.get("parameters")
    for key in _NUMBER_PARAMETERS if isinstance(parameters, dict) else ():
        value = parameters.get(key)
        if value is not None and not _finite(value):
            problems.append(problem(f"parameters.{key}", value, _A_NUMBER + " or null"))
    return problems


def _csv(
    files: Mapping[str, bytes | None], name: str, label: str, columns: tuple[str, ...]
) -> pd.DataFrame:
    """Read an output CSV as written: text cells restored, numbers converted by the caller."""
    try:
        frame = pd.read_csv(io.BytesIO(files[name] or b""), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputValidationError(
            [Problem(f"{label}/{name}", None, None, None, f"not a readable CSV file: {exc}")]
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputValidationError(
            [Problem(f"{label}/{name}", None, ", ".join(missing), None,
                     "missing column(s): not a file matcher plan wrote")]
        )  # fmt: skip
    for c in frame.columns:
        frame[c] = frame[c].map(restore_cell)
    return frame


def _numbers(
    frame: pd.DataFrame,
    columns: tuple[str, ...],
    where: str,
    content: bytes,
    *,
    empty: bool = False,
) -> list[Problem]:
    """Turn the text columns of ``frame`` that it has into numbers, in place.

    Returns a problem for every cell that is not a finite number (an empty one is
    allowed, as NaN, when ``empty``), naming its row as the input readers do: the line
    of the file (the header is line 1).
    """
    problems: list[Problem] = []
    lines: list[int] | None = None
    for c in columns:
        if c not in frame.columns:
            continue
        text = frame[c].astype(str)
        values = pd.to_numeric(text, errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if empty:
            bad &= (text.str.strip() != "").to_numpy()
        if bad.any():
            lines = lines if lines is not None else _lines(content, len(frame))
            reason = _A_NUMBER + (" or an empty cell" if empty else "")
            problems += [Problem(where, lines[i], c, text.iloc[i], reason)
                         for i in np.flatnonzero(bad)]  # fmt: skip
        frame[c] = values
    return problems


def _lines(content: bytes, rows: int) -> list[int]:
    """Return the line of the file each of the ``rows`` data rows of a CSV file starts on."""
    starts: list[int] = []
    try:
        reader = csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""))
        end, header = 0, False
        for record in reader:
            start, end = end + 1, reader.line_num
            if record and header:  # not a blank line: pandas skips those
                starts.append(start)
            header = header or bool(record)
    except (UnicodeDecodeError, csv.Error):
        starts = []
    return starts if len(starts) == rows else list(range(2, rows + 2))


def _incomparable(a: _PlanTables, b: _PlanTables) -> str | None:
    """Return why the two plans' cluster ids name different clusters (None: they do not)."""
    ka = a.cluster_key.sort_values("cluster_id").reset_index(drop=True)
    kb = b.cluster_key.sort_values("cluster_id").reset_index(drop=True)
    if list(ka.columns) == list(kb.columns) == list(_CLUSTER_KEY) and ka.equals(kb):
        return None
    causes = []
    pa, pb = a.summary.get("parameters") or {}, b.summary.get("parameters") or {}
    for name in CLUSTERING_PARAMETERS:
        if pa.get(name) != pb.get(name):
            causes.append(f"{name} {pa.get(name)!r} in {a.label}, {pb.get(name)!r} in {b.label}")
    hood_a, hood_b = _by_neighborhood(pa), _by_neighborhood(pb)
    if hood_a != hood_b:
        within = a.label if hood_a else b.label
        causes.append(
            f"{within} forms clusters within neighborhoods (min_coverage, "
            "vulnerability_column or max_partner_share), the other does not"
        )
    ha, hb = a.summary.get("input_hashes") or {}, b.summary.get("input_hashes") or {}
    inputs = ("needs", "neighborhoods") if hood_a or hood_b else ("needs",)
    for name in inputs:
        if ha.get(name) != hb.get(name):
            causes.append(f"the {name} differ")
    ids_a, ids_b = set(ka["cluster_id"]), set(kb["cluster_id"])
    facts = []
    if ids_a - ids_b:
        facts.append(f"{len(ids_a - ids_b)} cluster id(s) only in {a.label}")
    if ids_b - ids_a:
        facts.append(f"{len(ids_b - ids_a)} only in {b.label}")
    common = sorted(ids_a & ids_b)
    if common and list(ka.columns) == list(kb.columns):
        sa = ka.set_index("cluster_id").loc[common]
        sb = kb.set_index("cluster_id").loc[common]
        other = int((sa != sb).any(axis=1).sum())
        if other:
            facts.append(f"{other} with another category, demand, needs or centre")
    elif common:
        facts.append("clusters.csv has other columns")
    return (
        "the plans have different clusters"
        + (f" ({'; '.join(causes)})" if causes else "")
        + ", so the same cluster id names different clusters"
        + (f": {', '.join(facts)}" if facts else "")
        + "; compared per neighborhood and partner only"
    )


def _by_neighborhood(parameters: Mapping[str, Any]) -> bool:
    """Whether a plan with these parameters formed its clusters within neighborhoods."""
    return bool(
        (parameters.get("min_coverage") or 0) > 0
        or parameters.get("vulnerability_column") is not None
        or (parameters.get("max_partner_share") or 1) < 1
    )


def _partners(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Partners whose load (units in assignments.csv) differs between the two plans."""
    loads = load_changes(_loads(a), _loads(b))
    loads = loads[loads["status"] != "same"]
    out = pd.DataFrame(index=loads.index)
    info = pd.concat([_partner_info(b), _partner_info(a)])
    info = info[~info.index.duplicated()]
    out["name"] = info["name"].reindex(out.index)
    out["kind"] = info["kind"].reindex(out.index)
    out["units_a"] = loads["units_a"].fillna(0.0)
    out["units_b"] = loads["units_b"].fillna(0.0)
    out["delta"] = loads["delta"]
    out["capacity_a"] = _capacities(a).reindex(out.index)
    out["capacity_b"] = _capacities(b).reindex(out.index)
    out = out.reset_index(names="partner_id")
    return _natural(out, "partner_id")[list(_PARTNER_COLUMNS)]


def _loads(assignments: pd.DataFrame) -> pd.Series:
    """Units per partner, rounded to the files' precision."""
    return assignments.groupby("partner_id")["units"].sum().round(DECIMALS)


def _partner_info(assignments: pd.DataFrame) -> pd.DataFrame:
    """Each partner's name and kind, from assignments.csv (None when it has no such column)."""
    cols = {"partner_name": "name", "partner_kind": "kind"}
    frame = assignments.drop_duplicates("partner_id").set_index("partner_id")
    return pd.DataFrame(
        {new: frame[old] if old in frame.columns else None for old, new in cols.items()},
        index=frame.index,
        dtype=object,
    )


def _capacities(assignments: pd.DataFrame) -> pd.Series:
    """Each assigned partner's capacity: its units used plus its units left."""
    if not {"capacity_used", "capacity_left"} <= set(assignments.columns):
        return pd.Series(dtype=np.float64)
    first = assignments.drop_duplicates("partner_id").set_index("partner_id")
    return (first["capacity_used"] + first["capacity_left"]).round(DECIMALS)


def _neighborhoods(
    a: Mapping[str, Any], b: Mapping[str, Any], names: Mapping[str, str]
) -> pd.DataFrame:
    """Demand, served and coverage per neighborhood in both plans (their summaries)."""
    ca = a["metrics"].get("coverage_by_neighborhood") or {}
    cb = b["metrics"].get("coverage_by_neighborhood") or {}
    ids = sorted(set(ca) | set(cb))
    rows = []
    for hid in ids:
        ra, rb = ca.get(hid) or {}, cb.get(hid) or {}
        served_a, served_b = ra.get("served", 0.0), rb.get("served", 0.0)
        rows.append(
            {
                "neighborhood_id": str(hid),
                "name": names.get(str(hid)),
                "demand_a": ra.get("demand", 0.0),
                "demand_b": rb.get("demand", 0.0),
                "served_a": served_a,
                "served_b": served_b,
                "coverage_a": ra.get("coverage"),
                "coverage_b": rb.get("coverage"),
                "delta_served": _round(served_b - served_a),
            }
        )
    frame = pd.DataFrame(rows, columns=list(_HOOD_COLUMNS))
    for c in _HOOD_COLUMNS[2:]:
        frame[c] = pd.to_numeric(frame[c]).astype(np.float64)
    return _natural(frame, "neighborhood_id")


def _natural(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Return the rows in the natural order of ``column`` (``"2"`` before ``"10"``)."""
    return frame.iloc[natural_order(frame[column])].reset_index(drop=True)


def _round(value: float) -> float:
    return round(float(value), DECIMALS) + 0.0  # + 0.0: never -0.0


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: NaN as None, numpy scalars as Python's."""
    out = frame.astype(object).where(frame.notna(), None)
    return out.to_dict("records")
