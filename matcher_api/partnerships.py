"""Routes of publishing and partnerships (:mod:`matcher.partnerships` decides; this shapes).

A ``partner`` key is bound to one partner: it lists and reads only that partner's
partnerships and takes only their steps; any other partnership is "not found" to it, so
it cannot even learn that one exists.
"""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma
import numpy as np
from flask import Response, current_app, g
from flask.views import MethodView

from matcher import limits
from matcher.partnerships import (
    MAX_REASON,
    STATES,
    TRANSITIONS,
    OfferPolicy,
    clear_decline,
    publish_plan,
    transition,
)
from matcher.privacy import coarsen
from matcher.store import NotFoundError

from .bodies import if_match, with_etag
from .openapi import ETAG_HEADER, IF_MATCH, KEYED, blueprint, path_id_param, plan_id_param
from .state import store

__all__ = ["blp", "visible_partnership"]

blp = blueprint(
    "partnerships",
    __name__,
    "Publish a plan; its assignments become partnerships that partners accept or decline",
)

_STEPS = sorted({b for (_, b) in TRANSITIONS})


class PublishRequest(ma.Schema):
    offer_days = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0.001, 365),
        metadata={"description": "days an offer waits for its answer before it lapses "
                  "(default: the service's OFFER_DAYS)"},
    )  # fmt: skip


class PublishResult(ma.Schema):
    plan_id = ma.fields.String(required=True)
    published_at = ma.fields.String(required=True)
    superseded = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "the plan in force before"}
    )
    offered = ma.fields.Integer(required=True, metadata={"description": "new offers"})
    units_offered = ma.fields.Float(required=True)
    carried = ma.fields.Integer(
        required=True,
        metadata={"description": "agreements and declines carried to this plan's clusters"},
    )
    unplaced = ma.fields.Integer(
        required=True, metadata={"description": "agreements whose needs are all gone"}
    )
    withdrawn = ma.fields.Integer(
        required=True, metadata={"description": "unanswered offers of earlier plans, cancelled"}
    )


class PartnershipRecord(ma.Schema):
    partnership_id = ma.fields.String(required=True)
    plan_id = ma.fields.String(required=True, metadata={"description": "the plan it is in now"})
    origin_plan_id = ma.fields.String(
        required=True, metadata={"description": "the plan that first offered it"}
    )
    cluster_id = ma.fields.String(required=True)
    partner_id = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    neighborhood = ma.fields.String(required=True)
    units = ma.fields.Float(required=True)
    centroid_lat = ma.fields.Float(required=True, metadata={"description": "the cluster's centre"})
    centroid_lon = ma.fields.Float(required=True)
    state = ma.fields.String(required=True, validate=ma.validate.OneOf(STATES))
    reason = ma.fields.String(required=True)
    cleared = ma.fields.Boolean(
        required=True, metadata={"description": "a declined pair a planner let be proposed again"}
    )
    offered_at = ma.fields.String(required=True)
    expires_at = ma.fields.String(
        required=True, metadata={"description": "an offer not answered by then lapses"}
    )
    answered_at = ma.fields.String(required=True, allow_none=True)
    updated_at = ma.fields.String(required=True)
    version = ma.fields.Integer(required=True)


class PartnershipPage(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(PartnershipRecord), required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True)


class PartnershipListArgs(ma.Schema):
    state = ma.fields.String(validate=ma.validate.OneOf(STATES))
    partner_id = ma.fields.String(validate=ma.validate.Length(1, limits.MAX_ID_CHARS))
    neighborhood = ma.fields.String(validate=ma.validate.Length(max=limits.MAX_ID_CHARS))
    category = ma.fields.String(validate=ma.validate.Length(1, limits.MAX_ID_CHARS))
    plan_id = ma.fields.String(validate=ma.validate.Regexp(r"^[0-9a-f]{32}$"))
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(1, limits.MAX_PAGE))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, limits.MAX_OFFSET))


class PartnershipStep(ma.Schema):
    to = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(_STEPS),
        metadata={"description": "offered -> accepted | declined | cancelled; accepted -> "
                  "active | cancelled; active -> completed | cancelled"},
    )  # fmt: skip
    reason = ma.fields.String(
        load_default="",
        validate=ma.validate.Length(max=MAX_REASON),
        metadata={"description": "why (needed to decline or cancel)"},
    )


def offer_policy() -> OfferPolicy:
    """Return the app's offer policy (``OFFER_DAYS``, ``OFFER_MAX_DAYS``)."""
    return current_app.extensions["matcher_offers"]  # type: ignore[no-any-return]


def _own() -> str | None:
    """Return the partner a ``partner`` key is bound to (None for the department's roles)."""
    return g.partner_id if g.role == "partner" else None


