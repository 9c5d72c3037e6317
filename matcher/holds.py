"""Referrals hold capacity: units held at a partner for a limited time.

An outreach worker who refers someone to a partner (from nearby search or intake) may hold
units there, so that the next referral does not count on the same free units. A hold
lasts :attr:`HoldPolicy.minutes` unless released earlier (declined, cancelled, used); while
it lasts, the partner's free capacity is its capacity, minus the units the plan in force
gives it, minus every active hold. Holds are placed in one write transaction after that
check, and writers are serialized, so concurrent referrals never over-commit a partner.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import InputValidationError, Problem
from .limits import MAX_UNITS

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "HoldPolicy",
    "RELEASE_REASONS",
    "free_capacity",
    "place_hold",
    "release_hold",
]

#: Why a hold ends before it expires.
RELEASE_REASONS: tuple[str, ...] = ("declined", "cancelled", "used")
#: Longest hold, in minutes; shortest (a hold must outlive its own request).
MAX_HOLD_MINUTES = 7 * 24 * 60.0
MIN_HOLD_MINUTES = 0.01
#: Most active holds of one key any policy allows.
MAX_ACTIVE_HOLDS = 10_000


@dataclass(frozen=True)
class HoldPolicy:
    """How long a hold lasts by default, and at most (minutes)."""

    minutes: float = 30.0
    max_minutes: float = 24 * 60.0
    #: Most holds one key has active at once (one key cannot block a city's referrals).
    max_active: int = 50

    def __post_init__(self) -> None:
        if not (isinstance(self.max_active, int) and 1 <= self.max_active <= MAX_ACTIVE_HOLDS):
            raise InputValidationError(
                [Problem("hold policy", None, "max_active", self.max_active,
                         f"must be a whole number from 1 to {MAX_ACTIVE_HOLDS}")]  # fmt: skip
            )
        for name in ("minutes", "max_minutes"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            low, high = MIN_HOLD_MINUTES, MAX_HOLD_MINUTES
            if not (ok and math.isfinite(value) and low <= value <= high):
                why = f"must be from {low:g} to {high:g}"
                raise InputValidationError([Problem("hold policy", None, name, value, why)])
        if self.minutes > self.max_minutes:
            raise InputValidationError(
                [Problem("hold policy", None, "minutes", self.minutes,
                         f"must be at most max_minutes ({self.max_minutes:g})")]  # fmt: skip
            )


def free_capacity(store: Store, partner: dict[str, Any]) -> float:
    """Return a partner's free units now: capacity - plan in force - active holds."""
    from .jobs import plan_in_force

    plan = plan_in_force(store)
    used = store.partner_usage(plan.plan_id).get(str(partner["partner_id"]), 0.0) if plan else 0.0
    held, _ = store.held_units()
    free = float(partner["capacity"]) - float(used) - held.get(str(partner["partner_id"]), 0.0)
    return max(round(free, 6), 0.0)


def _number(value: Any, name: str, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and low < value <= high):
        raise InputValidationError(
            [Problem("hold", None, name, value, f"must be a number more than {low:g} and at "
                     f"most {high:g}")]  # fmt: skip
        )
    return float(value)


def place_hold(
    store: Store,
    partner_id: str,
    units: float,
    actor: str,
    *,
    need_id: str | None = None,
    minutes: float | None = None,
    policy: HoldPolicy | None = None,
) -> dict[str, Any]:
    """Hold ``units`` at a partner for a referral; return the hold.

    Parameters
    ----------
    store : Store
    partner_id : str
        The partner referred to.
    units : float
        Units to hold (more than 0, at most the partner's free capacity).
    actor : str
        Who refers (the API key id).
    need_id : str, optional
        The need referred: the partner must offer its category.
    minutes : float, optional
        How long the hold lasts (default and bound: ``policy``).
    policy : HoldPolicy, optional

    Raises
    ------
    InputValidationError
        Units or minutes out of range; a need of a category the partner does not offer.
    NotFoundError
        No such partner or need.
    NotEnoughCapacityError
        Fewer units free than asked (the error says how many are).
    """
    from .store import NotEnoughCapacityError, NotFoundError, TooManyHoldsError

    policy = policy or HoldPolicy()
    asked = _number(units, "units", 0.0, MAX_UNITS)
    lasts = policy.minutes if minutes is None else _number(minutes, "minutes", 0.0,
                                                            policy.max_minutes)  # fmt: skip
    if lasts < MIN_HOLD_MINUTES:
        raise InputValidationError(
            [Problem("hold", None, "minutes", minutes, f"must be at least {MIN_HOLD_MINUTES:g}")]
        )
    with store.transaction():
        partner = store.get_partner(partner_id)
        if partner is None:
            raise NotFoundError("partner", partner_id)
        if need_id:
            need = store.get_need(need_id)
            if need is None:
                raise NotFoundError("need", need_id)
            offered = str(partner["categories"]).split(";")
            if need["category"] not in offered:
                raise InputValidationError(
                    [Problem("hold", None, "need_id", need_id,
                             f"is a {need['category']} need; partner {partner_id!r} offers "
                             f"{', '.join(offered)}")]  # fmt: skip
                )
        mine = store.list_holds(actor=actor, limit=policy.max_active + 1)
        if len(mine) >= policy.max_active:
            raise TooManyHoldsError(
                f"this key has {len(mine)} active holds, the most one key may have; release "
                "those no longer needed"
            )
        free = free_capacity(store, partner)
        if asked > free + 1e-9:
            raise NotEnoughCapacityError(partner_id, asked, free)
        until = _dt.datetime.now(_dt.UTC) + _dt.timedelta(minutes=lasts)
        hold = {
            "hold_id": "h-" + uuid.uuid4().hex[:20],
            "partner_id": partner_id,
            "need_id": need_id or "",
            "units": asked,
            "expires_at": until.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        return store.create_hold(hold, actor)


def release_hold(
    store: Store, hold_id: str, reason: str, actor: str, *, may_release_others: bool
) -> dict[str, Any]:
    """Release a hold before it expires; return it.

    Only its maker releases a hold, unless ``may_release_others`` (planners and admins).

    Raises
    ------
    InputValidationError
        A reason not in :data:`RELEASE_REASONS`.
    NotFoundError
        No such hold, or one the caller may not see.
    HoldStateError
        Released or expired already.
    """
    from .access import ForbiddenError
    from .store import NotFoundError

    if reason not in RELEASE_REASONS:
        raise InputValidationError(
            [Problem("hold", None, "reason", reason,
                     f"must be one of {', '.join(RELEASE_REASONS)}")]  # fmt: skip
        )
    with store.transaction():
        hold = store.get_hold(hold_id)
        if hold is None:
            raise NotFoundError("hold", hold_id)
        if hold["actor"] != actor and not may_release_others:
            raise ForbiddenError(f"hold {hold_id!r} was placed by another key; only it, a "
                                 "planner or an admin may release it")  # fmt: skip
        return store.release_hold(hold_id, reason, actor)
