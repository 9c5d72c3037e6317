"""Routes of deliveries and need outcomes (:mod:`matcher.outcomes` decides; this shapes).

A partner key records and reads the deliveries of its own partnerships only (another
partner's partnership is "not found"). Need outcomes, with residents' feedback, are for
planners and admins.
"""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma
from flask import Response, g
from flask.views import MethodView

from matcher import limits
from matcher.outcomes import NEED_STATUSES, record_delivery, set_outcome
from matcher.reliability import partner_reliability
from matcher.store import NotFoundError

from .bodies import if_match, with_etag
from .openapi import ETAG_HEADER, IF_MATCH, KEYED, LOCATION_HEADER, blueprint, path_id_param
from .partnerships import visible_partnership
from .state import store

__all__ = ["blp"]

blp = blueprint(
    "outcomes", __name__, "What partnerships delivered, and what became of the needs"
)

_DATE = {"pattern": r"^\d{4}-\d{2}-\d{2}$", "example": "2026-11-30"}


class DeliveryWrite(ma.Schema):
    period_start = ma.fields.String(
        required=True, validate=ma.validate.Length(10, 10), metadata=_DATE
    )
    period_end = ma.fields.String(
        required=True, validate=ma.validate.Length(10, 10), metadata=_DATE
    )
    units = ma.fields.Float(
        required=True,
        validate=ma.validate.Range(0, limits.MAX_UNITS),
        metadata={"description": "units delivered over the period"},
    )


class DeliveryRecord(ma.Schema):
    delivery_id = ma.fields.String(required=True)
    partnership_id = ma.fields.String(required=True)
    partner_id = ma.fields.String(required=True)
    period_start = ma.fields.String(required=True)
    period_end = ma.fields.String(required=True)
    units = ma.fields.Float(required=True)
    recorded_at = ma.fields.String(required=True)


class DeliveryList(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(DeliveryRecord), required=True)
    units = ma.fields.Float(required=True, metadata={"description": "units delivered in all"})


class OutcomeWrite(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(NEED_STATUSES))
    date = ma.fields.String(
        required=True,
        validate=ma.validate.Length(10, 10),
        metadata={"description": "the date the status holds from", **_DATE},
    )
    rating = ma.fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=ma.validate.Range(1, 5),
        metadata={"description": "a resident's rating of a resolved need"},
    )
    comment = ma.fields.String(
        load_default="",
        validate=ma.validate.Length(max=limits.MAX_TEXT_CHARS),
        metadata={"description": "a resident's short comment on a resolved need"},
    )


class OutcomeRecord(ma.Schema):
    need_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(NEED_STATUSES))
    date = ma.fields.String(required=True)
    rating = ma.fields.Integer(required=True, allow_none=True)
    comment = ma.fields.String(required=True)
    updated_at = ma.fields.String(required=True)
    version = ma.fields.Integer(required=True)


def _delivery(rec: dict[str, Any]) -> dict[str, Any]:
    """Return a delivery as shown (who recorded it is in the audit log, not here)."""
    return {k: v for k, v in rec.items() if k != "actor"}


@blp.route(
    "/partnerships/<partnership_id>/deliveries", parameters=path_id_param("partnership_id")
)
class PartnershipDeliveries(MethodView):
    @blp.response(200, DeliveryList)
    @blp.answers(404, *KEYED)
    def get(self, partnership_id: str) -> Response:
        """List a partnership's deliveries by period (a partner key: its own only)."""
        visible_partnership(partnership_id)
        rows = store().list_deliveries(partnership_id=partnership_id)
        body = {"results": [_delivery(r) for r in rows],
                "units": round(sum(r["units"] for r in rows), 6)}  # fmt: skip
        return Response(json.dumps(body), mimetype="application/json")

    @blp.arguments(DeliveryWrite)
    @blp.response(201, DeliveryRecord, headers=LOCATION_HEADER)
    @blp.answers(400, 403, 404, 409, 415, *KEYED)
    def post(self, body: dict[str, Any], partnership_id: str) -> Response:
        """Record the units an active or completed partnership delivered over a period.

        One record per partnership and period start (409 for a second); a period of at
        most 366 days, not in the future, not before the offer.
        """
        visible_partnership(partnership_id)
        rec = record_delivery(
            store(), partnership_id, body["period_start"], body["period_end"], body["units"],
            g.key_id, role=g.role, partner_id=g.partner_id if g.role == "partner" else None,
        )  # fmt: skip
        resp = Response(json.dumps(_delivery(rec)), status=201, mimetype="application/json")
        resp.headers["Location"] = f"/api/v1/partnerships/{partnership_id}/deliveries"
        return resp


@blp.route("/needs/<need_id>/outcome", parameters=path_id_param("need_id"))
class NeedOutcome(MethodView):
    @blp.response(200, OutcomeRecord, headers=ETAG_HEADER)
    @blp.answers(404, *KEYED)
    def get(self, need_id: str) -> Response:
        """Get what became of a need, with its feedback (planners and admins)."""
        rec = store().get_outcome(need_id)
        if rec is None:
            raise NotFoundError("need outcome", need_id)
        return _with_etag(rec)

    @blp.arguments(OutcomeWrite)
    @blp.doc(parameters=[{**IF_MATCH, "required": False, "description": "the outcome's ETag "
                          "as last read; omit it only to set the first outcome of a need"}])
    @blp.response(200, OutcomeRecord, headers=ETAG_HEADER)
    @blp.answers(400, 404, 412, 415, 428, *KEYED)
    def put(self, body: dict[str, Any], need_id: str) -> Response:
        """Set a need's status (with its date) and, once resolved, a resident's feedback.

        The first outcome of a need needs no ``If-Match``; changing one needs its ETag
        (428 without, 412 when stale).
        """
        st = store()
        current = st.get_outcome(need_id)
        expected = None if current is None else if_match()
        rec = set_outcome(st, need_id, body, g.key_id, expected_version=expected)
        return _with_etag(rec)


def _with_etag(rec: dict[str, Any]) -> Response:
    """Return an outcome with its ETag; who set it is in the audit log, not here."""
    return with_etag({k: v for k, v in rec.items() if k != "actor"}, rec["need_id"])


class ReliabilityRow(ma.Schema):
    partner_id = ma.fields.String(required=True)
    offers = ma.fields.Integer(required=True, metadata={"description": "answered or lapsed"})
    accepted = ma.fields.Integer(required=True)
    declined = ma.fields.Integer(required=True)
    lapsed = ma.fields.Integer(required=True)
    acceptance = ma.fields.Float(
        required=True, metadata={"description": "(accepted + 2) / (offers + 2)"}
    )
    finished = ma.fields.Integer(
        required=True, metadata={"description": "completed, or cancelled after acceptance"}
    )
    committed_units = ma.fields.Float(required=True)
    delivered_units = ma.fields.Float(required=True)
    reliability = ma.fields.Float(
        required=True,
        metadata={"description": "(sum of the shares delivered + 2) / (finished + 2): the "
                  "factor of expected capacity"},
    )  # fmt: skip


class ReliabilityList(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(ReliabilityRow), required=True)


@blp.route("/reliability")
class Reliability(MethodView):
    @blp.response(200, ReliabilityList)
    @blp.answers(*KEYED)
    def get(self) -> Response:
        """Each partner's acceptance and delivery reliability so far (planners, admins)."""
        frame = partner_reliability(store())
        body = {"results": json.loads(frame.to_json(orient="records"))}
        return Response(json.dumps(body), mimetype="application/json")
