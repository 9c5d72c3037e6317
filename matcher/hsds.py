"""Open Referral HSDS 3.x interchange: read partners from HSDS and write partners as HSDS.

One matcher partner is one HSDS ``service_at_location`` (a service delivered at a
location). The full mapping, its defaults and the extension properties are documented in
``docs/hsds.md``; the default taxonomy mapping is ``matcher/data/hsds_taxonomy_map.csv``
(package data: an installed wheel has it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape

from ._errors import InputValidationError, Problem
from .geo import EARTH_RADIUS_KM, haversine_km
from .io import LoadedTable, _decode, _read_bytes, _read_csv_text, read_partners
from .output import neutralise_cell, restore_cell
from .privacy import coarsen
from .taxonomy import Taxonomy, default_taxonomy

__all__ = [
    "HSDS_VERSION",
    "DEFAULT_MAPPING_PATH",
    "detect_version",
    "unit_factor",
    "DEFAULT_RADIUS_KM",
    "MappingRule",
    "TaxonomyMapping",
    "read_taxonomy_mapping",
    "read_hsds",
    "write_hsds",
]

logger = logging.getLogger(__name__)

#: The HSDS version read and written (3.1 added ``service_capacity`` and ``unit``).
HSDS_VERSION = "3.1"
#: The default mapping from HSDS taxonomy terms to matcher categories.
DEFAULT_MAPPING_PATH = Path(__file__).resolve().parent / "data" / "hsds_taxonomy_map.csv"
#: The radius given to a partner whose HSDS record has no usable service area.
DEFAULT_RADIUS_KM = 5.0
#: The taxonomy name of matcher's own category terms in exported HSDS.
MATCHER_TAXONOMY = "matcher"
#: Extension properties (HSDS permits extra properties; see docs/hsds.md).
EXT_PARTNER_ID, EXT_KIND, EXT_RADIUS = "matcher_partner_id", "matcher_kind", "matcher_radius_km"
_NS = uuid.UUID("5b0e7c4e-2f7a-5d4c-9a57-6d6174636865")  # fixed namespace for exported ids
_UNIT_NAME = "units of help per week (default: volunteer-hours)"

#: table -> (CSV file of the HSDS 3.1 tabular form, required columns, required table).
TABLES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "organization": ("organizations.csv", ("id", "name"), False),
    "service": ("services.csv", ("id", "name"), True),
    "location": ("locations.csv", ("id", "latitude", "longitude"), True),
    "service_at_location": ("service_at_location.csv", ("id", "service_id", "location_id"), True),
    "service_area": ("service_areas.csv", ("id",), False),
    "language": ("languages.csv", ("id", "code"), False),
    "schedule": ("schedules.csv", ("id",), False),
    "service_capacity": ("service_capacity.csv", ("id", "service_id", "available"), False),
    "unit": ("units.csv", ("id", "name"), False),
    "attribute": ("attributes.csv", ("id", "link_id", "taxonomy_term_id"), True),
    "taxonomy_term": ("taxonomy_terms.csv", ("id", "name"), True),
    "taxonomy": ("taxonomies.csv", ("id", "name"), False),
}
_LANG = re.compile(r"^[a-z]{2}$")
COLUMNS = ("partner_id", "name", "kind", "lat", "lon", "categories", "capacity", "radius_km",
           "languages")  # fmt: skip


def _key(text: Any) -> str:
    """Normalised comparison key: lower-case letters and digits only."""
    return re.sub(r"[^0-9a-z]+", "", str(text or "").lower())


def _get(rec: dict[str, Any], field: str) -> Any:
    """Return a cell value, None when missing or blank (strings stripped)."""
    value = rec.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value


def _num(value: Any) -> Any:
    """Return ``value`` as a float when it parses, else as given (for the validator)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@dataclass(frozen=True)
class _Src:
    file: str
    row: int | None
    prefix: str  # JSON path of the object ("" for CSV)

    def problem(self, field: str, value: Any, reason: str) -> Problem:
        return Problem(self.file, self.row, self.prefix + field, value, reason)


@dataclass(frozen=True)
class MappingRule:
    """One row of a taxonomy mapping file.

    Attributes
    ----------
    taxonomy : str
        The taxonomy the term is from (matched as a normalised substring of the term's
        ``taxonomy`` or taxonomy name); empty matches any taxonomy.
    code : str
        The term code; empty to match by ``name``.
    name : str
        The term name (used when ``code`` is empty, and as the exported term name).
    category : str
        The matcher category code.
    prefix : bool
        Whether ``code`` also matches hierarchical child codes (``BD`` matches ``BD-1800``).
    line : int
        The line of the mapping file.
    """

    taxonomy: str
    code: str
    name: str
    category: str
    prefix: bool
    line: int

    def matches(self, taxonomy: str, code: str | None, name: str | None) -> bool:
        """Whether a term (taxonomy key, code, name) is matched by this rule."""
        if self.taxonomy and taxonomy and _key(self.taxonomy) not in taxonomy:
            return False
        if self.code:
            c, mine = (code or "").upper(), self.code.upper()
            # a hierarchical child: BD-1800 of BD; a top-level letter's branch: HH of H
            return c == mine or (self.prefix and c.startswith(mine)
                                 and (len(mine) == 1 or c[len(mine)] in ".-"))
        return _key(name) == _key(self.name)


@dataclass(frozen=True)
class TaxonomyMapping:
    """A validated mapping from HSDS taxonomy terms to matcher categories.

    Attributes
    ----------
    rules : tuple of MappingRule
        The rules in file order.
    taxonomy : Taxonomy
        The matcher categories the rules map to.
    source : str
        The mapping file name.
    """

    rules: tuple[MappingRule, ...]
    taxonomy: Taxonomy
    source: str

    def resolve(self, taxonomy: str | None, code: str | None, name: str | None) -> str | None:
        """Return the matcher category of an HSDS term, or None if unmapped.

        Exact codes win over prefixes (the longest prefix first), then names. A term of
        the ``matcher`` taxonomy, or of no taxonomy, whose code or name is a matcher
        category or alias maps to it directly.

        Examples
        --------
        >>> m = read_taxonomy_mapping()
        >>> m.resolve("211 LA County Taxonomy", "BD-1800.2000", "Food Pantries")
        'food_access'
        >>> m.resolve("Open Eligibility", None, "mental health care")
        'mental_health'
        >>> m.resolve("matcher", "youth_engagement", "Youth engagement")
        'youth_engagement'
        >>> m.resolve("Open Eligibility", None, "Gardening") is None
        True
        """
        tax = _key(taxonomy)
        hits = [r for r in self.rules if r.matches(tax, code, name)]
        if hits:
            best = min(hits, key=lambda r: (not r.code, r.prefix, -len(r.code), r.line))
            return best.category
        if not tax or tax == MATCHER_TAXONOMY:
            for value in (code, name):
                if value and (hit := self.taxonomy.resolve(str(value))):
                    return hit
        return None

    def export_rule(self, category: str) -> MappingRule | None:
        """Return the first rule with a term name for ``category`` (exported with it)."""
        return next((r for r in self.rules if r.category == category and r.name), None)


