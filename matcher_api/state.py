"""The state a request reads: the app's store, the caller's role, the plan in force, caches."""

from __future__ import annotations

import threading
from typing import Any

from flask import current_app, g, request

from matcher import (
    ClusterModel,
    access,
)
from matcher.intake import IntakePolicy
from matcher.jobs import load_plan_model
from matcher.jobs import plan_in_force as core_plan_in_force
from matcher.nearby import NearbyIndex
from matcher.outreach import NeighborhoodLookup, Places
from matcher.store import (
    PlanRecord,
    Store,
)
from matcher.store.entities import now


def store() -> Store:
    """Return the store of the current app."""
    return current_app.extensions["matcher_store"]


def is_admin() -> bool:
    """Whether the caller may see volunteers' exact points and contacts."""
    return getattr(g, "role", None) == "admin"


def plan_json(rec: PlanRecord) -> dict[str, Any]:
    """Return a plan record as the API shows it: without which worker holds it, or until when."""
    out = rec.to_dict()
    for internal in ("worker", "lease_until"):
        out.pop(internal)
    return out


def grid_plan(plan: Any) -> bool:
    """Whether ``plan`` (a plan record) was made at volunteers' grid points."""
    return (plan.parameters or {}).get("volunteer_points") == "grid"


def check_plan_privacy(plan: Any) -> None:
    """Only an admin reads a plan made from volunteers' exact points (older stores)."""
    if plan is not None and not is_admin() and not grid_plan(plan):
        raise access.ForbiddenError(
            f"plan {plan.plan_id!r} was made from volunteers' exact points (before volunteer "
            "privacy); only an admin may read it: start a new plan"
        )


_cache_lock = threading.Lock()


def plan_in_force() -> Any:
    """Return the plan published last (no scenario), if made at volunteers' grid points.

    A plan of an older store, made from exact points, is never in force: nothing computed
    from it (free capacity, clusters, its summary) reaches a non-admin.
    """
    return core_plan_in_force(store())


def nearby_index(*, exact: bool) -> NearbyIndex:
    """Return the partners index of the current data and plan in force (cached).

    One index for admins (exact points) and one for everyone else, each rebuilt when the
    store's revision changes (every write, a finished plan included).
    """
    st = store()
    revision = _revision()
    cache = current_app.extensions["matcher_nearby"]
    hit = cache.get(exact)
    if hit is not None and hit[0] == revision and not _expired(hit[1]):
        return hit[2]  # type: ignore[no-any-return]
    with _cache_lock:
        hit = cache.get(exact)
        if hit is None or hit[0] != revision or _expired(hit[1]):
            latest = plan_in_force()
            usage = dict(st.partner_usage(latest.plan_id)) if latest else {}
            held, first_expiry = st.held_units()  # active referral holds count as used
            for pid, units in held.items():
                usage[pid] = usage.get(pid, 0.0) + units
            index = NearbyIndex.from_frame(st.partners_frame(), usage, exact=exact)
            hit = (revision, first_expiry, index)
            cache[exact] = hit
        return hit[2]  # type: ignore[no-any-return]


def _expired(first_expiry: str | None) -> bool:
    """Whether a hold counted in a cached index has expired since (the index is stale)."""
    return first_expiry is not None and first_expiry <= now()


def latest_model() -> ClusterModel | None:
    """Return the clustering model of the plan in force (None without one)."""
    latest = plan_in_force()
    return None if latest is None else load_plan_model(store(), latest.plan_id)


def intake_policy() -> IntakePolicy:
    """Return the near-duplicate rule of the app (``DUPLICATE_M``, ``DUPLICATE_HOURS``)."""
    return current_app.extensions["matcher_intake"]  # type: ignore[no-any-return]


_REVISION = "matcher.store_revision"


def _revision() -> int:
    """Return the store's revision, asked once per request (every write changes it)."""
    env = request.environ  # the request's own (flask.g may outlive it in an app context)
    if _REVISION not in env:
        env[_REVISION] = store().revision()
    return int(env[_REVISION])


def forget_revision() -> None:
    """Ask the store for its revision again in this request (after a write)."""
    request.environ.pop(_REVISION, None)


def _by_revision(name: str, build: Any) -> Any:
    """Return ``build()``, cached in the app until the store's revision changes."""
    revision = _revision()
    cache = current_app.extensions.setdefault("matcher_outreach", {})
    hit = cache.get(name)
    if hit is not None and hit[0] == revision:
        return hit[1]
    with _cache_lock:
        hit = cache.get(name)
        if hit is None or hit[0] != revision:
            hit = (revision, build())
            cache[name] = hit
        return hit[1]


def neighborhood_lookup() -> NeighborhoodLookup:
    """Return the stored neighborhoods' lookup with escalation contacts (cached)."""
    default = str(current_app.config.get("ESCALATION_CONTACT") or "")
    return _by_revision(  # type: ignore[no-any-return]
        "neighborhoods", lambda: NeighborhoodLookup(store().neighborhoods_frame(), default)
    )


def places() -> Places:
    """Return the offline gazetteer of stored neighborhoods and organizations (cached)."""
    st = store()
    return _by_revision(  # type: ignore[no-any-return]
        "places", lambda: Places.from_store_frames(st.neighborhoods_frame(), st.partners_frame())
    )
