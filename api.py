"""matcher's HTTP service: routing, auth and JSON shaping only; every decision is in ``matcher``.

Run it with ``matcher serve --db PATH`` (waitress), or build the app with
:func:`create_app` for tests and other WSGI servers.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import http
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import geopandas as gpd
import marshmallow as ma
import numpy as np
import pandas as pd
from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, current_app, g, request, send_from_directory
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

import matcher
from matcher import (
    ClusterModel,
    InputValidationError,
    MatchConfig,
    MatcherError,
    Problem,
    access,
    limits,
)
from matcher._validate import _DATE, _LANG, KINDS, NEED_FIELDS, PARTNER_FIELDS
from matcher.access import KeyCache
from matcher.config import DEFAULT_RECRUIT_RADIUS_KM, OBJECTIVES, PARAMETER_BOUNDS
from matcher.intake import recommend_for_need
from matcher.io import Upload, load_json_document
from matcher.jobs import PlanWorker, load_plan_model
from matcher.mapview import MAP_FILE, map_bytes, map_payload
from matcher.nearby import NearbyIndex
from matcher.output import PLAN_FILES, csv_rows
from matcher.ratelimit import RateLimiter
from matcher.store import (
    DEFAULT_LEASE_S,
    PENDING_STATUSES,
    PLAN_STATUSES,
    AlreadyExistsError,
    NotFoundError,
    PlanRecord,
    PlanStateError,
    Store,
    StoreBusyError,
    VersionConflictError,
    etag,
    open_store,
    parse_etag,
)

__all__ = ["create_app"]

logger = logging.getLogger("matcher.api")

MAX_LIMIT = limits.MAX_PAGE
PROBLEM = "application/problem+json"


# --------------------------------------------------------------------------- errors


def problem(status: int, title: str, detail: str = "", **extra: Any) -> Response:
    """Return an RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail} | extra
    return Response(json.dumps(body), status=status, mimetype=PROBLEM)


def _problems(exc: InputValidationError) -> list[dict[str, Any]]:
    return [p.to_dict() for p in exc.problems]


