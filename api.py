"""matcher's HTTP service: the app factory. Routes live in :mod:`matcher_api` blueprints.

Run it with ``matcher serve --db PATH`` (waitress, one process or several), or build the
app with :func:`create_app` for tests and other WSGI servers. Every decision is made in
``matcher``; the service routes, authorizes and shapes JSON only:

- :mod:`matcher_api.auth` authenticates and authorizes every request (one policy);
- :mod:`matcher_api.records`, :mod:`~matcher_api.plans`, :mod:`~matcher_api.nearby` and
  :mod:`~matcher_api.meta` are the routes of ``/api/v1``; :mod:`matcher_api.webmap` is the
  map page at ``/`` and the outreach page at ``/outreach``; :mod:`~matcher_api.open311`
  is Open311 GeoReport v2 under ``/open311/v2/``;
- plans run in :class:`matcher.jobs.PlanWorker` threads, here or in other processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from matcher import access, limits
from matcher.access import KeyCache
from matcher.holds import HoldPolicy
from matcher.intake import IntakePolicy
from matcher.jobs import PlanWorker
from matcher.partnerships import OfferPolicy
from matcher.ratelimit import RateLimiter
from matcher.store import DEFAULT_LEASE_S, open_store
from matcher_api import (
    holds,
    impact,
    meta,
    nearby,
    open311,
    outcomes,
    outreach,
    partnerships,
    plans,
    records,
    webmap,
)
from matcher_api.auth import log_access, secure_headers, started
from matcher_api.openapi import MatcherApi
from matcher_api.problems import register_errors

__all__ = ["create_app"]

#: Settings that are text whatever they look like (``MATCHER_ESCALATION_CONTACT=311``).
TEXT_SETTINGS = ("ESCALATION_CONTACT", "GEOCODER_URL", "TILE_URL", "TILE_ATTRIBUTION")
#: The blueprints of ``/api/v1``, in the order of the OpenAPI document.
BLUEPRINTS = (
    meta.blp, records.blp, plans.blp, partnerships.blp, outcomes.blp, impact.blp, nearby.blp,
    holds.blp, outreach.blp,
)  # fmt: skip


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app.

    Configuration: defaults, then ``MATCHER_*`` environment variables (``MATCHER_DB``
    sets ``DB``), then ``config``. Keys: ``DB`` (SQLite path or database URL),
    ``MAX_CONTENT_LENGTH`` (bytes; 413 above it), ``PLAN_WORKERS`` (threads of this
    process that claim and run queued plans; 0 for none), ``PLAN_LEASE_S`` (seconds a
    claimed plan is held without a renewal: a plan whose process died runs again after
    it), ``KEY_CACHE_S`` (seconds an
    authenticated key is remembered: a revoked key stops working within them),
    ``DUPLICATE_M`` and ``DUPLICATE_HOURS`` (a reported concern this close in space and
    time to a stored need of its category is linked to it: :class:`matcher.intake.IntakePolicy`),
    ``HOLD_MINUTES``, ``HOLD_MAX_MINUTES`` and ``HOLD_MAX_ACTIVE`` (how long a referral holds
    units at a partner, by default and at most, and how many holds one key may have
    active: :class:`matcher.holds.HoldPolicy`), ``OFFER_DAYS`` and ``OFFER_MAX_DAYS`` (how
    long a partnership offer waits for its answer, by default and at most:
    :class:`matcher.partnerships.OfferPolicy`), ``ESCALATION_CONTACT`` (whom outreach
    escalates to where a neighborhood's ``escalation_contact`` names no one), ``GEOCODER_URL``
    (a Nominatim-style search URL with ``{q}``, asked by the outreach page's browser for
    places the store does not know; '' for none).
    """
    app = Flask(__name__)
    app.config.from_mapping(
        DB="matcher.db",
        MAX_CONTENT_LENGTH=limits.MAX_BODY_BYTES,
        PLAN_WORKERS=1,
        PLAN_LEASE_S=DEFAULT_LEASE_S,
        KEY_CACHE_S=access.KEY_CACHE_S,
        RATE_LIMIT_PER_MINUTE=1200,
        RATE_LIMIT_BURST=200,
        AUTH_FAILURES_PER_MINUTE=20,
        AUTH_FAILURES_BURST=20,
        PLAN_QUEUE_CAP=dict(access.PLAN_QUEUE_CAP),
        DUPLICATE_M=IntakePolicy.duplicate_m,
        DUPLICATE_HOURS=IntakePolicy.duplicate_hours,
        HOLD_MINUTES=HoldPolicy.minutes,
        HOLD_MAX_MINUTES=HoldPolicy.max_minutes,
        HOLD_MAX_ACTIVE=HoldPolicy.max_active,
        OFFER_DAYS=OfferPolicy.days,
        OFFER_MAX_DAYS=OfferPolicy.max_days,
        ESCALATION_CONTACT="",
        GEOCODER_URL="",
        API_TITLE="matcher",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    app.config.from_prefixed_env("MATCHER")
    for name in TEXT_SETTINGS:  # text as written: from_prefixed_env reads "311" as a number
        if f"MATCHER_{name}" in os.environ:
            app.config[name] = os.environ[f"MATCHER_{name}"]
    if config:
        app.config.update(config)
    webmap.check_page_config(app.config)
    app.extensions["matcher_store"] = open_store(app.config["DB"])
    app.extensions["matcher_offers"] = OfferPolicy(
        float(app.config["OFFER_DAYS"]), float(app.config["OFFER_MAX_DAYS"])
    )
    threads = int(app.config["PLAN_WORKERS"])
    if threads > 0:  # 0: this process only queues plans; workers elsewhere run them
        worker = PlanWorker(
            app.extensions["matcher_store"],
            threads=threads,
            lease_s=float(app.config["PLAN_LEASE_S"]),
            offer_policy=app.extensions["matcher_offers"],
        )
        worker.start()
        app.extensions["matcher_jobs"] = worker
    app.extensions["matcher_intake"] = IntakePolicy(
        float(app.config["DUPLICATE_M"]), float(app.config["DUPLICATE_HOURS"])
    )
    app.extensions["matcher_holds"] = HoldPolicy(
        float(app.config["HOLD_MINUTES"]),
        float(app.config["HOLD_MAX_MINUTES"]),
        int(app.config["HOLD_MAX_ACTIVE"]),
    )
    app.extensions["matcher_nearby"] = {}
    app.extensions["matcher_keys"] = KeyCache(
        app.extensions["matcher_store"].authenticate, ttl_s=float(app.config["KEY_CACHE_S"])
    )
    app.extensions["matcher_limits"] = {
        "requests": RateLimiter(
            float(app.config["RATE_LIMIT_PER_MINUTE"]), int(app.config["RATE_LIMIT_BURST"])
        ),
        "auth_failures": RateLimiter(
            float(app.config["AUTH_FAILURES_PER_MINUTE"]), int(app.config["AUTH_FAILURES_BURST"])
        ),
    }
    api = MatcherApi(
        app,
        spec_kwargs={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    for blp in BLUEPRINTS:
        api.register_blueprint(blp)
    app.before_request(started)
    app.after_request(secure_headers)
    app.after_request(log_access)
    webmap.register_webmap(app)
    open311.register_open311(app)
    register_errors(app)
    return app