def _shown(rec: dict[str, Any]) -> dict[str, Any]:
    """Return a partnership as the caller sees it.

    A partner key sees the cluster's centre on the ~500 m privacy grid: the centre of a
    cluster of one need is the point a resident reported.
    """
    if g.role != "partner":
        return rec
    lat, lon = coarsen(np.array([rec["centroid_lat"]]), np.array([rec["centroid_lon"]]))
    return rec | {"centroid_lat": float(lat[0]), "centroid_lon": float(lon[0])}


def _with_etag(rec: dict[str, Any]) -> Response:
    return with_etag(_shown(rec), rec["partnership_id"])


def visible_partnership(partnership_id: str) -> dict[str, Any]:
    """Return a partnership the caller may see; a partner key sees only its own (else 404)."""
    rec = store().get_partnership(partnership_id)
    own = _own()
    if rec is None or (g.role == "partner" and rec["partner_id"] != own):
        raise NotFoundError("partnership", partnership_id)
    return rec


@blp.route("/plans/<plan_id>/publish", parameters=plan_id_param())
class PlanPublish(MethodView):
    @blp.arguments(PublishRequest)
    @blp.response(200, PublishResult)
    @blp.answers(403, 404, 409, 415, 422, *KEYED)
    def post(self, args: dict[str, Any], plan_id: str) -> Response:
        """Publish a done plan: it becomes the plan in force and its assignments are offered.

        Unanswered offers of earlier plans are withdrawn; accepted, active and declined
        partnerships are carried to this plan's clusters. 409 when the plan is not done,
        is a what-if scenario, or is in force already.
        """
        result = publish_plan(
            store(), plan_id, g.key_id, offer_days=args["offer_days"], policy=offer_policy()
        )
        return Response(json.dumps(result), mimetype="application/json")


@blp.route("/partnerships")
class Partnerships(MethodView):
    @blp.arguments(PartnershipListArgs, location="query")
    @blp.response(200, PartnershipPage)
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List partnerships, newest offer first; a partner key sees only its own."""
        own = _own()
        asked = args.get("partner_id")
        filters: dict[str, Any] = {
            "states": (args["state"],) if args.get("state") else None,
            "partner_id": own if own is not None else asked,
            "neighborhood": args.get("neighborhood"),
            "category": args.get("category"),
            "plan_id": args.get("plan_id"),
        }
        if own is not None and asked is not None and asked != own:
            rows, total = [], 0  # another partner's: nothing, as if there were none
        else:
            rows = store().list_partnerships(**filters, limit=args["limit"],
                                             offset=args["offset"])  # fmt: skip
            total = store().count_partnerships(**filters)
        body = {"results": [_shown(r) for r in rows], "limit": args["limit"],
                "offset": args["offset"], "total": total}  # fmt: skip
        return Response(json.dumps(body), mimetype="application/json")


@blp.route("/partnerships/<partnership_id>", parameters=path_id_param("partnership_id"))
class PartnershipItem(MethodView):
    @blp.response(200, PartnershipRecord, headers=ETAG_HEADER)
    @blp.answers(404, *KEYED)
    def get(self, partnership_id: str) -> Response:
        """Get one partnership with its ETag."""
        return _with_etag(visible_partnership(partnership_id))


@blp.route(
    "/partnerships/<partnership_id>/transitions", parameters=path_id_param("partnership_id")
)
class PartnershipSteps(MethodView):
    @blp.arguments(PartnershipStep)
    @blp.doc(parameters=[IF_MATCH])
    @blp.response(200, PartnershipRecord, headers=ETAG_HEADER)
    @blp.answers(400, 403, 404, 409, 412, 415, 422, 428, *KEYED)
    def post(self, args: dict[str, Any], partnership_id: str) -> Response:
        """Move a partnership to its next state; needs ``If-Match`` (412 when stale).

        Of two steps sent with the same ETag, one is taken and the other gets 412.
        409 when the state does not allow the step (e.g. a lapsed offer).
        """
        expected = if_match()
        visible_partnership(partnership_id)  # a partner key: another partner's is not found
        rec = transition(
            store(), partnership_id, args["to"], expected, g.key_id,
            role=g.role, partner_id=_own(), reason=args["reason"],
        )  # fmt: skip
        return _with_etag(rec)


@blp.route("/partnerships/<partnership_id>/clear", parameters=path_id_param("partnership_id"))
class PartnershipClear(MethodView):
    @blp.doc(parameters=[IF_MATCH])
    @blp.response(200, PartnershipRecord, headers=ETAG_HEADER)
    @blp.answers(400, 403, 404, 409, 412, 428, *KEYED)
    def post(self, partnership_id: str) -> Response:
        """Clear a decline, so that a re-plan may propose the pair again (planners, admins)."""
        expected = if_match()
        return _with_etag(clear_decline(store(), partnership_id, expected, g.key_id))
