"""From plan to action: publishing a plan, and the partnerships its assignments become.

A finished plan is a draft. Publishing it (:func:`publish_plan`) makes it the plan in
force (nearby search, intake, holds and the map's "in force" badge use it) and offers
each of its assignments to its partner as a *partnership*. The plan in force before it
is superseded (its record is kept). A partnership then moves through these states:

.. code-block:: text

    offered  -> accepted | declined | cancelled | lapsed (not answered in time)
    accepted -> active | cancelled
    active   -> completed | cancelled

Who may make a step is :data:`TRANSITIONS`: the partner the partnership is offered to
(a ``partner`` key bound to it), a planner or an admin; a partner never acts on another
partner's partnerships. A declined or cancelled step needs a reason. An offer not
answered by its ``expires_at`` lapses (:attr:`OfferPolicy.days`).

Re-planning respects agreements (:func:`agreements`): accepted and active partnerships
stay at their units (locked pairs of :func:`matcher.plan`), a declined pair is not
proposed again for its cluster unless a planner clears the decline, and cancelled units
return to the pool. Clusters are matched across plans by their needs: a partnership's
cluster in a new plan is the one that holds most of its needs (see :func:`carry_clusters`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._errors import InputValidationError, MatcherError, Problem
from .limits import MAX_TEXT_CHARS

if TYPE_CHECKING:
    from .store import PlanRecord, Store

__all__ = [
    "AGREED",
    "ANSWERS",
    "NO_AGREEMENTS",
    "OfferPolicy",
    "PlanShape",
    "PartnershipStateError",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "agreements",
    "binding",
    "binding_revision",
    "carry_clusters",
    "check_transition",
    "publish_plan",
    "transition",
]

logger = logging.getLogger(__name__)

#: Every state of a partnership.
STATES: tuple[str, ...] = (
    "offered", "accepted", "declined", "active", "completed", "cancelled", "lapsed",
)  # fmt: skip
#: States in which the partner has agreed: kept at their units by a re-plan.
AGREED: tuple[str, ...] = ("accepted", "active")
#: States nothing leaves.
TERMINAL: tuple[str, ...] = ("declined", "completed", "cancelled", "lapsed")
#: The steps a partnership may take, and who may take each: ``partner`` (a key bound to
#: the partnership's partner), ``planner``, ``admin``. ``lapsed`` is taken by time alone.
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("offered", "accepted"): ("partner", "planner", "admin"),
    ("offered", "declined"): ("partner", "planner", "admin"),
    ("offered", "cancelled"): ("planner", "admin"),
    ("accepted", "active"): ("partner", "planner", "admin"),
    ("accepted", "cancelled"): ("partner", "planner", "admin"),
    ("active", "completed"): ("partner", "planner", "admin"),
    ("active", "cancelled"): ("partner", "planner", "admin"),
}
#: Steps that must say why.
NEEDS_REASON: tuple[str, ...] = ("declined", "cancelled")
#: Steps that answer an offer (they set ``answered_at``).
ANSWERS: tuple[str, ...] = ("accepted", "declined")
#: Longest reason, in characters: the bound of every free text.
MAX_REASON = MAX_TEXT_CHARS


class PartnershipStateError(MatcherError):
    """A step the partnership's state does not allow (HTTP 409)."""


