"""Authentication and authorization of every API request, in one place, and the access log.

Each route's resource is named in :data:`RESOURCES`; who may do what is
:data:`matcher.access.POLICY`. Keys are looked up through a short cache
(:class:`matcher.access.KeyCache`), so a revoked key stops working within seconds.
"""

from __future__ import annotations

import logging
import time

from flask import Response, current_app, g, request

from matcher import (
    access,
)
from matcher.io import load_json_document

from .problems import problem, too_many

logger = logging.getLogger("matcher.api")

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
    "LinkedReports": "needs",
    "Holds": "holds",
    "HoldItem": "holds",
    "Plans": "plans",
    "PlanScenarios": "scenarios",
    "PlanItem": "plans",
    "PlanFile": "plans",
    "PlanAssignments": "plans",
    "LatestPlan": "plans",
    "PlanMap": "plans",
    "PlanCompare": "plans",
    "Nearby": "nearby",
    "Places": "places",
    "ReportNotes": "report_notes",
    "PlanPublish": "publish",
    "Partnerships": "partnerships",
    "PartnershipItem": "partnerships",
    "PartnershipSteps": "partnership_steps",
    "PartnershipClear": "partnership_clear",
    "PartnershipDeliveries": "deliveries",
    "NeedOutcome": "outcomes",
    "Reliability": "reliability",
    "Impact": "impact",
}
#: Writes whose body is JSON: any other content type is 415 (never silently ignored).
_JSON_WRITES = frozenset(
    {("plans", "create"), ("scenarios", "create"), ("partners", "create"),
     ("partners", "replace"), ("needs", "create"), ("needs", "replace"),
     ("publish", "create"), ("partnership_steps", "create"), ("deliveries", "create"),
     ("outcomes", "replace")}
)  # fmt: skip
METHOD_ACTIONS = {"GET": "read", "HEAD": "read", "POST": "create", "PUT": "replace",
                  "DELETE": "delete"}  # fmt: skip


def _client() -> str:
    return str(request.remote_addr or "unknown")


def authorize() -> Response | None:
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
    header = request.headers.get("Authorization", "")
    denied = check_key(resource, action, bearer_key(), bool(header))
    if denied is not None:
        return denied
    if request.is_json and request.content_length:  # bounded parse before any other reader
        g.json_body = load_json_document(request.get_data(cache=True), "request body")
    if (resource, action) in _JSON_WRITES and request.content_length and not request.is_json:
        return problem(
            415,
            "Unsupported Media Type",
            "send the body as JSON with 'Content-Type: application/json'",
        )
    return None


def bearer_key() -> str | None:
    """Return the key of the request's ``Authorization: Bearer KEY`` header (None: none)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def check_key(
    resource: str | None, action: str, key: str | None, presented: bool, how: str = ""
) -> Response | None:
    """Authenticate ``key`` and check its role may do ``action`` on ``resource``.

    Sets ``g.key_id``, ``g.role`` and ``g.partner_id``; returns None, or the 401 / 403 /
    429 answer. Failed authentications are limited per address, requests per key (one
    policy for every door:
    ``Authorization: Bearer`` here, Open311's ``api_key`` in :mod:`matcher_api.open311`).
    """
    limits = current_app.extensions["matcher_limits"]
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
        return too_many(wait, "too many failed authentications from your address")
    if key is not None and 0 < len(key) <= 256:
        found = current_app.extensions["matcher_keys"](key)
    if found is None:
        logger.warning(
            "failed authentication from %s for %s %s (%s)",
            _client(),
            request.method,
            request.path,
            "no key" if not presented else "invalid key",
        )
        wait = limits["auth_failures"].hit(_client())
        if wait is not None:
            return too_many(wait, "too many failed authentications from your address")
        resp = problem(401, "Unauthorized",
                       how or "send a valid API key as 'Authorization: Bearer KEY'")  # fmt: skip
        resp.headers["WWW-Authenticate"] = 'Bearer realm="matcher"'
        return resp
    g.key_id, g.role = found[0], found[1]
    g.partner_id = found[2] if len(found) > 2 else None  # a partner key's own partner
    wait = limits["requests"].hit(g.key_id)
    if wait is not None:
        return too_many(wait, "too many requests with this key; slow down")
    if resource is None or not access.allowed(g.role, resource, action):
        roles = access.roles_for(resource or "", action)
        return problem(
            403,
            "Forbidden",
            f"{action} on {resource or 'this route'} needs one of the roles "
            f"{', '.join(roles) or '(none)'}; your key has the role {g.role}",
        )
    return None


def secure_headers(resp: Response) -> Response:
    """Headers on every response: no MIME sniffing; API answers are never cached."""
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith(("/api/", "/open311/")):
        resp.headers["Cache-Control"] = "no-store"
    return resp


access_log = logging.getLogger("matcher.access")


def started() -> None:
    """Note when the request started (for the access log)."""
    g.started = time.perf_counter()


def log_access(resp: Response) -> Response:
    """One line per request: method, path, status, milliseconds (never a key or a query)."""
    if access_log.isEnabledFor(logging.INFO):
        ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        access_log.info("%s %s %d %.1f ms", request.method, request.path, resp.status_code, ms)
    return resp