def read_taxonomy_mapping(
    path: str | Path | None = None, *, taxonomy: Taxonomy | None = None
) -> TaxonomyMapping:
    """Read and validate a mapping file of HSDS taxonomy terms to matcher categories.

    Parameters
    ----------
    path : str or Path, optional
        A CSV with columns ``taxonomy, code, name, category`` and optional ``match``
        (``exact`` or ``prefix``); the default is :data:`DEFAULT_MAPPING_PATH`.
    taxonomy : Taxonomy, optional
        The matcher categories; the default taxonomy when omitted.

    Returns
    -------
    TaxonomyMapping

    Raises
    ------
    InputValidationError
        Naming the line, field and value of every bad row.
    """
    tax = taxonomy or default_taxonomy()
    path = Path(path) if path is not None else DEFAULT_MAPPING_PATH
    df, rows = _read_csv_text(
        _decode(_read_bytes(path), str(path)), str(path), ("taxonomy", "code", "name", "category")
    )
    rules, problems = [], []
    seen: dict[tuple[str, str, str], tuple[int, str | None]] = {}
    for rec, line in zip(df.to_dict("records"), rows, strict=True):
        code, name = (rec.get("code") or "").strip(), (rec.get("name") or "").strip()
        match = (rec.get("match") or "exact").strip().lower()
        category = tax.resolve(rec["category"])
        if category is None:
            reason = f"{rec['category']!r}: {tax.describe_unknown(rec['category'])}"
            problems.append(Problem(str(path), line, "category", rec["category"], reason))
        if not code and not name:
            problems.append(Problem(str(path), line, "code", "", "give a term code or a name"))
        if match not in ("exact", "prefix") or (match == "prefix" and not code):
            problems.append(
                Problem(
                    str(path), line, "match", match, "must be 'exact' or 'prefix' (with a code)"
                )
            )
        ident = (_key(rec["taxonomy"]), code.upper(), "" if code else _key(name))
        if ident in seen and seen[ident][1] != category:
            reason = f"maps the same term as line {seen[ident][0]} to a different category"
            problems.append(Problem(str(path), line, "category", rec["category"], reason))
        seen.setdefault(ident, (line, category))
        taxname = rec["taxonomy"].strip()
        rules.append(MappingRule(taxname, code, name, category or "", match == "prefix", line))
    if problems:
        raise InputValidationError(problems)
    return TaxonomyMapping(tuple(rules), tax, str(path))


# ----------------------------------------------------------------------------- reading


def _load_csv_dir(
    root: Path, spec: dict[str, tuple[str, tuple[str, ...], bool]] | None = None
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    spec = TABLES if spec is None else spec
    tables: dict[str, list[dict[str, Any]]] = {}
    problems: list[Problem] = []
    digest = hashlib.sha256()
    needed = [f for f, _, req in spec.values() if req]
    for table, (fname, required, is_required) in spec.items():
        path = root / fname
        if not path.exists() and fname == "service_at_location.csv":
            path = root / "service_at_locations.csv"  # a common spelling of the same table
        tables[table] = []
        if not path.exists():
            if is_required:
                reason = f"required HSDS table missing; matcher needs {', '.join(needed)}"
                problems.append(Problem(str(root / fname), None, None, None, reason))
            continue
        data = _read_bytes(path)
        digest.update(fname.encode() + b"\0" + data)
        text = _decode(data, str(path))
        if sum(1 for line in text.splitlines() if line.strip()) <= 1:
            continue  # header only: an empty table
        try:
            df, rows = _read_csv_text(text, str(path), required)
        except InputValidationError as exc:
            problems.extend(exc.problems)
            continue
        tables[table] = [
            {**{k: restore_cell(v) for k, v in rec.items()}, "_src": _Src(str(path), row, "")}
            for rec, row in zip(df.to_dict("records"), rows, strict=True)
        ]
    if problems:
        raise InputValidationError(problems)
    return tables, digest.hexdigest()


#: HSDS 1.1 tables (the 1.x tabular data package, which 2.0 packages that keep its table
#: names share) that matcher reads: table -> (CSV file, required columns, required table).
V1_TABLES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "organization": ("organizations.csv", ("id", "name"), False),
    "service": ("services.csv", ("id", "name"), True),
    "location": ("locations.csv", ("id",), True),
    "service_at_location": ("services_at_location.csv", ("id", "service_id", "location_id"),
                            True),
    "service_area": ("service_areas.csv", ("id",), False),
    "language": ("languages.csv", ("id",), False),
    "services_taxonomy": ("services_taxonomy.csv", ("id", "service_id", "taxonomy_id"), False),
    "taxonomy_v1": ("taxonomy.csv", ("id", "name"), False),
}  # fmt: skip
#: Tables only the 1.x form has, and tables only the 3.x form has (version detection).
_V1_ONLY = frozenset({"services_at_location.csv", "services_taxonomy.csv", "taxonomy.csv",
                      "physical_addresses.csv", "regular_schedules.csv",
                      "holiday_schedules.csv", "eligibility.csv", "payments_accepted.csv"})
_V3_ONLY = frozenset({"service_at_location.csv", "service_at_locations.csv", "attributes.csv",
                      "taxonomy_terms.csv", "schedules.csv", "addresses.csv",
                      "service_capacity.csv", "units.csv", "url.csv"})  # fmt: skip
#: Language names of HSDS 1.1 ``languages.language`` (free text) and their ISO 639-1 codes.
_LANGUAGE_NAMES = {
    "english": "en", "spanish": "es", "french": "fr", "german": "de", "italian": "it",
    "portuguese": "pt", "polish": "pl", "russian": "ru", "ukrainian": "uk", "arabic": "ar",
    "chinese": "zh", "mandarin": "zh", "cantonese": "zh", "korean": "ko", "japanese": "ja",
    "vietnamese": "vi", "tagalog": "tl", "filipino": "tl", "hindi": "hi", "urdu": "ur",
    "bengali": "bn", "somali": "so", "amharic": "am", "haitian creole": "ht", "farsi": "fa",
    "persian": "fa", "greek": "el", "turkish": "tr", "hebrew": "he", "swahili": "sw",
}  # fmt: skip


#: What a capacity unit may count (people, visits or hours), as words of its name.
_UNIT_AMOUNTS = frozenset({
    "people", "person", "persons", "individual", "individuals", "client", "clients",
    "participant", "participants", "family", "families", "household", "households",
    "visit", "visits", "appointment", "appointments", "session", "sessions", "referral",
    "referrals", "hour", "hours", "volunteerhours", "volunteer", "help", "place",
    "places", "slot", "slots", "seat", "seats",
})  # fmt: skip
#: A unit's period, as words of its name, and its count per week.
_UNIT_PERIODS = {
    "day": 7.0, "daily": 7.0, "week": 1.0, "weekly": 1.0, "weeks": 1.0,
    "month": 7 / 30.436875, "monthly": 7 / 30.436875, "year": 7 / 365.2425,
    "yearly": 7 / 365.2425, "annual": 7 / 365.2425, "annually": 7 / 365.2425,
}  # fmt: skip