@dataclass(frozen=True)
class OfferPolicy:
    """How long an offer waits for an answer (days) before it lapses."""

    days: float = 7.0
    #: The longest wait a planner may give.
    max_days: float = 90.0

    def __post_init__(self) -> None:
        for name in ("days", "max_days"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and 0.001 <= value <= 365):
                raise InputValidationError(
                    [Problem("offer policy", None, name, value, "must be from 0.001 to 365 days")]
                )
        if self.days > self.max_days:
            raise InputValidationError(
                [Problem("offer policy", None, "days", self.days,
                         f"must be at most max_days ({self.max_days:g})")]  # fmt: skip
            )

    def expires(self, days: float | None = None) -> str:
        """Return when an offer made now lapses (UTC, ISO 8601 with ``Z``)."""
        wait = self.days if days is None else float(days)
        if not (math.isfinite(wait) and 0.001 <= wait <= self.max_days):
            raise InputValidationError(
                [Problem("publish", None, "offer_days", days,
                         f"must be from 0.001 to {self.max_days:g} days")]  # fmt: skip
            )
        until = _dt.datetime.now(_dt.UTC) + _dt.timedelta(days=wait)
        return until.isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_transition(
    current: Mapping[str, Any], to: str, role: str, partner_id: str | None, reason: str
) -> None:
    """Raise unless a caller of ``role`` may move partnership ``current`` to state ``to``.

    Parameters
    ----------
    current : mapping
        The stored partnership (its ``state`` as read now: a lapsed offer says so).
    to : str
        The state asked for.
    role : str
        The caller's role; a ``partner`` caller is bound to ``partner_id``.
    partner_id : str or None
        The partner a ``partner`` key is bound to.
    reason : str
        Why (needed for :data:`NEEDS_REASON`).

    Raises
    ------
    InputValidationError
        ``to`` is no state, or a needed reason is missing or too long.
    ForbiddenError
        The caller may not take this step (a partner's own step on another's
        partnership is reported as not found by the service, never as forbidden).
    PartnershipStateError
        The step is not allowed from the current state.
    """
    from .access import ForbiddenError

    where = f"partnership {current['partnership_id']}"
    if to not in STATES or to == "lapsed" or to == "offered":
        steps = sorted({b for (_, b) in TRANSITIONS})
        raise InputValidationError(
            [Problem(where, None, "to", to, f"must be one of {', '.join(steps)}")]
        )
    from .outcomes import text_problem

    why = text_problem(reason)
    if why is not None:
        raise InputValidationError(
            [Problem(where, None, "reason", f"{len(reason)} characters", why)]
        )
    if to in NEEDS_REASON and not reason.strip():
        raise InputValidationError(
            [Problem(where, None, "reason", reason, f"say why the partnership is {to}")]
        )
    state = str(current["state"])
    who = TRANSITIONS.get((state, to))
    if who is None:
        nexts = [b for (a, b) in TRANSITIONS if a == state]
        then = f"it can become {', '.join(nexts)}" if nexts else "nothing follows it"
        raise PartnershipStateError(f"{where} is {state}: it cannot become {to}; {then}")
    if role == "partner" and str(current["partner_id"]) != str(partner_id):
        raise ForbiddenError(f"{where} is offered to another partner")
    if role not in who:
        raise ForbiddenError(f"{where}: {state} -> {to} needs one of the roles {', '.join(who)}")


def _at_version(
    store: Store, partnership_id: str, expected_version: int, partner_id: str | None = None
) -> dict[str, Any]:
    """Return a partnership if it is still at ``expected_version`` (in the caller's write).

    ``partner_id``: a partner key's own partner; another partner's is not found.
    """
    from .store import NotFoundError, VersionConflictError

    current = store.get_partnership(partnership_id)
    if current is None or (partner_id is not None and current["partner_id"] != partner_id):
        raise NotFoundError("partnership", partnership_id)
    if int(current["version"]) != int(expected_version):
        raise VersionConflictError(
            "partnership", partnership_id, int(expected_version), int(current["version"])
        )
    return current


