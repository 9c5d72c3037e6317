"""``matcher impact``: the cells, the test against statsmodels and by hand, the doors.

The estimate and its cluster-robust standard error are checked against an independent
computation: statsmodels' Poisson GLM with one dummy per cell (a different algorithm:
IRLS on the full likelihood, not Newton on the conditional one), and a hand-worked
case with one category (closed form).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher._errors import InputValidationError
from matcher.cli import main
from matcher.impact import (
    MIN_CELLS,
    did_test,
    impact,
    parse_windows,
    read_events,
    service_periods,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
HISTORY = SAMPLE / "simulated_history"

B, A = parse_windows("2014-01-01..2014-03-31", "2014-05-01..2014-06-29")  # 90 and 60 days


# ----------------------------------------------------------------------------- the test


def _cells(rows: list[tuple[str, str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["neighborhood", "category", "group", "needs_before",
                                       "needs_after"])  # fmt: skip


def test_one_category_by_hand():
    """The closed form: rate ratio, and the robust variance of the two group logits."""
    rows = [("1", "c", "served", 30, 10), ("2", "c", "served", 20, 14),
            ("3", "c", "comparison", 25, 20), ("4", "c", "comparison", 40, 22),
            ("5", "c", "comparison", 0, 0)]  # fmt: skip  (no counts: left out of the fit)
    t = did_test(_cells(rows), "needs", "c", B, A)
    tb, ta, cb, ca = 50, 24, 65, 42
    assert (t.served_before, t.served_after, t.comparison_before, t.comparison_after) == (
        tb, ta, cb, ca)
    assert (t.served_cells, t.comparison_cells) == (2, 2)
    assert t.rate_ratio == pytest.approx((ta / tb) / (ca / cb), rel=1e-10)

    # each group's share of counts in the after window, p = after / total; the robust
    # variance of its logit is sum((y_after - n p)^2) / (sum(n) p (1 - p))^2, the two
    # groups' add up, and the G / (G - 1) factor (G = 4 neighborhoods) applies; the
    # model-based variance is 1/tb + 1/ta + 1/cb + 1/ca; the larger one counts
    def var(cells: list[tuple[int, int]]) -> float:
        n = sum(b + a for b, a in cells)
        p = sum(a for _, a in cells) / n
        return sum((a - (b + a) * p) ** 2 for b, a in cells) / (n * p * (1 - p)) ** 2

    robust = (var([(30, 10), (20, 14)]) + var([(25, 20), (40, 22)])) * 4 / 3
    model = 1 / tb + 1 / ta + 1 / cb + 1 / ca
    assert t.se == pytest.approx(math.sqrt(max(robust, model)), rel=1e-9)
    q = 3.182446305284263  # Student's t, 97.5 %, 3 degrees of freedom
    assert t.ci_low == pytest.approx(t.rate_ratio * math.exp(-q * t.se))
    assert t.ci_high == pytest.approx(t.rate_ratio * math.exp(q * t.se))
    from scipy import stats

    assert t.p_value == pytest.approx(2 * stats.t.sf(abs(math.log(t.rate_ratio)) / t.se, 3))
    assert "Too little data" in t.caution  # 2 and 2 areas: fewer than MIN_CELLS
    assert "No change" in t.conclusion or "relative to comparison areas" in t.conclusion


@st.composite
def panels(draw: Any) -> pd.DataFrame:
    rows = []
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    for c in range(draw(st.integers(1, 3))):
        for i in range(draw(st.integers(4, 14))):
            served = i % 2 == 0 if i < 4 else bool(rng.random() < 0.4)
            lam = rng.gamma(1.5, 6)
            effect = draw(st.sampled_from([0.5, 1.0, 1.6])) if served else 1.0
            rows.append((f"h{i}", f"cat{c}", "served" if served else "comparison",
                         int(rng.poisson(lam * rng.gamma(2, 0.5))),
                         int(rng.poisson(lam * effect * rng.gamma(2, 0.5)))))  # fmt: skip
    return _cells(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=panels(), days=st.tuples(st.integers(20, 400), st.integers(20, 400)))
def test_the_estimate_and_its_error_equal_statsmodels(cells, days):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    before, after = parse_windows(
        f"2014-01-01..{(dt.date(2014, 1, 1) + dt.timedelta(days=days[0] - 1)).isoformat()}",
        f"2016-01-01..{(dt.date(2016, 1, 1) + dt.timedelta(days=days[1] - 1)).isoformat()}",
    )
    t = did_test(cells, "needs", "all", before, after)
    # the same cells statsmodels is given: categories with served and comparison cells,
    # each group with counts in both windows; cells with counts
    c = cells[(cells["needs_before"] + cells["needs_after"]) > 0].copy()
    sums = c.groupby(["category", "group"])[["needs_before", "needs_after"]].sum()
    usable = [k for k in sorted(set(c["category"]))
              if all((k, g) in sums.index and (sums.loc[(k, g)] > 0).all()
                     for g in ("served", "comparison"))]  # fmt: skip
    c = c[c["category"].isin(usable)]
    served, comp = (c["group"] == "served").sum(), (c["group"] == "comparison").sum()
    if served < 2 or comp < 2:
        assert t.rate_ratio is None and "Too few areas" in t.caution
        return
    long = pd.concat([
        c.assign(y=c["needs_before"], post=0, days=before.days),
        c.assign(y=c["needs_after"], post=1, days=after.days),
    ])  # fmt: skip
    long["cell"] = long["neighborhood"] + "/" + long["category"]
    long["treated"] = (long["group"] == "served").astype(int)
    model = smf.glm("y ~ C(cell) + C(category):post + treated:post - 1", long,
                    family=sm.families.Poisson(), offset=np.log(long["days"]))  # fmt: skip
    groups = pd.factorize(long["neighborhood"])[0]  # clustered by neighborhood
    # statsmodels' IRLS stops at a relative deviance change of 1e-8 by default: far tighter
    # here, so that the two optima agree to more digits than the comparison asks
    fit = model.fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False},
                    tol=1e-14, maxiter=1000)  # fmt: skip
    g = long["neighborhood"].nunique()
    if g < 2:
        assert t.rate_ratio is None
        return
    assert t.rate_ratio == pytest.approx(math.exp(fit.params["treated:post"]), rel=1e-6)
    robust = fit.bse["treated:post"] * math.sqrt(g / (g - 1))
    plain = model.fit(tol=1e-14, maxiter=1000).bse["treated:post"]  # the Poisson error
    assert t.se == pytest.approx(max(robust, plain), rel=1e-5)
    assert (t.served_cells, t.comparison_cells) == (served, comp)


def test_hard_panels_are_estimated_or_refused_never_a_crash_nor_false_certainty():
    """Found in review: a step that overshot crashed the fit; equal shares gave se 0."""
    rows = [("1", "c", "served", 3, 2), ("2", "c", "served", 1, 40), ("3", "c", "served", 0, 1),
            ("4", "c", "comparison", 0, 1), ("5", "c", "comparison", 3, 0),
            ("6", "c", "comparison", 40, 0)]  # fmt: skip
    b, a = parse_windows("2014-01-01..2014-03-31", "2014-04-01..2014-06-29")  # 90 and 90
    t = did_test(_cells(rows), "needs", "c", b, a)
    assert t.rate_ratio == pytest.approx((43 / 4) / (1 / 43), rel=1e-9)
    same = [(f"{i}", "c", "served" if i < 10 else "comparison", 2, 4 if i < 10 else 2)
            for i in range(20)]  # fmt: skip
    t = did_test(_cells(same), "needs", "c", b, a)
    assert t.rate_ratio == pytest.approx(2.0) and t.se > 0 and t.ci_low < t.ci_high
    flat = [(f"{i}", "c", "served" if i < 10 else "comparison", 2, 2) for i in range(20)]
    t = did_test(_cells(flat), "needs", "c", b, a)
    assert t.rate_ratio == pytest.approx(1.0) and t.p_value == pytest.approx(1.0)
    assert "No change" in t.conclusion


def test_small_counts_get_a_plain_caution_and_too_few_areas_no_estimate():
    rows = [(f"{i}", "c", "served" if i < 3 else "comparison", 3, 2) for i in range(12)]
    t = did_test(_cells(rows), "needs", "all", B, A)
    assert t.rate_ratio is not None
    assert "Too little data to conclude anything" in t.caution
    assert f"only 3 served areas and 9 comparison areas (at least {MIN_CELLS}" in t.caution
    one = did_test(_cells(rows[2:]), "needs", "all", B, A)  # a single served area
    assert one.rate_ratio is None and one.conclusion == "Cannot be estimated."
    assert "1 served" in one.caution and "either window" in one.caution
    big = [(f"{i}", "c", "served" if i < 12 else "comparison", 60, 40 if i < 12 else 60)
           for i in range(24)]  # fmt: skip
    t = did_test(_cells(big), "needs", "all", B, A)
    assert t.caution == "" and "fell by" in t.conclusion


# ----------------------------------------------------------------------------- the cells


def _p(state: str, answered: str = "", updated: str = "2014-01-01", hood: str = "1",
       cat: str = "food_access") -> dict[str, Any]:  # fmt: skip
    return {"state": state, "answered_at": answered, "updated_at": updated,
            "neighborhood": hood, "category": cat, "units": 2.0}  # fmt: skip


def test_which_cells_are_served_compared_or_left_out():
    before, after = parse_windows("2014-01-01..2014-03-31", "2014-05-01..2014-06-30")
    parts = [
        _p("active", "2014-04-10T10:00:00Z", hood="served"),
        _p("completed", "2014-04-10", "2014-06-01", hood="served-completed"),
        _p("cancelled", "2014-04-10", "2014-06-01", hood="served-cancelled-later"),
        _p("active", "2014-02-01", hood="before"),
        _p("accepted", "2014-05-20", hood="began-after"),
        _p("cancelled", "2014-04-01", "2014-04-20", hood="ended"),
        _p("declined", "2014-04-10", hood="declined"),
        _p("lapsed", "", hood="lapsed"),
        _p("cancelled", "", "2014-04-10", hood="cancelled-offer"),
        _p("active", "2014-08-01", hood="later"),
        _p("active", "2014-04-10", hood="two"), _p("declined", "2014-04-10", hood="two"),
    ]  # fmt: skip
    needs = pd.DataFrame({"neighborhood": ["declined", "x"], "category": "food_access",
                          "reported_at": ["2014-01-05", ""]})  # fmt: skip
    r = impact(needs, parts, before, after)
    got = r.cells.set_index("neighborhood")[["group", "reason", "partnerships"]]
    assert got.loc["served"].tolist() == ["served", "", 1]
    assert got.loc["served-completed", "group"] == "served"
    assert got.loc["served-cancelled-later", "group"] == "served"
    assert got.loc["two"].tolist() == ["served", "", 1]
    assert got.loc["before"].tolist() == ["left_out", "served during the before window", 1]
    assert got.loc["began-after"].tolist() == ["left_out",
                                                "service began during the after window", 0]
    assert got.loc["ended"].tolist() == ["left_out", "service ended before the after window", 0]
    for hood in ("declined", "lapsed", "cancelled-offer", "later", "x"):
        assert got.loc[hood, "group"] == "comparison", hood
    assert r.cells.loc[r.cells["neighborhood"] == "declined", "needs_before"].item() == 1
    assert any("1 need(s) without a date" in n for n in r.notes)
    assert any("Left out of the comparison" in n for n in r.notes)
    assert len(service_periods(parts)) == 8


def test_no_partnerships_and_no_needs_are_answers_too():
    r = impact(pd.DataFrame({"neighborhood": [], "category": [], "reported_at": []}), [], B, A)
    assert r.cells.empty and [t.conclusion for t in r.tests] == ["Cannot be estimated."]
    needs = pd.DataFrame({"neighborhood": ["1"], "category": ["c"], "reported_at": ["2014-01-02"]})
    r = impact(needs, [], B, A)
    assert r.cells["group"].tolist() == ["comparison"] and r.cells["needs_before"].tolist() == [1]


def test_a_partnerships_file_names_every_bad_row_and_days_are_utc_days():
    from matcher.impact import read_partnerships

    head = "partnership_id,partner_id,state,category,neighborhood,units,answered_at,updated_at\n"
    bad = (head + "p1,o1,accepted,food,1,abc,2014-01-02,2014-01-02\n"
           "p2,o1,accepted,Food_Access,1,-inf,2014-01-02,2014-01-02\n"
           "p3,o1,shelved,nonsense,1,2,2014-01-02junk,2014-01-02\n"
           "=p4,o1,offered,food_access,1,2,,\n")  # fmt: skip
    with pytest.raises(InputValidationError) as e:
        read_partnerships(bad.encode(), "p.csv")
    found = {(p.row, p.field) for p in e.value.problems}
    assert found == {(2, "units"), (3, "units"), (4, "state"), (4, "category"),
                     (4, "answered_at"), (5, "partnership_id"), (5, "updated_at")}, found
    ok = head + "p1,o1,accepted,food,'=x,2,2014-06-30T23:30:00-05:00,2014-07-01\n"
    rows = read_partnerships(ok.encode(), "p.csv")
    assert rows[0]["category"] == "food_access" and rows[0]["neighborhood"] == "=x"
    # accepted at 23:30 in Chicago on 30 June: 1 July in UTC, the first day of the after window
    periods = service_periods(rows)
    assert periods["start"].dt.strftime("%Y-%m-%d").tolist() == ["2014-07-01"]
    before, after = parse_windows("2014-01-01..2014-06-30", "2014-07-01..2014-12-31")
    r = impact(pd.DataFrame({"neighborhood": [], "category": [], "reported_at": []}), rows,
               before, after)  # fmt: skip
    assert r.cells["group"].tolist() == ["served"]
    assert "NaN" not in r.to_json() and "Infinity" not in r.to_json()


def test_reliability_of_the_simulated_history_by_hand():
    """matcher partnerships reliability on files, against a computation written here."""
    r = CliRunner().invoke(main, ["partnerships", "reliability", "--partnerships",
                                  str(HISTORY / "partnerships.csv"), "--deliveries",
                                  str(HISTORY / "deliveries.csv")])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = pd.read_csv(io.StringIO(r.stdout)).set_index("partner_id")
    parts = pd.read_csv(HISTORY / "partnerships.csv", dtype=str, keep_default_na=False)
    deliveries = pd.read_csv(HISTORY / "deliveries.csv", dtype={"partnership_id": str})
    delivered = deliveries.groupby("partnership_id")["units"].sum()
    for pid in sorted(set(parts["partner_id"]))[:40]:
        mine = parts[parts["partner_id"] == pid]
        offers = int(((mine["answered_at"] != "") | (mine["state"] == "lapsed")).sum())
        accepted = int(((mine["answered_at"] != "") & (mine["state"] != "declined")).sum())
        shares = []
        for p in mine.itertuples():
            if p.state == "completed" or (p.state == "cancelled" and p.answered_at):
                days = (dt.date.fromisoformat(p.updated_at[:10])
                        - dt.date.fromisoformat(p.answered_at[:10])).days + 1  # fmt: skip
                committed = float(p.units) * days / 7
                shares.append(min(delivered.get(p.partnership_id, 0.0) / committed, 1.0))
        row = got.loc[pid]
        assert row["acceptance"] == pytest.approx((accepted + 2) / (offers + 2), abs=1e-6)
        assert row["reliability"] == pytest.approx((sum(shares) + 2) / (len(shares) + 2),
                                                   abs=1e-6)  # fmt: skip
    assert got["reliability"].min() < 0.95  # the simulated partners do not all deliver
    head = "\n".join(r.stdout.splitlines()[:4])
    assert f"deliveries.csv | head -4\n{head}\n```" in (ROOT / "README.md").read_text()
    r = CliRunner().invoke(main, ["partnerships", "reliability", "--deliveries",
                                  str(HISTORY / "deliveries.csv")])  # fmt: skip
    assert r.exit_code == 2 and "--db" in r.output


def test_a_deliveries_file_names_every_bad_row():
    from matcher.outcomes import read_deliveries

    bad = ("delivery_id,partnership_id,period_start,period_end,units\n"
           "d1,p1,2014-01-05,2014-01-01,2\nd2,@p,2014-01-01,2014-01-07,nan\n"
           "d3,p3,2014-01-01T10:00,2014-01-07,1\n")  # fmt: skip
    with pytest.raises(InputValidationError) as e:
        read_deliveries(bad.encode(), "d.csv")
    found = {(p.row, p.field) for p in e.value.problems}
    assert found == {(2, "period_end"), (3, "partnership_id"), (3, "units"),
                     (4, "period_start")}, found


def test_the_cli_exports_every_partnership_or_warns(tmp_path):
    from matcher.store import open_store

    from .test_partnerships import load_city, run_plan

    db = str(tmp_path / "s.db")
    with open_store(db) as st:
        load_city(st)
        run_plan(st, publish=True)
        total = st.count_partnerships()
    assert total > 3
    runner = CliRunner()
    r = runner.invoke(main, ["partnerships", "list", "--db", db, "--limit", "3"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 4
    assert f"warning: {total} partnerships match; the 3 newest" in r.stderr
    r = runner.invoke(main, ["partnerships", "list", "--db", db, "--limit", "3", "--all"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == total + 1 and not r.stderr


def test_windows_are_checked():
    for before, after, word in (
        ("2014-01-01", "2014-05-01..2014-06-30", "FIRST..LAST"),
        ("2014-02-30..2014-03-01", "2014-05-01..2014-06-30", "not a date"),
        ("2014-03-01..2014-01-01", "2014-05-01..2014-06-30", "before the first"),
        ("2014-01-01..2014-06-30", "2014-05-01..2014-06-30", "must start after"),
        ("2000-01-01..2014-06-30", "2014-07-01..2014-08-30", "at most 3660 days"),
        ("0001-01-01..0001-01-30", "2014-07-01..2014-08-30", "days from 1900-01-01"),
        ("2014-01-01..2014-01-30", "9999-07-01..9999-08-30", "to 2199-12-31"),
    ):  # fmt: skip
        with pytest.raises(InputValidationError) as e:
            parse_windows(before, after)
        assert word in str(e.value), (before, after, str(e.value))


def test_an_events_file_names_every_bad_row():
    import geopandas as gpd
    from shapely.geometry import box

    hoods = gpd.GeoDataFrame({"neighborhood_id": ["1"]}, geometry=[box(-88, 41, -87, 42)],
                             crs="EPSG:4326")  # fmt: skip
    good = (b"id,category,lat,lon,date\ne1,food,41.5,-87.5,2014-01-02\n"
            b"e2,food_access,45,-87.5,2014-01-03T10:00:00\n")
    ev = read_events(good, "ev.csv", hoods)
    assert ev["neighborhood"].tolist() == ["1"] and ev.attrs["outside"] == 1
    assert ev["category"].tolist() == ["food_access"]  # an alias resolves
    bad = (b"id,category,lat,lon,date\ne1,nonsense,41.5,-87.5,2014-01-02\n"
           b"e1,food_access,91,-87.5,2014-01-02\ne3,food_access,41.5,-87.5,02/01/2014\n")
    with pytest.raises(InputValidationError) as e:
        read_events(bad, "ev.csv", hoods)
    found = {(p.row, p.field) for p in e.value.problems}
    assert found == {(2, "category"), (3, "id"), (3, "lat"), (4, "date")}
    with pytest.raises(InputValidationError, match="column missing"):
        read_events(b"id,lat,lon\n", "ev.csv", hoods)


# ----------------------------------------------------------------------------- the doors

SAMPLE_ARGS = [
    "impact", "--needs", str(SAMPLE / "needs.csv"),
    "--neighborhoods", str(SAMPLE / "neighborhoods.geojson"),
    "--partnerships", str(HISTORY / "partnerships.csv"), "--events", str(SAMPLE / "events.csv"),
    "--before", "2014-01-01..2014-05-31", "--after", "2014-07-01..2014-12-31",
]  # fmt: skip


def test_the_sample_history_through_the_cli(tmp_path):
    out = tmp_path / "impact"
    r = CliRunner().invoke(main, [*SAMPLE_ARGS, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "rate ratio" in r.stdout and "Method:" in r.stdout and "Caveat:" in r.stdout
    doc = json.loads((out / "impact.json").read_text())
    tests = {(t["measure"], t["category"]): t for t in doc["tests"]}
    ev = tests[("events", "all")]
    cells = pd.read_csv(out / "impact_cells.csv", dtype={"neighborhood": str})
    # the table's figures are the cells' sums
    served = cells[cells["group"] == "served"]
    assert ev["served_cells"] <= len(served) and ev["served_cells"] >= 30
    assert ev["served_before"] == served["events_before"].sum()
    assert ev["rate_ratio"] is not None and ev["ci_low"] < ev["rate_ratio"] < ev["ci_high"]
    html = (out / "impact.html").read_text()
    assert 'id="map-impact"' in html and 'id="table-impact"' in html
    # the README shows this run: its lines are what the CLI prints
    readme = (ROOT / "README.md").read_text()
    block = readme.split("--before 2014-01-01..2014-05-31 --after 2014-07-01..2014-12-31 "
                         "--out out/impact\n", 1)[1].split("\n...\n", 1)[0]  # fmt: skip
    assert r.stdout.startswith(block + "\n"), block
    # the same input gives the same files
    r2 = CliRunner().invoke(main, [*SAMPLE_ARGS, "--out", str(tmp_path / "again")])
    assert r2.exit_code == 0
    for name in ("impact.json", "impact_cells.csv", "impact.html"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_bad_input_exits_2_naming_it(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, [*SAMPLE_ARGS[:-4], "--before", "2014-01-01..2014-05-31",
                             "--after", "2014-05-01..2014-12-31"])  # fmt: skip
    assert r.exit_code == 2 and "must start after" in r.output
    bad = tmp_path / "events.csv"
    bad.write_text("id,category,lat,lon,date\nx,food_access,41.8,-87.6,yesterday\n")
    args = [*SAMPLE_ARGS]
    args[args.index("--events") + 1] = str(bad)
    r = runner.invoke(main, args)
    assert r.exit_code == 2 and "row 2" in r.output and "date" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(main, ["impact", "--before", "2014-01-01..2014-05-31",
                             "--after", "2014-07-01..2014-12-31"])  # fmt: skip
    assert r.exit_code == 2 and "--db" in r.output


def test_the_simulated_history_is_labelled_and_consistent():
    parts = pd.read_csv(HISTORY / "partnerships.csv", dtype=str, keep_default_na=False)
    assert parts["partnership_id"].str.startswith("SIM-").all()
    assert parts["plan_id"].str.startswith("SIM-PLAN-").all()
    deliveries = pd.read_csv(HISTORY / "deliveries.csv", dtype=str)
    assert set(deliveries["partnership_id"]) <= set(
        parts.loc[parts["state"].isin(["completed", "cancelled"]), "partnership_id"])
    events = pd.read_csv(SAMPLE / "events.csv", dtype=str)
    assert events["id"].is_unique and set(events["category"]) == {
        "environmental_design", "crime_prevention"}
    readme = (ROOT / "data" / "README.md").read_text()
    assert "SIMULATED" in readme and "simulated_history" in readme


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "chicago").is_dir(),
                    reason="the Chicago source data is not beside the repository")
def test_the_history_and_events_rebuild_byte_identical(tmp_path):
    out, events = tmp_path / "history", tmp_path / "events.csv"
    subprocess.run([sys.executable, str(ROOT / "data" / "build_history.py"), "--out", str(out),
                    "--events", str(events)], check=True, capture_output=True)  # fmt: skip

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert digest(events) == digest(SAMPLE / "events.csv")
    for name in ("partnerships.csv", "deliveries.csv"):
        assert digest(out / name) == digest(HISTORY / name), name


def test_the_api_and_a_store_give_what_the_files_give(tmp_path, where):
    """Both stores: the endpoint equals the CLI on files exported from the same store."""
    from api import create_app
    from matcher.store import open_store

    from .conftest import close_app
    from .test_partnerships import auth, published

    app = create_app({"DB": where, "TESTING": True, "PLAN_WORKERS": 0})
    try:
        st = app.extensions["matcher_store"]
        keys = _load_dated_city(st)
        c = app.test_client()
        published(app, c, keys)
        today = dt.date.today()
        for i, p in enumerate(st.list_partnerships(limit=None)):
            if i % 2 == 0:
                c.post(f"/api/v1/partnerships/{p['partnership_id']}/transitions",
                       json={"to": "accepted"}, headers=auth(keys["planner"], '"1"'))  # fmt: skip
        before = f"{today - dt.timedelta(days=90)}..{today - dt.timedelta(days=31)}"
        after = f"{today}..{today + dt.timedelta(days=59)}"
        q = f"/api/v1/impact?before={before}&after={after}"
        r = c.get(q, headers=auth(keys["planner"]))
        assert r.status_code == 200, r.get_data(as_text=True)
        body = r.get_json()
        assert {t["measure"] for t in body["tests"]} == {"needs"}
        assert {cell["group"] for cell in body["cells"]} >= {"served", "comparison"}
        for role in ("outreach", "P1"):
            assert c.get(q, headers=auth(keys[role])).status_code == 403, role
        r = c.get(q.replace(before, "2014-13-01..2014-12-31"), headers=auth(keys["planner"]))
        assert r.status_code in (400, 422) and "before" in r.get_data(as_text=True)
        events = "id,category,lat,lon,date\n" + "".join(
            f"e{i},food_access,41.88,-87.63,{today - dt.timedelta(days=40 + i % 3)}\n"
            for i in range(5))  # fmt: skip
        r = c.post(q, data=events, headers=auth(keys["planner"]) | {"Content-Type": "text/csv"})
        assert r.status_code == 200, r.get_data(as_text=True)
        assert {t["measure"] for t in r.get_json()["tests"]} == {"needs", "events"}
        r = c.post(q, json={}, headers=auth(keys["planner"]))
        assert r.status_code == 415
        csv_text = c.get(q + "&format=csv", headers=auth(keys["planner"])).get_data(as_text=True)
        assert csv_text.startswith("neighborhood,category,group,")
        # the same through files exported from the store (CLI), and through the CLI's --db
        runner = CliRunner()
        exported = runner.invoke(main, ["partnerships", "list", "--db", where,
                                        "--limit", "100000"])  # fmt: skip
        assert exported.exit_code == 0, exported.output
        (tmp_path / "p.csv").write_text(exported.stdout)
        with open_store(where) as other:
            other.needs_frame().drop(columns="geometry").to_csv(tmp_path / "n.csv", index=False)
            hoods = other.neighborhoods_frame()
            assert hoods is not None
            (tmp_path / "h.geojson").write_text(hoods.to_json())
        by_files = runner.invoke(main, ["impact", "--needs", str(tmp_path / "n.csv"),
                                        "--neighborhoods", str(tmp_path / "h.geojson"),
                                        "--partnerships", str(tmp_path / "p.csv"),
                                        "--before", before, "--after", after,
                                        "--format", "json"])  # fmt: skip
        assert by_files.exit_code == 0, by_files.output
        by_db = runner.invoke(main, ["impact", "--db", where, "--before", before,
                                     "--after", after, "--format", "json"])  # fmt: skip
        assert by_db.exit_code == 0, by_db.output
        assert json.loads(by_files.stdout) == json.loads(by_db.stdout) == body
    finally:
        close_app(app)


def _load_dated_city(st: Any) -> dict[str, str]:
    """The partnership tests' city, its needs dated over the last 90 days and the next 60."""
    from .test_partnerships import city

    needs, partners = city()
    today = dt.date.today()
    rng = np.random.default_rng(5)
    offsets = rng.integers(-90, 60, len(needs))
    needs["reported_at"] = [(today + dt.timedelta(days=int(o))).isoformat() for o in offsets]
    import geopandas as gpd
    from shapely.geometry import box

    # a 4 x 3 grid of neighborhoods over the city
    cells = [(f"hood-{r}{c}", box(-87.665 + c * 0.015, 41.855 + r * 0.02,
                                  -87.65 + c * 0.015, 41.875 + r * 0.02))
             for r in range(3) for c in range(4)]  # fmt: skip
    hoods = gpd.GeoDataFrame({"neighborhood_id": [h for h, _ in cells]},
                             geometry=[g for _, g in cells], crs="EPSG:4326")  # fmt: skip
    st.replace_neighborhoods(hoods, "test")
    st.replace_partners(partners, "test")
    st.replace_needs(needs, "test")
    keys = {r: st.create_api_key(r)[1] for r in ("admin", "planner", "outreach")}
    keys["P1"] = st.create_api_key("partner", partner_id="P1")[1]
    return keys
