"""The planner map page at ``/``.

Static files of ``matcher/web`` (package data, plain JS, no build step), Leaflet from the
installed XStatic-Leaflet package (so the page works offline), base-map tiles from
``TILE_URL`` (empty: no base map). The page reads everything through the JSON routes with
the API key the user enters (kept in the tab's sessionStorage only). None of these pages
or routes carries a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, current_app, send_from_directory

import matcher
from matcher import InputValidationError, Problem
from matcher.limits import MAX_TEXT_CHARS

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
_WEB_FILES = ("common.js", "app.js", "app.css", "outreach.js", "outreach.css")
#: The outreach page's languages: one message catalog each, ``web/locales/<code>.json``.
LOCALES = ("en", "es")


def check_page_config(config: Mapping[str, Any]) -> None:
    """Check the pages' settings (``GEOCODER_URL``, ``ESCALATION_CONTACT``) at start-up.

    Raises
    ------
    matcher.InputValidationError
        Naming the setting, its value and what would be valid.
    """
    problems = []
    url = config.get("GEOCODER_URL") or ""
    url = url if isinstance(url, str) else str(url)
    if url and (_host(url) is None or "{q}" not in url or len(url) > 2000):
        problems.append(
            Problem("configuration", None, "GEOCODER_URL", url[:80],
                    "must be an http(s) URL of at most 2,000 characters with {q} where the "
                    "search words go, e.g. https://nominatim.example.org/search?format=json"
                    "&q={q}; or empty for none")  # fmt: skip
        )
    tiles = config.get("TILE_URL") or ""
    tiles = tiles if isinstance(tiles, str) else str(tiles)
    if tiles and "://" in tiles and (_host(tiles.replace("{s}", "a")) is None or len(tiles) > 2000):
        problems.append(
            Problem("configuration", None, "TILE_URL", tiles[:80],
                    "must be an http(s) URL of at most 2,000 characters whose host is a name "
                    "or an address (with {s} as a subdomain where tile servers have them), "
                    "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; or empty for no "
                    "base map")  # fmt: skip
        )
    contact = config.get("ESCALATION_CONTACT") or ""
    if not isinstance(contact, str) or len(contact) > MAX_TEXT_CHARS:
        problems.append(
            Problem("configuration", None, "ESCALATION_CONTACT", str(contact)[:80],
                    f"must be text of at most {MAX_TEXT_CHARS} characters")  # fmt: skip
        )
    if problems:
        raise InputValidationError(problems)


_HOST = re.compile(r"^([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def _host(url: str) -> str | None:
    """Return the ``host[:port]`` of an absolute http(s) URL, or None when it has none.

    Only a plain host name or address is a host here, so the URL cannot add anything to a
    Content-Security-Policy header built from it.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not _HOST.match(parts.netloc):
        return None
    return parts.netloc


def _csp_source(url: str) -> str:
    """Return the CSP source of a server's URL (``{s}`` as a wildcard); '' if same-origin."""
    parts = urlsplit(url.replace("{s}", "*"))
    if not parts.scheme and not parts.netloc:
        return ""
    if parts.scheme not in ("http", "https") or "{" in parts.netloc or not parts.netloc:
        return "https: http:"
    return f"{parts.scheme}://{parts.netloc}"


def register_webmap(app: Flask) -> None:
    """Serve the pages: the map at ``/``, outreach at ``/outreach``, their files and Leaflet.

    Files are under ``/web/`` (message catalogs under ``/web/locales/``), Leaflet under
    ``/vendor/``.
    """
    app.config.setdefault("TILE_URL", DEFAULT_TILE_URL)
    app.config.setdefault("TILE_ATTRIBUTION", DEFAULT_TILE_ATTRIBUTION)
    pages = FlaskBlueprint("webmap", __name__)

    def page(name: str, connect: str = "") -> Response:
        """One of the pages, with its Content-Security-Policy (the tile server's images)."""
        resp = send_from_directory(WEB_DIR, name, max_age=0)
        tiles = _csp_source(str(current_app.config.get("TILE_URL") or ""))
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: {tiles}".rstrip()
            + f"; connect-src 'self' {connect}".rstrip()
            + "; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @pages.get("/")
    def index() -> Response:
        return page("index.html")

    @pages.get("/outreach")
    def outreach() -> Response:
        # the browser may ask the configured geocoder (checked at start-up) for places
        resp = page("outreach.html",
                    _csp_source(str(current_app.config.get("GEOCODER_URL") or "")))  # fmt: skip
        # the page asks the browser for its position (the "near me" button), nothing else
        resp.headers["Permissions-Policy"] = "geolocation=(self), camera=(), microphone=()"
        return resp

    @pages.get("/web/locales/<name>")
    def locale_file(name: str) -> Response:
        if name not in {f"{code}.json" for code in LOCALES}:
            return problem(404, "Not Found", f"no catalog {name!r}; the languages are "
                           + ", ".join(LOCALES))  # fmt: skip
        resp = send_from_directory(WEB_DIR / "locales", name, max_age=0)
        resp.headers["X-Content-Type-Options"] = "nosniff"
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