def unit_factor(name: str) -> float | None:
    """Return how many units a week one of a capacity unit is, or None if not understood.

    A unit is understood when its name counts people, visits or hours (:data:`_UNIT_AMOUNTS`)
    per day, week, month or year (:data:`_UNIT_PERIODS`; a month is 30.436875 days, a
    year 365.2425).

    Examples
    --------
    >>> unit_factor("people per day"), unit_factor("volunteer-hours per week")
    (7.0, 1.0)
    >>> round(unit_factor("Visits per month"), 4), unit_factor("Kilogram")
    (0.23, None)
    """
    words = set(re.findall(r"[a-z]+", name.lower().replace("-", "")))
    if not words & _UNIT_AMOUNTS:
        return None
    periods = [f for w, f in _UNIT_PERIODS.items() if w in words]
    return periods[0] if len(set(periods)) == 1 else None


def detect_version(source: str | Path) -> tuple[str, str]:
    """Return the HSDS version family of a source and the evidence for it.

    Parameters
    ----------
    source : str or Path
        A directory of HSDS CSV tables (with or without ``datapackage.json``) or a
        ``.json`` file of compiled HSDS objects.

    Returns
    -------
    (str, str)
        ``("1.1", why)`` for the 1.x tabular form (``services_at_location.csv``,
        ``services_taxonomy.csv``, ...; 2.0 packages with those tables read the same),
        ``("3", why)`` for HSDS 3.0/3.1 (``service_at_location.csv``, ``attributes.csv``,
        ``taxonomy_terms.csv``, ...; and every JSON file).

    Raises
    ------
    InputValidationError
        When the source is neither, or declares a version matcher does not read.
    """
    path = Path(source)
    if not path.is_dir():
        return "3", "a JSON file of compiled HSDS objects (3.x)"
    declared = ""
    package = path / "datapackage.json"
    if package.is_file():
        try:
            doc = json.loads(_decode(_read_bytes(package), str(package)))
        except json.JSONDecodeError:
            doc = {}
        if isinstance(doc, dict):
            declared = " ".join(str(doc.get(k) or "") for k in ("title", "description",
                                                                  "profile", "version"))
    names = {p.name for p in path.glob("*.csv")}
    v1, v3 = sorted(names & _V1_ONLY), sorted(names & _V3_ONLY)
    said = re.search(r"(?:HSDS|version|Version)\D{0,12}(\d+\.\d+)", declared)
    if said and said[1].split(".")[0] not in ("1", "2", "3"):
        raise InputValidationError([Problem(
            str(package), None, "version", said[1],
            "an HSDS version matcher does not read (it reads 1.1, 2.0 packages with 1.1's "
            "tables, 3.0 and 3.1)",
        )])  # fmt: skip
    if v1 and not v3:
        return "1.1", f"HSDS 1.x tables ({', '.join(v1)})" + (
            f"; datapackage.json says {said[0]!r}" if said else "")  # fmt: skip
    if v3:
        return "3", f"HSDS 3.x tables ({', '.join(v3)})"
    raise InputValidationError([Problem(
        str(path), None, None, None,
        "not an HSDS data package matcher reads: no services_at_location.csv (HSDS 1.1) "
        f"nor service_at_location.csv (HSDS 3.x); the CSV files are {sorted(names)}",
    )])  # fmt: skip


