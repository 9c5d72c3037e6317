"""Routes of plans: start one or a what-if scenario, read its status, files and map.

Plans run in :mod:`matcher.jobs` (a plan worker); these routes only queue and read them.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from flask import Response, current_app, g, request
from flask.views import MethodView

import matcher
from matcher import (
    InputValidationError,
    MatchConfig,
    Problem,
    limits,
)
from matcher.compare import OPTIONAL_PLAN_FILES, REQUIRED_PLAN_FILES, compare_plans, headline
from matcher.config import DEFAULT_RECRUIT_RADIUS_KM
from matcher.jobs import SCENARIO_OPTIONS
from matcher.mapview import MAP_PARTS, map_bytes, map_part, map_payload
from matcher.output import PLAN_FILES, csv_rows
from matcher.report import REPORT_NAME
from matcher.store import (
    PENDING_STATUSES,
    NotFoundError,
    PlanRecord,
)

from .bodies import listish
from .openapi import KEYED, LOCATION_HEADER, blueprint, plan_id_param
from .problems import problem, too_many, unprocessable
from .schemas import (
    AssignmentRows,
    LatestPlanSchema,
    MapPartArgs,
    PlanComparisonSchema,
    PlanListArgs,
    PlanMapSchema,
    PlanPage,
    PlanQueued,
    PlanRequest,
    PlanStatus,
    ScenarioRequest,
)
from .state import check_plan_privacy, grid_plan, is_admin, plan_in_force, plan_json, store

__all__ = ["blp"]

blp = blueprint(
    "plans", __name__, "Plans and what-if scenarios: queue them, read their status, files and map"
)


@blp.route("/plans")
class Plans(MethodView):
    @blp.arguments(PlanListArgs, location="query")
    @blp.response(200, PlanPage)
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List plans and what-if scenarios, newest first (filters: kind, status).

        Each with who started it (key id and role), whether it is the plan in force and,
        when done, its headline figures; ``total`` counts the plans that pass the
        filters and ``next`` is the URL of the next page (null on the last).
        """
        limit, offset = args["limit"], args["offset"]
        filters = {k: args[k] for k in ("kind", "status") if args.get(k) is not None}
        st = store()
        total = st.count_plans(**filters)
        rows = st.list_plans(limit, offset, **filters)
        roles = {k.key_id: k.role for k in st.list_api_keys()}
        in_force = plan_in_force()
        in_force_id = None if in_force is None else in_force.plan_id
        after = offset + limit
        body = {
            "results": [_listed(p, roles, in_force_id) for p in rows],
            "limit": limit,
            "offset": offset,
            "total": total,
            "next": f"/api/v1/plans?{urlencode({'limit': limit, 'offset': after} | filters)}"
            if after < total and after <= limits.MAX_PLAN_OFFSET
            else None,
        }
        return Response(json.dumps(body, default=str), mimetype="application/json")

    @blp.arguments(PlanRequest)
    @blp.response(202, PlanQueued, headers=LOCATION_HEADER)
    @blp.answers(403, 413, 415, 422, *KEYED)
    def post(self, args: dict[str, Any]) -> Response:
        """Start a plan over the stored data as a background job (202 + Location).

        Equity options (``min_coverage``, ``vulnerability_column``, ...) need stored
        neighborhoods (or needs with a neighborhood); ``recruit_k`` adds recruit sites;
        ``report`` adds report.html.
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
        if args["report"]:
            parameters["report"] = True
        if args["publish"]:
            parameters["publish"] = True
        if not args["agreements"]:
            parameters["agreements"] = False
        if args["reliability"]:
            parameters["reliability"] = True
        created = _queue_plan(parameters)
        if isinstance(created, Response):
            return created
        return _queued(created)


def _kind(rec: PlanRecord) -> tuple[str, str | None]:
    """Return whether a plan is a ``plan`` or a ``scenario``, and a scenario's base plan."""
    scenario = (rec.parameters or {}).get("scenario")
    if scenario is None:
        return "plan", None
    base = scenario.get("base_plan") if isinstance(scenario, dict) else None
    return "scenario", None if base is None else str(base)