def _register_errors(app: Flask) -> None:
    @app.errorhandler(InputValidationError)
    def _invalid(exc: InputValidationError) -> Response:
        return problem(
            400,
            "Invalid input",
            f"{len(exc.problems)} problem(s) in the input",
            problems=_problems(exc),
        )

    @app.errorhandler(VersionConflictError)
    def _stale(exc: VersionConflictError) -> Response:
        return problem(412, "Precondition Failed", str(exc))

    @app.errorhandler(NotFoundError)
    def _missing(exc: NotFoundError) -> Response:
        return problem(404, "Not Found", str(exc))

    @app.errorhandler(AlreadyExistsError)
    @app.errorhandler(PlanStateError)
    def _conflict(exc: MatcherError) -> Response:
        return problem(409, "Conflict", str(exc))

    @app.errorhandler(access.ForbiddenError)
    def _forbidden(exc: access.ForbiddenError) -> Response:
        return problem(403, "Forbidden", exc.detail, problems=[p.to_dict() for p in exc.problems])

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        return problem(
            400,
            "Invalid request",
            f"the JSON body is nested too deep; at most {limits.MAX_JSON_DEPTH} levels",
        )

    @app.errorhandler(StoreBusyError)
    def _busy(exc: StoreBusyError) -> Response:
        return problem(503, "Service Unavailable", str(exc))

    @app.errorhandler(MatcherError)
    def _matcher(exc: MatcherError) -> Response:
        return problem(422, "Cannot process", str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        extra: dict[str, Any] = {}
        data = getattr(exc, "data", None)
        if isinstance(data, dict) and "messages" in data:  # webargs / marshmallow validation
            sent = request.get_json(silent=True) if request.is_json else None
            extra["problems"] = [
                {
                    "file": None,
                    "row": None,
                    "field": field,
                    "value": _value_at(sent if where == "json" else request.args, field),
                    "reason": "; ".join(msgs),
                }
                for where, location in data["messages"].items()
                for field, msgs in _flatten(location).items()
            ]
            return problem(400, "Invalid request", "the request parameters are invalid", **extra)
        return problem(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:  # never a stack trace in a response
        logger.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred")


def _value_at(data: Any, dotted: str) -> Any:
    """Return the scalar sent at ``a.0.b`` of a request body or query (else None)."""
    for part in dotted.split("."):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data if isinstance(data, str | int | float | bool) else None


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for k, v in messages.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix or "body"] = [
            str(m) for m in (messages if isinstance(messages, list) else [messages])
        ]
    return out


# --------------------------------------------------------------------------- auth


def store() -> Store:
    """Return the store of the current app."""
    return current_app.extensions["matcher_store"]


#: The policy resource of each route (``matcher.access.POLICY`` says who may do what).
RESOURCES = {
    "Health": "health",
    "MapConfig": "map_config",
    "WhoAmI": "me",
    "Imports": "imports",
    "Partners": "partners",
    "PartnerItem": "partners",
    "Needs": "needs",
    "NeedItem": "needs",
    "Plans": "plans",
    "PlanScenarios": "scenarios",
    "PlanItem": "plans",
    "PlanFile": "plans",
    "PlanAssignments": "plans",
    "LatestPlan": "plans",
    "PlanMap": "plans",
    "Nearby": "nearby",
}
#: Writes whose body is JSON: any other content type is 415 (never silently ignored).
_JSON_WRITES = frozenset(
    {("plans", "create"), ("scenarios", "create"), ("partners", "create"),
     ("partners", "replace"), ("needs", "create"), ("needs", "replace")}
)  # fmt: skip
METHOD_ACTIONS = {"GET": "read", "HEAD": "read", "POST": "create", "PUT": "replace",
                  "DELETE": "delete"}  # fmt: skip


def _client() -> str:
    return str(request.remote_addr or "unknown")


def _too_many(wait: int, detail: str) -> Response:
    resp = problem(429, "Too Many Requests", detail)
    resp.headers["Retry-After"] = str(int(wait))
    return resp


def _authorize() -> Response | None:
    """Authenticate and authorize every API request, in one place (before the body is read).

    The route's resource and the HTTP method's action are looked up in
    :data:`matcher.access.POLICY`; a route missing from the policy is denied to all.
    """
    if request.endpoint is None:  # no such route: Flask answers 404 / 405
        return None
    view = request.endpoint.rsplit(".", 1)[-1]
    resource = RESOURCES.get(view)
    action = METHOD_ACTIONS.get(request.method, "read" if request.method == "OPTIONS" else "")
    if resource is not None and access.allowed(None, resource, action):
        return None
    limits = current_app.extensions["matcher_limits"]
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    found = None
    # an address over its failed-authentication limit is refused before its key is looked
    # at, so a guess that happens to be right cannot be told from a wrong one
    wait = limits["auth_failures"].blocked(_client())
    if wait is not None:
        logger.warning(
            "failed authentication from %s for %s %s (over the limit: refused unchecked)",
            _client(),
            request.method,
            request.path,
        )
        return _too_many(wait, "too many failed authentications from your address")
    if scheme.lower() == "bearer" and 0 < len(key) <= 256:
        found = current_app.extensions["matcher_keys"](key)
    if found is None:
        logger.warning(
            "failed authentication from %s for %s %s (%s)",
            _client(),
            request.method,
            request.path,
            "no key" if not header else "invalid key",
        )
        wait = limits["auth_failures"].hit(_client())
        if wait is not None:
            return _too_many(wait, "too many failed authentications from your address")
        resp = problem(401, "Unauthorized", "send a valid API key as 'Authorization: Bearer KEY'")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="matcher"'
        return resp
    g.key_id, g.role = found
    wait = limits["requests"].hit(g.key_id)
    if wait is not None:
        return _too_many(wait, "too many requests with this key; slow down")
    if resource is None or not access.allowed(g.role, resource, action):
        roles = access.roles_for(resource or "", action)
        return problem(
            403,
            "Forbidden",
            f"{action} on {resource or 'this route'} needs one of the roles "
            f"{', '.join(roles) or '(none)'}; your key has the role {g.role}",
        )
    if request.is_json and request.content_length:  # bounded parse before any other reader
        g.json_body = load_json_document(request.get_data(cache=True), "request body")
    if (resource, action) in _JSON_WRITES and request.content_length and not request.is_json:
        return problem(
            415,
            "Unsupported Media Type",
            "send the body as JSON with 'Content-Type: application/json'",
        )
    return None


def _secure_headers(resp: Response) -> Response:
    """Headers on every response: no MIME sniffing; API answers are never cached."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/api/"):
        resp.headers["Cache-Control"] = "no-store"
    return resp


access_log = logging.getLogger("matcher.access")


def _started() -> None:
    g.started = time.perf_counter()


def _access(resp: Response) -> Response:
    """One line per request: method, path, status, milliseconds (never a key or a query)."""
    if access_log.isEnabledFor(logging.INFO):
        ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        access_log.info("%s %s %d %.1f ms", request.method, request.path, resp.status_code, ms)
    return resp


def is_admin() -> bool:
    """Whether the caller may see volunteers' exact points and contacts."""
    return getattr(g, "role", None) == "admin"


# --------------------------------------------------------------------------- schemas (OpenAPI)


# The request bodies of POST/PUT /partners and /needs are checked by matcher's own readers
# (the CLI's rules, matcher._validate), not by these schemas: PartnerWrite, NeedWrite and
# their *Replace variants document those rules, with every bound taken from matcher.limits
# and matcher._validate. Fields a client read and sends back (version, updated_at, ...)
# are accepted and ignored; any other unknown field is a 400.

_TAXONOMY = matcher.default_taxonomy()
#: Every category name a request may use: the taxonomy's codes and their aliases.
CATEGORY_NAMES: tuple[str, ...] = tuple(sorted(set(_TAXONOMY.codes) | set(_TAXONOMY.aliases)))
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
    need_id = ma.fields.String(required=True, metadata=_ID_DOC)
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
    category = ma.fields.String(required=True, validate=ma.validate.OneOf(_TAXONOMY.codes))
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


class NearbyResponse(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(NearbyResult), required=True)


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
    reason = ma.fields.String(required=True)


class NeedIntake(ma.Schema):
    """The stored need, the cluster it joins and the partners that can take it."""

    need = ma.fields.Nested(NeedRecord, required=True)
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


def _plan_json(rec: PlanRecord) -> dict[str, Any]:
    """Return a plan record as the API shows it: without which worker holds it, or until when."""
    out = rec.to_dict()
    for internal in ("worker", "lease_until"):
        out.pop(internal)
    return out


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


# --------------------------------------------------------------------------- helpers


def _json_body() -> dict[str, Any]:
    """Return the request's JSON object (415 unless JSON; 400 if malformed or too deep)."""
    if not request.is_json:
        from werkzeug.exceptions import UnsupportedMediaType

        raise UnsupportedMediaType("send a JSON body with 'Content-Type: application/json'")
    body = g.get("json_body")  # parsed with matcher's bounds by _authorize
    if body is None:
        body = load_json_document(request.get_data(cache=True), "request body")
    if not isinstance(body, dict):
        raise InputValidationError(
            [Problem("request body", None, None, None, "malformed JSON: expected a JSON object")]
        )
    return body


def _listish(value: Any) -> Any:
    return ";".join(map(str, value)) if isinstance(value, list) else value


#: Fields a client may send back as read but that it cannot set.
_READ_ONLY = frozenset({"version", "coarsened", "updated_at", "cluster_id"})
_NUMERIC = frozenset({"lat", "lon", "demand", "capacity", "radius_km", "severity"})


def _record(body: Mapping[str, Any], fields: tuple[str, ...], key: str, path_id: str | None):
    """Check a record body: known fields only, JSON types, and the id of the path.

    Returns the body without read-only fields, with ``key`` set to ``path_id`` when given.
    """
    problems = [
        Problem("request body", None, str(name), None,
                f"unknown field; the fields are {', '.join(fields)}")
        for name in sorted(map(str, body))
        if name not in fields and name not in _READ_ONLY
    ]  # fmt: skip
    for name in sorted(_NUMERIC & set(body)):
        value = body[name]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            problems.append(
                Problem("request body", None, name, str(value)[:40], "must be a JSON number")
            )
    for name in ("categories", "languages"):
        value = body.get(name)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(
                Problem("request body", None, name, None, "must be a string or a list of strings")
            )
        elif isinstance(value, dict | bool):
            problems.append(
                Problem("request body", None, name, None, "must be a string or a list of strings")
            )
    for name in set(fields) - _NUMERIC - {"categories", "languages"}:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(Problem("request body", None, name, None, "must be a JSON string"))
    given = body.get(key)
    if path_id is not None and given is not None and str(given).strip() != path_id:
        problems.append(
            Problem("request body", None, key, str(given)[:40],
                    f"must be {path_id!r}, the id in the path (ids cannot change)")
        )  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    out = {k: _listish(v) for k, v in body.items() if k not in _READ_ONLY}
    if path_id is not None:
        out[key] = path_id
    return out


def _validated(body: dict[str, Any], reader: Callable[..., Any], name: str) -> dict[str, Any]:
    """Validate one record with matcher's own validation (same rules as the CLI)."""
    frame = reader(pd.DataFrame([body]), name=name).frame
    return frame.drop(columns="geometry").iloc[0].to_dict()


def _if_match() -> int:
    """Return the version a write expects, from ``If-Match``.

    428 when missing; 400 when it is not an entity tag; 412 when it is one that can
    never match: a weak tag (``W/"3"``; ``If-Match`` uses strong comparison, RFC 9110
    13.1.1), ``*`` or a list.
    """
    header = request.headers.get("If-Match")
    if not header:
        from werkzeug.exceptions import PreconditionRequired

        raise PreconditionRequired("send the resource's ETag in If-Match to update or delete it")
    version = parse_etag(header)
    if version is not None:
        return version
    text = header.strip()
    if len(text) <= 200 and re.fullmatch(r'(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*|\*', text):
        from werkzeug.exceptions import PreconditionFailed

        raise PreconditionFailed(
            "If-Match must be the strong ETag of the current version, as a GET returns it "
            '(e.g. "3"); weak tags, * and lists never match a write'
        )
    raise InputValidationError(
        [Problem("If-Match", None, "If-Match", text[:40], 'expected an ETag such as "3"')]
    )


def _partner(partner_id: str) -> dict[str, Any]:
    """Return a partner as the caller may see it (volunteers coarsened unless admin)."""
    rec = store().get_partner(partner_id, exact=is_admin())
    if rec is None:
        raise NotFoundError("partner", partner_id)
    return rec


def _page(rows: list[dict[str, Any]], args: dict[str, Any]) -> Response:
    """Answer a page of records as JSON, or as a GeoJSON FeatureCollection of points."""
    if args["format"] == "geojson":
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                "properties": {k: v for k, v in r.items() if k not in ("lat", "lon")},
            }
            for r in rows
        ]
        body = {"type": "FeatureCollection", "features": features}
        return Response(json.dumps(body, default=str), mimetype="application/geo+json")
    body = {"results": rows, "limit": args["limit"], "offset": args["offset"]}
    return Response(json.dumps(body, default=str), mimetype="application/json")


