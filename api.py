"""matcher's HTTP service: routing, auth and JSON shaping only; every decision is in ``matcher``.

Run it with ``matcher serve --db PATH`` (waitress), or build the app with
:func:`create_app` for tests and other WSGI servers.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from pathlib import Path
from typing import Any

import marshmallow as ma
import pandas as pd
from flask import Flask, Response, current_app, g, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from werkzeug.exceptions import HTTPException

import matcher
from matcher import ClusterModel, InputValidationError, MatchConfig, MatcherError, Problem
from matcher.intake import recommend_for_need
from matcher.nearby import NearbyIndex
from matcher.store import (
    AlreadyExistsError,
    NotFoundError,
    PlanStateError,
    Store,
    StoreBusyError,
    VersionConflictError,
    etag,
    open_store,
)

__all__ = ["create_app"]

logger = logging.getLogger("matcher.api")

ROLES = ("planner", "outreach", "admin")
WRITERS = ("planner", "admin")
MAX_LIMIT = 1000
PLAN_FILES = (
    "assignments.csv",
    "clusters.csv",
    "need_clusters.csv",
    "unmet.csv",
    "plan.geojson",
    "summary.json",
)
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
            extra["problems"] = [
                {
                    "file": None,
                    "row": None,
                    "field": field,
                    "value": None,
                    "reason": "; ".join(msgs),
                }
                for location in data["messages"].values()
                for field, msgs in _flatten(location).items()
            ]
            return problem(400, "Invalid request", "the request parameters are invalid", **extra)
        return problem(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:  # never a stack trace in a response
        logger.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred")


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


def requires(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require an API key (``Authorization: Bearer KEY``) of one of ``roles``."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            found = (
                store().authenticate(key.strip()) if scheme.lower() == "bearer" and key else None
            )
            if found is None:
                resp = problem(
                    401, "Unauthorized", "send a valid API key as 'Authorization: Bearer KEY'"
                )
                resp.headers["WWW-Authenticate"] = 'Bearer realm="matcher"'
                return resp
            g.key_id, g.role = found
            if g.role not in roles:
                return problem(
                    403,
                    "Forbidden",
                    f"this needs one of the roles {', '.join(roles)}; "
                    f"your key has the role {g.role}",
                )
            return func(*args, **kwargs)

        return wrapper

    return decorator


def is_admin() -> bool:
    """Whether the caller may see volunteers' exact points and contacts."""
    return getattr(g, "role", None) == "admin"


# --------------------------------------------------------------------------- schemas (OpenAPI)


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(1, MAX_LIMIT))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0))
    format = ma.fields.String(
        load_default="json",
        validate=ma.validate.OneOf(["json", "geojson"]),
        metadata={"description": "'geojson' answers a FeatureCollection of points"},
    )


class PartnerListArgs(PageArgs):
    kind = ma.fields.String(validate=ma.validate.OneOf(["organization", "volunteer"]))


class NearbyArgs(ma.Schema):
    lat = ma.fields.Float(required=True, validate=ma.validate.Range(-90, 90))
    lon = ma.fields.Float(required=True, validate=ma.validate.Range(-180, 180))
    radius_km = ma.fields.Float(
        load_default=5.0, validate=ma.validate.Range(0, 500, min_inclusive=False)
    )
    category = ma.fields.String()
    kind = ma.fields.String(validate=ma.validate.OneOf(["organization", "volunteer"]))
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(1, 200))


