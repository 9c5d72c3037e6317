"""Route of the impact analysis (:mod:`matcher.impact` computes; this shapes).

``GET /impact`` compares new needs; ``POST /impact`` with an events file as a
``text/csv`` body compares the events too. Planners and admins only: the cells are
neighborhood x category counts of residents' reports.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, request
from flask.views import MethodView

from matcher.impact import MAX_WINDOW_DAYS, ImpactResult, parse_windows, store_impact
from matcher.output import csv_bytes

from .openapi import KEYED, blueprint
from .state import store

__all__ = ["blp"]

blp = blueprint("impact", __name__, "Did needs and incidents change where partnerships served?")

_WINDOW = {
    "pattern": r"^\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2}$",
    "description": f"FIRST..LAST, both days included, at most {MAX_WINDOW_DAYS} days",
}


class ImpactArgs(ma.Schema):
    before = ma.fields.String(required=True, validate=ma.validate.Length(1, 40),
                              metadata=_WINDOW | {"example": "2014-01-01..2014-05-31"})  # fmt: skip
    after = ma.fields.String(required=True, validate=ma.validate.Length(1, 40),
                             metadata=_WINDOW | {"example": "2014-07-01..2014-12-31"})  # fmt: skip
    format = ma.fields.String(
        load_default="json", validate=ma.validate.OneOf(["json", "csv"]),
        metadata={"description": "json: the tests and cells; csv: the cells"},
    )  # fmt: skip


class ImpactTestSchema(ma.Schema):
    measure = ma.fields.String(required=True, metadata={"enum": ["needs", "events"]})
    category = ma.fields.String(required=True, metadata={"description": "a category or all"})
    served_cells = ma.fields.Integer(required=True)
    comparison_cells = ma.fields.Integer(required=True)
    served_before = ma.fields.Integer(required=True)
    served_after = ma.fields.Integer(required=True)
    comparison_before = ma.fields.Integer(required=True)
    comparison_after = ma.fields.Integer(required=True)
    rate_ratio = ma.fields.Float(required=True, allow_none=True)
    ci_low = ma.fields.Float(required=True, allow_none=True)
    ci_high = ma.fields.Float(required=True, allow_none=True)
    p_value = ma.fields.Float(required=True, allow_none=True)
    se = ma.fields.Float(required=True, allow_none=True,
                         metadata={"description": "cluster-robust standard error of the "
                                   "log rate ratio"})  # fmt: skip
    conclusion = ma.fields.String(required=True)
    caution = ma.fields.String(required=True, metadata={"description": "empty when none"})


class ImpactCell(ma.Schema):
    neighborhood = ma.fields.String(required=True)
    category = ma.fields.String(required=True)
    group = ma.fields.String(required=True,
                             metadata={"enum": ["served", "comparison", "left_out"]})  # fmt: skip
    reason = ma.fields.String(required=True)
    partnerships = ma.fields.Integer(required=True)
    units = ma.fields.Float(required=True)
    needs_before = ma.fields.Integer(required=True)
    needs_after = ma.fields.Integer(required=True)
    events_before = ma.fields.Integer(required=True, allow_none=True)
    events_after = ma.fields.Integer(required=True, allow_none=True)


class ImpactWindow(ma.Schema):
    start = ma.fields.String(required=True)
    end = ma.fields.String(required=True)
    days = ma.fields.Integer(required=True)


class ImpactReport(ma.Schema):
    before = ma.fields.Nested(ImpactWindow, required=True)
    after = ma.fields.Nested(ImpactWindow, required=True)
    method = ma.fields.String(required=True)
    caveats = ma.fields.List(ma.fields.String(), required=True)
    notes = ma.fields.List(ma.fields.String(), required=True)
    tests = ma.fields.List(ma.fields.Nested(ImpactTestSchema), required=True)
    cells = ma.fields.List(ma.fields.Nested(ImpactCell), required=True)


def _answer(result: ImpactResult, fmt: str) -> Response:
    if fmt == "csv":
        return Response(csv_bytes(result.cells), mimetype="text/csv")
    return Response(result.to_json(), mimetype="application/json")


@blp.route("/impact")
class Impact(MethodView):
    @blp.arguments(ImpactArgs, location="query")
    @blp.response(200, ImpactReport)
    @blp.alt_response(200, schema={"type": "string", "description": "format=csv: the cells"},
                      content_type="text/csv", success=True)  # fmt: skip
    @blp.answers(400, 403, *KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """Compare new needs where partnerships served with where none did (see the README)."""
        before, after = parse_windows(args["before"], args["after"])
        return _answer(store_impact(store(), before, after), args["format"])

    @blp.arguments(ImpactArgs, location="query")
    @blp.doc(requestBody={
        "required": True,
        "description": "an events file: id, category, lat, lon, date (311 or incident "
        "records)",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    })  # fmt: skip
    @blp.response(200, ImpactReport)
    @blp.alt_response(200, schema={"type": "string", "description": "format=csv: the cells"},
                      content_type="text/csv", success=True)  # fmt: skip
    @blp.answers(400, 403, 413, 415, *KEYED)
    def post(self, args: dict[str, Any]) -> Response:
        """Compare new needs and the events of a CSV body (nothing is stored)."""
        if (request.mimetype or "").lower() != "text/csv":
            from werkzeug.exceptions import UnsupportedMediaType

            raise UnsupportedMediaType("send the events file as text/csv")
        before, after = parse_windows(args["before"], args["after"])
        result = store_impact(store(), before, after, events=request.get_data(),
                              events_label="events.csv (request body)")  # fmt: skip
        return _answer(result, args["format"])
