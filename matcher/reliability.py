"""How reliable each partner has been: offers accepted, units delivered against committed.

Method (documented in the README):

* **Acceptance**: of the offers a partner answered or let lapse, the share it accepted,
  shrunk toward 1 with the weight of :data:`PRIOR_WEIGHT` offers accepted:
  ``(accepted + k) / (offers + k)``.
* **Delivery reliability**: a partnership's ``units`` are units a week, so a *finished*
  partnership (completed, or cancelled after it was accepted) committed ``units x weeks``
  over the weeks it was agreed, from the (UTC) day it was accepted to the day it was
  completed or cancelled, both included (at least one day). Its share is
  ``min(delivered / committed, 1)``, with every delivery recorded for it (a week without
  a record counts as nothing delivered); the shares' sum is shrunk toward 1 with the
  weight of :data:`PRIOR_WEIGHT` partnerships that delivered everything: ``(sum of shares
  + k) / (finished + k)``. A partner without history is trusted (1.0); one partnership
  half delivered gives ``(0.5 + 2) / 3 = 0.833``. Active partnerships are not finished,
  so they do not count yet.

A plan may use **expected capacity** (``capacity x delivery reliability``): a plan job
with ``"reliability": true`` scales each partner's capacity so, and the explanation of
each of its assignments says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .io import utc_days

if TYPE_CHECKING:
    from .store import Store

__all__ = ["COLUMNS", "PRIOR_WEIGHT", "partner_reliability", "reliability_table"]

#: Pseudo-observations of full acceptance and full delivery every partner starts with.
PRIOR_WEIGHT = 2.0
#: The columns of :func:`partner_reliability`.
COLUMNS: tuple[str, ...] = (
    "partner_id", "offers", "accepted", "declined", "lapsed", "acceptance", "finished",
    "committed_units", "delivered_units", "reliability",
)  # fmt: skip


def partner_reliability(store: Store) -> pd.DataFrame:
    """Return each partner's acceptance and delivery reliability in a store.

    Returns
    -------
    pandas.DataFrame
        :func:`reliability_table` of the store's partnerships and deliveries.
    """
    return reliability_table(store.list_partnerships(limit=None), store.list_deliveries())


def reliability_table(
    partnerships: Sequence[Mapping[str, Any]], deliveries: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """Return each partner's acceptance and delivery reliability (see the module docs).

    Parameters
    ----------
    partnerships : sequence of mappings
        ``partnership_id, partner_id, state, units, answered_at, updated_at`` each, as the
        store or :func:`matcher.impact.read_partnerships` gives them.
    deliveries : sequence of mappings
        ``partnership_id, units`` each (the store's, or
        :func:`matcher.outcomes.read_deliveries`).

    Returns
    -------
    pandas.DataFrame
        One row per partner that was ever offered a partnership, by ``partner_id``:
        :data:`COLUMNS` (``acceptance`` and ``reliability`` rounded to 6 decimals).
    """
    if not partnerships:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "partner_id" else float)
                             for c in COLUMNS})  # fmt: skip
    ps = pd.DataFrame(list(partnerships))
    ps["answered_at"] = ps["answered_at"].replace("", None)
    delivered = pd.DataFrame(list(deliveries), columns=["partnership_id", "units"])
    per_ps = delivered.groupby("partnership_id")["units"].sum()
    ps["delivered"] = ps["partnership_id"].map(per_ps).fillna(0.0)
    answered = ps["answered_at"].notna()
    ps["was_accepted"] = answered & (ps["state"] != "declined")
    ps["is_offer"] = answered | (ps["state"] == "lapsed")
    ps["finished"] = (ps["state"] == "completed") | ((ps["state"] == "cancelled") & answered)
    # units a week x the weeks agreed (from acceptance to the end, both days included)
    agreed = (utc_days(ps["updated_at"].fillna("")) - utc_days(ps["answered_at"].fillna("")))
    weeks = np.maximum(agreed.dt.days.fillna(0).to_numpy(dtype=float) + 1.0, 1.0) / 7.0
    committed = ps["units"].to_numpy(dtype=float) * weeks
    kept = np.minimum(ps["delivered"].to_numpy(dtype=float), committed)
    ps["share"] = np.where(ps["finished"], kept / np.maximum(committed, 1e-12), 0.0)
    ps["committed"] = np.where(ps["finished"], committed, 0.0)
    ps["kept"] = np.where(ps["finished"], kept, 0.0)
    g = ps.groupby("partner_id", sort=True)
    out = pd.DataFrame(
        {
            "offers": g["is_offer"].sum(),
            "accepted": g["was_accepted"].sum(),
            "declined": g["state"].apply(lambda s: int((s == "declined").sum())),
            "lapsed": g["state"].apply(lambda s: int((s == "lapsed").sum())),
            "finished": g["finished"].sum(),
            "committed_units": g["committed"].sum(),
            "delivered_units": g["kept"].sum(),
            "shares": g["share"].sum(),
        }
    )
    k = PRIOR_WEIGHT
    out["acceptance"] = ((out["accepted"] + k) / (out["offers"] + k)).round(6)
    out["reliability"] = ((out["shares"] + k) / (out["finished"] + k)).round(6)
    out = out.reset_index()
    for c in ("offers", "accepted", "declined", "lapsed", "finished"):
        out[c] = out[c].astype(int)
    for c in ("committed_units", "delivered_units"):
        out[c] = out[c].astype(float).round(6)
    return out[list(COLUMNS)]
