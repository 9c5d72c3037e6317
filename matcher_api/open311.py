"""Open311 GeoReport v2 under ``/open311/v2/``: services, service requests, the standard's errors.

Every decision is :mod:`matcher.open311`'s and the intake's (``POST requests`` is
:func:`matcher_api.records.report_concern`, the one intake of ``POST /api/v1/needs``);
this module routes, authorizes and shapes JSON or XML. Services and their definitions are
public; requests need an API key (the standard's ``api_key`` parameter, or
``Authorization: Bearer``) of a role that may read or report needs, because a request is
a concern at a location. A request's ``description`` (the reporter's note) is shown to
planners and admins only. Errors are the standard's list of ``code`` and ``description``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

import matcher
from matcher import access
from matcher.open311 import (
    FORMATS,
    MAX_REQUEST_IDS,
    GeoReportError,
    needs_in_span,
    request_from_form,
    request_view,
    service_definition,
    services,
    span,
    to_xml,
)

from .auth import METHOD_ACTIONS, bearer_key, check_key
from .bodies import idempotency_key
from .records import report_concern
from .state import store
from .webmap import WEB_DIR

__all__ = ["register_open311"]

PREFIX = "/open311/v2"
bp = Blueprint("open311", __name__, url_prefix=PREFIX)

#: The policy resource of each route (``matcher.access.POLICY``).
_RESOURCES = {"discovery": "open311_services", "service_list": "open311_services",
              "service_item": "open311_services", "request_list": "needs", "request_item": "needs"}
#: Largest form of ``POST requests`` (a description is at most 500 characters).
MAX_FORM_BYTES = 64 * 1024
#: The ``.json`` / ``.xml`` of every path (no other format is routed).
_FMT = f"<any({', '.join(FORMATS)}):fmt>"
_HOW = "send a valid API key as the api_key parameter (or 'Authorization: Bearer KEY')"


def _names() -> dict[str, str]:
    """Return the English name of every category (the outreach page's catalog)."""
    cache = current_app.extensions.setdefault("matcher_open311", {})
    if "names" not in cache:
        catalog = json.loads((WEB_DIR / "locales" / "en.json").read_text(encoding="utf-8"))
        cache["names"] = {
            k.removeprefix("category."): v for k, v in catalog.items() if k.startswith("category.")
        }
    return cache["names"]  # type: ignore[no-any-return]


def _encoded(body: Any, root: str, item: str | None) -> tuple[bytes | str, str]:
    """Return a body in the format the path asks for (``.xml``, else JSON) and its type."""
    if (request.view_args or {}).get("fmt") == "xml":  # the routes take .json or .xml only
        return to_xml(root, item, body), "text/xml"
    return json.dumps(body), "application/json"


def _answer(body: Any, root: str, item: str | None, status: int = 200) -> Response:
    data, mimetype = _encoded(body, root, item)
    return Response(data, status=status, mimetype=mimetype)


@bp.before_request
def _authorize() -> Response | None:
    """Apply the one policy of :mod:`matcher_api.auth`, the key also from ``api_key``."""
    if request.endpoint is None:
        return None
    resource = _RESOURCES.get(request.endpoint.rsplit(".", 1)[-1])
    action = METHOD_ACTIONS.get(request.method, "read")
    if resource is not None and access.allowed(None, resource, action):
        return None
    if request.method == "POST":  # the standard's form, bounded before it is parsed
        if request.mimetype != "application/x-www-form-urlencoded":
            raise GeoReportError(415, "send the request as a form: Content-Type "
                                 "application/x-www-form-urlencoded")  # fmt: skip
        if (request.content_length or 0) > MAX_FORM_BYTES:
            raise GeoReportError(413, f"a request form is at most {MAX_FORM_BYTES:,} bytes")
    key = request.args.get("api_key")
    if key is None and request.method == "POST":
        key = request.form.get("api_key")
    presented = key is not None or "Authorization" in request.headers
    return check_key(resource, action, key if key is not None else bearer_key(), presented,
                     _HOW)  # fmt: skip


@bp.after_request
def _standard_errors(resp: Response) -> Response:
    """Answer every problem+json of these routes as the standard's error list."""
    resp.headers["Cache-Control"] = "no-store"
    if resp.mimetype != "application/problem+json":
        return resp
    body = json.loads(resp.get_data(as_text=True) or "{}")
    text = str(body.get("detail") or body.get("title") or "error")
    problems = body.get("problems") or []
    if problems:
        text += ": " + "; ".join(
            f"{p.get('field') or 'request'} {p.get('value')!r}: {p.get('reason')}"
            if p.get("value") is not None else f"{p.get('field') or 'request'}: {p.get('reason')}"
            for p in problems[:10]
        )  # fmt: skip
    # the same response (its headers: WWW-Authenticate, Retry-After), the standard's body
    data, mimetype = _encoded([{"code": resp.status_code, "description": text}], "errors",
                              "error")  # fmt: skip
    resp.set_data(data)
    resp.mimetype = mimetype
    return resp


@bp.errorhandler(GeoReportError)
def _refused(exc: GeoReportError) -> Response:
    return _answer([{"code": exc.code, "description": exc.description}], "errors", "error",
                   exc.code)  # fmt: skip


@bp.get(f"/discovery.{_FMT}")
def discovery(fmt: str) -> Response:
    """Service discovery: where this endpoint is and what it speaks."""
    base = request.url_root.rstrip("/") + PREFIX
    return _answer(
        {
            "changeset": "2026-12-03T00:00:00Z",
            "contact": "",
            "key_service": "an API key from the service's administrator (matcher keys create)",
            "endpoints": [
                {"specification": "http://wiki.open311.org/GeoReport_v2", "url": base,
                 "changeset": "2026-12-03T00:00:00Z", "type": "production",
                 "formats": ["application/json", "text/xml"]}  # fmt: skip
            ],
        },
        "discovery",
        None,
    )


@bp.get(f"/services.{_FMT}")
def service_list(fmt: str) -> Response:
    """Every category as a service."""
    return _answer(services(matcher.default_taxonomy(), _names()), "services", "service")


@bp.get(f"/services/<code>.{_FMT}")
def service_item(code: str, fmt: str) -> Response:
    """Give a service's definition: the attributes a request may carry."""
    category = matcher.default_taxonomy().resolve(code[:128])
    if category is None:
        raise GeoReportError(404, f"service_code {code[:40]!r} not found")
    return _answer(service_definition(category), "service_definition", None)


def _notes(records: list[dict[str, Any]]) -> dict[str, str] | None:
    """Return the reporters' notes by report id, for planners and admins only (else None)."""
    if not access.allowed(g.role, "report_notes", "read"):
        return None
    need_ids = sorted({str(r["need_id"]) for r in records})
    return {n["report_id"]: n["note"] for n in store().report_notes_of(need_ids)}


def _views(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return stored needs and linked reports as service requests."""
    notes = _notes(records)
    out = []
    for rec in records:
        rid = str(rec.get("report_id") or rec["need_id"])
        out.append(request_view(
            rec, _names(), description=None if notes is None else notes.get(rid, ""),
            linked_to=str(rec["need_id"]) if rec.get("report_id") else None,
        ))  # fmt: skip
    return out


def _stored(request_id: str) -> dict[str, Any] | None:
    """Return the need or linked report of a service request id (None: unknown)."""
    st = store()
    return st.get_need(request_id) or st.get_linked_report(request_id)


@bp.route(f"/requests.{_FMT}", methods=["GET", "POST"])
def request_list(fmt: str) -> Response:
    """List service requests (GET, the standard's filters) or create one (POST)."""
    if request.method == "POST":
        return _create()
    args = request.args
    ids = args.get("service_request_id")
    if ids is not None:  # overrides every other filter
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        if not wanted or len(wanted) > MAX_REQUEST_IDS or any(len(i) > 128 for i in wanted):
            raise GeoReportError(400, f"service_request_id: 1 to {MAX_REQUEST_IDS} ids, comma "
                                 "separated, each at most 128 characters")  # fmt: skip
        found = [r for r in (_stored(i) for i in dict.fromkeys(wanted)) if r is not None]
        return _answer(_views(found), "service_requests", "request")
    codes = None
    if args.get("service_code"):
        tax = matcher.default_taxonomy()
        codes = []
        asked = args["service_code"].split(",")
        if len(asked) > len(tax.codes):
            raise GeoReportError(400, f"service_code: at most {len(tax.codes)} codes")
        for code in asked:
            resolved = tax.resolve(code.strip()[:128])
            if resolved is None:
                raise GeoReportError(400, f"service_code {code[:40]!r} not found: "
                                     + tax.describe_unknown(code[:40]))  # fmt: skip
            codes.append(resolved)
    statuses = {"open", "closed"}
    if args.get("status"):
        asked_status = args["status"].split(",")
        statuses = {s.strip() for s in asked_status}
        if len(asked_status) > 2 or not statuses <= {"open", "closed"}:
            raise GeoReportError(400, f"status {args['status'][:40]!r}: open, closed or both")
    t0, t1 = span(args.get("start_date"), args.get("end_date"))
    if "open" not in statuses:  # every need is open until partnerships track its delivery
        return _answer([], "service_requests", "request")
    return _answer(_views(needs_in_span(store(), t0, t1, codes)), "service_requests", "request")


def _create() -> Response:
    form = request.form
    for k in form:
        if len(form.getlist(k)) > 1:
            raise GeoReportError(400, f"{k[:40]} is sent more than once")
    record, personal = request_from_form(form.get, list(form), matcher.default_taxonomy())
    status, out, replayed = report_concern(record, idempotency_key(), scope="open311 ")
    if status == 410:
        raise GeoReportError(410, out["detail"])
    notice = out["intake"] + "; " + out["statement"]
    if out["escalate_to"]:
        notice += "; escalate to " + out["escalate_to"]
    if personal:
        notice += ("; matcher keeps no personal details: " + ", ".join(personal)
                   + " not stored")  # fmt: skip
    answer = [{"service_request_id": out["report_id"], "service_notice": notice,
               "account_id": ""}]  # fmt: skip
    resp = _answer(answer, "service_requests", "request", status)
    fmt = (request.view_args or {}).get("fmt", "json")
    resp.headers["Location"] = f"{PREFIX}/requests/{out['report_id']}.{fmt}"
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@bp.get(f"/requests/<path:request_id>.{_FMT}")
def request_item(request_id: str, fmt: str) -> Response:
    """Give one service request (a list of one, as the standard says)."""
    found = _stored(request_id) if len(request_id) <= 128 else None
    if found is None:
        raise GeoReportError(404, f"service_request_id {request_id[:40]!r} not found")
    return _answer(_views([found]), "service_requests", "request")


def register_open311(app: Flask) -> None:
    """Serve GeoReport v2 under ``/open311/v2/``."""
    app.register_blueprint(bp)