def _from_v1(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """HSDS 1.1 tables as the 3.x tables :func:`_partners_from_tables` reads."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for table in ("organization", "service", "location", "service_at_location",
                  "service_area"):  # fmt: skip
        out[table] = tables[table]
    # a 1.1 taxonomy row is a term; services_taxonomy links it to a service
    out["taxonomy_term"] = [
        {**t, "taxonomy": _get(t, "vocabulary") or "", "code": None} for t in tables["taxonomy_v1"]
    ]
    out["attribute"] = [
        {"id": _get(a, "id"), "link_id": _get(a, "service_id"), "link_entity": "service",
         "taxonomy_term_id": _get(a, "taxonomy_id"), "_src": a["_src"]}
        for a in tables["services_taxonomy"]
    ]  # fmt: skip
    for lang in tables["language"]:  # 1.1 names a language; 3.x gives its code
        name = str(_get(lang, "language") or "")
        code = name.lower() if _LANG.match(name.lower()) else _LANGUAGE_NAMES.get(name.lower())
        if code is None:
            logger.warning("%s row %s: language %r is not one matcher knows; left out",
                           lang["_src"].file, lang["_src"].row, name[:40])  # fmt: skip
            continue
        out["language"].append({**lang, "code": code})
    return out


def _as_services(doc: Any, file: str) -> list[Any]:
    """Return the service objects of a compiled HSDS 3.x document.

    A service, an organization (its ``services``), a service_at_location (its
    ``service``, at that location), a list of them, or an API ``Page`` of them.
    """
    if isinstance(doc, dict) and isinstance(doc.get("contents"), list):
        doc = doc["contents"]  # an HSDS API Page
    out: list[Any] = []
    for obj in doc if isinstance(doc, list) else [doc]:
        if isinstance(obj, dict) and isinstance(obj.get("services"), list):  # organization
            org = {k: v for k, v in obj.items() if k not in ("services", "locations")}
            out += [{"organization": org, **svc} if isinstance(svc, dict) else svc
                    for svc in obj["services"]]  # fmt: skip
        elif isinstance(obj, dict) and isinstance(obj.get("service"), dict):  # at a location
            sal = {k: v for k, v in obj.items() if k != "service"}
            out.append({**obj["service"], "service_at_locations": [sal]})
        else:
            out.append(obj)
    return out


def _load_json(path: Path) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Flatten HSDS service objects (with nested objects) into the tabular tables."""
    file = str(path)
    data = _read_bytes(path)
    try:
        doc = json.loads(_decode(data, file))
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            [Problem(file, exc.lineno, None, None, f"not valid JSON: {exc.msg}")]
        ) from None
    services = _as_services(doc, file)
    if not services:
        reason = "expected a list of HSDS service objects (or an API Page of them)"
        raise InputValidationError([Problem(file, None, None, None, reason)])
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    # a compiled object may nest copies of one object (a language of the service and of its
    # location, an organization of each service): the same id with the same content is one
    # object; the same id with other content is a conflict, named with both paths
    seen: dict[tuple[str, Any], tuple[dict[str, Any], _Src]] = {}
    conflicts: list[Problem] = []

    def add(table: str, obj: Any, src: _Src, is_shared: bool = False, **links: Any) -> Any:
        if not isinstance(obj, dict):
            return None
        flat = {k: v for k, v in obj.items() if not isinstance(v, dict | list)}
        oid = obj.get("id")
        if oid is not None and table != "service_at_location":
            first = seen.get((table, oid))
            if first is not None:
                if first[0] != flat:
                    where = f"row {first[1].row}, {first[1].prefix}id" if first[1].prefix else (
                        f"row {first[1].row}")  # fmt: skip
                    conflicts.append(src.problem(
                        "id", oid, f"the same {table} id as at {where}, with other content",
                    ))  # fmt: skip
                return oid
            seen[(table, oid)] = (flat, src)
        tables[table].append({**flat, **links, "_src": src})
        return oid

    def add_attributes(items: Any, link: Any, i: int, prefix: str) -> None:
        for j, att in enumerate(items if isinstance(items, list) else []):
            p = f"{prefix}attributes[{j}]."
            term = att.get("taxonomy_term") if isinstance(att, dict) else None
            tax_id = None
            if isinstance(term, dict):
                tax_id = add(
                    "taxonomy",
                    term.get("taxonomy_detail"),
                    _Src(file, i, p + "taxonomy_term.taxonomy_detail."),
                    True,
                )
            term_id = add(
                "taxonomy_term",
                term,
                _Src(file, i, p + "taxonomy_term."),
                True,
                **({"taxonomy_id": tax_id} if tax_id else {}),
            )
            add(
                "attribute",
                att,
                _Src(file, i, p),
                link_id=link,
                **({"taxonomy_term_id": term_id} if term_id else {}),
            )

    def items(obj: dict[str, Any], field: str) -> list[Any]:
        value = obj.get(field)
        return value if isinstance(value, list) else []

    for i, svc in enumerate(services):
        if not isinstance(svc, dict):
            raise InputValidationError(
                [Problem(file, i, None, type(svc).__name__, "expected an HSDS service object")]
            )
        sid = svc.get("id")
        org_id = add("organization", svc.get("organization"), _Src(file, i, "organization."), True)
        add("service", svc, _Src(file, i, ""), **({"organization_id": org_id} if org_id else {}))
        for j, area in enumerate(items(svc, "service_areas")):
            add("service_area", area, _Src(file, i, f"service_areas[{j}]."), service_id=sid)
        for j, lang in enumerate(items(svc, "languages")):
            add("language", lang, _Src(file, i, f"languages[{j}]."), service_id=sid)
        for j, sch in enumerate(items(svc, "schedules")):
            add("schedule", sch, _Src(file, i, f"schedules[{j}]."), service_id=sid)
        for j, cap in enumerate(items(svc, "capacities")):
            p = f"capacities[{j}]."
            unit_id = add(
                "unit",
                cap.get("unit") if isinstance(cap, dict) else None,
                _Src(file, i, p + "unit."),
                True,
            )
            add(
                "service_capacity",
                cap,
                _Src(file, i, p),
                service_id=sid,
                **({"unit_id": unit_id} if unit_id else {}),
            )
        add_attributes(svc.get("attributes"), sid, i, "")
        for j, sal in enumerate(items(svc, "service_at_locations")):
            if not isinstance(sal, dict):
                continue
            p = f"service_at_locations[{j}]."
            loc: dict[str, Any] = sal["location"] if isinstance(sal.get("location"), dict) else {}
            lid = add("location", loc, _Src(file, i, p + "location."), True) if loc else None
            add(
                "service_at_location",
                sal,
                _Src(file, i, p),
                service_id=sid,
                **({"location_id": lid} if lid else {}),
            )
            for k, area in enumerate(items(sal, "service_areas")):
                add(
                    "service_area",
                    area,
                    _Src(file, i, f"{p}service_areas[{k}]."),
                    service_id=sid,
                    service_at_location_id=sal.get("id"),
                )
            for k, lang in enumerate(items(loc, "languages")):
                add(
                    "language",
                    lang,
                    _Src(file, i, f"{p}location.languages[{k}]."),
                    True,
                    location_id=lid,
                )
            add_attributes(sal.get("attributes"), sal.get("id"), i, p)
    if conflicts:
        raise InputValidationError(conflicts)
    return tables, hashlib.sha256(data).hexdigest()


def _index(
    tables: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, dict[Any, dict[str, Any]]], list[Problem]]:
    """Index each table by id; duplicate ids (except service_at_location) are problems."""
    index: dict[str, dict[Any, dict[str, Any]]] = {}
    problems = []
    for table, recs in tables.items():
        index[table] = {}
        for rec in recs:
            rid = _get(rec, "id")
            if rid is None:
                problems.append(rec["_src"].problem("id", None, "must be a non-empty identifier"))
            elif rid in index[table] and table != "service_at_location":
                first = index[table][rid]["_src"]
                reason = f"duplicate id in {table}; first used on row {first.row}"
                problems.append(rec["_src"].problem("id", rid, reason))
            else:
                index[table].setdefault(rid, rec)
    return index, problems


def _group(recs: list[dict[str, Any]], field: str) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for rec in recs:
        if (value := _get(rec, field)) is not None:
            out[value].append(rec)
    return out


def _extent_radius(area: dict[str, Any], lat: Any, lon: Any) -> tuple[float | None, str | None]:
    """(radius km enclosing the GeoJSON extent from the location, or None; problem reason)."""
    extent = _get(area, "extent")
    if extent is None or str(_get(area, "extent_type") or "").lower() != "geojson":
        return None, None
    try:
        geom = shape(json.loads(extent) if isinstance(extent, str) else extent)
        coords = shapely.get_coordinates(geom)
    except (ValueError, TypeError, KeyError, AttributeError, shapely.errors.ShapelyError):
        return None, "extent_type is 'geojson' but the extent is not a valid GeoJSON geometry"
    if not len(coords) or not isinstance(lat, float) or not isinstance(lon, float):
        return None, None
    return float(np.max(haversine_km(lat, lon, coords[:, 1], coords[:, 0]))), None


