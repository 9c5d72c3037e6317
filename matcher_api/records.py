"""Routes of stored records: imports of whole tables, partners and needs one by one."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from flask import Response, g, request
from flask.views import MethodView

import matcher
from matcher import (
    Problem,
    access,
)
from matcher._validate import NEED_FIELDS, PARTNER_FIELDS
from matcher.intake import new_need_id, recommend_for_need, take_report
from matcher.io import Upload
from matcher.store import (
    NotFoundError,
)
from matcher.store.entities import shape_partners

from .bodies import (
    idempotency_key,
    if_match,
    json_body,
    keep_answer,
    kept_answer,
    record_body,
    request_digest,
    validated,
    with_etag,
)
from .openapi import (
    ETAG_HEADER,
    IDEMPOTENCY_KEY,
    IF_MATCH,
    KEYED,
    LOCATION_HEADER,
    blueprint,
    path_id_param,
    request_json,
)
from .problems import problem
from .schemas import (
    GeoJSONUpload,
    ImportResult,
    LinkedReportArgs,
    LinkedReportList,
    NeedIntake,
    NeedPage,
    NeedRecord,
    NeedReplace,
    NeedReport,
    PageArgs,
    PartnerListArgs,
    PartnerPage,
    PartnerRecord,
    PartnerReplace,
    PartnerWrite,
    PointCollection,
)
from .state import (
    forget_revision,
    intake_policy,
    is_admin,
    latest_model,
    nearby_index,
    neighborhood_lookup,
    store,
)

__all__ = ["blp"]

blp = blueprint(
    "records", __name__, "Stored partners and needs: import tables, read and write records"
)


def _partner(partner_id: str) -> dict[str, Any]:
    """Return a partner as the caller may see it (volunteers coarsened unless admin)."""
    rec = store().get_partner(partner_id, exact=is_admin())
    if rec is None:
        raise NotFoundError("partner", partner_id)
    return rec


def _as_seen(stored: dict[str, Any]) -> dict[str, Any]:
    """Return a record a write stored, as the caller may see it.

    A write answers with what it stored, not with a second read: another writer may
    have changed the partner in between, and its value and ETag are not this write's.
    """
    return shape_partners([stored], is_admin())[0]


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


@blp.route("/imports/<any(needs, partners, neighborhoods):kind>")
class Imports(MethodView):
    @blp.doc(
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
    @blp.response(201, ImportResult)
    @blp.answers(400, 403, 404, 413, 415, *KEYED)
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


@blp.route("/partners")
class Partners(MethodView):
    @blp.arguments(PartnerListArgs, location="query")
    @blp.response(200, PartnerPage)
    @blp.alt_response(
        200, schema=PointCollection, content_type="application/geo+json", success=True
    )
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List partners (volunteers coarsened unless admin)."""
        rows = store().list_partners(
            limit=args["limit"], offset=args["offset"], kind=args.get("kind"), exact=is_admin()
        )
        return _page(rows, args)

    @blp.doc(requestBody=request_json(PartnerWrite))
    @blp.response(201, PartnerRecord, headers=ETAG_HEADER | LOCATION_HEADER)
    @blp.answers(400, 403, 409, 413, 415, *KEYED)
    def post(self) -> Response:
        """Create a partner."""
        body = record_body(json_body(), PARTNER_FIELDS, "partner_id", None)
        rec = validated(body, matcher.read_partners, "partner (request body)")
        created = store().create_partner(rec, actor=g.key_id)
        resp = with_etag(_as_seen(created), created["partner_id"])
        resp.status_code = 201
        resp.headers["Location"] = f"/api/v1/partners/{created['partner_id']}"
        return resp


