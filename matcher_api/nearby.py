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
)

from .openapi import KEYED, blueprint
from .schemas import NearbyArgs, NearbyResponse
from .state import is_admin, nearby_index

__all__ = ["blp"]

blp = blueprint("resources", __name__, "Partners near a point, with free capacity")


@blp.route("/resources/nearby")
class Nearby(MethodView):
    @blp.arguments(NearbyArgs, location="query")
    @blp.response(200, NearbyResponse)
    @blp.answers(*KEYED)
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
        results = nearby_index(exact=is_admin()).query(
            args["lat"],
            args["lon"],
            args["radius_km"],
            category=category,
            kind=args.get("kind"),
            limit=args["limit"],
        )
        # the hot path: plain JSON of plain values (NearbyResponse documents it)
        return Response(json.dumps({"results": results}), mimetype="application/json")