def _partners_from_tables(
    tables: dict[str, list[dict[str, Any]]],
    mapping: TaxonomyMapping,
    *,
    default_radius_km: float,
    default_capacity: float | None,
    unmapped: str,
    report: dict[tuple[str, str, str, str], dict[str, Any]] | None = None,
    skipped: dict[int, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, tuple[_Src, str]]], list[list[Problem]]]:
    """Partner candidates of HSDS tables, with each field's source and their problems.

    ``report`` collects each taxonomy term, capacity unit and unlinked row met: (kind,
    taxonomy, code, name) -> category, how it was mapped and the services it concerns;
    ``skipped`` collects the candidates that ``unmapped="skip"`` leaves out (index -> why).
    """
    report = {} if report is None else report
    skipped = {} if skipped is None else skipped
    default = unmapped.split(":", 1)[1] if unmapped.startswith("default:") else None
    index, global_problems = _index(tables)
    if global_problems:
        raise InputValidationError(global_problems)
    sals = tables["service_at_location"]
    sals_per_service = _group(sals, "service_id")
    areas_sal = _group(tables["service_area"], "service_at_location_id")
    areas_svc = {
        k: [a for a in v if _get(a, "service_at_location_id") is None]
        for k, v in _group(tables["service_area"], "service_id").items()
    }
    langs_svc = _group(tables["language"], "service_id")
    langs_loc = _group(tables["language"], "location_id")
    caps = _group(tables["service_capacity"], "service_id")
    attrs = _group(tables["attribute"], "link_id")
    valid = ", ".join(mapping.taxonomy.codes)
    # rows linked to nothing are read by no partner: said, never dropped in silence
    links = (("service_capacity", "service_id", "service"), ("service_area", "service_id",
             "service"), ("language", "service_id", "service"),
             ("language", "location_id", "location"), ("service_capacity", "unit_id", "unit"))
    for table, field, target in links:  # fmt: skip
        for row in tables[table]:
            value = _get(row, field)
            if value is not None and value not in index[target]:
                src = row["_src"]
                logger.warning("%s row %s: %s %r links to no %s; not read", src.file, src.row,
                               field, str(value)[:40], target)  # fmt: skip
                report.setdefault((f"unlinked {table}", "", field, str(_get(row, "id") or "")), {
                    "category": "", "how": f"{field} {value} is no {target} of the data: "
                    "not read", "services": set(),
                })  # fmt: skip
    unmapped_count, default_radius_count = 0, 0
    cands: list[dict[str, Any]] = []
    provs: list[dict[str, tuple[_Src, str]]] = []
    pre: list[list[Problem]] = []
    for sal in sals:
        s_src: _Src = sal["_src"]
        problems: list[Problem] = []
        svc = index["service"].get(_get(sal, "service_id"))
        loc = index["location"].get(_get(sal, "location_id"))
        for field, rec, table in (("service_id", svc, "service"), ("location_id", loc, "location")):
            if rec is None:
                reason = f"no {table} with this id in {TABLES[table][0]}"
                problems.append(s_src.problem(field, _get(sal, field), reason))
        ext_id = _get(sal, EXT_PARTNER_ID)
        if svc is None or loc is None:  # a dangling reference: nothing else can be read
            cands.append({"partner_id": ext_id or _get(sal, "id") or ""})
            ref = (s_src, str(problems[0].field))
            provs.append(dict.fromkeys(COLUMNS, ref))
            provs[-1]["partner_id"] = (s_src, EXT_PARTNER_ID if ext_id else "id")
            pre.append(problems)
            continue
        v_src, l_src = svc["_src"], loc["_src"]
        prov: dict[str, tuple[_Src, str]] = {
            "partner_id": (s_src, EXT_PARTNER_ID if ext_id else "id"),
            "name": (v_src, "name"),
            "kind": (s_src, EXT_KIND),
            "lat": (l_src, "latitude"),
            "lon": (l_src, "longitude"),
        }
        siblings = sals_per_service.get(_get(sal, "service_id"), [sal])
        name = str(_get(svc, "name") or "")
        if len(siblings) > 1 and _get(loc, "name"):
            name = f"{name} ({_get(loc, 'name')})"
        lat, lon = _num(_get(loc, "latitude")), _num(_get(loc, "longitude"))
        # categories: attributes linked to the service or to this service_at_location
        categories, n_term_problems = set(), len(problems)
        for att in attrs.get(_get(svc, "id"), []) + attrs.get(_get(sal, "id"), []):
            if str(_get(att, "link_entity") or "service").lower() not in (
                "service",
                "service_at_location",
            ):
                continue
            term = index["taxonomy_term"].get(_get(att, "taxonomy_term_id"))
            if term is None:
                reason = f"no taxonomy term with this id in {TABLES['taxonomy_term'][0]}"
                problems.append(
                    att["_src"].problem("taxonomy_term_id", att.get("taxonomy_term_id"), reason)
                )
                continue
            tax_rec = index["taxonomy"].get(_get(term, "taxonomy_id")) or {}
            taxname = _get(term, "taxonomy") or _get(tax_rec, "name")
            code, tname = _get(term, "code"), _get(term, "name")
            category = mapping.resolve(taxname, code and str(code), tname and str(tname))
            seen = report.setdefault(
                ("term", str(taxname or ""), str(code or ""), str(tname or "")),
                {"category": category or default or "",
                 "how": "mapping" if category else ("default" if default else "unmapped"),
                 "services": set()},
            )  # fmt: skip
            seen["services"].add(_get(svc, "id"))
            if category is None and default is not None:
                category = default
            if category is not None:
                categories.add(category)
                continue
            unmapped_count += 1
            if unmapped == "error":
                hint = mapping.taxonomy.suggest(str(tname or code))
                reason = (
                    f"taxonomy term (taxonomy {taxname!r}, code {code!r}, name {tname!r}) is not "
                    f"in the mapping {mapping.source}"
                    + (f"; did you mean {hint!r}?" if hint else "")
                    + f" Add a row mapping it to one of: {valid}"
                )
                field = "code" if code and not tname else "name"
                problems.append(
                    term["_src"].problem(field, code if field == "code" else tname, reason)
                )
        if not categories and default is not None:
            categories.add(default)  # no term at all: the default category too
            report.setdefault(("term", "", "", "(no taxonomy term)"), {
                "category": default, "how": "default", "services": set(),
            })["services"].add(_get(svc, "id"))  # fmt: skip
        elif not categories and unmapped == "skip":
            skipped[len(cands)] = "no taxonomy term of its service maps to a matcher category"
        elif not categories and n_term_problems == len(problems):
            reason = (
                "no taxonomy term of this service maps to a matcher category; link a term "
                f"through attributes, or import with --unmapped default:CATEGORY (valid "
                f"categories: {valid})"
            )
            problems.append(v_src.problem("attributes", _get(svc, "id"), reason))
        prov["categories"] = (v_src, "attributes")
        # capacity: the service's capacities, shared evenly by its locations
        capacity: Any = ""
        cap_recs = caps.get(_get(svc, "id"), [])
        if cap_recs:
            units = {_get(c, "unit_id") for c in cap_recs}
            amounts = [_num(_get(c, "available")) for c in cap_recs]
            for c, amount in zip(cap_recs, amounts, strict=True):
                if not isinstance(amount, float) or not math.isfinite(amount) or amount < 0:
                    problems.append(
                        c["_src"].problem(
                            "available", _get(c, "available"), "must be a number >= 0"
                        )
                    )
            if len(units) > 1:
                reason = f"capacities in {len(units)} different units; matcher needs one unit"
                problems.append(
                    cap_recs[1]["_src"].problem("unit_id", _get(cap_recs[1], "unit_id"), reason)
                )
            unit_rec = index["unit"].get(next(iter(units))) if len(units) == 1 else None
            uname = str(_get(unit_rec, "name") or "") if unit_rec else ""
            factor = unit_factor(uname) if uname else 1.0  # no unit: units a week
            prov["capacity"] = (cap_recs[0]["_src"], "available")
            if uname:
                how = (f"{factor:.6g} per week each" if factor is not None else
                       "not people, visits or hours per period: "
                       + ("default capacity used" if default_capacity is not None
                          else "a problem"))  # fmt: skip
                report.setdefault(("capacity_unit", "", "", uname), {
                    "category": "", "how": how, "services": set(),
                })["services"].add(_get(svc, "id"))  # fmt: skip
            if factor is None and default_capacity is not None:
                capacity = float(default_capacity)
            elif factor is None:
                reason = (f"capacity unit {uname!r} is not people, visits or hours per day, "
                          "week, month or year (docs/hsds.md); pass default_capacity to use "
                          "that instead")  # fmt: skip
                assert unit_rec is not None  # a unit name comes from a unit record
                problems.append(unit_rec["_src"].problem("name", uname, reason))
            elif all(isinstance(a, float) for a in amounts):
                capacity = sum(amounts) * factor / len(siblings)
        elif default_capacity is not None:
            capacity = float(default_capacity)
        else:
            prov["capacity"] = (v_src, "capacities")
            reason = (
                "the service has no service_capacity; add one (available units per week) or "
                "pass default_capacity"
            )
            problems.append(v_src.problem("capacities", _get(svc, "id"), reason))
        # radius: the extension property, else the extent's enclosing circle, else the default
        areas = areas_sal.get(_get(sal, "id")) or areas_svc.get(_get(svc, "id"), [])
        radius: Any = None
        prov["radius_km"] = (s_src, "service_areas")
        for area in areas:
            if _get(area, EXT_RADIUS) is not None:
                radius, prov["radius_km"] = _num(_get(area, EXT_RADIUS)), (area["_src"], EXT_RADIUS)
                break
        if radius is None:
            for area in areas:
                r, why = _extent_radius(area, lat, lon)
                if why:
                    problems.append(area["_src"].problem("extent", _get(area, "extent"), why))
                elif r is not None and (radius is None or r > radius):
                    radius, prov["radius_km"] = r, (area["_src"], "extent")
        if radius is None:
            radius, default_radius_count = float(default_radius_km), default_radius_count + 1
        # languages of the service and of the location
        codes, prov["languages"] = set(), (v_src, "languages")
        for lang in langs_svc.get(_get(svc, "id"), []) + langs_loc.get(_get(loc, "id"), []):
            code = str(_get(lang, "code") or "").lower()
            if _LANG.match(code):
                codes.add(code)
            else:
                reason = "must be a two-letter ISO 639-1 code (e.g. 'en'); matcher has no 639-3"
                problems.append(lang["_src"].problem("code", _get(lang, "code"), reason))
        cands.append(
            {
                "partner_id": ext_id or _get(sal, "id") or "",
                "name": name,
                "kind": _get(sal, EXT_KIND) or "organization",
                "lat": lat,
                "lon": lon,
                "categories": ";".join(sorted(categories)),
                "capacity": capacity,
                "radius_km": radius,
                "languages": ";".join(sorted(codes)),
            }
        )
        provs.append(prov)
        pre.append(problems)
    if unmapped_count and unmapped in ("ignore", "skip"):
        logger.warning("HSDS: ignored %d unmapped taxonomy term link(s)", unmapped_count)
    if default_radius_count:
        logger.info(
            "HSDS: %d partner(s) have no usable service area; radius_km = %g (default)",
            default_radius_count,
            default_radius_km,
        )
    return cands, provs, pre