@blp.route("/partners/<path:partner_id>", parameters=path_id_param("partner_id"))
class PartnerItem(MethodView):
    @blp.response(200, PartnerRecord, headers=ETAG_HEADER)
    @blp.answers(404, *KEYED)
    def get(self, partner_id: str) -> Response:
        """Get one partner with its ETag."""
        return with_etag(_partner(partner_id), partner_id)

    @blp.doc(parameters=[IF_MATCH], requestBody=request_json(PartnerReplace))
    @blp.response(200, PartnerRecord, headers=ETAG_HEADER)
    @blp.answers(400, 403, 404, 412, 413, 415, 428, *KEYED)
    def put(self, partner_id: str) -> Response:
        """Replace a partner; needs ``If-Match`` with its current ETag (412 when stale)."""
        expected = if_match()
        body = record_body(json_body(), PARTNER_FIELDS, "partner_id", partner_id)
        current = store().get_partner(partner_id, exact=True)
        if current is None:
            raise NotFoundError("partner", partner_id)
        body = access.partner_write(g.role, current, body)
        rec = validated(body, matcher.read_partners, "partner (request body)")
        stored = store().update_partner(partner_id, rec, expected_version=expected, actor=g.key_id)
        return with_etag(_as_seen(stored), partner_id)

    @blp.doc(parameters=[IF_MATCH])
    @blp.response(204)
    @blp.answers(400, 403, 404, 412, 428, *KEYED)
    def delete(self, partner_id: str) -> Response:
        """Delete a partner; needs ``If-Match``. Only an admin deletes a volunteer."""
        expected = if_match()
        current = store().get_partner(partner_id, exact=True)
        if current is None:
            raise NotFoundError("partner", partner_id)
        access.partner_delete(g.role, current)
        store().delete_partner(partner_id, expected_version=expected, actor=g.key_id)
        return Response(status=204)


def report_concern(
    raw: dict[str, Any], key: str | None, scope: str = ""
) -> tuple[int, dict[str, Any], bool]:
    """Take a reported concern: a new need, or a report linked to the need it duplicates.

    The one intake of ``POST /needs`` and of Open311's ``POST requests``: ``raw`` is a need
    record (JSON types) with an optional ``note``; ``key`` the request's Idempotency-Key
    (``scope`` keeps the keys of different routes apart).

    Returns
    -------
    tuple
        ``(status, answer, replayed)``: 201 (a new need) or 200 (linked) with the intake
        answer; 410 with ``{"detail": ...}`` when a replayed report's need has been deleted.
    """
    note = raw.get("note", "")
    body = record_body({k: v for k, v in raw.items() if k != "note"}, NEED_FIELDS,
                       "need_id", None)  # fmt: skip
    digest = request_digest(raw)
    st = store()
    with st.transaction():
        kept = kept_answer(st, key, digest, scope) if key else None
        if kept is not None:
            (status, outcome), replayed = kept, True
        else:
            if not body.get("need_id"):
                body["need_id"] = new_need_id()
            rec = validated(body, matcher.read_needs, "need (request body)")
            if not rec.get("neighborhood"):
                rec["neighborhood"] = neighborhood_lookup().neighborhood_id(
                    float(rec["lat"]), float(rec["lon"])
                )
            report = take_report(st, rec, g.key_id, intake_policy(), note=note)
            outcome = {
                "need_id": report.need["need_id"],
                "created": report.created,
                "report_id": report.report_id,
                "intake": report.statement,
            }
            status, replayed = (201 if report.created else 200), False
            if key:
                keep_answer(st, key, digest, status, outcome, scope)
    forget_revision()  # written since it was read: ask the store again
    need = st.get_need(str(outcome["need_id"]))
    if need is None:  # deleted since the first answer
        return 410, {"detail": f"the report was taken (id {outcome['report_id']}), but need "
                     f"{outcome['need_id']!r} has been deleted since"}, replayed  # fmt: skip
    result = recommend_for_need(need, nearby_index(exact=is_admin()), latest_model())
    contact = neighborhood_lookup().contact_at(float(need["lat"]), float(need["lon"]))
    out = {
        "need": need,
        "created": outcome["created"],
        "report_id": outcome["report_id"],
        "linked_to": None if outcome["created"] else need["need_id"],
        "intake": outcome["intake"],
        "cluster_id": result.cluster_id,
        "statement": result.statement,
        "recommendations": result.recommendations,
        "partners_in_reach": result.reachable,
        # the next step when no partner can take it: whom to escalate to there
        "escalate_to": None if result.recommendations or not contact else contact,
    }
    return status, out, replayed