def _listed(rec: PlanRecord, roles: dict[str, str], in_force_id: str | None) -> dict[str, Any]:
    """Return a plan as ``GET /plans`` lists it.

    A plan made from volunteers' exact points (an older store) is ``admin_only``: other
    roles get neither its headline nor its error (as ``check_plan_privacy`` refuses them
    the plan itself).
    """
    hidden = not is_admin() and not grid_plan(rec)
    figures = None
    if rec.status == "done" and rec.summary and not hidden:
        try:
            figures = headline(rec.summary["metrics"])
        except (KeyError, TypeError, AttributeError):  # a summary of an older store
            figures = None
    return _compared(rec) | {
        "status": rec.status,
        "started_at": rec.started_at,
        "created_by": rec.created_by,
        "created_by_role": roles.get(rec.created_by),
        "in_force": rec.plan_id == in_force_id,
        "published_at": rec.published_at,
        "admin_only": not grid_plan(rec),
        "headline": figures,
        "error": None if hidden else rec.error,
    }


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
    return too_many(
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


@blp.route("/plans/<plan_id>/scenarios", parameters=plan_id_param())
class PlanScenarios(MethodView):
    @blp.arguments(ScenarioRequest)
    @blp.response(202, PlanQueued, headers=LOCATION_HEADER)
    @blp.answers(403, 404, 409, 413, 415, 422, *KEYED)
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
        # the base plan's recruit sites and report.html: a what-if has them too
        parameters |= {k: base.parameters[k] for k in SCENARIO_OPTIONS
                       if k in (base.parameters or {})}  # fmt: skip
        created = _queue_plan(parameters)
        if isinstance(created, Response):
            return created
        return _queued(created, base_plan=plan_id)


def _scenario_additions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate added partners with matcher's own rules (all rows, all problems at once)."""
    if not rows:
        return []
    frame = pd.DataFrame([{k: listish(v) for k, v in r.items()} for r in rows])
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


@blp.route("/plans/<plan_id>", parameters=plan_id_param())
class PlanItem(MethodView):
    @blp.response(200, PlanStatus)
    @blp.answers(404, *KEYED)
    def get(self, plan_id: str) -> Response:
        """Get a plan's status, and its summary when done."""
        found = store().get_plan(plan_id)
        if found is None:
            raise NotFoundError("plan", plan_id)
        check_plan_privacy(found)
        rec = plan_json(found)
        if rec.get("status") == "done":
            rec["files"] = {
                n: f"/api/v1/plans/{plan_id}/files/{n}" for n in PLAN_FILES if n in found.files
            }
            rec["assignments"] = f"/api/v1/plans/{plan_id}/assignments"
        return Response(json.dumps(rec, default=str), mimetype="application/json")


@blp.route(
    "/plans/<plan_id>/files/<name>",
    parameters=[
        *plan_id_param(),
        {"in": "path", "name": "name", "required": True,
         "schema": {"type": "string", "enum": list(PLAN_FILES)}},
    ],
)  # fmt: skip
class PlanFile(MethodView):
    @blp.response(200, {"type": "string"}, content_type="text/csv", description="a CSV file")
    @blp.alt_response(
        200,
        schema={"type": "object", "description": "a GeoJSON FeatureCollection"},
        content_type="application/geo+json",
        success=True,
    )
    @blp.alt_response(
        200,
        schema={"type": "object", "description": "summary.json or scenario.json"},
        content_type="application/json",
        success=True,
    )
    @blp.alt_response(
        200,
        schema={
            "type": "string",
            "description": "report.html (plans started with report: true): a download "
            "(Content-Disposition: attachment) under a Content-Security-Policy that allows "
            "no script, no connection and nothing but its own inline styles and data: images",
        },
        content_type="text/html",
        success=True,
    )
    @blp.answers(404, *KEYED)
    def get(self, plan_id: str, name: str) -> Response:
        """Get a file of a finished plan, byte for byte what ``matcher plan`` writes."""
        if name not in PLAN_FILES:
            return problem(404, "Not Found", f"no file {name!r}; files: {', '.join(PLAN_FILES)}")
        found = store().get_plan(plan_id)
        check_plan_privacy(found)
        content = store().plan_file(plan_id, name)
        if content is None:
            why = "not done?"
            if found is not None and found.status == "done":
                why = (
                    "not asked for: a plan has one when started with report: true"
                    if name == REPORT_NAME
                    else "the plan has no such output"
                )
            return problem(404, "Not Found", f"plan {plan_id!r} has no file {name!r} ({why})")
        ext = name.rsplit(".", 1)[1]
        mimetype = {
            "csv": "text/csv",
            "geojson": "application/geo+json",
            "json": "application/json",
            "html": "text/html",
        }[ext]
        resp = Response(content, mimetype=mimetype)
        if ext == "html":  # a download that, opened, can run nothing and load nothing
            resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
            resp.headers["Content-Security-Policy"] = REPORT_CSP
            resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


#: The Content-Security-Policy of report.html: it is self-contained (inline styles, PNG
#: maps as data: URIs, no script, font, link or form), so it needs nothing else; sandboxed,
#: it runs no script even if one got in.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'; sandbox"
)