class PartnerSchema(ma.Schema):
    partner_id = ma.fields.String(required=True)
    name = ma.fields.String()
    kind = ma.fields.String(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    categories = ma.fields.Raw(
        required=True, metadata={"description": "';'-separated codes or a list"}
    )
    capacity = ma.fields.Float(required=True)
    radius_km = ma.fields.Float(required=True)
    languages = ma.fields.Raw()
    contact = ma.fields.String(metadata={"description": "admin only"})
    version = ma.fields.Integer(dump_only=True)


class NeedSchema(ma.Schema):
    need_id = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    lat = ma.fields.Float(required=True)
    lon = ma.fields.Float(required=True)
    demand = ma.fields.Float(required=True)
    severity = ma.fields.Integer()
    neighborhood = ma.fields.String()
    languages = ma.fields.Raw()
    reported_at = ma.fields.String()
    source = ma.fields.String()
    version = ma.fields.Integer(dump_only=True)


class PlanRequest(ma.Schema):
    objective = ma.fields.String(
        load_default="default", validate=ma.validate.OneOf(["default", "distance"])
    )
    cluster_km = ma.fields.Float(load_default=MatchConfig.cluster_km)
    seed = ma.fields.Integer(load_default=0)


class NearbyResult(ma.Schema):
    partner_id = ma.fields.String()
    name = ma.fields.String()
    kind = ma.fields.String()
    categories = ma.fields.List(ma.fields.String())
    distance_km = ma.fields.Float()
    capacity = ma.fields.Float()
    free_capacity = ma.fields.Float()
    lat = ma.fields.Float()
    lon = ma.fields.Float()


class NearbyResponse(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(NearbyResult))


# --------------------------------------------------------------------------- helpers


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        from werkzeug.exceptions import UnsupportedMediaType

        raise UnsupportedMediaType("send a JSON body with 'Content-Type: application/json'")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InputValidationError(
            [Problem("request body", None, None, None, "malformed JSON: expected a JSON object")]
        )
    return body


def _listish(value: Any) -> Any:
    return ";".join(map(str, value)) if isinstance(value, list) else value


def _validated(body: dict[str, Any], reader: Callable[..., Any], name: str) -> dict[str, Any]:
    """Validate one record with matcher's own validation (same rules as the CLI)."""
    row = {k: _listish(v) for k, v in body.items() if k != "version"}
    frame = reader(pd.DataFrame([row]), name=name).frame
    return frame.drop(columns="geometry").iloc[0].to_dict()


def _if_match() -> int:
    """Return the version a write expects, from ``If-Match`` (428 when missing)."""
    header = request.headers.get("If-Match")
    if not header:
        from werkzeug.exceptions import PreconditionRequired

        raise PreconditionRequired("send the resource's ETag in If-Match to update or delete it")
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise InputValidationError(
            [Problem("If-Match", None, "If-Match", header, 'expected an ETag such as W/"3"')]
        ) from None


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

api_bp = Blueprint("v1", __name__, url_prefix="/api/v1", description="matcher API v1")


@api_bp.route("/health")
class Health(MethodView):
    def get(self) -> dict[str, Any]:
        """Report liveness and version."""
        return {"status": "ok", "version": matcher.__version__}


@api_bp.route("/imports/<any(needs, partners, neighborhoods):kind>")
class Imports(MethodView):
    decorators = [requires(*WRITERS)]

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
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{kind}{suffix}"
            path.write_bytes(request.get_data())
            name = f"{kind}{suffix} (request body)"
            if kind == "needs":
                frame = matcher.read_needs(path, name=name).frame
                count = store().replace_needs(frame, actor=g.key_id)
            elif kind == "partners":
                frame = matcher.read_partners(path, name=name).frame
                count = store().replace_partners(frame, actor=g.key_id)
            else:
                frame, _ = matcher.read_neighborhoods(path)
                count = store().replace_neighborhoods(frame, actor=g.key_id)
        return Response(
            json.dumps({"imported": int(count if count is not None else len(frame)), "kind": kind}),
            status=201,
            mimetype="application/json",
        )


@api_bp.route("/partners")
class Partners(MethodView):
    decorators = [requires(*ROLES)]

    @api_bp.arguments(PartnerListArgs, location="query")
    def get(self, args: dict[str, Any]) -> Response:
        """List partners (volunteers coarsened unless admin)."""
        rows = store().list_partners(
            limit=args["limit"], offset=args["offset"], kind=args.get("kind"), exact=is_admin()
        )
        return _page(rows, args)

    def post(self) -> Response:
        """Create a partner."""
        if g.role not in WRITERS:
            return problem(403, "Forbidden", "creating partners needs the role planner or admin")
        rec = _validated(_json_body(), matcher.read_partners, "partner (request body)")
        created = store().create_partner(rec, actor=g.key_id)
        resp = _with_etag(_partner(created["partner_id"]), created["partner_id"])
        resp.status_code = 201
        resp.headers["Location"] = f"/api/v1/partners/{created['partner_id']}"
        return resp


@api_bp.route("/partners/<partner_id>")
class PartnerItem(MethodView):
    decorators = [requires(*ROLES)]

    def get(self, partner_id: str) -> Response:
        """Get one partner with its ETag."""
        return _with_etag(_partner(partner_id), partner_id)

    def put(self, partner_id: str) -> Response:
        """Replace a partner; needs ``If-Match`` with its current ETag (412 when stale)."""
        if g.role not in WRITERS:
            return problem(403, "Forbidden", "updating partners needs the role planner or admin")
        expected = _if_match()
        body = _json_body() | {"partner_id": partner_id}
        rec = _validated(body, matcher.read_partners, "partner (request body)")
        store().update_partner(partner_id, rec, expected_version=expected, actor=g.key_id)
        return _with_etag(_partner(partner_id), partner_id)

    def delete(self, partner_id: str) -> Response:
        """Delete a partner; needs ``If-Match``."""
        if g.role not in WRITERS:
            return problem(403, "Forbidden", "deleting partners needs the role planner or admin")
        store().delete_partner(partner_id, expected_version=_if_match(), actor=g.key_id)
        return Response(status=204)


@api_bp.route("/needs")
class Needs(MethodView):
    decorators = [requires(*ROLES)]

    @api_bp.arguments(PageArgs, location="query")
    def get(self, args: dict[str, Any]) -> Response:
        """List needs (JSON, or GeoJSON with ``format=geojson``)."""
        rows = store().list_needs(limit=args["limit"], offset=args["offset"])
        return _page(rows, args)

    def post(self) -> Response:
        """Report one new concern: validated, stored, placed in a cluster, with recommendations."""
        rec = _validated(_json_body(), matcher.read_needs, "need (request body)")
        stored = store().upsert_need(rec, actor=g.key_id)
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


@api_bp.route("/needs/<need_id>")
class NeedItem(MethodView):
    decorators = [requires(*ROLES)]

    def get(self, need_id: str) -> Response:
        """Get one need with its ETag."""
        rec = store().get_need(need_id)
        if rec is None:
            raise NotFoundError("need", need_id)
        return _with_etag(rec, need_id)

    def put(self, need_id: str) -> Response:
        """Replace a need; needs ``If-Match`` (412 when stale)."""
        if g.role not in WRITERS:
            return problem(403, "Forbidden", "updating needs needs the role planner or admin")
        expected = _if_match()
        rec = _validated(
            _json_body() | {"need_id": need_id}, matcher.read_needs, "need (request body)"
        )
        return _with_etag(
            store().update_need(need_id, rec, expected_version=expected, actor=g.key_id), need_id
        )

    def delete(self, need_id: str) -> Response:
        """Delete a need; needs ``If-Match``."""
        if g.role not in WRITERS:
            return problem(403, "Forbidden", "deleting needs needs the role planner or admin")
        store().delete_need(need_id, expected_version=_if_match(), actor=g.key_id)
        return Response(status=204)


@api_bp.route("/plans")
class Plans(MethodView):
    decorators = [requires(*WRITERS)]

    @api_bp.arguments(PlanRequest)
    def post(self, args: dict[str, Any]) -> Response:
        """Start a plan over the stored data as a background job (202 + Location)."""
        config = MatchConfig(
            objective=args["objective"], cluster_km=args["cluster_km"], seed=args["seed"]
        )
        plan_id = store().create_plan(config.parameters() | {"taxonomy": None})
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        app.extensions["matcher_jobs"].submit(_run_plan, app, plan_id, config)
        resp = Response(
            json.dumps({"plan_id": plan_id, "status": "queued"}),
            status=202,
            mimetype="application/json",
        )
        resp.headers["Location"] = f"/api/v1/plans/{plan_id}"
        return resp


@api_bp.route("/plans/<plan_id>")
class PlanItem(MethodView):
    decorators = [requires(*ROLES)]

    def get(self, plan_id: str) -> Response:
        """Get a plan's status, and its summary when done."""
        found = store().get_plan(plan_id)
        if found is None:
            raise NotFoundError("plan", plan_id)
        rec = found.to_dict()
        if rec.get("status") == "done":
            rec["files"] = {n: f"/api/v1/plans/{plan_id}/files/{n}" for n in PLAN_FILES}
            rec["assignments"] = f"/api/v1/plans/{plan_id}/assignments"
        return Response(json.dumps(rec, default=str), mimetype="application/json")


@api_bp.route("/plans/<plan_id>/files/<name>")
class PlanFile(MethodView):
    decorators = [requires(*ROLES)]

    def get(self, plan_id: str, name: str) -> Response:
        """Get a file of a finished plan, byte for byte what ``matcher plan`` writes."""
        if name not in PLAN_FILES:
            return problem(404, "Not Found", f"no file {name!r}; files: {', '.join(PLAN_FILES)}")
        content = store().plan_file(plan_id, name)
        if content is None:
            return problem(404, "Not Found", f"plan {plan_id!r} has no file {name!r} (not done?)")
        mimetype = {
            "csv": "text/csv",
            "geojson": "application/geo+json",
            "json": "application/json",
        }[name.rsplit(".", 1)[1]]
        return Response(content, mimetype=mimetype)


@api_bp.route("/plans/<plan_id>/assignments")
class PlanAssignments(MethodView):
    decorators = [requires(*ROLES)]

    def get(self, plan_id: str) -> Response:
        """Get a finished plan's assignments as JSON (the content of assignments.csv)."""
        content = store().plan_file(plan_id, "assignments.csv")
        if content is None:
            return problem(404, "Not Found", f"plan {plan_id!r} is unknown or not done")
        frame = pd.read_csv(io.BytesIO(content), keep_default_na=False, dtype=str)
        return Response(
            json.dumps({"results": frame.to_dict("records")}), mimetype="application/json"
        )


@api_bp.route("/resources/nearby")
class Nearby(MethodView):
    decorators = [requires(*ROLES)]

    @api_bp.arguments(NearbyArgs, location="query")
    @api_bp.response(200, NearbyResponse)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
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
        index = _nearby_index(exact=is_admin())
        return {
            "results": index.query(
                args["lat"],
                args["lon"],
                args["radius_km"],
                category=category,
                kind=args.get("kind"),
                limit=args["limit"],
            )
        }


# --------------------------------------------------------------------------- jobs and caches


def _run_plan(app: Flask, plan_id: str, config: MatchConfig) -> None:
    """Run one plan over the stored data and store its files (in a worker thread)."""
    st: Store = app.extensions["matcher_store"]
    try:
        st.set_plan_running(plan_id)
        hoods = st.neighborhoods_frame()
        result = matcher.plan(
            st.needs_frame(),
            st.partners_frame(),
            neighborhoods=hoods if hoods is not None and len(hoods) else None,
            config=config,
        )
        with tempfile.TemporaryDirectory() as tmp:
            written = result.to_dir(tmp)
            files = {name: path.read_bytes() for name, path in written.items()}
        result.model.save(app.config["MODELS_DIR"], f"plan-{plan_id}")  # type: ignore[union-attr]
        usage = result.partners.set_index("partner_id")["used"].to_dict()
        st.plan_done(plan_id, json.loads(files["summary.json"]), files, usage=usage)
    except MatcherError as exc:
        st.plan_failed(plan_id, str(exc))
    except Exception:  # pragma: no cover - reported as a failed plan, details in the log
        logger.exception("plan %s failed", plan_id)
        st.plan_failed(plan_id, "an unexpected error occurred; see the server log")


_cache_lock = threading.Lock()


def _nearby_index(*, exact: bool) -> NearbyIndex:
    """Return the partners index of the current data and latest plan (cached)."""
    st = store()
    latest = st.latest_done_plan()
    key = (st.revision(), latest["plan_id"] if latest else None, exact)
    cache = current_app.extensions["matcher_nearby"]
    with _cache_lock:
        if cache.get("key") != key:
            usage = st.partner_usage(latest["plan_id"]) if latest else {}
            cache["index"] = NearbyIndex.from_frame(st.partners_frame(), usage, exact=exact)
            cache["key"] = key
        return cache["index"]


def _latest_model() -> ClusterModel | None:
    latest = store().latest_done_plan()
    if latest is None:
        return None
    path = Path(current_app.config["MODELS_DIR"]) / f"plan-{latest['plan_id']}.json"
    return ClusterModel.load(path) if path.exists() else None


# --------------------------------------------------------------------------- factory


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app.

    Configuration: defaults, then ``MATCHER_*`` environment variables (``MATCHER_DB``
    sets ``DB``), then ``config``. Keys: ``DB`` (SQLite path or URL), ``MODELS_DIR``,
    ``MAX_CONTENT_LENGTH`` (bytes; 413 above it), ``PLAN_WORKERS``.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        DB="matcher.db",
        MODELS_DIR="models",
        MAX_CONTENT_LENGTH=32 * 1024 * 1024,
        PLAN_WORKERS=1,
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
    app.extensions["matcher_jobs"] = ThreadPoolExecutor(
        max_workers=int(app.config["PLAN_WORKERS"]), thread_name_prefix="matcher-plan"
    )
    app.extensions["matcher_nearby"] = {}
    api = Api(
        app,
        spec_kwargs={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    api.register_blueprint(api_bp)
    _register_errors(app)
    return app