def transition(
    store: Store,
    partnership_id: str,
    to: str,
    expected_version: int,
    actor: str,
    *,
    role: str,
    partner_id: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Move a partnership to state ``to`` if it is still at ``expected_version``.

    Of two callers who read the same version, one succeeds; the other gets a
    :class:`~matcher.store.VersionConflictError` (HTTP 412) and reads it again.

    Raises
    ------
    NotFoundError
        No such partnership (or, for a partner key, one offered to another partner).
    InputValidationError, ForbiddenError, PartnershipStateError
        See :func:`check_transition`.
    VersionConflictError
        The partnership changed since ``expected_version``.
    """
    reason = str(reason or "")
    store.lapse_offers()  # its own transaction: kept even when this step is refused
    with store.transaction():
        mine = partner_id if role == "partner" else None
        current = _at_version(store, partnership_id, expected_version, mine)
        check_transition(current, to, role, partner_id, reason)
        return store.update_partnership(
            partnership_id,
            int(expected_version),
            {"state": to, "reason": reason.strip()},
            actor,
            action=to,
        )


def clear_decline(
    store: Store, partnership_id: str, expected_version: int, actor: str
) -> dict[str, Any]:
    """Let a re-plan propose a declined pair again (planners and admins).

    Raises
    ------
    NotFoundError, VersionConflictError, PartnershipStateError
        No such partnership; changed since ``expected_version``; not declined.
    """
    with store.transaction():
        current = _at_version(store, partnership_id, expected_version)
        if current["state"] != "declined":
            raise PartnershipStateError(
                f"partnership {partnership_id} is {current['state']}: only a declined one "
                "is cleared"
            )
        return store.update_partnership(
            partnership_id, int(expected_version), {"cleared": True}, actor, action="clear"
        )


# --------------------------------------------------------------------------- clusters


def _plan_csv(store: Store, plan_id: str, name: str) -> pd.DataFrame | None:
    """Return a stored plan's CSV file as text columns where they are ids, or None."""
    raw = store.plan_file(plan_id, name)
    if raw is None:
        return None
    return pd.read_csv(
        io.BytesIO(raw),
        dtype={"need_id": str, "cluster_id": str, "partner_id": str, "neighborhood": str},
        keep_default_na=False,
    )


def _need_clusters(store: Store, plan_id: str) -> pd.Series:
    """Return a stored plan's cluster per need (``need_id`` index), from need_clusters.csv."""
    frame = _plan_csv(store, plan_id, "need_clusters.csv")
    if frame is None:
        return pd.Series(dtype=object, name="cluster_id")
    return frame.set_index("need_id")["cluster_id"]


def _carry(
    store: Store, rows: list[dict[str, Any]], need_cluster: pd.Series, plan_id: str | None = None
) -> list[tuple[dict[str, Any], str | None]]:
    """Pair each partnership with its cluster in a plan (None: its needs are all gone).

    ``need_cluster`` is that plan's cluster per need; ``plan_id`` the plan, when stored
    (a partnership already carried to it keeps its cluster).
    """
    maps: dict[str, dict[str, str]] = {}
    out: list[tuple[dict[str, Any], str | None]] = []
    for ps in rows:
        if ps["plan_id"] == plan_id:
            out.append((ps, str(ps["cluster_id"])))
            continue
        if ps["plan_id"] not in maps:
            maps[ps["plan_id"]] = carry_clusters(_need_clusters(store, ps["plan_id"]), need_cluster)
        out.append((ps, maps[ps["plan_id"]].get(str(ps["cluster_id"]))))
    return out


def carry_clusters(old: pd.Series, new: pd.Series) -> dict[str, str]:
    """Match each old cluster to the new cluster that holds most of its needs.

    Parameters
    ----------
    old, new : pandas.Series
        Cluster id per need id (index), in the old and the new plan.

    Returns
    -------
    dict of str to str
        Old cluster id to new cluster id; an old cluster none of whose needs is in the
        new plan is left out. Ties go to the smaller new id (deterministic).

    Examples
    --------
    >>> old = pd.Series(["a", "a", "a", "b"], index=["n1", "n2", "n3", "n4"])
    >>> new = pd.Series(["x", "y", "y", "x"], index=["n1", "n2", "n3", "n4"])
    >>> carry_clusters(old, new)
    {'a': 'y', 'b': 'x'}
    """
    both = pd.DataFrame({"old": old}).join(pd.DataFrame({"new": new}), how="inner")
    if both.empty:
        return {}
    counts = both.groupby(["old", "new"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["old", "n", "new"], ascending=[True, False, True], kind="stable")
    best = counts.drop_duplicates("old")
    return dict(zip(best["old"].astype(str), best["new"].astype(str), strict=True))


# --------------------------------------------------------------------------- publishing


def _plan_table(store: Store, plan_id: str, name: str) -> pd.DataFrame:
    frame = _plan_csv(store, plan_id, name)
    if frame is None:
        raise MatcherError(f"plan {plan_id} has no {name}")
    return frame


def _place(cluster: pd.Series) -> dict[str, Any]:
    """Return where a partnership's cluster is (a row of the plan's clusters.csv)."""
    return {
        "neighborhood": str(cluster.get("neighborhood", "") or ""),
        "centroid_lat": float(cluster["centroid_lat"]),
        "centroid_lon": float(cluster["centroid_lon"]),
    }


def publishable(record: PlanRecord | None, plan_id: str) -> PlanRecord:
    """Return the plan if it may be published; raise why not.

    Raises
    ------
    NotFoundError
        No such plan.
    PlanStateError
        Not done, a what-if scenario, or made from volunteers' exact points.
    """
    from .store import NotFoundError, PlanStateError

    if record is None:
        raise NotFoundError("plan", plan_id)
    if record.status != "done":
        raise PlanStateError(f"plan {plan_id} is {record.status}: only a done plan is published")
    params = record.parameters or {}
    if "scenario" in params:
        raise PlanStateError(f"plan {plan_id} is a what-if scenario: it is never put in force")
    if params.get("volunteer_points") != "grid":
        raise PlanStateError(
            f"plan {plan_id} was made from volunteers' exact points: it cannot be put in force"
        )
    return record


def _check_made_under_current_agreements(
    record: PlanRecord, rows: list[dict[str, Any]]
) -> None:
    """Raise unless the plan was made under the binding partnerships ``rows`` (now)."""
    from .store import PlanStateError

    now = binding_revision(rows)
    if now == NO_AGREEMENTS:
        return
    if (record.parameters or {}).get("agreements") is False:
        raise PlanStateError(
            f"plan {record.plan_id} was made without the partnerships (agreements: false): "
            f"publishing it could break {len(rows)} agreement(s) or decline(s); run a plan "
            "that keeps them, or cancel them first"
        )
    facts = ((record.summary or {}).get("metrics") or {}).get("agreements") or {}
    if facts.get("revision", NO_AGREEMENTS) != now:
        raise PlanStateError(
            f"partnerships were answered, cancelled or cleared since plan {record.plan_id} "
            "was made: run a new plan (it keeps them) and publish that one"
        )


def publish_plan(
    store: Store,
    plan_id: str,
    actor: str,
    *,
    offer_days: float | None = None,
    policy: OfferPolicy | None = None,
    only_if_newer: bool = False,
) -> dict[str, Any]:
    """Put a done plan in force and offer its assignments as partnerships; return what changed.

    In one transaction: offers of earlier plans still unanswered are cancelled
    ("superseded"); accepted, active and declined partnerships are carried to the new
    plan's clusters (:func:`carry_clusters`); each assignment becomes an offer for the
    units that no agreed partnership of its pair holds already.

    Parameters
    ----------
    store : Store
    plan_id : str
        A done plan (not a scenario) made at volunteers' grid points.
    actor : str
        Who publishes (an API key id, ``"cli"``).
    offer_days : float, optional
        Days an offer waits for its answer (default and bound: ``policy``).
    policy : OfferPolicy, optional
    only_if_newer : bool
        Refuse when the plan in force was queued after this one (a plan published when
        it is done never replaces a newer one).

    Returns
    -------
    dict
        ``plan_id``, ``published_at``, ``superseded`` (the plan in force before, or
        None), ``offered`` (new offers), ``units_offered``, ``carried`` (agreements and
        declines carried to this plan's clusters), ``unplaced`` (agreements whose
        needs are all gone), ``withdrawn`` (unanswered offers cancelled).

    Raises
    ------
    NotFoundError, PlanStateError
        See :func:`publishable`; also a plan in force already, and a plan made under
        other agreements than the store's now (partners answered, or a planner cancelled
        or cleared, since it was made; or it was made with ``agreements: false``): its
        assignments could break an agreement or offer a declined pair again.
    """
    from .store import PlanStateError

    policy = policy or OfferPolicy()
    expires = policy.expires(offer_days)
    store.lapse_offers()  # its own transaction: kept even when publishing is refused
    with store.transaction():
        record = publishable(store.get_plan(plan_id), plan_id)
        before = store.published_plan()
        if before is not None and before.plan_id == plan_id:
            raise PlanStateError(f"plan {plan_id} is the plan in force already")
        if only_if_newer and before is not None and before.created_at > record.created_at:
            raise PlanStateError(
                f"plan {before.plan_id}, queued after plan {plan_id}, is in force already"
            )
        rows = binding(store)
        _check_made_under_current_agreements(record, rows)
        assignments = _plan_table(store, plan_id, "assignments.csv")
        clusters = _plan_table(store, plan_id, "clusters.csv").set_index("cluster_id")
        new_nc = _need_clusters(store, plan_id)
        withdrawn = carried = unplaced = 0
        for ps in store.list_partnerships(states=("offered",), limit=None):
            store.update_partnership(
                ps["partnership_id"], int(ps["version"]),
                {"state": "cancelled", "reason": f"superseded by plan {plan_id}"},
                actor, action="cancelled",
            )  # fmt: skip
            withdrawn += 1
        agreed_units: dict[tuple[str, str], float] = {}
        for ps, target in _carry(store, rows, new_nc, plan_id):
            if target is None:
                unplaced += int(ps["state"] in AGREED)
                continue
            if ps["plan_id"] != plan_id or ps["cluster_id"] != target:
                # the cluster and its centre move; the neighborhood stays the one the
                # partnership was made in (where it served, for matcher.impact)
                where = _place(clusters.loc[target])
                del where["neighborhood"]
                store.update_partnership(
                    ps["partnership_id"], int(ps["version"]),
                    {"plan_id": plan_id, "cluster_id": target, **where}, actor, action="carry",
                )  # fmt: skip
                carried += 1
            if ps["state"] in AGREED:
                key = (target, str(ps["partner_id"]))
                agreed_units[key] = agreed_units.get(key, 0.0) + float(ps["units"])
        quantum = float((record.summary or {}).get("solver", {}).get("quantum", 0.1) or 0.1)
        declined = {
            (str(p["cluster_id"]), str(p["partner_id"]))
            for p in store.list_partnerships(states=("declined",), plan_id=plan_id, limit=None)
            if not p["cleared"]
        }
        offers: list[dict[str, Any]] = []
        for row in assignments.itertuples(index=False):
            key = (str(row.cluster_id), str(row.partner_id))
            if key in declined:  # never offered again (a plan made under it has none)
                continue
            units = round(float(row.units) - agreed_units.get(key, 0.0), 6)
            if units < quantum / 2:
                continue
            cl = clusters.loc[key[0]]
            offers.append({
                "partnership_id": "ps-" + uuid.uuid4().hex[:20],
                "plan_id": plan_id,
                "cluster_id": key[0],
                "partner_id": key[1],
                "category": str(cl["category"]),
                "units": units,
                "expires_at": expires,
                **_place(cl),
            })  # fmt: skip
        store.create_partnerships(offers, actor)
        published_at = store.mark_published(plan_id, actor)
    result = {
        "plan_id": plan_id,
        "published_at": published_at,
        "superseded": before.plan_id if before is not None else None,
        "offered": len(offers),
        "units_offered": round(sum(o["units"] for o in offers), 6),
        "carried": carried,
        "unplaced": unplaced,
        "withdrawn": withdrawn,
    }
    logger.info(
        "plan %s published: %d offer(s), %d carried, %d withdrawn",
        plan_id, len(offers), carried, withdrawn,
    )  # fmt: skip
    return result


# --------------------------------------------------------------------------- re-planning


def binding(store: Store) -> list[dict[str, Any]]:
    """Return the partnerships a re-plan must respect, oldest offer first.

    Accepted and active ones (kept at their units) and declines not cleared (never
    proposed again).
    """
    rows = store.list_partnerships(states=(*AGREED, "declined"), limit=None)
    rows = [r for r in rows if not (r["state"] == "declined" and r["cleared"])]
    return sorted(rows, key=lambda r: (str(r["offered_at"]), str(r["partnership_id"])))


def binding_revision(rows: list[dict[str, Any]]) -> str:
    """Return a digest of what binds a re-plan, to tell whether it changed.

    Ids, states, units and the plan and cluster each is carried to.

    A plan records it (``metrics.agreements.revision``); publishing a plan made under
    other agreements is refused (:func:`publish_plan`).
    """
    # accepted and active bind alike (both are kept at their units): one word for both;
    # the plan and cluster they are carried to change with each publication
    doc = sorted([str(r["partnership_id"]), "agreed" if r["state"] in AGREED else str(r["state"]),
                  round(float(r["units"]), 6), str(r["plan_id"]), str(r["cluster_id"])]
                 for r in rows)  # fmt: skip
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


#: The revision of no binding partnership.
NO_AGREEMENTS = binding_revision([])


@dataclass(frozen=True)
class PlanShape:
    """The clusters and partners a re-plan will match, in the solver's whole quanta.

    Attributes
    ----------
    need_cluster : pandas.Series
        Cluster id per need id.
    clusters : pandas.DataFrame
        ``cluster_id, category, centroid_lat, centroid_lon, neighborhood``.
    demand_q : dict of str to int
        Quanta demanded per cluster (per need rounded to the nearest quantum, at least one).
    partners : pandas.DataFrame
        The partners as the plan places them (volunteers at their grid points).
    capacity_q : dict of str to int
        Quanta per partner (capacity rounded down).
    quantum : float
        Units per quantum.
    max_partner_share : float
        The plan's share cap (1: none).
    """

    need_cluster: pd.Series
    clusters: pd.DataFrame
    demand_q: dict[str, int]
    partners: pd.DataFrame
    capacity_q: dict[str, int]
    quantum: float
    max_partner_share: float = 1.0


def agreements(
    store: Store, shape: PlanShape
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict[str, Any], dict[str, float]]:
    """Return the lock and exclude rows a re-plan takes from the store's partnerships.

    Each binding partnership (:func:`binding`) is carried to the cluster of ``shape``
    that holds most of its needs (:func:`carry_clusters`). An agreement is locked at its
    units, cut (oldest partnership first) to whole quanta that the cluster's demand, the
    partner's capacity and its share cap still allow, so that the locks always fit the
    model exactly; one whose pair is no longer eligible (a radius, a category or the
    cluster changed) or that has no room left is not locked. A decline excludes its pair.

    Returns
    -------
    (DataFrame or None, DataFrame or None, dict, dict)
        ``cluster_id, partner_id, units`` rows to lock, ``cluster_id, partner_id`` rows to
        exclude, facts: ``locked``, ``locked_units``, ``excluded``, ``unplaced``
        (agreements whose needs are all gone), ``ineligible`` (pairs no longer
        eligible), ``reduced`` (agreements cut), ``reserved_units``, ``revision``
        (:func:`binding_revision`); and the units to take from each partner's capacity
        for its agreements that cannot be locked (the plan gives them to no one else).
    """
    from .candidates import candidate_pairs

    rows = binding(store)
    q = float(shape.quantum)
    pairs_now = _carry(store, rows, shape.need_cluster)
    carried = [(ps, t) for ps, t in pairs_now if t is not None]
    unplaced = sum(1 for ps, t in pairs_now if t is None and ps["state"] in AGREED)
    # which of the carried agreements' pairs are candidates of the plan
    wanted_c = sorted({t for ps, t in carried if ps["state"] in AGREED})
    wanted_p = sorted({str(ps["partner_id"]) for ps, t in carried if ps["state"] in AGREED})
    cl = shape.clusters[shape.clusters["cluster_id"].astype(str).isin(wanted_c)]
    cl = cl.reset_index(drop=True)
    pa = shape.partners[shape.partners["partner_id"].astype(str).isin(wanted_p)]
    pa = pa.reset_index(drop=True)
    eligible: set[tuple[str, str]] = set()
    if len(cl) and len(pa):
        pairs = candidate_pairs(cl, pa)
        eligible = set(zip(cl["cluster_id"].astype(str).to_numpy()[pairs["cluster"].to_numpy()],
                           pa["partner_id"].astype(str).to_numpy()[pairs["partner"].to_numpy()],
                           strict=True))  # fmt: skip
    hood = dict(zip(shape.clusters["cluster_id"].astype(str),
                    shape.clusters["neighborhood"].astype(str), strict=True))  # fmt: skip
    left_d = dict(shape.demand_q)
    left_c = dict(shape.capacity_q)
    share_left: dict[tuple[str, str], int] = {}
    locks: dict[tuple[str, str], int] = {}
    excluded: set[tuple[str, str]] = set()
    reduced = ineligible = 0
    # an agreement that cannot be locked (its pair is no longer eligible) still takes the
    # partner's units: they are reserved, so that the plan gives them to no one else
    reserved: dict[str, float] = {}
    for ps, target in carried:
        pid = str(ps["partner_id"])
        if ps["state"] in AGREED and (target, pid) not in eligible:
            ineligible += 1
            reserved[pid] = reserved.get(pid, 0.0) + float(ps["units"])
            left_c[pid] = max(left_c.get(pid, 0) - int(math.ceil(float(ps["units"]) / q - 1e-9)),
                              0)  # fmt: skip
    for ps, target in carried:
        pid = str(ps["partner_id"])
        if ps["state"] == "declined":
            excluded.add((target, pid))
            continue
        if (target, pid) not in eligible:
            continue
        want = int(math.floor(float(ps["units"]) / q + 1e-9))
        room = min(left_d.get(target, 0), left_c.get(pid, 0))
        h = hood.get(target, "")
        if shape.max_partner_share < 1 and h:
            cap = int(math.floor(shape.capacity_q.get(pid, 0) * shape.max_partner_share + 1e-9))
            room = min(room, share_left.setdefault((pid, h), cap))
        got = max(min(want, room), 0)
        if got * q < float(ps["units"]) - 1e-9:
            reduced += 1
        if got <= 0:
            continue
        locks[(target, pid)] = locks.get((target, pid), 0) + got
        left_d[target] -= got
        left_c[pid] -= got
        if shape.max_partner_share < 1 and h:
            share_left[(pid, h)] -= got
    excluded -= set(locks)  # an agreement on a pair outweighs an older decline of it
    lock_df = (
        pd.DataFrame(
            [(c, p, round(n * q, 9)) for (c, p), n in sorted(locks.items())],
            columns=["cluster_id", "partner_id", "units"],
        )
        if locks
        else None
    )
    exclude_df = (
        pd.DataFrame(sorted(excluded), columns=["cluster_id", "partner_id"]) if excluded else None
    )
    facts = {
        "locked": len(locks),
        "locked_units": round(sum(locks.values()) * q, 6),
        "excluded": len(excluded),
        "unplaced": unplaced,
        "ineligible": ineligible,
        "reduced": reduced,
        "reserved_units": round(sum(reserved.values()), 6),
        "revision": binding_revision(rows),
    }
    return lock_df, exclude_df, facts, reserved
