"""The planner map page at ``/``.

Static files of ``matcher/web`` (package data, plain JS, no build step), Leaflet from the
installed XStatic-Leaflet package (so the page works offline), base-map tiles from
``TILE_URL`` (empty: no base map). The page reads everything through the JSON routes with
the API key the user enters (kept in the tab's sessionStorage only). None of these pages
or routes carries a secret.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, current_app, send_from_directory

import matcher

from .problems import problem

# --------------------------------------------------------------------------- web map
#
# The planner map page at ``/``: static files of ``matcher/web`` (package data, plain JS,
# no build step), Leaflet from the installed XStatic-Leaflet package (so the page works
# offline), base-map tiles from ``TILE_URL`` (empty: no base map). The page reads
# everything through the JSON routes below with the API key the user enters (kept in the
# tab's sessionStorage only). None of these pages or routes carries a secret.

WEB_DIR = Path(matcher.__file__).resolve().parent / "web"
#: Default base-map tiles (``MATCHER_TILE_URL`` / ``TILE_URL`` replaces it; "" = none).
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "© OpenStreetMap contributors"
_WEB_FILES = ("app.js", "app.css")


def _tile_origin(tile_url: str) -> str:
    """Return the CSP source of the tile server (``{s}`` as a wildcard); '' if same-origin."""
    parts = urlsplit(tile_url.replace("{s}", "*"))
    if not parts.scheme and not parts.netloc:
        return ""
    if parts.scheme not in ("http", "https") or "{" in parts.netloc or not parts.netloc:
        return "https: http:"
    return f"{parts.scheme}://{parts.netloc}"


def register_webmap(app: Flask) -> None:
    """Serve the map page at ``/``, its files under ``/web/`` and Leaflet under ``/vendor/``."""
    app.config.setdefault("TILE_URL", DEFAULT_TILE_URL)
    app.config.setdefault("TILE_ATTRIBUTION", DEFAULT_TILE_ATTRIBUTION)
    pages = FlaskBlueprint("webmap", __name__)

    @pages.get("/")
    def index() -> Response:
        resp = send_from_directory(WEB_DIR, "index.html", max_age=0)
        tiles = _tile_origin(str(current_app.config.get("TILE_URL") or ""))
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: {tiles}".rstrip()
            + "; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @pages.get("/web/<name>")
    def web_file(name: str) -> Response:
        if name not in _WEB_FILES:
            return problem(404, "Not Found", f"no file {name!r}")
        resp = send_from_directory(WEB_DIR, name, max_age=0)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @pages.get("/vendor/leaflet/<path:name>")
    def leaflet_file(name: str) -> Response:
        try:
            from xstatic.pkg import leaflet
        except ImportError:
            return problem(
                404, "Not Found", "Leaflet is missing: pip install 'matcher[api]' (xstatic-leaflet)"
            )
        resp = send_from_directory(leaflet.BASE_DIR, name, max_age=86400)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    app.register_blueprint(pages)
