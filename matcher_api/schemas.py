"""The marshmallow schemas of the OpenAPI document (``/api/v1/openapi.json``).

They document requests and answers; every bound is taken from :mod:`matcher.limits`,
:mod:`matcher.config` or :mod:`matcher._validate`, never copied.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import marshmallow as ma

import matcher
from matcher import (
    MatchConfig,
    access,
    limits,
)
from matcher._validate import _DATE, _LANG, KINDS
from matcher.config import DEFAULT_RECRUIT_RADIUS_KM, OBJECTIVES, PARAMETER_BOUNDS
from matcher.intake import MAX_NOTE_CHARS
from matcher.mapview import MAP_PARTS
from matcher.outreach import MAX_PLACE_QUERY_CHARS, MAX_PLACES
from matcher.store import (
    PLAN_KINDS,
    PLAN_STATUSES,
)

#: The most records a page holds.
MAX_LIMIT = limits.MAX_PAGE

# The request bodies of POST/PUT /partners and /needs are checked by matcher's own readers
# (the CLI's rules, matcher._validate), not by these schemas: PartnerWrite, NeedWrite and
# their *Replace variants document those rules, with every bound taken from matcher.limits
# and matcher._validate. Fields a client read and sends back (version, updated_at, ...)
# are accepted and ignored; any other unknown field is a 400.

TAXONOMY = matcher.default_taxonomy()
#: Every category name a request may use: the taxonomy's codes and their aliases.
CATEGORY_NAMES: tuple[str, ...] = tuple(sorted(set(TAXONOMY.codes) | set(TAXONOMY.aliases)))
_CATEGORY_RE = "(?:" + "|".join(map(re.escape, CATEGORY_NAMES)) + ")"
_LANGUAGE_RE = _LANG.pattern.removeprefix("^").removesuffix("$")
_DATE_RE = _DATE.pattern.removeprefix("^").removesuffix("$")
_FORMULA = "".join(map(re.escape, limits.FORMULA_PREFIXES[:4]))
#: An id: 1..MAX_ID_CHARS printable characters, not starting with a blank or a formula
#: character (``matcher.limits.id_problem``; surrounding blanks are stripped).
ID_PATTERN = rf"^[^\s{_FORMULA}\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
#: An id in a URL path: the same (an id may hold '/': the item routes take the rest of
#: the path; percent-encode it or not).
PATH_ID_PATTERN = ID_PATTERN
_ID_DOC: dict[str, Any] = {
    "minLength": 1,
    "maxLength": limits.MAX_ID_CHARS,
    "pattern": ID_PATTERN,
    "description": f"1..{limits.MAX_ID_CHARS} printable characters, not starting with "
    "'=', '+', '-' or '@'",
}
_TEXT_DOC: dict[str, Any] = {"maxLength": limits.MAX_TEXT_CHARS}
_LAT_DOC: dict[str, Any] = {
    "minimum": -90,
    "maximum": 90,
    "description": "degrees WGS84; (lat, lon) must not be exactly (0, 0)",
}
_LON_DOC: dict[str, Any] = {"minimum": -180, "maximum": 180, "description": "degrees WGS84"}
_CATEGORIES_DOC: dict[str, Any] = {
    "description": "one or more category codes (or aliases): ';'-separated, or a list",
    "anyOf": [
        {
            "type": "string",
            "maxLength": limits.MAX_TEXT_CHARS,
            "pattern": f"^{_CATEGORY_RE}(?:;{_CATEGORY_RE})*$",
        },
        {
            "type": "array",
            "minItems": 1,
            # the list is stored ';'-joined, at most MAX_TEXT_CHARS long
            "maxItems": (limits.MAX_TEXT_CHARS + 1) // (max(map(len, CATEGORY_NAMES)) + 1),
            "items": {"type": "string", "enum": list(CATEGORY_NAMES)},
        },
    ],
}
_LANGUAGES_DOC: dict[str, Any] = {
    "description": "two-letter ISO 639-1 codes: ';'-separated, or a list",
    "anyOf": [
        {
            "type": "string",
            "nullable": True,
            "maxLength": limits.MAX_TEXT_CHARS,
            "pattern": f"^(?:{_LANGUAGE_RE}(?:;{_LANGUAGE_RE})*)?$",
        },
        {
            "type": "array",
            "maxItems": (limits.MAX_TEXT_CHARS + 1) // 3,
            "items": {"type": "string", "pattern": _LANG.pattern},
        },
    ],
}
_UNITS = "units per week"
#: (lat, lon) = (0, 0) is refused as a missing value (matcher._validate).
_NOT_NULL_ISLAND = {
    "not": {"required": ["lat", "lon"], "properties": {"lat": {"enum": [0]}, "lon": {"enum": [0]}}}
}


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(1, MAX_LIMIT))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, limits.MAX_OFFSET))
    format = ma.fields.String(
        load_default="json",
        validate=ma.validate.OneOf(["json", "geojson"]),
        metadata={"description": "'geojson' answers a FeatureCollection of points"},
    )


class PartnerListArgs(PageArgs):
    kind = ma.fields.String(validate=ma.validate.OneOf(KINDS))


class NearbyArgs(ma.Schema):
    lat = ma.fields.Float(required=True, validate=ma.validate.Range(-90, 90))
    lon = ma.fields.Float(required=True, validate=ma.validate.Range(-180, 180))
    radius_km = ma.fields.Float(
        load_default=5.0,
        validate=ma.validate.Range(0, limits.MAX_SEARCH_RADIUS_KM, min_inclusive=False),
    )
    category = ma.fields.String(
        validate=ma.validate.Length(1, limits.MAX_ID_CHARS),
        metadata={"enum": list(CATEGORY_NAMES), "description": "a category code or alias"},
    )
    kind = ma.fields.String(validate=ma.validate.OneOf(KINDS))
    limit = ma.fields.Integer(
        load_default=20, validate=ma.validate.Range(1, limits.MAX_NEARBY_RESULTS)
    )
    free_only = ma.fields.Boolean(
        load_default=False, metadata={"description": "only partners with free capacity"}
    )


class PartnerWrite(ma.Schema):
    """A partner as POST /partners takes it (documentation: matcher validates the body)."""

    OPENAPI_EXTRA: ClassVar[dict[str, Any]] = _NOT_NULL_ISLAND
    partner_id = ma.fields.String(required=True, metadata=_ID_DOC)
    name = ma.fields.String(
        allow_none=True, metadata=_TEXT_DOC | {"description": "default: the id"}
    )
    kind = ma.fields.String(required=True, metadata={"enum": list(KINDS)})
    lat = ma.fields.Float(required=True, metadata=_LAT_DOC)
    lon = ma.fields.Float(required=True, metadata=_LON_DOC)
    categories = ma.fields.Raw(required=True, metadata=_CATEGORIES_DOC)
    capacity = ma.fields.Float(
        required=True,
        metadata={"minimum": 0, "maximum": limits.MAX_UNITS, "description": _UNITS},
    )
    radius_km = ma.fields.Float(
        required=True,
        metadata={
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": limits.MAX_RADIUS_KM,
            "description": "how far the partner travels, km",
        },
    )
    languages = ma.fields.Raw(metadata=_LANGUAGES_DOC)
    contact = ma.fields.String(
        allow_none=True,
        metadata=_TEXT_DOC | {"description": "admin only: other roles cannot set or change it"},
    )
    version = ma.fields.Integer(dump_only=True, metadata={"description": "ignored"})
    updated_at = ma.fields.String(dump_only=True, metadata={"description": "ignored"})
    coarsened = ma.fields.Boolean(dump_only=True, metadata={"description": "ignored"})


class PartnerReplace(PartnerWrite):
    """A partner as PUT /partners/{partner_id} takes it (the id may be left out)."""

    partner_id = ma.fields.String(
        metadata=_ID_DOC | {"description": "optional; when sent, the id of the path"}
    )


class NeedWrite(ma.Schema):
    """A need as POST /needs takes it (documentation: matcher validates the body)."""

    OPENAPI_EXTRA: ClassVar[dict[str, Any]] = _NOT_NULL_ISLAND
    need_id = ma.fields.String(
        metadata=_ID_DOC | {"description": "optional: the server gives one (r-...) when left out"}
    )
    category = ma.fields.String(
        required=True,
        metadata={"enum": list(CATEGORY_NAMES), "description": "a category code or alias"},
    )
    lat = ma.fields.Float(required=True, metadata=_LAT_DOC)
    lon = ma.fields.Float(required=True, metadata=_LON_DOC)
    demand = ma.fields.Float(
        required=True,
        metadata={
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": limits.MAX_UNITS,
            "description": _UNITS,
        },
    )
    severity = ma.fields.Integer(
        allow_none=True,
        metadata={"minimum": 1, "maximum": 5, "description": "1 (low) .. 5 (urgent); default 3"},
    )
    neighborhood = ma.fields.String(allow_none=True, metadata=_TEXT_DOC)
    languages = ma.fields.Raw(metadata=_LANGUAGES_DOC)
    reported_at = ma.fields.String(
        allow_none=True,
        metadata=_TEXT_DOC
        | {"pattern": f"^(?:{_DATE_RE})?$", "description": "ISO 8601 date (YYYY-MM-DD...)"},
    )
    source = ma.fields.String(allow_none=True, metadata=_TEXT_DOC)
    version = ma.fields.Integer(dump_only=True, metadata={"description": "ignored"})
    updated_at = ma.fields.String(dump_only=True, metadata={"description": "ignored"})
    cluster_id = ma.fields.String(dump_only=True, metadata={"description": "ignored"})


class NeedReport(NeedWrite):
    """A reported concern as POST /needs takes it: a need, and optionally a short note."""

    note = ma.fields.String(
        validate=ma.validate.Length(max=MAX_NOTE_CHARS),
        metadata={"description": "the reporter's short note, kept with the report and shown "
                  "to planners and admins only (GET /report-notes)"},
    )  # fmt: skip


class NeedReplace(NeedWrite):
    """A need as PUT /needs/{need_id} takes it (the id may be left out)."""

    need_id = ma.fields.String(
        metadata=_ID_DOC | {"description": "optional; when sent, the id of the path"}
    )


class PartnerRecord(ma.Schema):
    """A stored partner; outside admin views a volunteer's point is coarsened, no contact."""

    partner_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    lat = ma.fields.Float(required=True, validate=ma.validate.Range(-90, 90))
    lon = ma.fields.Float(required=True, validate=ma.validate.Range(-180, 180))
    categories = ma.fields.String(
        required=True, metadata={"description": "';'-separated category codes"}
    )
    capacity = ma.fields.Float(required=True, validate=ma.validate.Range(0, limits.MAX_UNITS))
    radius_km = ma.fields.Float(
        required=True,
        validate=ma.validate.Range(0, limits.MAX_RADIUS_KM, min_inclusive=False),
    )
    languages = ma.fields.String(
        required=True, metadata={"description": "';'-separated ISO 639-1 codes"}
    )
    contact = ma.fields.String(required=True, metadata={"description": "'' outside admin views"})
    version = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1))
    updated_at = ma.fields.String(required=True)
    coarsened = ma.fields.Boolean(
        required=True, metadata={"description": "whether lat/lon are the ~500 m grid point"}
    )