def _with_etag(rec: dict[str, Any], entity_id: str) -> Response:
    resp = Response(json.dumps(rec), mimetype="application/json")
    resp.headers["ETag"] = etag(entity_id, int(rec["version"]))
    return resp


# --------------------------------------------------------------------------- blueprints


class _ArgumentsParser(FlaskParser):
    """webargs' parser; an invalid query or body is a 400, as every other invalid input."""

    DEFAULT_VALIDATION_STATUS = 400


class _Blueprint(Blueprint):
    ARGUMENTS_PARSER = _ArgumentsParser()


#: What the error responses of the document say beyond the status' phrase.
_ERROR_NOTES = {
    400: "Invalid input: every problem found, field by field",
    401: "No valid API key: send 'Authorization: Bearer KEY'",
    403: "The key's role may not do this (matcher.access.POLICY), or may not change a "
    "volunteer's private fields",
    404: "No such record, plan or file (or the plan is not done)",
    409: "Conflict: the id exists already, or the plan is not done",
    412: "If-Match is not the current strong ETag of the record",
    413: "The body is larger than the service takes (matcher.limits.MAX_BODY_BYTES)",
    415: "Unsupported Content-Type for this body",
    422: "Well formed, but does not fit the stored data",
    428: "Send If-Match with the record's ETag",
    429: "Too many requests with this key, failed authentications from this address, or "
    "plans queued by this role (matcher.access.PLAN_QUEUE_CAP); retry after Retry-After",
    503: "The store is busy; retry",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme: Bearer",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def _error_response(status: http.HTTPStatus) -> dict[str, Any]:
    """Return the OpenAPI response of an error status: RFC 9457 problem+json."""
    content: dict[str, Any] = {PROBLEM: {"schema": ProblemSchema}}
    description = _ERROR_NOTES.get(status, status.phrase)
    if status == 413:
        # `matcher serve` (waitress) refuses a body whose Content-Length is over the bound
        # before the app sees it, as plain text
        content["text/plain"] = {"schema": {"type": "string"}}
        description += "; under `matcher serve` the server's own plain-text answer"
    out: dict[str, Any] = {"description": description, "content": content}
    if status in _ERROR_HEADERS:
        out["headers"] = _ERROR_HEADERS[status]
    return out


def _open_range_attributes(self: Any, field: ma.fields.Field, **_: Any) -> dict[str, Any]:
    """Apispec attribute function: the open ends of ``Range`` validators (OpenAPI 3.0)."""
    out: dict[str, Any] = {}
    for validator in field.validators:
        if isinstance(validator, ma.validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                out["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive:
                out["exclusiveMaximum"] = True
    return out


class _Api(Api):
    """flask-smorest's Api, documenting every error as problem+json, per operation."""

    ERROR_SCHEMA = ProblemSchema
    #: No catch-all: each operation lists the statuses it can answer (:func:`_answers`).
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _init_spec(self, **kwargs: Any) -> None:
        super()._init_spec(**kwargs)
        self.ma_plugin.converter.add_attribute_function(_open_range_attributes)

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            if status >= 400:
                self.spec.components.response(status.name, _error_response(status), lazy=True)

    def register_blueprint(self, blp: Blueprint, **options: Any) -> None:
        """Register ``blp``, then add the ``OPENAPI_EXTRA`` keywords of its schemas."""
        super().register_blueprint(blp, **options)
        for key, name in self.ma_plugin.converter.refs.items():
            extra = getattr(key[0], "OPENAPI_EXTRA", None)
            if extra and name in self.spec.components.schemas:
                self.spec.components.schemas[name].update(copy.deepcopy(extra))


api_bp = _Blueprint("v1", __name__, url_prefix="/api/v1", description="matcher API v1")
api_bp.before_request(_authorize)

#: The errors of every route behind a key: no valid key, rate limits, a busy store.
_KEYED = (401, 429, 503)
_PUBLIC: dict[str, Any] = {"security": []}
_ETAG_HEADER = {
    "ETag": {
        "description": "the record's version as a strong entity tag; send it back in "
        "If-Match to replace or delete the record",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
_LOCATION_HEADER = {
    "Location": {"description": "the new resource", "required": True, "schema": {"type": "string"}}
}
_IF_MATCH = {
    "in": "header",
    "name": "If-Match",
    "required": True,
    "description": "the ETag of the record as last read (strong; weak tags, * and lists "
    "never match: 412)",
    "schema": {"type": "string", "pattern": '^"[0-9]{1,18}"$'},
}


def _answers(*statuses: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Document the problem+json errors an operation answers (besides its success)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for status in statuses:
            func = api_bp.alt_response(status, response=http.HTTPStatus(status).name)(func)
        return func

    return decorate


def _request_json(schema: type[ma.Schema]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str) -> list[dict[str, Any]]:
    return [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.MAX_ID_CHARS,
                "pattern": PATH_ID_PATTERN,
            },
        }
    ]


def _plan_id() -> list[dict[str, Any]]:
    return [
        {
            "in": "path",
            "name": "plan_id",
            "required": True,
            "description": "32 hex digits, as POST /plans answers it",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        }
    ]


@api_bp.route("/health")
class Health(MethodView):
    @api_bp.doc(**_PUBLIC)
    @api_bp.response(200, HealthSchema)
    def get(self) -> dict[str, Any]:
        """Report liveness and version."""
        return {"status": "ok", "version": matcher.__version__}


@api_bp.route("/imports/<any(needs, partners, neighborhoods):kind>")
class Imports(MethodView):
    @api_bp.doc(
        requestBody={
            "required": True,
            "description": "The whole table, replacing the stored one (all or nothing): the "
            "columns of `matcher plan`'s needs.csv / partners.csv, or a GeoJSON "
            "FeatureCollection (neighborhoods: GeoJSON polygons only)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/geo+json": {"schema": GeoJSONUpload},
                "application/json": {"schema": GeoJSONUpload},
            },
        }
    )
    @api_bp.response(201, ImportResult)
    @_answers(400, 403, 404, 413, 415, *_KEYED)
    def post(self, kind: str) -> Response:
        """Replace needs, partners or neighborhoods from a CSV or GeoJSON body (all or nothing)."""
        ctype = (request.mimetype or "").lower()
        suffix = {
            "text/csv": ".csv",
            "application/geo+json": ".geojson",
            "application/json": ".geojson",
        }.get(ctype)
        if suffix is None or (kind == "neighborhoods" and suffix == ".csv"):
            from werkzeug.exceptions import UnsupportedMediaType

            raise UnsupportedMediaType(
                "send text/csv or application/geo+json"
                if kind != "neighborhoods"
                else "send application/geo+json"
            )
        body = Upload(request.get_data(), f"{kind}{suffix} (request body)", suffix)
        if kind == "needs":
            table = matcher.read_needs(body)
            count = store().replace_needs(table, actor=g.key_id)
        elif kind == "partners":
            table = matcher.read_partners(body)
            if not is_admin():  # volunteers' private fields: as read, or an admin's hand
                table = dataclasses.replace(table, frame=_keep_private_fields(table.frame))
            count = store().replace_partners(table, actor=g.key_id)
        else:
            frame, _ = matcher.read_neighborhoods(body)
            count = store().replace_neighborhoods(frame, actor=g.key_id)
        return Response(
            json.dumps({"imported": int(count), "kind": kind}),
            status=201,
            mimetype="application/json",
        )


def _keep_private_fields(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply :func:`matcher.access.partner_write` to every stored volunteer in an import."""
    stored = store().partners_frame()
    volunteers = stored[stored["kind"] == "volunteer"].set_index("partner_id")
    out = frame.copy()
    problems: list[Problem] = []
    for pid in sorted(set(volunteers.index) - set(out["partner_id"])):
        try:
            access.partner_delete(g.role, {"partner_id": pid, "kind": "volunteer"})
        except access.ForbiddenError as exc:
            problems += exc.problems
    fields = ["kind", "lat", "lon", "contact"]
    for pos in np.flatnonzero(out["partner_id"].isin(volunteers.index).to_numpy()):
        pid = out["partner_id"].iloc[pos]
        current = volunteers.loc[pid, fields].to_dict()
        try:
            kept = access.partner_write(g.role, current, out.iloc[pos][fields].to_dict())
        except access.ForbiddenError as exc:
            problems += [
                dataclasses.replace(p, file="partners", row=int(pos)) for p in exc.problems
            ]
            continue
        for name in ("lat", "lon", "contact"):
            out.iat[pos, out.columns.get_loc(name)] = kept[name]
    if problems:
        raise access.ForbiddenError(
            f"{len(problems)} private field(s) of stored volunteers differ from what you can "
            "read; only an admin may change them",
            problems,
        )
    return gpd.GeoDataFrame(
        out.drop(columns="geometry"),
        geometry=gpd.points_from_xy(out["lon"], out["lat"]),
        crs="EPSG:4326",
    )


@api_bp.route("/partners")
class Partners(MethodView):
    @api_bp.arguments(PartnerListArgs, location="query")
    @api_bp.response(200, PartnerPage)
    @api_bp.alt_response(
        200, schema=PointCollection, content_type="application/geo+json", success=True
    )
    @_answers(*_KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List partners (volunteers coarsened unless admin)."""
        rows = store().list_partners(
            limit=args["limit"], offset=args["offset"], kind=args.get("kind"), exact=is_admin()
        )
        return _page(rows, args)

    @api_bp.doc(requestBody=_request_json(PartnerWrite))
    @api_bp.response(201, PartnerRecord, headers=_ETAG_HEADER | _LOCATION_HEADER)
    @_answers(400, 403, 409, 413, 415, *_KEYED)
    def post(self) -> Response:
        """Create a partner."""
        body = _record(_json_body(), PARTNER_FIELDS, "partner_id", None)
        rec = _validated(body, matcher.read_partners, "partner (request body)")
        created = store().create_partner(rec, actor=g.key_id)
        resp = _with_etag(_partner(created["partner_id"]), created["partner_id"])
        resp.status_code = 201
        resp.headers["Location"] = f"/api/v1/partners/{created['partner_id']}"
        return resp


@api_bp.route("/partners/<path:partner_id>", parameters=_path_id("partner_id"))
class PartnerItem(MethodView):
    @api_bp.response(200, PartnerRecord, headers=_ETAG_HEADER)
    @_answers(404, *_KEYED)
    def get(self, partner_id: str) -> Response:
        """Get one partner with its ETag."""
        return _with_etag(_partner(partner_id), partner_id)

    @api_bp.doc(parameters=[_IF_MATCH], requestBody=_request_json(PartnerReplace))
    @api_bp.response(200, PartnerRecord, headers=_ETAG_HEADER)
    @_answers(400, 403, 404, 412, 413, 415, 428, *_KEYED)
    def put(self, partner_id: str) -> Response:
        """Replace a partner; needs ``If-Match`` with its current ETag (412 when stale)."""
        expected = _if_match()
        body = _record(_json_body(), PARTNER_FIELDS, "partner_id", partner_id)
        current = store().get_partner(partner_id, exact=True)
        if current is None:
            raise NotFoundError("partner", partner_id)
        body = access.partner_write(g.role, current, body)
        rec = _validated(body, matcher.read_partners, "partner (request body)")
        store().update_partner(partner_id, rec, expected_version=expected, actor=g.key_id)
        return _with_etag(_partner(partner_id), partner_id)

    @api_bp.doc(parameters=[_IF_MATCH])
    @api_bp.response(204)
    @_answers(400, 403, 404, 412, 428, *_KEYED)
    def delete(self, partner_id: str) -> Response:
        """Delete a partner; needs ``If-Match``. Only an admin deletes a volunteer."""
        expected = _if_match()
        current = store().get_partner(partner_id, exact=True)
        if current is None:
            raise NotFoundError("partner", partner_id)
        access.partner_delete(g.role, current)
        store().delete_partner(partner_id, expected_version=expected, actor=g.key_id)
        return Response(status=204)


@api_bp.route("/needs")
class Needs(MethodView):
    @api_bp.arguments(PageArgs, location="query")
    @api_bp.response(200, NeedPage)
    @api_bp.alt_response(
        200, schema=PointCollection, content_type="application/geo+json", success=True
    )
    @_answers(*_KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List needs (JSON, or GeoJSON with ``format=geojson``)."""
        rows = store().list_needs(limit=args["limit"], offset=args["offset"])
        return _page(rows, args)

    @api_bp.doc(requestBody=_request_json(NeedWrite))
    @api_bp.response(201, NeedIntake, headers=_LOCATION_HEADER)
    @_answers(400, 409, 413, 415, *_KEYED)
    def post(self) -> Response:
        """Report one new concern: validated, stored, placed in a cluster, with recommendations."""
        body = _record(_json_body(), NEED_FIELDS, "need_id", None)
        rec = _validated(body, matcher.read_needs, "need (request body)")
        stored = store().create_need(rec, actor=g.key_id)  # never replaces: 409
        index, model = _nearby_index(exact=is_admin()), _latest_model()
        result = recommend_for_need(stored, index, model)
        body = {
            "need": stored,
            "cluster_id": result.cluster_id,
            "statement": result.statement,
            "recommendations": result.recommendations,
            "partners_in_reach": result.reachable,
        }
        resp = Response(json.dumps(body), status=201, mimetype="application/json")
        resp.headers["Location"] = f"/api/v1/needs/{stored['need_id']}"
        return resp


@api_bp.route("/needs/<path:need_id>", parameters=_path_id("need_id"))
class NeedItem(MethodView):
    @api_bp.response(200, NeedRecord, headers=_ETAG_HEADER)
    @_answers(404, *_KEYED)
    def get(self, need_id: str) -> Response:
        """Get one need with its ETag."""
        rec = store().get_need(need_id)
        if rec is None:
            raise NotFoundError("need", need_id)
        return _with_etag(rec, need_id)

    @api_bp.doc(parameters=[_IF_MATCH], requestBody=_request_json(NeedReplace))
    @api_bp.response(200, NeedRecord, headers=_ETAG_HEADER)
    @_answers(400, 403, 404, 412, 413, 415, 428, *_KEYED)
    def put(self, need_id: str) -> Response:
        """Replace a need; needs ``If-Match`` (412 when stale)."""
        expected = _if_match()
        body = _record(_json_body(), NEED_FIELDS, "need_id", need_id)
        rec = _validated(body, matcher.read_needs, "need (request body)")
        return _with_etag(
            store().update_need(need_id, rec, expected_version=expected, actor=g.key_id), need_id
        )

    @api_bp.doc(parameters=[_IF_MATCH])
    @api_bp.response(204)
    @_answers(400, 403, 404, 412, 428, *_KEYED)
    def delete(self, need_id: str) -> Response:
        """Delete a need; needs ``If-Match``."""
        store().delete_need(need_id, expected_version=_if_match(), actor=g.key_id)
        return Response(status=204)


@api_bp.route("/plans")
class Plans(MethodView):
    @api_bp.arguments(PlanRequest)
    @api_bp.response(202, PlanQueued, headers=_LOCATION_HEADER)
    @_answers(403, 413, 415, 422, *_KEYED)
    def post(self, args: dict[str, Any]) -> Response:
        """Start a plan over the stored data as a background job (202 + Location).

        Equity options (``min_coverage``, ``vulnerability_column``, ...) need stored
        neighborhoods (or needs with a neighborhood); ``recruit_k`` adds recruit sites.
        """
        full = _queue_full()
        if full is not None:
            return full
        config = MatchConfig(
            objective=args["objective"],
            cluster_km=args["cluster_km"],
            seed=args["seed"],
            min_coverage=args["min_coverage"],
            vulnerability_column=args["vulnerability_column"],
            vulnerability_weight=args["vulnerability_weight"],
            max_partner_share=args["max_partner_share"],
            # volunteers at their grid points (matcher.privacy): the plan and everything
            # computed from it may be shown to every role
            volunteer_points="grid",
        )
        if config.vulnerability_column is not None:
            bad = _check_vulnerability_column(config.vulnerability_column)
            if bad is not None:
                return bad
        recruit = None
        if args["recruit_k"] is not None:
            recruit = {
                "k": args["recruit_k"],
                "radius_km": args["recruit_radius_km"] or DEFAULT_RECRUIT_RADIUS_KM,
                "capacity": args["recruit_capacity"],
            }
        parameters = config.parameters() | {"taxonomy": None}
        if recruit is not None:
            parameters["recruit"] = recruit
        created = _queue_plan(parameters)
        if isinstance(created, Response):
            return created
        return _queued(created)


def _queue_full() -> Response | None:
    """429 when the caller's role has its cap of plans queued or running."""
    cap = int(current_app.config["PLAN_QUEUE_CAP"].get(g.role, 0))
    roles = {k.key_id: k.role for k in store().list_api_keys()}
    waiting = [
        p
        for p in store().list_plans(limit=limits.MAX_PAGE)
        if p.status in PENDING_STATUSES and roles.get(p.created_by) == g.role
    ]
    if len(waiting) < cap:
        return None
    return _too_many(
        30,
        f"{len(waiting)} plan(s) of {g.role} keys are queued or running, the most allowed "
        f"({cap}); wait for one to finish",
    )


_queue_lock = threading.Lock()


def _queue_plan(parameters: dict[str, Any]) -> str | Response:
    """Queue a plan unless the caller's role is at its cap (429); check and queue as one step.

    The lock is per server process (as the rate limits are).
    """
    with _queue_lock:
        full = _queue_full()
        if full is not None:
            return full
        plan_id = store().create_plan(parameters, actor=g.key_id)
    worker = current_app.extensions.get("matcher_jobs")
    if worker is not None:
        worker.wake()
    return plan_id


def _queued(plan_id: str, **extra: Any) -> Response:
    resp = Response(
        json.dumps({"plan_id": plan_id, "status": "queued"} | extra),
        status=202,
        mimetype="application/json",
    )
    resp.headers["Location"] = f"/api/v1/plans/{plan_id}"
    return resp


def unprocessable(problems: list[Problem], detail: str) -> Response:
    """Return a 422 problem+json: the request is well formed but does not fit the data."""
    return problem(422, "Unprocessable Content", detail, problems=[p.to_dict() for p in problems])


def _check_vulnerability_column(column: str) -> Response | None:
    """422 unless ``column`` is a numeric attribute of the stored neighborhoods."""
    hoods = store().neighborhoods_frame()
    if hoods is None or not len(hoods):
        reason = "no neighborhoods are stored: import them (POST /imports/neighborhoods)"
    else:
        numeric = sorted(
            c
            for c in hoods.columns
            if c not in ("geometry", "neighborhood_id")
            and pd.api.types.is_numeric_dtype(pd.to_numeric(hoods[c], errors="coerce"))
            and pd.to_numeric(hoods[c], errors="coerce").notna().any()
        )
        if column in numeric:
            return None
        reason = (
            f"not a numeric attribute of the stored neighborhoods; they have "
            f"{', '.join(numeric) or 'none'}"
        )
    return unprocessable(
        [Problem("request body", None, "vulnerability_column", column, reason)],
        "the vulnerability column does not exist in the stored neighborhoods",
    )


@api_bp.route("/plans/<plan_id>/scenarios", parameters=_plan_id())
class PlanScenarios(MethodView):
    @api_bp.arguments(ScenarioRequest)
    @api_bp.response(202, PlanQueued, headers=_LOCATION_HEADER)
    @_answers(403, 404, 409, 413, 415, 422, *_KEYED)
    def post(self, args: dict[str, Any], plan_id: str) -> Response:
        """Start a what-if scenario of a finished plan as a background job (202 + Location).

        Re-plans the stored data with the base plan's parameters ("before") and with the
        change applied to the stored partners ("after"); the new plan record has the
        after-plan's files plus ``scenario.json``, ``scenario_clusters.csv`` and
        ``scenario_partners.csv``, and ``summary.scenario`` (base plan, change, metrics
        before/after/delta, whether the stored data changed since the base plan).
        Scenario plans never become the latest plan (the map, nearby and intake keep
        using the plan in force).
        """
        full = _queue_full()
        if full is not None:
            return full
        base = store().get_plan(plan_id)
        if base is None:
            raise NotFoundError("plan", plan_id)
        if base.status != "done" or not base.summary:
            return problem(
                409,
                "Conflict",
                f"plan {plan_id!r} is {base.status}; a scenario needs a finished (done) plan",
            )
        if "scenario" in (base.parameters or {}):
            return unprocessable(
                [Problem("path", None, "plan_id", plan_id, "this plan is itself a scenario")],
                "run scenarios of the plan in force, not of another scenario: base plan "
                f"{base.parameters['scenario'].get('base_plan')!r}",
            )
        added = _scenario_additions(args["add_partners"])
        bad = _check_change(args["remove_partners"], added, args["scale_capacity"])
        if bad is not None:
            return bad
        change = {
            "remove_partners": sorted(set(args["remove_partners"])),
            "add_partners": added,
            "scale_capacity": args["scale_capacity"],
            "radius_km": args["radius_km"],
        }
        parameters = dict(base.summary.get("parameters") or base.parameters) | {
            "taxonomy": None,
            "volunteer_points": "grid",
        }
        # the full change, so that the job (in any process) can run from the record alone
        parameters["scenario"] = {"base_plan": plan_id, "change": change}
        if "recruit" in (base.parameters or {}):
            parameters["recruit"] = base.parameters["recruit"]
        created = _queue_plan(parameters)
        if isinstance(created, Response):
            return created
        return _queued(created, base_plan=plan_id)


def _scenario_additions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate added partners with matcher's own rules (all rows, all problems at once)."""
    if not rows:
        return []
    frame = pd.DataFrame([{k: _listish(v) for k, v in r.items()} for r in rows])
    loaded = matcher.read_partners(frame, name="add_partners").frame
    records: list[dict[str, Any]] = loaded.drop(columns="geometry").to_dict("records")
    return records


def _check_change(
    remove: list[str], added: list[dict[str, Any]], scale: float | None = None
) -> Response | None:
    """Return a 422 for a change that does not fit the stored partners, else None.

    Partners to remove must exist, added ones must not, and a scaled capacity may not
    pass the largest capacity (``matcher.limits.MAX_UNITS``).
    """
    frame = store().partners_frame()
    stored = set(frame["partner_id"].astype(str))
    problems = [
        Problem("request body", None, "remove_partners", pid, "no stored partner with this id")
        for pid in sorted(set(remove) - stored)
    ]
    problems += [
        Problem("request body", i, "add_partners.partner_id", r["partner_id"],
                "a stored partner has this id already")
        for i, r in enumerate(added)
        if str(r["partner_id"]) in stored
    ]  # fmt: skip
    problems += [
        Problem("request body", None, "add_partners.partner_id", pid,
                "also listed in remove_partners")
        for pid in sorted(set(remove) & {str(r["partner_id"]) for r in added})
    ]  # fmt: skip
    capacities = [float(c) for c in frame["capacity"]] + [float(r["capacity"]) for r in added]
    if scale is not None and capacities and max(capacities) * scale > limits.MAX_UNITS:
        problems.append(
            Problem("request body", None, "scale_capacity", scale,
                    f"the largest capacity ({max(capacities):g}) times this factor passes "
                    f"{limits.MAX_UNITS:,.0f} units, the most a partner may have")
        )  # fmt: skip
    if not problems:
        return None
    return unprocessable(problems, f"{len(problems)} problem(s) with the partners of the change")


@api_bp.route("/plans/<plan_id>", parameters=_plan_id())
class PlanItem(MethodView):
    @api_bp.response(200, PlanStatus)
    @_answers(404, *_KEYED)
    def get(self, plan_id: str) -> Response:
        """Get a plan's status, and its summary when done."""
        found = store().get_plan(plan_id)
        if found is None:
            raise NotFoundError("plan", plan_id)
        _check_plan_privacy(found)
        rec = _plan_json(found)
        if rec.get("status") == "done":
            rec["files"] = {
                n: f"/api/v1/plans/{plan_id}/files/{n}" for n in PLAN_FILES if n in found.files
            }
            rec["assignments"] = f"/api/v1/plans/{plan_id}/assignments"
        return Response(json.dumps(rec, default=str), mimetype="application/json")


def _grid_plan(plan: Any) -> bool:
    """Whether ``plan`` (a plan record) was made at volunteers' grid points."""
    return (plan.parameters or {}).get("volunteer_points") == "grid"


def _check_plan_privacy(plan: Any) -> None:
    """Only an admin reads a plan made from volunteers' exact points (older stores)."""
    if plan is not None and not is_admin() and not _grid_plan(plan):
        raise access.ForbiddenError(
            f"plan {plan.plan_id!r} was made from volunteers' exact points (before volunteer "
            "privacy); only an admin may read it: start a new plan"
        )


@api_bp.route(
    "/plans/<plan_id>/files/<name>",
    parameters=[
        *_plan_id(),
        {"in": "path", "name": "name", "required": True,
         "schema": {"type": "string", "enum": list(PLAN_FILES)}},
    ],
)  # fmt: skip
class PlanFile(MethodView):
    @api_bp.response(200, {"type": "string"}, content_type="text/csv", description="a CSV file")
    @api_bp.alt_response(
        200,
        schema={"type": "object", "description": "a GeoJSON FeatureCollection"},
        content_type="application/geo+json",
        success=True,
    )
    @api_bp.alt_response(
        200,
        schema={"type": "object", "description": "summary.json or scenario.json"},
        content_type="application/json",
        success=True,
    )
    @_answers(404, *_KEYED)
    def get(self, plan_id: str, name: str) -> Response:
        """Get a file of a finished plan, byte for byte what ``matcher plan`` writes."""
        if name not in PLAN_FILES:
            return problem(404, "Not Found", f"no file {name!r}; files: {', '.join(PLAN_FILES)}")
        _check_plan_privacy(store().get_plan(plan_id))
        content = store().plan_file(plan_id, name)
        if content is None:
            return problem(404, "Not Found", f"plan {plan_id!r} has no file {name!r} (not done?)")
        mimetype = {
            "csv": "text/csv",
            "geojson": "application/geo+json",
            "json": "application/json",
        }[name.rsplit(".", 1)[1]]
        return Response(content, mimetype=mimetype)


@api_bp.route("/plans/<plan_id>/assignments", parameters=_plan_id())
class PlanAssignments(MethodView):
    @api_bp.response(200, AssignmentRows)
    @_answers(404, *_KEYED)
    def get(self, plan_id: str) -> Response:
        """Get a finished plan's assignments as JSON (the content of assignments.csv)."""
        _check_plan_privacy(store().get_plan(plan_id))
        content = store().plan_file(plan_id, "assignments.csv")
        if content is None:
            return problem(404, "Not Found", f"plan {plan_id!r} is unknown or not done")
        return Response(json.dumps({"results": csv_rows(content)}), mimetype="application/json")


@api_bp.route("/resources/nearby")
class Nearby(MethodView):
    @api_bp.arguments(NearbyArgs, location="query")
    @api_bp.response(200, NearbyResponse)
    @_answers(*_KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """Find partners within a great-circle radius, nearest first, with free capacity."""
        category = args.get("category")
        if category is not None:
            code = matcher.default_taxonomy().resolve(category)
            if code is None:
                raise InputValidationError(
                    [
                        Problem(
                            "query",
                            None,
                            "category",
                            category,
                            matcher.default_taxonomy().describe_unknown(category),
                        )
                    ]
                )
            category = code
        results = _nearby_index(exact=is_admin()).query(
            args["lat"],
            args["lon"],
            args["radius_km"],
            category=category,
            kind=args.get("kind"),
            limit=args["limit"],
        )
        # the hot path: plain JSON of plain values (NearbyResponse documents it)
        return Response(json.dumps({"results": results}), mimetype="application/json")


# --------------------------------------------------------------------------- jobs and caches


_cache_lock = threading.Lock()


def _plan_in_force() -> Any:
    """Return the last finished plan (no scenario), if made at volunteers' grid points.

    A plan of an older store, made from exact points, is never in force: nothing computed
    from it (free capacity, clusters, its summary) reaches a non-admin.
    """
    latest = store().latest_done_plan(exclude_scenarios=True)
    return latest if latest is not None and _grid_plan(latest) else None


def _nearby_index(*, exact: bool) -> NearbyIndex:
    """Return the partners index of the current data and plan in force (cached).

    One index for admins (exact points) and one for everyone else, each rebuilt when the
    store's revision changes (every write, a finished plan included).
    """
    st = store()
    revision = st.revision()
    cache = current_app.extensions["matcher_nearby"]
    hit = cache.get(exact)
    if hit is not None and hit[0] == revision:
        return hit[1]  # type: ignore[no-any-return]
    with _cache_lock:
        hit = cache.get(exact)
        if hit is None or hit[0] != revision:
            latest = _plan_in_force()
            usage = st.partner_usage(latest.plan_id) if latest else {}
            hit = (revision, NearbyIndex.from_frame(st.partners_frame(), usage, exact=exact))
            cache[exact] = hit
        return hit[1]  # type: ignore[no-any-return]


def _latest_model() -> ClusterModel | None:
    latest = _plan_in_force()
    return None if latest is None else load_plan_model(store(), latest.plan_id)


# --------------------------------------------------------------------------- web map
#
# The planner map page at ``/``: static files of ``matcher/web`` (package data, plain JS,
# no build step), Leaflet from the installed XStatic-Leaflet package (so the page works
# offline), base-map tiles from ``TILE_URL`` (empty: no base map). The page reads
# everything through the JSON routes below with the API key the user enters (kept in the
# tab's sessionStorage only). None of these pages or routes carries a secret.

WEB_DIR = Path(matcher.__file__).resolve().parent / "web"
#: Default base-map tiles (``MATCHER_TILE_URL`` / ``TILE_URL`` replaces it; "" = none).
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "© OpenStreetMap contributors"
_WEB_FILES = ("app.js", "app.css")


class MapConfigSchema(ma.Schema):
    tile_url = ma.fields.String(
        metadata={"description": "Leaflet URL template of the base-map tiles; '' = no base map"}
    )
    tile_attribution = ma.fields.String(metadata={"description": "plain text"})
    version = ma.fields.String()


class WhoAmISchema(ma.Schema):
    key_id = ma.fields.String()
    role = ma.fields.String(validate=ma.validate.OneOf(access.ROLES))


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


class PlanMapSchema(ma.Schema):
    type = ma.fields.String(validate=ma.validate.Equal("FeatureCollection"))
    plan_id = ma.fields.String()
    features = ma.fields.List(
        ma.fields.Nested(FeatureSchema),
        metadata={
            "description": "plan.geojson's features (feature_type 'cluster': hull polygon; "
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


@api_bp.route("/map/config")
class MapConfig(MethodView):
    @api_bp.doc(**_PUBLIC)
    @api_bp.response(200, MapConfigSchema)
    def get(self) -> dict[str, Any]:
        """Get the settings of the map page (no key needed): base-map tiles and version."""
        return {
            "tile_url": str(current_app.config.get("TILE_URL") or ""),
            "tile_attribution": str(current_app.config.get("TILE_ATTRIBUTION") or ""),
            "version": matcher.__version__,
        }


@api_bp.route("/me")
class WhoAmI(MethodView):
    @api_bp.response(200, WhoAmISchema)
    @_answers(*_KEYED)
    def get(self) -> dict[str, Any]:
        """Get the role of the calling API key (the map page checks a key with it)."""
        return {"key_id": g.key_id, "role": g.role}


@api_bp.route("/plans/latest")
class LatestPlan(MethodView):
    @api_bp.response(200, LatestPlanSchema)
    @_answers(*_KEYED)
    def get(self) -> Response:
        """Get the plan in force and the plans queued or running (what-if scenarios excluded)."""
        latest = _plan_in_force()
        pending = [
            _plan_json(p)
            for p in store().list_plans(50)
            if p.status in PENDING_STATUSES and "scenario" not in (p.parameters or {})
        ]
        body = {"plan": _plan_json(latest) if latest else None, "pending": pending}
        return Response(json.dumps(body, default=str), mimetype="application/json")


@api_bp.route("/plans/<plan_id>/map", parameters=_plan_id())
class PlanMap(MethodView):
    @api_bp.response(200, PlanMapSchema, content_type="application/geo+json")
    @_answers(404, *_KEYED)
    def get(self, plan_id: str) -> Response:
        """Get a finished plan as one GeoJSON for the map.

        Clusters, partners, explained assignments and neighborhoods with their coverage.
        """
        found = store().get_plan(plan_id)
        if found is None:
            raise NotFoundError("plan", plan_id)
        _check_plan_privacy(found)
        if found.status != "done" or "plan.geojson" not in found.files:
            return problem(404, "Not Found", f"plan {plan_id!r} is {found.status}, not done")
        compressed = store().plan_file(plan_id, MAP_FILE)
        if compressed is None:  # a plan stored before map payloads were: built now, once
            names = [n for n in found.files if n != MAP_FILE]
            files = {n: store().plan_file(plan_id, n) or b"" for n in names}
            hoods = store().neighborhoods_frame()
            compressed = map_bytes(map_payload(plan_id, files, found.summary or {}, hoods))
        if "gzip" in request.accept_encodings:
            resp = Response(compressed, mimetype="application/geo+json")
            resp.headers["Content-Encoding"] = "gzip"
        else:
            resp = Response(gzip.decompress(compressed), mimetype="application/geo+json")
        resp.headers["Vary"] = "Accept-Encoding"
        return resp


def _tile_origin(tile_url: str) -> str:
    """Return the CSP source of the tile server (``{s}`` as a wildcard); '' if same-origin."""
    parts = urlsplit(tile_url.replace("{s}", "*"))
    if not parts.scheme and not parts.netloc:
        return ""
    if parts.scheme not in ("http", "https") or "{" in parts.netloc or not parts.netloc:
        return "https: http:"
    return f"{parts.scheme}://{parts.netloc}"


def _register_webmap(app: Flask) -> None:
    """Serve the map page at ``/``, its files under ``/web/`` and Leaflet under ``/vendor/``."""
    app.config.setdefault("TILE_URL", DEFAULT_TILE_URL)
    app.config.setdefault("TILE_ATTRIBUTION", DEFAULT_TILE_ATTRIBUTION)
    pages = FlaskBlueprint("webmap", __name__)

    @pages.get("/")
    def index() -> Response:
        resp = send_from_directory(WEB_DIR, "index.html", max_age=0)
        tiles = _tile_origin(str(current_app.config.get("TILE_URL") or ""))
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: {tiles}".rstrip()
            + "; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @pages.get("/web/<name>")
    def web_file(name: str) -> Response:
        if name not in _WEB_FILES:
            return problem(404, "Not Found", f"no file {name!r}")
        resp = send_from_directory(WEB_DIR, name, max_age=0)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @pages.get("/vendor/leaflet/<path:name>")
    def leaflet_file(name: str) -> Response:
        try:
            from xstatic.pkg import leaflet
        except ImportError:
            return problem(
                404, "Not Found", "Leaflet is missing: pip install 'matcher[api]' (xstatic-leaflet)"
            )
        resp = send_from_directory(leaflet.BASE_DIR, name, max_age=86400)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    app.register_blueprint(pages)


# --------------------------------------------------------------------------- factory


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app.

    Configuration: defaults, then ``MATCHER_*`` environment variables (``MATCHER_DB``
    sets ``DB``), then ``config``. Keys: ``DB`` (SQLite path or database URL),
    ``MAX_CONTENT_LENGTH`` (bytes; 413 above it), ``PLAN_WORKERS`` (threads of this
    process that claim and run queued plans; 0 for none), ``PLAN_LEASE_S`` (seconds a
    claimed plan is held without a renewal: a plan whose process died runs again after
    it), ``KEY_CACHE_S`` (seconds an
    authenticated key is remembered: a revoked key stops working within them).
    """
    app = Flask(__name__)
    app.config.from_mapping(
        DB="matcher.db",
        MAX_CONTENT_LENGTH=limits.MAX_BODY_BYTES,
        PLAN_WORKERS=1,
        PLAN_LEASE_S=DEFAULT_LEASE_S,
        KEY_CACHE_S=access.KEY_CACHE_S,
        RATE_LIMIT_PER_MINUTE=1200,
        RATE_LIMIT_BURST=200,
        AUTH_FAILURES_PER_MINUTE=20,
        AUTH_FAILURES_BURST=20,
        PLAN_QUEUE_CAP=dict(access.PLAN_QUEUE_CAP),
        API_TITLE="matcher",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    app.config.from_prefixed_env("MATCHER")
    if config:
        app.config.update(config)
    app.extensions["matcher_store"] = open_store(app.config["DB"])
    threads = int(app.config["PLAN_WORKERS"])
    if threads > 0:  # 0: this process only queues plans; workers elsewhere run them
        worker = PlanWorker(
            app.extensions["matcher_store"],
            threads=threads,
            lease_s=float(app.config["PLAN_LEASE_S"]),
        )
        worker.start()
        app.extensions["matcher_jobs"] = worker
    app.extensions["matcher_nearby"] = {}
    app.extensions["matcher_keys"] = KeyCache(
        app.extensions["matcher_store"].authenticate, ttl_s=float(app.config["KEY_CACHE_S"])
    )
    app.extensions["matcher_limits"] = {
        "requests": RateLimiter(
            float(app.config["RATE_LIMIT_PER_MINUTE"]), int(app.config["RATE_LIMIT_BURST"])
        ),
        "auth_failures": RateLimiter(
            float(app.config["AUTH_FAILURES_PER_MINUTE"]), int(app.config["AUTH_FAILURES_BURST"])
        ),
    }
    api = _Api(
        app,
        spec_kwargs={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    api.register_blueprint(api_bp)
    app.before_request(_started)
    app.after_request(_secure_headers)
    app.after_request(_access)
    _register_webmap(app)
    _register_errors(app)
    return app
