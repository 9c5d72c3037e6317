"""Open311 GeoReport v2: matcher's categories as services, reported concerns as requests.

The standard (https://wiki.open311.org/GeoReport_v2/) is how 311 systems and their apps
exchange service requests. Here a *service* is one of matcher's need categories and a
*service request* is a reported concern: ``POST requests`` goes through the same intake as
``POST /api/v1/needs`` (:func:`matcher.intake.take_report`: server ids, near-duplicates
linked, never an overwrite), and ``GET requests`` lists stored needs.

This module turns the standard's form fields into a need record and stored records into
the standard's shapes (JSON, or XML with :func:`to_xml`); the HTTP routes live in
``matcher_api.open311``. matcher keeps no personal details: a request's ``email``,
``first_name``, ``last_name``, ``phone``, ``device_id``, ``account_id`` and ``media_url``
are never stored (the answer's ``service_notice`` says so), and ``address_string`` /
``address_id`` without ``lat`` and ``long`` are refused (no address lookup).
"""

from __future__ import annotations

import datetime as _dt
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import MatcherError
from .intake import MAX_NOTE_CHARS
from .limits import MAX_ID_CHARS, MAX_UNITS
from .taxonomy import Taxonomy

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "FORMATS",
    "GeoReportError",
    "MAX_REQUEST_IDS",
    "MAX_RESULTS",
    "needs_in_span",
    "PERSONAL_FIELDS",
    "parse_w3",
    "request_from_form",
    "request_view",
    "service_definition",
    "services",
    "span",
    "to_xml",
]

#: The response formats (the ``.json`` / ``.xml`` of every path).
FORMATS = ("json", "xml")
#: Most ids in one ``service_request_id`` list, and most requests one listing returns.
MAX_REQUEST_IDS = 100
MAX_RESULTS = 1000
#: A listing's default span and its longest (the standard's 90 days).
SPAN_DAYS = 90
#: Fields of the standard that carry personal details: accepted, never stored.
PERSONAL_FIELDS = (
    "email", "first_name", "last_name", "phone", "device_id", "account_id", "media_url",
)  # fmt: skip
#: Every form field ``POST requests`` takes (``attribute[...]`` aside).
REQUEST_FIELDS = (
    "api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string",
    "address_id", "description", *PERSONAL_FIELDS,
)  # fmt: skip
#: The attributes of every service (its service definition).
ATTRIBUTES = ("severity", "demand", "languages")
SOURCE = "open311"


