"""Build the sample city's SIMULATED partnership history and its REAL events file.

Nothing in ``data/sample/simulated_history/`` happened: no organization was offered,
accepted or declined anything, and no unit was delivered. It is a deterministic
simulation, laid over the real dates of the sample's 311 complaints (2014) and
carjackings (2020), so that the plan-to-action loop and ``matcher impact`` can be seen
end to end on the sample city. The events file (``data/sample/events.csv``) is real:
every 2014 sanitation-code complaint that the city did not flag as a duplicate, and
every 2020 carjacking.

How the history is made (all draws from ``numpy.random.default_rng(SEED)``):

* two programs publish the assignments of a plan of the sample (as ``make run`` plans
  it, but only with the needs known on the day of publishing: those reported before it,
  and the undated survey and indicator needs): a sanitation program
  (``environmental_design``) on 2014-06-02 and a carjacking program
  (``crime_prevention``, ``victim_support``) on 2020-06-01;
* each partner has an acceptance propensity (Beta(3, 2)); each offer is accepted with
  it, otherwise declined (two in three, with a reason) or left to lapse after 14 days;
  answers come 1 to 13 days after the offer;
* an accepted partnership becomes active 3 to 10 days later; one in ten is cancelled on
  a day before its program ends, the others are completed on the last day (2014-12-31,
  2020-12-31);
* an active partnership records a delivery per calendar month: its weekly units x the
  weeks served x the partner's delivery reliability (Beta(8, 2)) x a monthly factor
  (uniform 0.85 to 1.05), in whole tenths.

The outputs are byte-identical on every run. Run from the repository root::

    python data/build_history.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

LOG = logging.getLogger("build_history")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "data" / "chicago"
SAMPLE = REPO_ROOT / "data" / "sample"
DEFAULT_OUT = SAMPLE / "simulated_history"
EVENTS = SAMPLE / "events.csv"

SEED = 20140602
SRC_311 = "chicago_311_sanitation_complaints_2014.csv"
SRC_CARJACK = "chicago_carjackings_2020.geojson"

#: (name, categories, publish day, last day)
PROGRAMS = (
    ("2014", ("environmental_design",), dt.date(2014, 6, 2), dt.date(2014, 12, 31)),
    ("2020", ("crime_prevention", "victim_support"), dt.date(2020, 6, 1), dt.date(2020, 12, 31)),
)
OFFER_DAYS = 14
DECLINE_SHARE = 2 / 3  # of the offers not accepted; the rest lapse
CANCEL_SHARE = 0.1
DECLINE_REASONS = ("no capacity this season", "outside the area we serve", "not our focus")
CANCEL_REASONS = ("volunteers moved on", "funding ended")

PARTNERSHIP_COLUMNS = [
    "partnership_id", "state", "partner_id", "cluster_id", "category", "neighborhood",
    "units", "plan_id", "offered_at", "expires_at", "answered_at", "reason", "version",
    "updated_at",
]  # fmt: skip
DELIVERY_COLUMNS = ["delivery_id", "partnership_id", "partner_id", "period_start",
                    "period_end", "units"]  # fmt: skip


def real_events(source: Path) -> pd.DataFrame:
    """Every non-duplicate 2014 sanitation complaint and every 2020 carjacking."""
    raw = pd.read_csv(source / SRC_311, dtype={"Service_Request_Number": str})
    df = raw.dropna(subset=["Latitude", "Longitude"])
    df = df[(df["Latitude"] != 0) & (df["Longitude"] != 0)]
    df = df[~df["Status"].str.endswith("- Dup")]  # as data/build_sample.py drops them
    df = df.sort_values(["Service_Request_Number", "Completion_Date"], kind="stable")
    df = df.drop_duplicates("Service_Request_Number", keep="first")
    complaints = pd.DataFrame({
        "id": "311-" + df["Service_Request_Number"],
        "category": "environmental_design",
        "lat": df["Latitude"].round(6), "lon": df["Longitude"].round(6),
        "date": df["Creation_Date"].str.slice(0, 10),
    })  # fmt: skip
    cj = gpd.read_file(source / SRC_CARJACK, ignore_geometry=True).sort_values("ID")
    cj = cj.dropna(subset=["Latitude", "Longitude"])
    carjackings = pd.DataFrame({
        "id": "CJ-" + cj["ID"].astype(str),
        "category": "crime_prevention",
        "lat": cj["Latitude"].round(6), "lon": cj["Longitude"].round(6),
        "date": pd.to_datetime(cj["Date"], format="%m/%d/%Y %I:%M:%S %p").dt.strftime(
            "%Y-%m-%d"
        ),
    })  # fmt: skip
    out = pd.concat([complaints, carjackings], ignore_index=True)
    LOG.info("events: %d complaints, %d carjackings", len(complaints), len(carjackings))
    return out.sort_values("id", kind="stable").reset_index(drop=True)


def sample_plan(published: dt.date) -> pd.DataFrame:
    """The assignments of the plan a program could make on ``published``.

    As ``make run`` plans the sample, but only with the needs known that day: those
    reported before it, and the undated ones (survey and indicator needs).
    """
    import matcher

    needs = pd.read_csv(SAMPLE / "needs.csv", dtype=str, keep_default_na=False)
    known = needs[(needs["reported_at"] == "") | (needs["reported_at"] < published.isoformat())]
    plan = matcher.plan(known, SAMPLE / "partners.csv",
                        neighborhoods=SAMPLE / "neighborhoods.geojson")  # fmt: skip
    a = plan.assignments
    return a.sort_values(["category", "cluster_id", "partner_id"], kind="stable").reset_index(
        drop=True
    )


def _day(d: dt.date) -> str:
    return d.isoformat()


def _stamp(d: dt.date, hour: int = 12) -> str:
    return f"{d.isoformat()}T{hour:02d}:00:00Z"


def _months(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """Calendar-month pieces of ``start..end`` (both included)."""
    out, day = [], start
    while day <= end:
        nxt = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        last = min(nxt - dt.timedelta(days=1), end)
        out.append((day, last))
        day = nxt
    return out


def simulate(
    assignments: dict[str, pd.DataFrame], rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the simulated partnerships and deliveries of both programs.

    ``assignments`` holds each program's plan (:func:`sample_plan`), by program name.
    """
    partners = sorted(set().union(*(set(a["partner_id"].astype(str))
                                    for a in assignments.values())))  # fmt: skip
    accept = dict(zip(partners, rng.beta(3, 2, len(partners)), strict=True))
    deliver = dict(zip(partners, rng.beta(8, 2, len(partners)), strict=True))
    rows, deliveries = [], []
    for name, categories, published, last in PROGRAMS:
        plan = assignments[name]
        program = plan[plan["category"].isin(categories)]
        for i, a in enumerate(program.itertuples(index=False), start=1):
            pid, partner = f"SIM-{name}-{i:04d}", str(a.partner_id)
            expires = published + dt.timedelta(days=OFFER_DAYS)
            row = {
                "partnership_id": pid, "partner_id": partner, "cluster_id": str(a.cluster_id),
                "category": str(a.category), "neighborhood": str(a.neighborhood),
                "units": round(float(a.units), 6), "plan_id": f"SIM-PLAN-{name}",
                "offered_at": _stamp(published, 9), "expires_at": _stamp(expires, 9),
                "answered_at": "", "reason": "",
            }  # fmt: skip
            answered = published + dt.timedelta(days=int(rng.integers(1, 14)))
            draw, cancel_draw = rng.random(), rng.random()
            if draw >= accept[partner]:  # not accepted
                if rng.random() < DECLINE_SHARE:
                    row |= {"state": "declined", "answered_at": _stamp(answered),
                            "reason": DECLINE_REASONS[int(rng.integers(len(DECLINE_REASONS)))],
                            "version": 2, "updated_at": _stamp(answered)}  # fmt: skip
                else:
                    row |= {"state": "lapsed", "version": 1, "updated_at": _stamp(expires, 9)}
                rows.append(row)
                continue
            active = answered + dt.timedelta(days=int(rng.integers(3, 11)))
            end = last
            if cancel_draw < CANCEL_SHARE:
                end = active + dt.timedelta(days=int(rng.integers(7, (last - active).days)))
                row |= {"state": "cancelled",
                        "reason": CANCEL_REASONS[int(rng.integers(len(CANCEL_REASONS)))]}
            else:
                row |= {"state": "completed"}
            row |= {"answered_at": _stamp(answered), "version": 4, "updated_at": _stamp(end, 17)}
            rows.append(row)
            for k, (start, stop) in enumerate(_months(active, end), start=1):
                weeks = ((stop - start).days + 1) / 7
                units = a.units * weeks * deliver[partner] * rng.uniform(0.85, 1.05)
                deliveries.append({
                    "delivery_id": f"{pid}-D{k:02d}", "partnership_id": pid,
                    "partner_id": partner, "period_start": _day(start),
                    "period_end": _day(stop), "units": round(float(units), 1),
                })  # fmt: skip
    parts = pd.DataFrame(rows)[PARTNERSHIP_COLUMNS]
    return parts, pd.DataFrame(deliveries, columns=DELIVERY_COLUMNS)


def main(argv: Sequence[str] | None = None) -> None:
    """Write events.csv, simulated_history/partnerships.csv and deliveries.csv."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="directory with the Chicago source files")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="history directory")
    parser.add_argument("--events", type=Path, default=EVENTS, help="events file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    events = real_events(args.source.resolve())
    args.events.parent.mkdir(parents=True, exist_ok=True)
    events.to_csv(args.events, index=False, lineterminator="\n")
    plans = {name: sample_plan(published) for name, _, published, _ in PROGRAMS}
    parts, deliveries = simulate(plans, np.random.default_rng(SEED))
    args.out.mkdir(parents=True, exist_ok=True)
    parts.to_csv(args.out / "partnerships.csv", index=False, lineterminator="\n")
    deliveries.to_csv(args.out / "deliveries.csv", index=False, lineterminator="\n")
    LOG.info("simulated %d partnerships (%s), %d deliveries", len(parts),
             parts["state"].value_counts().sort_index().to_dict(), len(deliveries))  # fmt: skip


if __name__ == "__main__":
    main()