def read_hsds(
    source: str | Path,
    *,
    mapping: str | Path | TaxonomyMapping | None = None,
    taxonomy: Taxonomy | None = None,
    on_invalid: Literal["raise", "skip"] = "raise",
    unmapped: str = "error",
    default_radius_km: float = DEFAULT_RADIUS_KM,
    default_capacity: float | None = None,
) -> LoadedTable:
    """Read partners from Open Referral HSDS 3.x data.

    Parameters
    ----------
    source : str or Path
        A directory of HSDS CSV tables (the tabular data package: ``services.csv``,
        ``locations.csv``, ``service_at_location.csv``, ``attributes.csv``,
        ``taxonomy_terms.csv`` and optional ``organizations.csv``,
        ``service_areas.csv``, ``languages.csv``, ``schedules.csv``,
        ``service_capacity.csv``, ``units.csv``, ``taxonomies.csv``), or a ``.json``
        file holding a list of HSDS service objects (or an API ``Page`` of them).
    mapping : str, Path or TaxonomyMapping, optional
        The taxonomy mapping file; :data:`DEFAULT_MAPPING_PATH` when omitted.
    taxonomy : Taxonomy, optional
        The matcher categories; the default taxonomy when omitted.
    on_invalid : {"raise", "skip"}
        ``"skip"`` loads the valid partners and returns the others in ``rejects``.
    unmapped : {"error", "ignore", "skip"} or "default:CATEGORY"
        What a taxonomy term missing from the mapping does. ``"error"``: it is a
        problem. ``"ignore"``: it is left out (a service must still have a mapped
        term). ``"skip"``: it is left out, and a service none of whose terms maps is
        left out too, listed in ``rejects`` with why. ``"default:CATEGORY"``: it maps
        to CATEGORY, and so does a service without any term. The mapping report
        (``LoadedTable.report``) lists every term met and what became of it.
    default_radius_km : float
        The radius of a partner whose service has no usable service area.
    default_capacity : float, optional
        The capacity of a service without ``service_capacity``; without it, such a
        service is a problem.

    Returns
    -------
    LoadedTable
        The partners, validated by :func:`matcher.io.read_partners`; one partner per
        ``service_at_location``.

    Raises
    ------
    InputValidationError
        Every problem, naming the HSDS file, row (CSV: the file line; JSON: the index of
        the service object), field (JSON: its path in the service object) and value.
    """
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"`on_invalid` must be 'raise' or 'skip', not {on_invalid!r}")
    tax = taxonomy or default_taxonomy()
    if unmapped.startswith("default:"):
        code = tax.resolve(unmapped.split(":", 1)[1])
        if code is None:
            raise InputValidationError([Problem(
                "--unmapped", None, "unmapped", unmapped[:60],
                tax.describe_unknown(unmapped.split(":", 1)[1]),
            )])  # fmt: skip
        unmapped = f"default:{code}"
    elif unmapped not in ("error", "ignore", "skip"):
        raise InputValidationError([Problem(
            "--unmapped", None, "unmapped", unmapped[:60],
            "must be error, ignore, skip or default:CATEGORY",
        )])  # fmt: skip
    if not isinstance(mapping, TaxonomyMapping):
        mapping = read_taxonomy_mapping(mapping, taxonomy=tax)
    path = Path(source)
    if path.is_dir():
        version, why = detect_version(path)
        logger.info("%s: %s", path, why)
        if version == "1.1":
            v1, digest = _load_csv_dir(path, V1_TABLES)
            tables = _from_v1(v1)
        else:
            tables, digest = _load_csv_dir(path)
    elif path.suffix.lower() == ".json":
        tables, digest = _load_json(path)
    else:
        reason = "expected a directory of HSDS CSV tables or an HSDS .json file"
        raise InputValidationError([Problem(str(path), None, None, None, reason)])
    if not tables["service_at_location"]:
        reason = (
            "no service_at_location records: nothing links a service to a location. matcher "
            "reads services with their service_at_locations (service_full), organizations "
            "with their services (organization_full), services at locations "
            "(service_at_location_full) or the CSV tables; a list view of services carries "
            "no locations, and a location, taxonomy or other object is not a partner"
        )
        raise InputValidationError([Problem(str(path), None, None, None, reason)])
    terms: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    skipped: dict[int, str] = {}
    cands, provs, pre = _partners_from_tables(
        tables,
        mapping,
        default_radius_km=default_radius_km,
        default_capacity=default_capacity,
        unmapped=unmapped,
        report=terms,
        skipped=skipped,
    )
    report = pd.DataFrame(
        [{"kind": k[0], "taxonomy": k[1], "code": k[2], "name": k[3],
          "category": v["category"], "how": v["how"], "services": len(v["services"])}
         for k, v in terms.items()],
        columns=["kind", "taxonomy", "code", "name", "category", "how", "services"],
    )  # fmt: skip
    report = report.sort_values(["kind", "taxonomy", "code", "name"], kind="stable")
    report = report.reset_index(drop=True)
    for i, why in skipped.items():  # left out by the unmapped policy, as rejects with why
        pre[i].append(provs[i]["categories"][0].problem("attributes", None, why))
    raw = pd.DataFrame(cands, columns=list(COLUMNS))
    problems = [list(p) for p in pre]
    try:
        read_partners(raw, taxonomy=tax, name=str(path))
    except InputValidationError as exc:
        for p in exc.problems:
            i = int(p.row or 0)
            src, field = provs[i].get(str(p.field), (None, ""))
            reason = re.sub(  # a duplicate's first row: from the DataFrame's to the file's
                r"first used on row (\d+)",
                lambda m: f"first used on row {provs[int(m[1])]['partner_id'][0].row}",
                p.reason,
            )
            new = src.problem(field, p.value, reason) if src else p
            if not any(
                (q.file, q.row, q.field) == (new.file, new.row, new.field) for q in problems[i]
            ):
                problems[i].append(new)  # else already reported, in HSDS terms
    bad = np.array([bool(p) for p in problems])
    policy = np.zeros(len(bad), dtype=bool)
    policy[list(skipped)] = True  # skipped by policy, whatever on_invalid says
    if on_invalid == "raise" and (bad & ~policy).any():
        raise InputValidationError([p for i in np.flatnonzero(bad & ~policy) for p in problems[i]])
    if len(bad) and bad.all():  # nothing is left: say so, not just why
        found = [p for ps in problems for p in ps]
        found.append(Problem(str(path), None, None, None,
                             f"no partner is left: all {len(bad)} are invalid or skipped"))
        raise InputValidationError(found)
    frame = read_partners(raw.loc[~bad].reset_index(drop=True), taxonomy=tax, name=str(path)).frame
    rejects = raw.loc[bad].copy()
    rejects.insert(0, "row", [provs[i]["partner_id"][0].row for i in np.flatnonzero(bad)])
    rejects["problems"] = [" | ".join(map(str, problems[i])) for i in np.flatnonzero(bad)]
    if len(rejects):
        logger.warning("%s: skipped %d invalid HSDS partner(s)", path, len(rejects))
    logger.info("%s: read %d partner(s) from HSDS", path, len(frame))
    return LoadedTable(frame, rejects.reset_index(drop=True), digest, str(path), report=report)