class GeoReportError(MatcherError):
    """A request the GeoReport v2 routes refuse: answered as the standard's error list.

    Attributes
    ----------
    code : int
        The HTTP status (400, 404, ...).
    description : str
        What is wrong and what would be valid.
    """

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def services(taxonomy: Taxonomy, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Return the service list: one service per category, in the taxonomy's order.

    Parameters
    ----------
    taxonomy : Taxonomy
        The categories (their aliases become the service's keywords).
    names : mapping
        A readable name per category code (the English message catalog's).

    Returns
    -------
    list of dict

    Examples
    --------
    >>> from matcher import default_taxonomy
    >>> s = services(default_taxonomy(), {"food_access": "Food access"})
    >>> [s[7][k] for k in ("service_code", "service_name", "metadata", "type")]
    ['food_access', 'Food access', True, 'realtime']
    """
    keywords: dict[str, list[str]] = {}
    for alias, code in taxonomy.aliases.items():
        keywords.setdefault(code, []).append(alias)
    return [
        {
            "service_code": code,
            "service_name": names.get(code, code),
            "description": f"A community concern about {names.get(code, code).lower()}: "
            "matcher recommends partner organizations and volunteers with free capacity.",
            "metadata": True,
            "type": "realtime",
            "keywords": ",".join(sorted(keywords.get(code, []))),
            "group": "community needs",
        }
        for code in taxonomy.codes
    ]


def service_definition(code: str) -> dict[str, Any]:
    """Return the attributes a request of any service may carry (all optional).

    Examples
    --------
    >>> [a["code"] for a in service_definition("food_access")["attributes"]]
    ['severity', 'demand', 'languages']
    """
    levels = {"1": "1 (low)", "2": "2", "3": "3 (medium)", "4": "4", "5": "5 (urgent)"}
    return {
        "service_code": code,
        "attributes": [
            {"variable": True, "code": "severity", "datatype": "singlevaluelist",
             "required": False, "datatype_description": "1 to 5; 3 when left out", "order": 1,
             "description": "How urgent the concern is",
             "values": [{"key": k, "name": v} for k, v in levels.items()]},
            {"variable": True, "code": "demand", "datatype": "number", "required": False,
             "datatype_description": f"a number above 0, at most {MAX_UNITS:g}; 1 when left "
             "out", "order": 2, "description": "People affected (units of need)"},
            {"variable": True, "code": "languages", "datatype": "string", "required": False,
             "datatype_description": "ISO 639-1 codes separated by ';', e.g. es;en",
             "order": 3, "description": "Languages the people affected speak"},
        ],
    }  # fmt: skip


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GeoReportError(400, f"{name} {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise GeoReportError(400, f"{name} must be a finite number, not {text[:40]!r}")
    return value


def request_from_form(
    get: Callable[[str], str | None], keys: list[str], taxonomy: Taxonomy
) -> tuple[dict[str, Any], list[str]]:
    """Turn the form of ``POST requests`` into a need record for the intake.

    Parameters
    ----------
    get : callable
        ``get(field)``: the field's single value, or None when absent.
    keys : list of str
        Every field name sent (an unknown one is refused, naming the fields).
    taxonomy : Taxonomy
        The categories (``service_code`` is one of them, or an alias).

    Returns
    -------
    tuple
        ``(record, personal)``: a need record (``category, lat, lon, demand, severity,
        languages, source`` and ``note`` when a description is given) and the personal
        fields that were sent (never stored).

    Raises
    ------
    GeoReportError
        400 naming the field, its value and what would be valid.

    Examples
    --------
    >>> from matcher import default_taxonomy
    >>> form = {"service_code": "food_access", "lat": "41.9", "long": "-87.7",
    ...         "attribute[severity]": "4", "email": "a@example.org"}
    >>> rec, personal = request_from_form(form.get, list(form), default_taxonomy())
    >>> rec["category"], rec["lat"], rec["severity"], personal
    ('food_access', 41.9, 4, ['email'])
    """
    known = set(REQUEST_FIELDS) | {f"attribute[{a}]" for a in ATTRIBUTES}
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        raise GeoReportError(
            400, f"unknown field {unknown[0][:40]!r}; the fields are {', '.join(REQUEST_FIELDS)}"
            f" and attribute[{']/attribute['.join(ATTRIBUTES)}]",
        )  # fmt: skip
    code = (get("service_code") or "").strip()
    if not code:
        raise GeoReportError(400, "service_code is required: one of GET services.json")
    category = taxonomy.resolve(code) if len(code) <= MAX_ID_CHARS else None
    if category is None:
        raise GeoReportError(404, f"service_code {code[:40]!r} not found: "
                             + taxonomy.describe_unknown(code[:40]))  # fmt: skip
    lat_text, lon_text = get("lat"), get("long")
    if lat_text is None or lon_text is None:
        where = "address_string" if get("address_string") else (
            "address_id" if get("address_id") else None)  # fmt: skip
        raise GeoReportError(400, "lat and long are required" + (
            f" (matcher does not look up {where})" if where else ""))  # fmt: skip
    lat, lon = _number("lat", lat_text), _number("long", lon_text)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise GeoReportError(400, f"lat {lat:g} / long {lon:g}: lat is -90 to 90, long -180 "
                             "to 180 (WGS84 degrees)")  # fmt: skip
    severity_text = get("attribute[severity]")
    severity = 3
    if severity_text not in (None, ""):
        if severity_text not in ("1", "2", "3", "4", "5"):
            raise GeoReportError(400, f"attribute[severity] {str(severity_text)[:40]!r} is "
                                 "not one of 1, 2, 3, 4, 5")  # fmt: skip
        severity = int(severity_text)
    demand_text = get("attribute[demand]")
    demand = 1.0 if demand_text in (None, "") else _number("attribute[demand]", demand_text)
    if not 0 < demand <= MAX_UNITS:
        raise GeoReportError(400, f"attribute[demand] {demand:g} is not above 0 and at most "
                             f"{MAX_UNITS:g}")  # fmt: skip
    record: dict[str, Any] = {
        "category": category, "lat": lat, "lon": lon, "demand": demand, "severity": severity,
        "languages": (get("attribute[languages]") or "").strip(), "source": SOURCE,
    }  # fmt: skip
    description = (get("description") or "").strip()
    if len(description) > MAX_NOTE_CHARS:
        raise GeoReportError(400, f"description is {len(description):,} characters long; "
                             f"matcher keeps at most {MAX_NOTE_CHARS}")  # fmt: skip
    if description:
        record["note"] = description
    personal = [f for f in PERSONAL_FIELDS if get(f)]
    return record, personal


def parse_w3(name: str, text: str) -> _dt.datetime:
    """Parse a W3C date-time (``2010-01-01T00:00:00Z``; a date alone is midnight UTC).

    Raises
    ------
    GeoReportError
        400 naming the parameter.

    Examples
    --------
    >>> parse_w3("start_date", "2026-11-01T00:00:00-06:00").isoformat()
    '2026-11-01T06:00:00+00:00'
    """
    try:
        t = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise GeoReportError(400, f"{name} {text[:40]!r} is not a W3C date-time, e.g. "
                             "2026-11-01T00:00:00Z") from None  # fmt: skip
    if not 1900 <= t.year <= 9000:
        raise GeoReportError(400, f"{name} {text[:40]!r}: a year from 1900 to 9000")
    t = t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC)


def span(
    start: str | None, end: str | None, now: _dt.datetime | None = None
) -> tuple[_dt.datetime, _dt.datetime]:
    """Return the ``[start, end]`` of a listing: the last 90 days unless given, at most 90 days.

    Raises
    ------
    GeoReportError
        400 when a bound is not a date-time, the end is before the start, or the span is
        longer than 90 days.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    days = _dt.timedelta(days=SPAN_DAYS)
    t0 = parse_w3("start_date", start) if start else None
    t1 = parse_w3("end_date", end) if end else None
    if t0 is None and t1 is None:
        t0, t1 = now - days, now
    elif t0 is None:
        assert t1 is not None
        t0 = t1 - days
    elif t1 is None:
        t1 = min(t0 + days, max(now, t0))
    if t1 < t0:
        raise GeoReportError(400, "end_date is before start_date")
    if t1 - t0 > days:
        raise GeoReportError(400, f"start_date to end_date spans more than {SPAN_DAYS} days")
    return t0, t1


def reported_time(text: str) -> _dt.datetime | None:
    """Return a stored ``reported_at`` as a UTC time (a date is midnight UTC); None if none."""
    if not text:
        return None
    try:
        return parse_w3("reported_at", text)
    except GeoReportError:
        return None


def needs_in_span(
    store: Store, t0: _dt.datetime, t1: _dt.datetime, categories: list[str] | None
) -> list[dict[str, Any]]:
    """Return the stored needs reported from ``t0`` to ``t1``, newest first (at most 1,000).

    ``reported_at`` is stored as text (a date, or a date-time with its zone): the store
    gives the needs of the days touched (and one more on either side, for times stored
    with another zone), newest first, and the exact times are checked here.
    """
    # a day more on either side: a time stored with its zone (+06:00) is another UTC day
    since = (t0.date() - _dt.timedelta(days=1)).isoformat()
    until = (t1.date() + _dt.timedelta(days=2)).isoformat()
    found = []
    for need in store.needs_reported(since, until, categories, limit=MAX_RESULTS * 5):
        at = reported_time(str(need.get("reported_at") or ""))
        if at is not None and t0 <= at <= t1:
            found.append(need)
            if len(found) == MAX_RESULTS:
                break
    return found


def _w3(text: str) -> str:
    t = reported_time(text)
    return "" if t is None else t.isoformat(timespec="seconds").replace("+00:00", "Z")


def request_view(
    record: Mapping[str, Any],
    names: Mapping[str, str],
    *,
    description: str | None = None,
    linked_to: str | None = None,
) -> dict[str, Any]:
    """Return a stored need (or linked report) as a GeoReport v2 service request.

    Parameters
    ----------
    record : mapping
        A need (``need_id``, ..., ``updated_at``) or a linked report (``report_id``, ...).
    names : mapping
        Service names per category.
    description : str, optional
        The reporter's notes, for a caller allowed to read them; else left out.
    linked_to : str, optional
        For a linked report: the need it duplicates.
    """
    request_id = str(record.get("report_id") or record["need_id"])
    notes = (
        f"the same concern as service request {linked_to}, reported nearby: not counted twice"
        if linked_to else ""
    )  # fmt: skip
    out = {
        "service_request_id": request_id,
        "status": "open",
        "status_notes": notes,
        "service_name": names.get(str(record["category"]), str(record["category"])),
        "service_code": str(record["category"]),
        "description": description or "",
        "agency_responsible": "",
        "service_notice": "",
        "requested_datetime": _w3(str(record.get("reported_at") or "")),
        "updated_datetime": _w3(str(record.get("updated_at") or record.get("created_at") or "")),
        "expected_datetime": "",
        "address": "",
        "address_id": "",
        "zipcode": "",
        "lat": float(record["lat"]),
        "long": float(record["lon"]),
        "media_url": "",
    }
    return out


_SINGULAR = {"attributes": "attribute", "values": "value", "endpoints": "endpoint",
             "formats": "format"}  # fmt: skip


def _put(parent: ET.Element, key: str, value: Any) -> None:
    node = ET.SubElement(parent, key)
    if isinstance(value, dict):
        for k, v in value.items():
            _put(node, k, v)
    elif isinstance(value, list):
        for item in value:
            _put(node, _SINGULAR.get(key, "item"), item)
    elif isinstance(value, bool):
        node.text = "true" if value else "false"
    elif value is not None:
        node.text = str(value)


def to_xml(root: str, item: str | None, body: Any) -> bytes:
    """Return the standard's XML for a list of ``item`` elements (or one object, ``item`` None).

    Examples
    --------
    >>> to_xml("errors", "error", [{"code": 404, "description": "no"}]).decode()[39:]
    '<errors><error><code>404</code><description>no</description></error></errors>'
    """
    top = ET.Element(root)
    if item is None:
        for k, v in body.items():
            _put(top, k, v)
    else:
        for row in body:
            node = ET.SubElement(top, item)
            for k, v in row.items():
                _put(node, k, v)
    return ET.tostring(top, encoding="utf-8", xml_declaration=True)
