"""Who may do what: the one authorization policy of the service, per object and per field.

The service (``matcher_api.auth``) asks this module before every request (:func:`allowed`) and
before every write of a partner (:func:`partner_write`); nothing else decides.

Rules
-----
* Reading is open to every role; what a non-admin reads is the public view
  (:mod:`matcher.privacy`).
* ``outreach`` may only *create* needs (the field intake): never replace, delete,
  import or plan. A create never replaces: an existing id is a conflict (409).
* ``planner`` and ``admin`` may create, replace and delete partners and needs, import
  tables and start plans and scenarios.
* Per field: a volunteer's ``lat``, ``lon`` and ``contact`` are private
  (:data:`matcher.privacy.PRIVATE_FIELDS`); only an admin may change them, and a
  volunteer may become an organization (whose point everyone sees) only by an admin's
  hand. A non-admin who writes a volunteer back as read (the grid point, no contact)
  keeps the stored exact values: a writer never overwrites what it cannot see. For the
  same reason only an admin deletes a volunteer (:func:`partner_delete`).

Examples
--------
>>> allowed("outreach", "needs", "create"), allowed("outreach", "needs", "replace")
(True, False)
>>> allowed("planner", "plans", "create"), allowed(None, "health", "read")
(True, True)
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import MatcherError, Problem

__all__ = [
    "KEY_CACHE_S",
    "KeyCache",
    "ACTIONS",
    "PLAN_QUEUE_CAP",
    "POLICY",
    "PUBLIC",
    "ROLES",
    "STAFF",
    "WRITERS",
    "ForbiddenError",
    "allowed",
    "partner_delete",
    "partner_write",
    "roles_for",
]

#: The department's roles (a ``partner`` key is bound to one partner, and sees only its own).
STAFF: tuple[str, ...] = ("planner", "outreach", "admin")
#: Every role a key can have.
ROLES: tuple[str, ...] = (*STAFF, "partner")
#: Roles that may change stored data and start plans.
WRITERS: tuple[str, ...] = ("planner", "admin")
#: The actions of the policy (HTTP: GET read, POST create, PUT replace, DELETE delete).
ACTIONS: tuple[str, ...] = ("read", "create", "replace", "delete")
#: Marks a resource that needs no key.
PUBLIC: tuple[str, ...] = ("*",)

#: ``(resource, action) -> roles``; a pair that is not here is denied to everyone.
POLICY: dict[tuple[str, str], tuple[str, ...]] = {
    ("health", "read"): PUBLIC,
    ("map_config", "read"): PUBLIC,
    # Open311 GeoReport v2: its services are the categories; its requests are "needs"
    ("open311_services", "read"): PUBLIC,
    ("me", "read"): ROLES,
    ("partners", "read"): STAFF,
    ("partners", "create"): WRITERS,
    ("partners", "replace"): WRITERS,
    ("partners", "delete"): WRITERS,
    ("needs", "read"): STAFF,
    ("needs", "create"): STAFF,
    ("needs", "replace"): WRITERS,
    ("needs", "delete"): WRITERS,
    ("imports", "create"): WRITERS,
    ("plans", "read"): STAFF,
    ("plans", "create"): WRITERS,
    ("scenarios", "create"): WRITERS,
    ("nearby", "read"): STAFF,
    ("places", "read"): STAFF,
    # reporters' free-text notes: planners and admins (a note may name a resident)
    ("report_notes", "read"): WRITERS,
    # a hold is released by its maker, a planner or an admin (matcher.holds.release_hold)
    ("holds", "read"): STAFF,
    ("holds", "create"): STAFF,
    ("holds", "delete"): STAFF,
    # publishing a plan; partnerships: a partner key reads and answers only its own
    # (matcher.partnerships.check_transition); clearing a decline is the planners'
    ("publish", "create"): WRITERS,
    ("partnerships", "read"): ("planner", "admin", "partner"),
    ("partnership_steps", "create"): ("planner", "admin", "partner"),
    ("partnership_clear", "create"): WRITERS,
    # deliveries: a partner records and reads its own partnerships' (matcher.outcomes);
    # need outcomes carry residents' feedback: planners and admins
    ("deliveries", "read"): ("planner", "admin", "partner"),
    ("deliveries", "create"): ("planner", "admin", "partner"),
    ("outcomes", "read"): WRITERS,
    ("outcomes", "replace"): WRITERS,
    ("reliability", "read"): WRITERS,
    # counts of residents' reports by neighborhood x category, and what served them
    ("impact", "read"): WRITERS,
    ("impact", "create"): WRITERS,
}

#: Most plans (and scenarios) queued or running at once, per role.
PLAN_QUEUE_CAP: dict[str, int] = {"planner": 4, "admin": 16}


class ForbiddenError(MatcherError, PermissionError):
    """A write that the caller's role may not make; ``problems`` name the fields."""

    def __init__(self, detail: str, problems: list[Problem] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = problems or []


def roles_for(resource: str, action: str) -> tuple[str, ...]:
    """Return the roles allowed ``action`` on ``resource`` (``()``: nobody)."""
    return POLICY.get((resource, action), ())


def allowed(role: str | None, resource: str, action: str) -> bool:
    """Whether a caller of ``role`` (None: no valid key) may do ``action`` on ``resource``."""
    roles = roles_for(resource, action)
    return roles == PUBLIC or (role is not None and role in roles)


def _same_number(a: Any, b: Any) -> bool:
    import numpy as np  # lazily: the CLI imports this module to start

    try:
        return bool(np.isclose(float(a), float(b), rtol=0.0, atol=1e-6))
    except (TypeError, ValueError):
        return False


def partner_delete(role: str, current: Mapping[str, Any]) -> None:
    """Raise :class:`ForbiddenError` unless ``role`` may delete the stored partner ``current``.

    Deleting a volunteer destroys its exact point and contact, which only an admin sees,
    so only an admin may (by ``DELETE`` or by an import that leaves it out).

    Examples
    --------
    >>> partner_delete("planner", {"partner_id": "o", "kind": "organization"})
    >>> partner_delete("planner", {"partner_id": "v", "kind": "volunteer"})
    Traceback (most recent call last):
    ...
    matcher.access.ForbiddenError: only an admin may delete a volunteer (v)
    """
    if role != "admin" and str(current.get("kind")) == "volunteer":
        pid = current.get("partner_id")
        raise ForbiddenError(
            f"only an admin may delete a volunteer ({pid})",
            [Problem("request", None, "partner_id", pid,
                     "a volunteer's private point and contact would be lost: only an admin "
                     "may delete a volunteer")],
        )  # fmt: skip


def partner_write(
    role: str, current: Mapping[str, Any] | None, incoming: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the partner record a caller may write, or raise :class:`ForbiddenError`.

    Parameters
    ----------
    role : str
        The caller's role.
    current : mapping or None
        The stored partner with its exact values (None: the write creates it).
    incoming : mapping
        The fields the caller sends (a full record for a replace).

    Returns
    -------
    dict
        ``incoming``, where a non-admin's copy of a volunteer's private fields as it
        reads them (the grid point, an empty contact) is replaced by the stored
        values.

    Examples
    --------
    >>> stored = {"partner_id": "v", "kind": "volunteer", "lat": 41.8812, "lon": -87.6231,
    ...           "contact": "555-0100", "capacity": 4.0}
    >>> seen = {"partner_id": "v", "kind": "volunteer", "lat": 41.879101,
    ...         "lon": -87.625676, "contact": "", "capacity": 5.0}
    >>> out = partner_write("planner", stored, seen)
    >>> out["lat"], out["lon"], out["contact"], out["capacity"]
    (41.8812, -87.6231, '555-0100', 5.0)
    >>> partner_write("planner", stored, dict(seen, lat=41.9))
    Traceback (most recent call last):
    ...
    matcher.access.ForbiddenError: only an admin may change a volunteer's lat
    """
    import numpy as np  # lazily: the CLI imports this module to start

    from .privacy import PRIVATE_FIELDS, coarsen

    out = dict(incoming)
    if role == "admin" or current is None or str(current.get("kind")) != "volunteer":
        return out
    glat, glon = coarsen(np.array([float(current["lat"])]), np.array([float(current["lon"])]))
    seen = {"lat": float(glat[0]), "lon": float(glon[0]), "contact": ""}
    problems = []
    for name in PRIVATE_FIELDS:
        if name not in out:
            out[name] = current.get(name)
            continue
        value = out[name]
        # only what the caller reads counts as "unchanged": accepting the stored value
        # too would let a caller test guesses of the exact point
        same = _same_number(value, seen[name]) if name in ("lat", "lon") else str(value or "") == ""
        if not same:
            problems.append(
                Problem(
                    "request body",
                    None,
                    name,
                    value,
                    "a volunteer's location and contact are private: only an admin may "
                    "change them; send the value you read, or leave the field out",
                )
            )
        out[name] = current.get(name)
    if str(out.get("kind", "volunteer")).strip().lower() != "volunteer":
        problems.append(
            Problem(
                "request body",
                None,
                "kind",
                out.get("kind"),
                "only an admin may turn a volunteer into an organization (whose exact point "
                "everyone sees)",
            )
        )
    if problems:
        names = ", ".join(str(p.field) for p in problems)
        raise ForbiddenError(f"only an admin may change a volunteer's {names}", problems)
    return out


#: Seconds an authenticated key is remembered by a server process: a revoked key stops
#: working within this time in every process.
KEY_CACHE_S = 2.0


class KeyCache:
    """Valid API keys remembered for ``ttl_s`` seconds, so most requests skip the store.

    Parameters
    ----------
    authenticate : callable
        ``authenticate(key) -> (key_id, role) | None`` (e.g. ``Store.authenticate``).
    ttl_s : float
        How long a valid key is remembered (0: never).
    max_keys : int
        Most keys remembered (then the memory starts afresh).

    Only valid keys are remembered, by their SHA-256: an invalid key always goes to the
    store (and to the failed-authentication limit), and a key created a moment ago works
    at once.

    Examples
    --------
    >>> calls = []
    >>> cache = KeyCache(lambda k: calls.append(k) or ("key_1", "planner"), ttl_s=60)
    >>> cache("mk_x"), cache("mk_x"), len(calls)
    (('key_1', 'planner'), ('key_1', 'planner'), 1)
    """

    def __init__(
        self,
        authenticate: Callable[[str], tuple[str, ...] | None],
        *,
        ttl_s: float = KEY_CACHE_S,
        max_keys: int = 10_000,
    ) -> None:
        self._authenticate = authenticate
        self._ttl = float(ttl_s)
        self._max = int(max_keys)
        self._keys: dict[bytes, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str) -> tuple[str, ...] | None:
        """Return ``(key_id, role[, partner_id])`` of a valid key, else None."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        now = time.monotonic()
        hit = self._keys.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self._authenticate(key)
        with self._lock:
            if found is None or self._ttl <= 0:
                self._keys.pop(digest, None)
            else:
                if len(self._keys) >= self._max:
                    self._keys.clear()
                self._keys[digest] = (now + self._ttl, found)
        return found