# ----------------------------------------------------------------------------- writing


def _uid(kind: str, key: str) -> str:
    return str(uuid.uuid5(_NS, f"{kind}:{key}"))


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _circle(lat: float, lon: float, radius_km: float, n: int = 32) -> dict[str, Any]:
    """Return a GeoJSON Polygon approximating the circle of ``radius_km`` around a point."""
    d = min(radius_km / EARTH_RADIUS_KM, math.pi)
    p1, l1 = math.radians(lat), math.radians(lon)
    ring = []
    for k in range(n):
        b = 2 * math.pi * k / n
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
        l2 = l1 + math.atan2(
            math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
        )
        lon2 = (math.degrees(l2) + 540.0) % 360.0 - 180.0
        ring.append([round(lon2, 6), round(math.degrees(p2), 6)])
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _term(taxname: str, code: str, name: str) -> dict[str, Any]:
    tax_id = _uid("taxonomy", taxname)
    return {
        "id": _uid("term", f"{taxname}:{code}:{name}"),
        **({"code": code} if code else {}),
        "name": name,
        "description": f"{name} ({taxname} taxonomy)",
        "taxonomy": taxname,
        "taxonomy_id": tax_id,
        "taxonomy_detail": {"id": tax_id, "name": taxname, "description": f"{taxname} taxonomy"},
    }


def _service(p: dict[str, Any], mapping: TaxonomyMapping | None, updated: str) -> dict[str, Any]:
    """Return the HSDS service object (JSON form) of one validated partner row."""
    pid, kind = str(p["partner_id"]), str(p["kind"])
    sid, sal_id = _uid("service", pid), pid if _is_uuid(pid) else _uid("sal", pid)
    terms = []
    for cat in str(p["categories"]).split(";"):
        terms.append(_term(MATCHER_TAXONOMY, cat, cat.replace("_", " ").capitalize()))
        rule = mapping.export_rule(cat) if mapping else None
        if rule:
            terms.append(_term(rule.taxonomy, rule.code, rule.name))
    lat, lon, radius = float(p["lat"]), float(p["lon"]), float(p["radius_km"])
    return {
        "id": sid,
        "organization_id": _uid("organization", pid),
        "name": p["name"],
        "status": "active",
        "organization": {
            "id": _uid("organization", pid),
            "name": p["name"],
            "description": f"{kind} exported by matcher",
        },
        "languages": [
            {"id": _uid("language", f"{pid}:{c}"), "service_id": sid, "code": c}
            for c in str(p["languages"]).split(";")
            if c
        ],
        "capacities": [
            {
                "id": _uid("capacity", pid),
                "service_id": sid,
                "unit_id": _uid("unit", "matcher"),
                "unit": {"id": _uid("unit", "matcher"), "name": _UNIT_NAME, "scheme": "matcher"},
                "available": float(p["capacity"]),
                "description": "free capacity per week, shared across the partner's categories",
                "updated": updated,
            }
        ],
        "attributes": [
            {
                "id": _uid("attribute", f"{pid}:{t['id']}"),
                "link_id": sid,
                "link_entity": "service",
                "taxonomy_term_id": t["id"],
                "taxonomy_term": t,
            }
            for t in terms
        ],
        "service_at_locations": [
            {
                "id": sal_id,
                "service_id": sid,
                "location_id": _uid("location", pid),
                EXT_KIND: kind,
                **({} if sal_id == pid else {EXT_PARTNER_ID: pid}),
                "location": {
                    "id": _uid("location", pid),
                    "location_type": "physical",
                    "name": p["name"],
                    "latitude": lat,
                    "longitude": lon,
                },
                "service_areas": [
                    {
                        "id": _uid("area", pid),
                        "service_id": sid,
                        "service_at_location_id": sal_id,
                        "name": f"within {radius:g} km",
                        "extent": json.dumps(_circle(lat, lon, radius), separators=(",", ":")),
                        "extent_type": "geojson",
                        EXT_RADIUS: radius,
                    }
                ],
            }
        ],
    }


