"""The nearby route: partners within a radius, nearest first, with free capacity."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView

import matcher
from matcher import (
    InputValidationError,
    Problem,
    limits,
)

from .openapi import KEYED, blueprint
from .schemas import NearbyArgs, NearbyResponse
from .state import is_admin, nearby_index, neighborhood_lookup

__all__ = ["blp"]

blp = blueprint("resources", __name__, "Partners near a point, with free capacity")


@blp.route("/resources/nearby")
class Nearby(MethodView):
    @blp.arguments(NearbyArgs, location="query")
    @blp.response(200, NearbyResponse)
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """Find partners within a great-circle radius, nearest first, with free capacity.

        With ``free_only``, only partners with free capacity. When none within the radius
        has free capacity, ``nearest_free`` gives the nearest that do (up to 3, within
        500 km), ``statement`` says so and ``escalate_to`` names whom to escalate to in
        the point's neighborhood.
        """
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
        answer = nearby_index(exact=is_admin()).search(
            args["lat"],
            args["lon"],
            args["radius_km"],
            category=category,
            kind=args.get("kind"),
            limit=args["limit"],
            free_only=args["free_only"],
            fallback_km=limits.MAX_SEARCH_RADIUS_KM,
        )
        hood = neighborhood_lookup().locate(args["lat"], args["lon"])
        answer["neighborhood"] = (
            None if hood is None else {k: hood[k] for k in ("neighborhood_id", "name")}
        )
        in_reach = any(r["free_capacity"] > 0 for r in answer["results"])
        # the point's neighborhood is at hand: its contact, without locating it again
        contact = (
            str(hood["escalation_contact"]) if hood is not None
            else neighborhood_lookup().default_contact
        )  # fmt: skip
        answer["escalate_to"] = None if in_reach or not contact else contact
        # the hot path: plain JSON of plain values (NearbyResponse documents it)
        return Response(json.dumps(answer), mimetype="application/json")
