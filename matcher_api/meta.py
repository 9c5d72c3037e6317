"""Routes about the service itself: health, the map page's settings, who the caller is."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView

import matcher

from .openapi import KEYED, PUBLIC, blueprint
from .schemas import HealthSchema, MapConfigSchema, WhoAmISchema

__all__ = ["blp"]

blp = blueprint("service", __name__, "The service: health, the map page's settings, the caller")


@blp.route("/health")
class Health(MethodView):
    @blp.doc(**PUBLIC)
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, Any]:
        """Report liveness and version."""
        return {"status": "ok", "version": matcher.__version__}


@blp.route("/map/config")
class MapConfig(MethodView):
    @blp.doc(**PUBLIC)
    @blp.response(200, MapConfigSchema)
    def get(self) -> dict[str, Any]:
        """Get the settings of the map pages (no key needed): tiles, categories, geocoder."""
        return {
            "tile_url": str(current_app.config.get("TILE_URL") or ""),
            "tile_attribution": str(current_app.config.get("TILE_ATTRIBUTION") or ""),
            "version": matcher.__version__,
            "categories": list(matcher.default_taxonomy().codes),
            "geocoder_url": str(current_app.config.get("GEOCODER_URL") or ""),
        }


@blp.route("/me")
class WhoAmI(MethodView):
    @blp.response(200, WhoAmISchema)
    @blp.answers(*KEYED)
    def get(self) -> dict[str, Any]:
        """Get the role of the calling API key (the map page checks a key with it)."""
        who = {"key_id": g.key_id, "role": g.role}
        return who | ({"partner_id": g.partner_id} if g.role == "partner" else {})