@blp.route("/plans/<plan_id>/assignments", parameters=plan_id_param())
class PlanAssignments(MethodView):
    @blp.response(200, AssignmentRows)
    @blp.answers(404, *KEYED)
    def get(self, plan_id: str) -> Response:
        """Get a finished plan's assignments as JSON (the content of assignments.csv)."""
        check_plan_privacy(store().get_plan(plan_id))
        content = store().plan_file(plan_id, "assignments.csv")
        if content is None:
            return problem(404, "Not Found", f"plan {plan_id!r} is unknown or not done")
        return Response(json.dumps({"results": csv_rows(content)}), mimetype="application/json")


@blp.route(
    "/plans/<plan_id>/compare/<other_id>",
    parameters=[
        *plan_id_param(),
        {"in": "path", "name": "other_id", "required": True,
         "description": "the plan to compare with (b): 32 hex digits",
         "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
    ],
)  # fmt: skip
class PlanCompare(MethodView):
    @blp.response(200, PlanComparisonSchema)
    @blp.answers(403, 404, 409, *KEYED)
    def get(self, plan_id: str, other_id: str) -> Response:
        """Compare two finished plans (b: other_id) with a (plan_id), from their files.

        Per cluster when the plans have the same clusters (a scenario and its base
        plan do; else ``clusters_comparable`` is false and ``reason`` says why), per
        partner whose load differs and per neighborhood, with the totals; every delta
        is b minus a, rounded as the files are (6 decimals). ``matcher compare`` gives
        the same from two plan directories.
        """
        st = store()
        recs = []
        for pid in (plan_id, other_id):
            rec = st.get_plan(pid)
            if rec is None:
                raise NotFoundError("plan", pid)
            recs.append(rec)
        for rec in recs:
            check_plan_privacy(rec)
        for rec in recs:
            if rec.status != "done":
                return problem(
                    409,
                    "Conflict",
                    f"plan {rec.plan_id!r} is {rec.status}; a comparison needs two finished "
                    "(done) plans",
                )
        for rec in recs:
            missing = [n for n in REQUIRED_PLAN_FILES if n not in rec.files]
            if missing:
                return problem(
                    409,
                    "Conflict",
                    f"plan {rec.plan_id!r} has no {', '.join(missing)}: it cannot be compared",
                )
        # the checks above run on every request; only the comparison itself is cached
        try:
            body = _comparison_body(recs[0], recs[1])
        except InputValidationError as exc:
            return problem(409, "Conflict", f"the plans cannot be compared: {exc.report()}")
        return Response(body, mimetype="application/json")


#: Comparisons kept per app (per server process): the most recently used.
COMPARE_CACHE_SIZE = 32
_compare_lock = threading.Lock()


def _comparison_body(a: PlanRecord, b: PlanRecord) -> bytes:
    """Return the JSON body comparing two finished plans, cached per (a, b).

    Finished plans never change (their files and records are final), so the body of a
    pair is computed once. It is the same for every role (nothing in it depends on the
    caller: the route's privacy check decides who reads it), hence keyed by the plans
    only. A comparison that fails is not cached.
    """
    key = (a.plan_id, b.plan_id)
    with _compare_lock:
        cache: OrderedDict[tuple[str, str], bytes] = current_app.extensions.setdefault(
            "matcher_compare", OrderedDict()
        )
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
    st = store()
    files = []
    for rec in (a, b):
        names = [n for n in (*REQUIRED_PLAN_FILES, *OPTIONAL_PLAN_FILES) if n in rec.files]
        files.append({n: st.plan_file(rec.plan_id, n) for n in names})
    result = compare_plans(files[0], files[1], labels=key)
    doc = {"a": _compared(a), "b": _compared(b)} | result.to_dict()
    body = json.dumps(doc, allow_nan=False).encode()
    with _compare_lock:
        cache[key] = body
        cache.move_to_end(key)
        while len(cache) > COMPARE_CACHE_SIZE:
            cache.popitem(last=False)
    return body


def _compared(rec: PlanRecord) -> dict[str, Any]:
    """Return which plan a side of a comparison is (the start of a listed plan too)."""
    kind, base = _kind(rec)
    return {
        "plan_id": rec.plan_id,
        "url": f"/api/v1/plans/{rec.plan_id}",
        "kind": kind,
        "base_plan": base,
        "created_at": rec.created_at,
        "finished_at": rec.finished_at,
        "parameters": rec.parameters or {},
    }


@blp.route("/plans/latest")
class LatestPlan(MethodView):
    @blp.response(200, LatestPlanSchema)
    @blp.answers(*KEYED)
    def get(self) -> Response:
        """Get the plan in force and the plans queued or running (what-if scenarios excluded)."""
        latest = plan_in_force()
        pending = [
            plan_json(p)
            for p in store().list_plans(50)
            if p.status in PENDING_STATUSES and "scenario" not in (p.parameters or {})
        ]
        body = {"plan": plan_json(latest) if latest else None, "pending": pending}
        return Response(json.dumps(body, default=str), mimetype="application/json")


@blp.route("/plans/<plan_id>/map", parameters=plan_id_param())
class PlanMap(MethodView):
    @blp.arguments(MapPartArgs, location="query")
    @blp.response(200, PlanMapSchema, content_type="application/geo+json")
    @blp.answers(404, *KEYED)
    def get(self, args: dict[str, Any], plan_id: str) -> Response:
        """Get a finished plan as one GeoJSON for the map.

        Clusters, partners, explained assignments and neighborhoods with their coverage;
        ``part=base`` all but the assignment lines, ``part=lines`` those alone (the map
        page draws the base first).
        """
        found = store().get_plan(plan_id)
        if found is None:
            raise NotFoundError("plan", plan_id)
        check_plan_privacy(found)
        if found.status != "done" or "plan.geojson" not in found.files:
            return problem(404, "Not Found", f"plan {plan_id!r} is {found.status}, not done")
        part = args["part"]
        compressed = store().plan_file(plan_id, MAP_PARTS[part])
        if compressed is None:  # a plan stored before map payloads (or parts) were: built now
            names = [n for n in found.files if n not in MAP_PARTS.values()]
            files = {n: store().plan_file(plan_id, n) or b"" for n in names}
            hoods = store().neighborhoods_frame()
            payload = map_payload(plan_id, files, found.summary or {}, hoods)
            compressed = map_bytes(map_part(payload, part))
        if "gzip" in request.accept_encodings:
            resp = Response(compressed, mimetype="application/geo+json")
            resp.headers["Content-Encoding"] = "gzip"
        else:
            resp = Response(gzip.decompress(compressed), mimetype="application/geo+json")
        resp.headers["Vary"] = "Accept-Encoding"
        return resp
