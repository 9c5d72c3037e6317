"""Routes the outreach page reads besides nearby: places by name, and reporters' notes."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView

from matcher.store import NotFoundError

from .openapi import KEYED, blueprint
from .schemas import LinkedReportArgs, PlaceArgs, PlaceList, ReportNoteList
from .state import is_admin, places, store

__all__ = ["blp"]

blp = blueprint("outreach", __name__, "Outreach: places by name, reporters' notes")


@blp.route("/places")
class Places(MethodView):
    @blp.arguments(PlaceArgs, location="query")
    @blp.response(200, PlaceList)
    @blp.answers(*KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """Find neighborhoods and organizations by name (the store's offline gazetteer).

        Neighborhoods are placed at a point inside their polygon, organizations at their
        own point. Volunteers are never places.
        """
        found = places().search(args["q"], args["limit"])
        return Response(json.dumps({"places": found}), mimetype="application/json")


@blp.route("/report-notes")
class ReportNotes(MethodView):
    @blp.arguments(LinkedReportArgs, location="query")
    @blp.response(200, ReportNoteList)
    @blp.answers(404, *KEYED)
    def get(self, args: dict[str, Any]) -> Response:
        """List the reporters' notes on a need's reports, oldest first (planners, admins).

        Who wrote each is shown to admins only.
        """
        need_id = args["need_id"]
        notes = store().report_notes(need_id)
        if not notes and store().get_need(need_id) is None:
            raise NotFoundError("need", need_id)
        rows = [
            {k: v for k, v in n.items() if k != "actor" or is_admin()} for n in notes
        ]
        return Response(json.dumps({"notes": rows}), mimetype="application/json")