class NeedRecord(ma.Schema):
    """A stored need."""

    need_id = ma.fields.String(required=True)
    category = ma.fields.String(required=True, validate=ma.validate.OneOf(TAXONOMY.codes))
    lat = ma.fields.Float(required=True, validate=ma.validate.Range(-90, 90))
    lon = ma.fields.Float(required=True, validate=ma.validate.Range(-180, 180))
    demand = ma.fields.Float(
        required=True, validate=ma.validate.Range(0, limits.MAX_UNITS, min_inclusive=False)
    )
    severity = ma.fields.Integer(required=True, validate=ma.validate.Range(1, 5))
    neighborhood = ma.fields.String(required=True)
    languages = ma.fields.String(required=True)
    reported_at = ma.fields.String(required=True)
    source = ma.fields.String(required=True)
    cluster_id = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "cluster of the latest plan"}
    )
    version = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1))
    updated_at = ma.fields.String(required=True)


def _bounded(name: str) -> ma.validate.Range:
    """Return the range of a plan parameter, from ``matcher.config.PARAMETER_BOUNDS``."""
    low, high, low_open = PARAMETER_BOUNDS[name]
    return ma.validate.Range(low, high, min_inclusive=not low_open)


class JsonBoolean(ma.fields.Boolean):
    """A JSON ``true`` or ``false``; nothing like one (``1``, ``"yes"``) is taken for it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class PlanRequest(ma.Schema):
    objective = ma.fields.String(
        load_default="default", validate=ma.validate.OneOf(list(OBJECTIVES))
    )
    cluster_km = ma.fields.Float(
        load_default=MatchConfig.cluster_km, validate=_bounded("cluster_km")
    )
    seed = ma.fields.Integer(load_default=0, strict=True, validate=_bounded("seed"))
    min_coverage = ma.fields.Float(
        load_default=MatchConfig.min_coverage,
        validate=_bounded("min_coverage"),
        metadata={
            "description": "equity floor 0..1: every neighborhood is served to this share of "
            "its demand before cost is improved anywhere; summary.metrics.floors and "
            "floors.csv say which floors were met and why not"
        },
    )
    vulnerability_column = ma.fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(1, limits.MAX_ID_CHARS),
        metadata={
            "description": "a numeric attribute of the stored neighborhoods (e.g. "
            "'hardship_index') that raises the priority of needs there"
        },
    )
    vulnerability_weight = ma.fields.Float(
        load_default=MatchConfig.vulnerability_weight,
        validate=_bounded("vulnerability_weight"),
        metadata={"description": "priority x (1 + weight x normalised vulnerability)"},
    )
    max_partner_share = ma.fields.Float(
        load_default=MatchConfig.max_partner_share,
        validate=_bounded("max_partner_share"),
        metadata={"description": "at most this share of a partner's capacity per neighborhood"},
    )
    recruit_k = ma.fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=ma.validate.Range(1, limits.MAX_RECRUIT_K),
        metadata={
            "description": "suggest up to this many sites per category where a new partner "
            "would serve the most unmet demand (recruit.csv, recruit.geojson)"
        },
    )
    recruit_radius_km = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0, limits.MAX_RADIUS_KM, min_inclusive=False),
        metadata={
            "description": "travel radius of a suggested new partner, km (with recruit_k; "
            f"default {DEFAULT_RECRUIT_RADIUS_KM:g})"
        },
    )
    recruit_capacity = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0, limits.MAX_UNITS),
        metadata={"description": "capacity of a suggested new partner; null: unlimited"},
    )
    report = JsonBoolean(
        load_default=False,
        metadata={
            "description": "also make report.html (as `matcher plan --report`): one "
            "self-contained, printable HTML file of maps, tables and gaps, served with the "
            "plan's files; a what-if scenario of the plan gets one too"
        },
    )
    publish = JsonBoolean(
        load_default=False,
        metadata={
            "description": "publish the plan when it is done (POST /plans/{plan_id}/publish): "
            "it becomes the plan in force and its assignments are offered to partners. "
            "Without it the plan is a draft that nothing else uses"
        },
    )
    reliability = JsonBoolean(
        load_default=False,
        metadata={
            "description": "plan with expected capacity: each partner's capacity times its "
            "delivery reliability so far (GET /reliability); its assignments say so"
        },
    )
    agreements = JsonBoolean(
        load_default=True,
        metadata={
            "description": "keep accepted and active partnerships at their units and never "
            "propose a declined pair again (unless cleared); false plans without them"
        },
    )

    @ma.validates_schema
    def _recruit_options_need_k(self, data: dict[str, Any], **_: Any) -> None:
        for name in ("recruit_radius_km", "recruit_capacity"):
            if data.get(name) is not None and data.get("recruit_k") is None:
                raise ma.ValidationError(f"{name} needs recruit_k (sites per category)", name)


class ScenarioPartner(PartnerWrite):
    """A partner that a scenario adds (as POST /partners)."""

    class Meta:
        exclude = ("version", "updated_at", "coarsened")


class ScenarioRequest(ma.Schema):
    remove_partners = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(1, limits.MAX_ID_CHARS)),
        load_default=list,
        validate=ma.validate.Length(max=limits.MAX_LIST_ITEMS),
        metadata={"description": "ids of stored partners that leave"},
    )
    add_partners = ma.fields.List(
        ma.fields.Nested(ScenarioPartner),
        load_default=list,
        validate=ma.validate.Length(max=limits.MAX_LIST_ITEMS),
        metadata={"description": "new partners, as in POST /partners (ids must be new)"},
    )
    scale_capacity = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0, limits.MAX_SCALE),
        metadata={"description": "multiply every partner's capacity by this factor"},
    )
    radius_km = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0, limits.MAX_RADIUS_KM, min_inclusive=False),
        metadata={"description": "every partner's travel radius becomes this many km"},
    )


class NearbyResult(ma.Schema):
    partner_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    categories = ma.fields.List(ma.fields.String(), required=True)
    distance_km = ma.fields.Float(required=True, validate=ma.validate.Range(min=0))
    capacity = ma.fields.Float(required=True)
    free_capacity = ma.fields.Float(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    languages = ma.fields.List(
        ma.fields.String(), required=True, metadata={"description": "languages it serves in"}
    )


class NeighborhoodRef(ma.Schema):
    neighborhood_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)


class NearbyResponse(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(NearbyResult), required=True)
    nearest_free = ma.fields.List(
        ma.fields.Nested(NearbyResult),
        required=True,
        metadata={"description": "when no partner within the radius has free capacity: the "
                  "nearest that have some (up to 3, within 500 km); else empty"},
    )
    statement = ma.fields.String(required=True, metadata={"description": "what the answer means"})
    in_radius = ma.fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "when no partner within the radius has free capacity: how "
                  "many partners of the category and kind are within it (up to 10,000); "
                  "else null"},
    )  # fmt: skip
    neighborhood = ma.fields.Nested(
        NeighborhoodRef, required=True, allow_none=True,
        metadata={"description": "the stored neighborhood holding the point (null: none)"},
    )  # fmt: skip
    escalate_to = ma.fields.String(
        required=True, allow_none=True,
        metadata={"description": "when no partner within the radius has free capacity: whom "
                  "to escalate to (the neighborhood's escalation_contact, else the service's "
                  "ESCALATION_CONTACT); else null"},
    )  # fmt: skip


class PlaceArgs(ma.Schema):
    q = ma.fields.String(
        required=True,
        validate=ma.validate.Length(1, MAX_PLACE_QUERY_CHARS),
        metadata={"description": "words of a neighborhood's or an organization's name, or a "
                  "neighborhood id"},
    )  # fmt: skip
    limit = ma.fields.Integer(load_default=8, validate=ma.validate.Range(1, MAX_PLACES))


class Place(ma.Schema):
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(("neighborhood",
                                                                       "organization")))
    id = ma.fields.String(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)


class PlaceList(ma.Schema):
    places = ma.fields.List(ma.fields.Nested(Place), required=True)


class ReportNote(ma.Schema):
    report_id = ma.fields.String(required=True)
    need_id = ma.fields.String(required=True)
    note = ma.fields.String(required=True)
    created_at = ma.fields.String(required=True)
    actor = ma.fields.String(metadata={"description": "the key that wrote it (admins only)"})


class ReportNoteList(ma.Schema):
    notes = ma.fields.List(ma.fields.Nested(ReportNote), required=True)


class ProblemItem(ma.Schema):
    """One problem found in the input (``matcher.Problem``)."""

    file = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the input: a file, 'request body', 'query', 'If-Match', ..."},
    )
    row = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "CSV: line number (header = 1); otherwise 0-based position"},
    )
    field = ma.fields.String(required=True, allow_none=True)
    value = ma.fields.Raw(
        required=True, allow_none=True, metadata={"description": "the value sent (shortened)"}
    )
    reason = ma.fields.String(required=True, metadata={"description": "what would be valid"})


class ProblemSchema(ma.Schema):
    """An RFC 9457 problem detail: every error of the API is ``application/problem+json``."""

    class Meta:
        unknown = ma.INCLUDE  # RFC 9457: clients ignore members they do not know

    type = ma.fields.String(required=True, metadata={"description": "always 'about:blank'"})
    title = ma.fields.String(required=True, metadata={"description": "the status' phrase"})
    status = ma.fields.Integer(required=True, validate=ma.validate.Range(400, 599))
    detail = ma.fields.String(required=True)
    problems = ma.fields.List(
        ma.fields.Nested(ProblemItem),
        metadata={"description": "field-level problems, all of them (invalid input)"},
    )


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.Equal("ok"))
    version = ma.fields.String(required=True)


class ImportResult(ma.Schema):
    imported = ma.fields.Integer(
        required=True, validate=ma.validate.Range(min=0), metadata={"description": "rows stored"}
    )
    kind = ma.fields.String(
        required=True, validate=ma.validate.OneOf(["needs", "partners", "neighborhoods"])
    )


class PartnerPage(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(PartnerRecord), required=True)
    limit = ma.fields.Integer(required=True, validate=ma.validate.Range(1, MAX_LIMIT))
    offset = ma.fields.Integer(required=True, validate=ma.validate.Range(0, limits.MAX_OFFSET))


class NeedPage(PartnerPage):
    results = ma.fields.List(ma.fields.Nested(NeedRecord), required=True)


class PointGeometry(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.Equal("Point"))
    coordinates = ma.fields.List(
        ma.fields.Float(),
        required=True,
        validate=ma.validate.Length(2, 2),
        metadata={"description": "[lon, lat]"},
    )


class PointFeature(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.Equal("Feature"))
    geometry = ma.fields.Nested(PointGeometry, required=True)
    properties = ma.fields.Dict(
        required=True, metadata={"description": "the record's other fields"}
    )


class PointCollection(ma.Schema):
    """A page of records as a GeoJSON FeatureCollection of points (``format=geojson``)."""

    type = ma.fields.String(required=True, validate=ma.validate.Equal("FeatureCollection"))
    features = ma.fields.List(ma.fields.Nested(PointFeature), required=True)


class GeoJSONFeatureUpload(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE  # GeoJSON allows foreign members (id, bbox, ...)

    type = ma.fields.String(required=True, validate=ma.validate.Equal("Feature"))
    geometry = ma.fields.Dict(
        allow_none=True,
        metadata={"description": "a Point (needs, partners) or a (Multi)Polygon (neighborhoods)"},
    )
    properties = ma.fields.Dict(
        allow_none=True,
        metadata={"description": "the columns of the table, as in the CSV"},
    )


class GeoJSONUpload(ma.Schema):
    """A GeoJSON FeatureCollection to import (points, or polygons for neighborhoods)."""

    class Meta:
        unknown = ma.INCLUDE  # GeoJSON allows foreign members (crs, name, bbox, ...)

    type = ma.fields.String(required=True, validate=ma.validate.Equal("FeatureCollection"))
    features = ma.fields.List(
        ma.fields.Nested(GeoJSONFeatureUpload),
        required=True,
        validate=ma.validate.Length(min=1),
    )


class Recommendation(ma.Schema):
    partner_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    distance_km = ma.fields.Float(required=True)
    free_capacity = ma.fields.Float(required=True)
    capacity = ma.fields.Float(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    languages = ma.fields.List(ma.fields.String(), required=True)
    reason = ma.fields.String(required=True)


class NeedIntake(ma.Schema):
    """The stored need, the cluster it joins and the partners that can take it."""

    need = ma.fields.Nested(
        NeedRecord,
        required=True,
        metadata={"description": "the new need, or the need the report was linked to"},
    )
    created = ma.fields.Boolean(
        required=True, metadata={"description": "false: linked to the need it duplicates"}
    )
    report_id = ma.fields.String(
        required=True, metadata={"description": "the report's id (the new need's, or kept linked)"}
    )
    linked_to = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "the need a duplicate joined"}
    )
    intake = ma.fields.String(
        required=True, metadata={"description": "what the intake did, and why"}
    )
    cluster_id = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the latest plan's cluster it joins; null: a new one"},
    )
    statement = ma.fields.String(required=True)
    recommendations = ma.fields.List(
        ma.fields.Nested(Recommendation),
        required=True,
        metadata={"description": "nearest first, with free capacity under the latest plan"},
    )
    partners_in_reach = ma.fields.Integer(required=True, validate=ma.validate.Range(min=0))
    escalate_to = ma.fields.String(
        required=True, allow_none=True,
        metadata={"description": "when no partner can take it: whom to escalate to (the "
                  "neighborhood's escalation_contact, else ESCALATION_CONTACT); else null"},
    )  # fmt: skip


class PlanQueued(ma.Schema):
    plan_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.Equal("queued"))
    base_plan = ma.fields.String(metadata={"description": "scenarios: the plan changed"})


class PlanRecordSchema(ma.Schema):
    plan_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(PLAN_STATUSES))
    created_at = ma.fields.String(required=True)
    started_at = ma.fields.String(required=True, allow_none=True)
    finished_at = ma.fields.String(required=True, allow_none=True)
    created_by = ma.fields.String(required=True)
    parameters = ma.fields.Dict(required=True)
    summary = ma.fields.Dict(
        required=True, allow_none=True, metadata={"description": "summary.json"}
    )
    error = ma.fields.String(required=True, allow_none=True)
    files = ma.fields.List(ma.fields.String(), required=True)
    attempts = ma.fields.Integer(
        required=True,
        metadata={
            "description": "times a plan worker claimed it (a plan whose worker stopped is "
            "claimed again once)"
        },
    )
    published_at = ma.fields.String(
        allow_none=True, metadata={"description": "when it was published; null: a draft"}
    )
    published_by = ma.fields.String(
        allow_none=True, metadata={"description": "who published it (a key id, or 'cli')"}
    )


class PlanStatus(PlanRecordSchema):
    """A plan; when done, with the URLs of its files and of its assignments."""

    files = ma.fields.Raw(  # type: ignore[assignment]  # a list, or a mapping when done
        required=True,
        metadata={
            "description": "done: file name -> URL; otherwise the names stored (none)",
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": "string"}},
                {"type": "array", "items": {"type": "string"}},
            ],
        },
    )
    assignments = ma.fields.String(metadata={"description": "done: the assignments' URL"})


class AssignmentRows(ma.Schema):
    results = ma.fields.List(
        ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String()),
        required=True,
        metadata={"description": "the rows of assignments.csv, every value as text"},
    )


class PlanListArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, limits.MAX_PLAN_PAGE))
    offset = ma.fields.Integer(
        load_default=0, validate=ma.validate.Range(0, limits.MAX_PLAN_OFFSET)
    )
    kind = ma.fields.String(
        validate=ma.validate.OneOf(PLAN_KINDS),
        metadata={"description": "only plans, or only what-if scenarios"},
    )
    status = ma.fields.String(validate=ma.validate.OneOf(PLAN_STATUSES))


class PlanHeadline(ma.Schema):
    """A finished plan's figures, from its summary's metrics."""

    units_demand = ma.fields.Float(required=True)
    units_served = ma.fields.Float(required=True)
    units_unmet = ma.fields.Float(required=True)
    coverage = ma.fields.Float(required=True, metadata={"description": "served / demand"})
    clusters = ma.fields.Integer(required=True)
    assignments = ma.fields.Integer(required=True)
    cost_total = ma.fields.Float(required=True, allow_none=True)
    coverage_min = ma.fields.Float(
        required=True, allow_none=True, metadata={"description": "lowest neighborhood coverage"}
    )
    coverage_gini = ma.fields.Float(required=True, allow_none=True)
    floors_met = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "neighborhoods whose floor is met; null without min_coverage"},
    )


class PlanListItem(ma.Schema):
    """A plan as the list shows it: who started it, what it is and, when done, its figures."""

    plan_id = ma.fields.String(required=True)
    url = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(PLAN_STATUSES))
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(PLAN_KINDS))
    base_plan = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "scenarios: the plan changed"}
    )
    created_at = ma.fields.String(required=True)
    started_at = ma.fields.String(required=True, allow_none=True)
    finished_at = ma.fields.String(required=True, allow_none=True)
    created_by = ma.fields.String(
        required=True, metadata={"description": "an API key id, or 'cli' / 'system'"}
    )
    created_by_role = ma.fields.String(
        required=True,
        allow_none=True,
        validate=ma.validate.OneOf(access.ROLES),
        metadata={"description": "the role of that key; null when it is not a key"},
    )
    in_force = ma.fields.Boolean(
        required=True,
        metadata={"description": "the plan in force (GET /plans/latest): the map, nearby "
                  "and intake use it"},
    )  # fmt: skip
    published_at = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "when it was published (put in force); null: a draft"},
    )
    admin_only = ma.fields.Boolean(
        required=True,
        metadata={"description": "made from volunteers' exact points (an older store): only "
                  "an admin may read it; other roles see no headline nor error"},
    )  # fmt: skip
    parameters = ma.fields.Dict(required=True)
    headline = ma.fields.Nested(
        PlanHeadline, required=True, allow_none=True, metadata={"description": "done plans"}
    )
    error = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "failed plans: why"}
    )


class PlanPage(ma.Schema):
    results = ma.fields.List(
        ma.fields.Nested(PlanListItem), required=True, metadata={"description": "newest first"}
    )
    limit = ma.fields.Integer(required=True, validate=ma.validate.Range(1, limits.MAX_PLAN_PAGE))
    offset = ma.fields.Integer(required=True, validate=ma.validate.Range(0, limits.MAX_PLAN_OFFSET))
    total = ma.fields.Integer(
        required=True,
        validate=ma.validate.Range(min=0),
        metadata={"description": "plans that pass the filters"},
    )
    next = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "the next page; null: none"}
    )


_SIDES = "a is the plan of the path, b the other; a delta is b minus a"


class ComparedPlan(ma.Schema):
    plan_id = ma.fields.String(required=True)
    url = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(PLAN_KINDS))
    base_plan = ma.fields.String(required=True, allow_none=True)
    created_at = ma.fields.String(required=True)
    finished_at = ma.fields.String(required=True, allow_none=True)
    parameters = ma.fields.Dict(required=True)


class CompareTotals(ma.Schema):
    units_demand_a = ma.fields.Float(required=True)
    units_demand_b = ma.fields.Float(required=True)
    units_served_a = ma.fields.Float(required=True)
    units_served_b = ma.fields.Float(required=True)
    units_served_delta = ma.fields.Float(required=True)
    units_unmet_a = ma.fields.Float(required=True)
    units_unmet_b = ma.fields.Float(required=True)
    coverage_a = ma.fields.Float(required=True)
    coverage_b = ma.fields.Float(required=True)
    coverage_delta = ma.fields.Float(required=True)
    assignments_a = ma.fields.Integer(required=True)
    assignments_b = ma.fields.Integer(required=True)
    clusters_a = ma.fields.Integer(required=True)
    clusters_b = ma.fields.Integer(required=True)
    clusters_gained = ma.fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: clusters not comparable"}
    )
    clusters_lost = ma.fields.Integer(required=True, allow_none=True)
    clusters_same = ma.fields.Integer(required=True, allow_none=True)
    partners_changed = ma.fields.Integer(required=True)


class ClusterChange(ma.Schema):
    cluster_id = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    neighborhood = ma.fields.String(required=True, metadata={"description": "'' when none"})
    neighborhood_name = ma.fields.String(required=True, allow_none=True)
    demand = ma.fields.Float(required=True)
    served_a = ma.fields.Float(required=True)
    served_b = ma.fields.Float(required=True)
    delta = ma.fields.Float(required=True)
    change = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(("gained", "lost", "same")),
        metadata={"description": "gained: more units served in b"},
    )


class PartnerChange(ma.Schema):
    partner_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True, allow_none=True)
    kind = ma.fields.String(required=True, allow_none=True)
    units_a = ma.fields.Float(required=True, metadata={"description": "0: no assignment"})
    units_b = ma.fields.Float(required=True)
    delta = ma.fields.Float(required=True)
    capacity_a = ma.fields.Float(
        required=True, allow_none=True, metadata={"description": "null: no assignment in a"}
    )
    capacity_b = ma.fields.Float(required=True, allow_none=True)


class NeighborhoodChange(ma.Schema):
    neighborhood_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True, allow_none=True)
    demand_a = ma.fields.Float(required=True)
    demand_b = ma.fields.Float(required=True)
    served_a = ma.fields.Float(required=True)
    served_b = ma.fields.Float(required=True)
    coverage_a = ma.fields.Float(
        required=True, allow_none=True, metadata={"description": "null: no demand there"}
    )
    coverage_b = ma.fields.Float(required=True, allow_none=True)
    delta_served = ma.fields.Float(required=True)


class PlanComparisonSchema(ma.Schema):
    """Two finished plans compared (matcher.compare; ``matcher compare`` on the CLI)."""

    format = ma.fields.String(required=True, validate=ma.validate.Equal("matcher.compare/1"))
    a = ma.fields.Nested(ComparedPlan, required=True, metadata={"description": _SIDES})
    b = ma.fields.Nested(ComparedPlan, required=True)
    clusters_comparable = ma.fields.Boolean(
        required=True,
        metadata={"description": "whether the plans have the same clusters (same ids, "
                  "categories, demand and centres): a scenario and its base do"},
    )  # fmt: skip
    reason = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "why not comparable"}
    )
    totals = ma.fields.Nested(CompareTotals, required=True)
    clusters = ma.fields.List(
        ma.fields.Nested(ClusterChange),
        required=True,
        metadata={"description": "every cluster; none when not comparable"},
    )
    partners = ma.fields.List(
        ma.fields.Nested(PartnerChange),
        required=True,
        metadata={"description": "partners whose load (units assigned) differs"},
    )
    neighborhoods = ma.fields.List(ma.fields.Nested(NeighborhoodChange), required=True)


class MapConfigSchema(ma.Schema):
    tile_url = ma.fields.String(
        metadata={"description": "Leaflet URL template of the base-map tiles; '' = no base map"}
    )
    tile_attribution = ma.fields.String(metadata={"description": "plain text"})
    version = ma.fields.String()
    categories = ma.fields.List(
        ma.fields.String(),
        metadata={"description": "the category codes, in their documented order"},
    )
    geocoder_url = ma.fields.String(
        metadata={"description": "a Nominatim-style search URL with {q} that the outreach "
                  "page may ask for places the store does not know; '' = none"}
    )  # fmt: skip


class WhoAmISchema(ma.Schema):
    key_id = ma.fields.String()
    role = ma.fields.String(validate=ma.validate.OneOf(access.ROLES))
    partner_id = ma.fields.String(metadata={"description": "a partner key: its partner"})


class LatestPlanSchema(ma.Schema):
    plan = ma.fields.Nested(
        PlanRecordSchema,
        allow_none=True,
        metadata={
            "description": "the last finished plan with its summary, scenarios excluded; "
            "null when none"
        },
    )
    pending = ma.fields.List(
        ma.fields.Nested(PlanRecordSchema),
        metadata={"description": "queued or running plans among the 50 newest, newest first"},
    )


class FeatureSchema(ma.Schema):
    type = ma.fields.String(validate=ma.validate.Equal("Feature"))
    geometry = ma.fields.Dict()
    properties = ma.fields.Dict()


class FloorSchema(ma.Schema):
    neighborhood_id = ma.fields.String()
    name = ma.fields.String()
    min_coverage = ma.fields.Float()
    demand = ma.fields.Float()
    floor = ma.fields.Float()
    served = ma.fields.Float()
    coverage = ma.fields.Float()
    shortfall = ma.fields.Float()
    max_alone = ma.fields.Float(
        allow_none=True,
        metadata={"description": "when not met: the most any plan could serve there"},
    )
    floor_met = ma.fields.Boolean()
    reason = ma.fields.String(metadata={"description": "empty when the floor is met"})


class MapPartArgs(ma.Schema):
    part = ma.fields.String(
        load_default="all",
        validate=ma.validate.OneOf(tuple(MAP_PARTS)),
        metadata={
            "description": "all (default); base: every feature but the assignment lines, "
            "with assignment_count; lines: the assignment lines alone"
        },
    )


class PlanMapSchema(ma.Schema):
    type = ma.fields.String(validate=ma.validate.Equal("FeatureCollection"))
    plan_id = ma.fields.String()
    features = ma.fields.List(
        ma.fields.Nested(FeatureSchema),
        metadata={
            "description": "plan.geojson's features (feature_type 'cluster': hull polygon "
            "with its 'neighborhood' id from clusters.csv; "
            "'partner': point, volunteers coarsened to ~500 m, no contact; 'assignment': "
            "line with the explanation and the runner-up of assignments.csv), then one "
            "'neighborhood' polygon per stored neighborhood with the plan's demand, "
            "served, unmet and coverage there (null when the plan had no demand in it), "
            "then gaps.geojson's 'gap' polygons (demand, served, unmet by reason and "
            "'categories') and recruit.geojson's 'recruit_site' points when the plan has "
            "those files"
        },
    )
    floors = ma.fields.List(
        ma.fields.Nested(FloorSchema),
        allow_none=True,
        metadata={"description": "floors.csv (plans with min_coverage); null without floors"},
    )
    assignment_count = ma.fields.Integer(
        metadata={"description": "part=base: how many assignment lines part=lines has"}
    )


class HoldWrite(ma.Schema):
    """A hold as POST /holds takes it."""

    class Meta:
        unknown = ma.RAISE

    partner_id = ma.fields.String(
        required=True, validate=ma.validate.Length(1, limits.MAX_ID_CHARS)
    )
    units = ma.fields.Float(
        required=True,
        validate=ma.validate.Range(0, limits.MAX_UNITS, min_inclusive=False),
        metadata={"description": "units to hold: at most the partner's free capacity"},
    )
    need_id = ma.fields.String(
        validate=ma.validate.Length(1, limits.MAX_ID_CHARS),
        metadata={"description": "the need referred (the partner must offer its category)"},
    )
    minutes = ma.fields.Float(
        validate=ma.validate.Range(0, 7 * 24 * 60.0, min_inclusive=False),
        metadata={"description": "how long the hold lasts (default 30; at most the "
                  "service's HOLD_MAX_MINUTES)"},
    )


class HoldRecord(ma.Schema):
    """A hold: units held at a partner for a referral until it expires or is released."""

    hold_id = ma.fields.String(required=True)
    partner_id = ma.fields.String(required=True)
    need_id = ma.fields.String(required=True)
    units = ma.fields.Float(required=True)
    created_at = ma.fields.String(required=True)
    expires_at = ma.fields.String(required=True)
    released_at = ma.fields.String(required=True, allow_none=True)
    reason = ma.fields.String(required=True)
    active = ma.fields.Boolean(required=True)
    mine = ma.fields.Boolean(required=True, metadata={"description": "placed with your key"})
    actor = ma.fields.String(metadata={"description": "the key that placed it (admins only)"})


class HoldList(ma.Schema):
    holds = ma.fields.List(ma.fields.Nested(HoldRecord), required=True)


class HoldListArgs(ma.Schema):
    partner_id = ma.fields.String(validate=ma.validate.Length(1, limits.MAX_ID_CHARS))
    active = ma.fields.Boolean(load_default=True)
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(1, limits.MAX_PAGE))


class HoldReleaseArgs(ma.Schema):
    reason = ma.fields.String(
        load_default="cancelled", validate=ma.validate.OneOf(("declined", "cancelled", "used"))
    )


class LinkedReportArgs(ma.Schema):
    need_id = ma.fields.String(required=True, validate=ma.validate.Length(1, limits.MAX_ID_CHARS))


class LinkedReport(ma.Schema):
    """A report kept linked to the need it duplicates (its demand not counted twice)."""

    report_id = ma.fields.String(required=True)
    need_id = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    demand = ma.fields.Float(required=True)
    severity = ma.fields.Integer(required=True)
    languages = ma.fields.String(required=True)
    neighborhood = ma.fields.String(required=True)
    reported_at = ma.fields.String(required=True)
    source = ma.fields.String(required=True)
    created_at = ma.fields.String(required=True)
    mine = ma.fields.Boolean(required=True, metadata={"description": "reported with your key"})
    actor = ma.fields.String(metadata={"description": "the key that reported it (admins only)"})


class LinkedReportList(ma.Schema):
    reports = ma.fields.List(ma.fields.Nested(LinkedReport), required=True)