def _tables_of(services: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Flatten service objects into the rows of the HSDS CSV tables (ids de-duplicated)."""
    rows: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TABLES}

    def put(table: str, obj: dict[str, Any], **extra: Any) -> None:
        flat = {k: v for k, v in obj.items() if not isinstance(v, dict | list)}
        rows[table].setdefault(obj["id"], {**flat, **extra})

    for svc in services:
        put("service", svc)
        put("organization", svc["organization"])
        for lang in svc["languages"]:
            put("language", lang)
        for cap in svc["capacities"]:
            put("service_capacity", cap)
            put("unit", cap["unit"])
        for att in svc["attributes"]:
            put("attribute", att)
            put("taxonomy_term", att["taxonomy_term"])
            put("taxonomy", att["taxonomy_term"]["taxonomy_detail"])
        for sal in svc["service_at_locations"]:
            put("service_at_location", sal)
            put("location", sal["location"], organization_id=svc["organization_id"])
            for area in sal["service_areas"]:
                put("service_area", area)
    return {t: list(r.values()) for t, r in rows.items()}


def _csv_text(records: list[dict[str, Any]], required: tuple[str, ...]) -> str:
    columns = list(dict.fromkeys([*required, *(k for r in records for k in r)]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow(["" if rec.get(c) is None else neutralise_cell(rec[c]) for c in columns])
    return buf.getvalue()


def write_hsds(
    partners: pd.DataFrame,
    dest: str | Path,
    *,
    format: Literal["json", "csv"] = "csv",
    mapping: str | Path | TaxonomyMapping | None = None,
    taxonomy: Taxonomy | None = None,
    include_volunteers: bool = False,
    exact_volunteer_locations: bool = False,
    updated: str | None = None,
) -> list[Path]:
    """Write partners as Open Referral HSDS 3.1 (CSV tables or a JSON list of services).

    Parameters
    ----------
    partners : pandas.DataFrame
        A partners table (validated again with :func:`matcher.io.read_partners`).
    dest : str or Path
        The output directory (created if needed), or with ``format="json"`` a file
        whose name ends in ``.json``.
    format : {"csv", "json"}
        ``"csv"``: one file per HSDS table plus a ``datapackage.json``; ``"json"``:
        a list of HSDS service objects with nested objects, written to ``dest`` when it
        names a ``.json`` file, else to ``dest/services.json``.
    mapping : str, Path or TaxonomyMapping, optional
        Also export, beside matcher's own category term, the first term with a name
        that this mapping gives each category (default: :data:`DEFAULT_MAPPING_PATH`).
    taxonomy : Taxonomy, optional
        The matcher categories; the default taxonomy when omitted.
    include_volunteers : bool
        Volunteers are left out unless true; when included their points are coarsened
        to the ~500 m privacy grid (see :func:`matcher.privacy.coarsen`).
    exact_volunteer_locations : bool
        Write volunteers' exact points (admin exports only).
    updated : str, optional
        The ``service_capacity.updated`` timestamp; the current UTC time when omitted.

    Returns
    -------
    list of Path
        The written files, sorted. Files are written to a temporary directory first and
        moved into place, so a failure leaves no half-written export.
    """
    if format not in ("csv", "json"):
        raise ValueError(f"`format` must be 'csv' or 'json', not {format!r}")
    as_file = Path(dest).suffix.lower() == ".json"
    if as_file and format == "csv":
        raise InputValidationError([Problem(
            str(dest), None, None, None,
            "a .json file takes the JSON format (format='json'); the CSV tables go into a "
            "directory",
        )])  # fmt: skip
    tax = taxonomy or default_taxonomy()
    if not isinstance(mapping, TaxonomyMapping):
        mapping = read_taxonomy_mapping(mapping, taxonomy=tax)
    frame = pd.DataFrame(read_partners(partners, taxonomy=tax, name="partners").frame)
    volunteer = (frame["kind"] == "volunteer").to_numpy()
    if volunteer.any() and not include_volunteers:
        logger.info(
            "HSDS export: left out %d volunteer(s) (include_volunteers=False)", int(volunteer.sum())
        )
        frame = frame.loc[~volunteer].reset_index(drop=True)
    elif volunteer.any() and not exact_volunteer_locations:
        lat, lon = coarsen(frame.loc[volunteer, "lat"].to_numpy(), frame.loc[volunteer, "lon"])
        frame.loc[volunteer, "lat"], frame.loc[volunteer, "lon"] = lat, lon
    stamp = updated or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    services = [_service(p, mapping, stamp) for p in frame.to_dict("records")]
    files: dict[str, str] = {}
    if format == "json":
        files["services.json"] = json.dumps(services, indent=2, ensure_ascii=False) + "\n"
    else:
        for table, recs in _tables_of(services).items():
            fname, required, _ = TABLES[table]
            files[fname] = _csv_text(recs, required)
        files["datapackage.json"] = (
            json.dumps(
                {
                    "name": "matcher-partners-hsds",
                    "profile": "tabular-data-package",
                    "description": f"Open Referral HSDS {HSDS_VERSION} tables written by matcher",
                    "resources": [
                        {
                            "name": Path(f).stem,
                            "path": f,
                            "profile": "tabular-data-resource",
                            "format": "csv",
                            "mediatype": "text/csv",
                        }
                        for f, _, _ in TABLES.values()
                    ],
                },
                indent=2,
            )
            + "\n"
        )
    out = Path(dest)
    if as_file:  # one file, written whole (a temporary file, then a rename)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            part.write_text(files["services.json"], encoding="utf-8")
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
        logger.info("HSDS export: %d partner(s) as json into %s", len(frame), out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".matcher-hsds-", dir=out))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        written = []
        for name in sorted(files):
            os.replace(tmp / name, out / name)
            written.append(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("HSDS export: %d partner(s) as %s into %s", len(frame), format, out)
    return written
