"""Referral holds: units held at a partner for a limited time (:mod:`matcher.holds`)."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, g
from flask.views import MethodView

from matcher.holds import HoldPolicy, place_hold, release_hold
from matcher.store import NotFoundError

from .bodies import idempotency_key, keep_answer, kept_answer, request_digest
from .openapi import IDEMPOTENCY_KEY, KEYED, LOCATION_HEADER, blueprint, path_id_param
from .schemas import HoldList, HoldListArgs, HoldRecord, HoldReleaseArgs, HoldWrite
from .state import is_admin, store

__all__ = ["blp"]

blp = blueprint("holds", __name__, "Referrals hold units at a partner for a limited time")

#: Keeps the Idempotency-Keys of holds apart from those of needs.
SCOPE = "holds "


def _shown(hold: dict[str, Any]) -> dict[str, Any]:
    """Return a hold as the caller sees it: who placed it only for admins, ``mine`` for all."""
    out = {k: v for k, v in hold.items() if k != "actor"} | {"mine": hold["actor"] == g.key_id}
    if is_admin():
        out["actor"] = hold["actor"]
    return out


def hold_policy() -> HoldPolicy:
    """Return the app's hold policy (``HOLD_MINUTES``, ``HOLD_MAX_MINUTES``)."""
    return current_app.extensions["matcher_holds"]  # type: ignore[no-any-return]


@blp.route("/holds")
class Holds(MethodView):
    @blp.arguments(HoldListArgs, location="query")
    @blp.response(200, HoldList)
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List holds, newest first (active only unless ``active=false``)."""
        rows = store().list_holds(
            partner_id=args.get("partner_id"), active_only=args["active"], limit=args["limit"]
        )
        body = {"holds": [_shown(h) for h in rows]}
        return Response(json.dumps(body), mimetype="application/json")

    @blp.arguments(HoldWrite)
    @blp.doc(parameters=[IDEMPOTENCY_KEY])
    @blp.response(201, HoldRecord, headers=LOCATION_HEADER)
    @blp.answers(400, 404, 409, 413, 415, 422, *KEYED)
    def post(self, body: dict[str, Any]) -> Response:
        """Hold units at a partner for a referral (409, with the units free, when too few are).

        With an ``Idempotency-Key``, a retry of the same request answers with the hold the
        first one placed (``Idempotent-Replayed: true``) instead of holding units twice.
        """
        key = idempotency_key()
        digest = request_digest(body)
        st = store()
        with st.transaction():
            kept = kept_answer(st, key, digest, scope=SCOPE) if key else None
            if kept is not None:
                hold = st.get_hold(kept[1]["hold_id"])
                replayed = True
            else:
                hold = place_hold(
                    st,
                    body["partner_id"],
                    body["units"],
                    g.key_id,
                    need_id=body.get("need_id"),
                    minutes=body.get("minutes"),
                    policy=hold_policy(),
                )
                replayed = False
                if key:
                    keep_answer(st, key, digest, 201, {"hold_id": hold["hold_id"]}, scope=SCOPE)
        assert hold is not None
        resp = Response(json.dumps(_shown(hold)), status=201, mimetype="application/json")
        resp.headers["Location"] = f"/api/v1/holds/{hold['hold_id']}"
        if replayed:
            resp.headers["Idempotent-Replayed"] = "true"
        return resp


@blp.route("/holds/<hold_id>", parameters=path_id_param("hold_id"))
class HoldItem(MethodView):
    @blp.response(200, HoldRecord)
    @blp.answers(404, *KEYED)
    def get(self, hold_id: str) -> Response:
        """Get one hold."""
        hold = store().get_hold(hold_id)
        if hold is None:
            raise NotFoundError("hold", hold_id)
        return Response(json.dumps(_shown(hold)), mimetype="application/json")

    @blp.arguments(HoldReleaseArgs, location="query")
    @blp.response(200, HoldRecord)
    @blp.answers(403, 404, 409, *KEYED)
    def delete(self, args: dict[str, Any], hold_id: str) -> Response:
        """Release a hold before it expires: its maker, a planner or an admin."""
        hold = release_hold(
            store(), hold_id, args["reason"], g.key_id,
            may_release_others=g.role in ("planner", "admin"),
        )  # fmt: skip
        return Response(json.dumps(_shown(hold)), mimetype="application/json")