@blp.route("/needs")
class Needs(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, NeedPage)
    @blp.alt_response(
        200, schema=PointCollection, content_type="application/geo+json", success=True
    )
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List needs (JSON, or GeoJSON with ``format=geojson``)."""
        rows = store().list_needs(limit=args["limit"], offset=args["offset"])
        return _page(rows, args)

    @blp.doc(
        requestBody=request_json(NeedReport),
        parameters=[IDEMPOTENCY_KEY],
    )
    @blp.response(201, NeedIntake, headers=LOCATION_HEADER)
    @blp.alt_response(200, schema=NeedIntake, description="linked to the need it duplicates, "
                      "or the replay of a request made with the same Idempotency-Key",
                      success=True)  # fmt: skip
    @blp.answers(400, 409, 413, 415, 422, *KEYED)
    def post(self) -> Response:
        """Report a concern: stored as a new need, or linked to the need it duplicates.

        The server gives an id (``r-...``) when none is sent, fills in the neighborhood and
        ``reported_at``; an existing id is 409 (never an overwrite). A need of the same
        category close by in space and time takes the report as a linked report (200)
        instead of counting its demand twice. With an ``Idempotency-Key``, a retry of the
        same request answers as the first did (``Idempotent-Replayed: true``), and the key
        sent with another body is 422.
        """
        status, out, replayed = report_concern(json_body(), idempotency_key())
        if status == 410:
            return problem(410, "Gone", out["detail"])
        need = out["need"]
        resp = Response(json.dumps(out), status=status, mimetype="application/json")
        resp.headers["Location"] = f"/api/v1/needs/{need['need_id']}"
        if replayed:
            resp.headers["Idempotent-Replayed"] = "true"
        return resp


@blp.route("/linked-reports")
class LinkedReports(MethodView):
    @blp.arguments(LinkedReportArgs, location="query")
    @blp.response(200, LinkedReportList)
    @blp.answers(404, *KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List the reports linked to a need as its near duplicates, oldest first.

        Who reported each is shown to admins only (``mine`` tells a reporter its own).
        """
        need_id = args["need_id"]
        if store().get_need(need_id) is None:
            raise NotFoundError("need", need_id)
        rows = []
        for rep in store().linked_reports(need_id):
            row = {k: v for k, v in rep.items() if k != "actor"} | {
                "mine": rep["actor"] == g.key_id
            }
            if is_admin():
                row["actor"] = rep["actor"]
            rows.append(row)
        return Response(json.dumps({"reports": rows}), mimetype="application/json")


@blp.route("/needs/<path:need_id>", parameters=path_id_param("need_id"))
class NeedItem(MethodView):
    @blp.response(200, NeedRecord, headers=ETAG_HEADER)
    @blp.answers(404, *KEYED)
    def get(self, need_id: str) -> Response:
        """Get one need with its ETag."""
        rec = store().get_need(need_id)
        if rec is None:
            raise NotFoundError("need", need_id)
        return with_etag(rec, need_id)

    @blp.doc(parameters=[IF_MATCH], requestBody=request_json(NeedReplace))
    @blp.response(200, NeedRecord, headers=ETAG_HEADER)
    @blp.answers(400, 403, 404, 412, 413, 415, 428, *KEYED)
    def put(self, need_id: str) -> Response:
        """Replace a need; needs ``If-Match`` (412 when stale)."""
        expected = if_match()
        body = record_body(json_body(), NEED_FIELDS, "need_id", need_id)
        rec = validated(body, matcher.read_needs, "need (request body)")
        return with_etag(
            store().update_need(need_id, rec, expected_version=expected, actor=g.key_id), need_id
        )

    @blp.doc(parameters=[IF_MATCH])
    @blp.response(204)
    @blp.answers(400, 403, 404, 412, 428, *KEYED)
    def delete(self, need_id: str) -> Response:
        """Delete a need; needs ``If-Match``."""
        store().delete_need(need_id, expected_version=if_match(), actor=g.key_id)
        return Response(status=204)
