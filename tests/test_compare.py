"""Comparing two plans (#14 item 2): matcher.compare, ``matcher compare`` and the API's list
of plans and compare route.

The core and the CLI run on a small synthetic city (a plan, a what-if scenario of it and a
plan with another cluster_km); the API on the three-area slice of the sample city of the
map tests, on each store backend.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from api import create_app
from matcher import InputValidationError
from matcher.cli import main
from matcher.compare import REQUIRED_PLAN_FILES, compare_plans, headline
from matcher.synthetic import generate_city, write_city

from .conftest import assert_clean_exit, close_app, plan_cli
from .test_api_scenarios import auth, done, wait
from .test_webmap import load_store, write_slice


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def frame(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False)


def loads(files: dict[str, bytes]) -> pd.Series:
    a = frame(files["assignments.csv"])
    return a.assign(units=a["units"].astype(float)).groupby("partner_id")["units"].sum()


# --------------------------------------------------------------------------- core and CLI


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("city")
    paths = write_city(generate_city(240, 40, seed=11), d)
    return {k: Path(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def dirs(city, tmp_path_factory) -> dict[str, Path]:
    """A plan (a), a what-if scenario of it (b) and a plan with another cluster_km (c)."""
    root = tmp_path_factory.mktemp("plans")
    common = ("--neighborhoods", str(city["neighborhoods"]), "-q")
    res = plan_cli(city["needs"], city["partners"], root / "a", root / "models", *common)
    assert res.exit_code == 0, res.output
    used = loads(files_of(root / "a")).sort_values()
    res = run("scenario", "--base", str(root / "a"), "--out", str(root / "b"), "-q",
              "--scale-capacity", "0.7", "--remove-partners", used.index[-1])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = plan_cli(city["needs"], city["partners"], root / "c", root / "models", *common,
                   "--cluster-km", "0.9")  # fmt: skip
    assert res.exit_code == 0, res.output
    return {"a": root / "a", "b": root / "b", "c": root / "c", "removed": used.index[-1]}


def test_a_scenario_against_its_base_plan(dirs):
    fa, fb = files_of(dirs["a"]), files_of(dirs["b"])
    r = compare_plans(fa, fb)
    assert r.clusters_comparable and r.reason is None
    # every cluster, in order, with served units as written in clusters.csv
    ca, cb = frame(fa["clusters.csv"]), frame(fb["clusters.csv"])
    assert r.clusters["cluster_id"].tolist() == sorted(ca["cluster_id"])
    got = r.clusters.set_index("cluster_id")
    for row in ca.itertuples(index=False):
        assert got.loc[row.cluster_id, "served_a"] == float(row.served)
        assert got.loc[row.cluster_id, "demand"] == float(row.demand)
    for row in cb.itertuples(index=False):
        assert got.loc[row.cluster_id, "served_b"] == float(row.served)
    assert (got["delta"] == (got["served_b"] - got["served_a"]).round(6)).all()
    # the changed clusters are those of the scenario's own diff
    diff = frame(fb["scenario_clusters.csv"]).set_index("cluster_id")
    changed = got[got["change"] != "same"]
    assert sorted(changed.index) == sorted(diff.index)
    for cid, row in diff.iterrows():
        assert changed.loc[cid, "change"] == row["status"]
        assert changed.loc[cid, "delta"] == float(row["change"])
    assert set(got["change"]) <= {"gained", "lost", "same"}
    t = r.totals
    assert t["clusters_lost"] == int((got["change"] == "lost").sum()) > 0
    assert t["clusters_gained"] + t["clusters_lost"] + t["clusters_same"] == len(ca)
    # partners: deltas are the sums of assignments.csv, recomputed here
    la, lb = loads(fa), loads(fb)
    both = pd.DataFrame({"a": la, "b": lb}).fillna(0.0)
    both["delta"] = (both["b"] - both["a"]).round(6)
    want = both[both["delta"] != 0]
    p = r.partners.set_index("partner_id")
    assert sorted(p.index) == sorted(want.index) and dirs["removed"] in p.index
    for pid, row in want.iterrows():
        assert p.loc[pid, "units_a"] == round(row["a"], 6)
        assert p.loc[pid, "units_b"] == round(row["b"], 6)
        assert p.loc[pid, "delta"] == row["delta"]
    assert p.loc[dirs["removed"], "units_b"] == 0 and pd.isna(p.loc[dirs["removed"], "capacity_b"])
    assert (p["capacity_b"].dropna() <= p["capacity_a"].reindex(p["capacity_b"].dropna().index)
            + 1e-9).all()  # fmt: skip
    assert p["name"].notna().all() and set(p["kind"]) <= {"organization", "volunteer"}
    assert t["partners_changed"] == len(p)
    # totals: the summaries' figures, and the same as the scenario's own metrics
    doc = json.loads(fb["scenario.json"])
    assert t["units_served_delta"] == doc["metrics"]["delta"]["units_served"]
    assert t["coverage_delta"] == doc["metrics"]["delta"]["coverage"]
    assert t["units_served_delta"] == pytest.approx(lb.sum() - la.sum(), abs=1e-6)
    # neighborhoods: the summaries' coverage, named as gaps.csv names them
    hoods = r.neighborhoods
    sa = json.loads(fa["summary.json"])["metrics"]["coverage_by_neighborhood"]
    assert hoods["neighborhood_id"].tolist() == sorted(sa)
    for row in hoods.itertuples(index=False):
        assert row.served_a == sa[row.neighborhood_id]["served"]
        assert row.coverage_a == sa[row.neighborhood_id]["coverage"]
        assert row.delta_served == round(row.served_b - row.served_a, 6)
        assert row.name.startswith("Neighborhood ")
    assert hoods["delta_served"].sum() == pytest.approx(t["units_served_delta"], abs=1e-5)
    # JSON: no NaN, nothing but plain values
    text = json.dumps(r.to_dict(), allow_nan=False)
    assert json.loads(text)["totals"] == t


def test_a_plan_compared_with_itself_changes_nothing(dirs):
    fa = files_of(dirs["a"])
    r = compare_plans(fa, fa)
    assert r.clusters_comparable and set(r.clusters["change"]) == {"same"}
    assert r.partners.empty and (r.neighborhoods["delta_served"] == 0).all()
    assert r.totals["units_served_delta"] == 0 and r.totals["clusters_same"] == len(r.clusters)


def test_plans_with_other_clusters_are_compared_per_neighborhood(dirs):
    fa, fc = files_of(dirs["a"]), files_of(dirs["c"])
    r = compare_plans(fa, fc, labels=("A", "C"))
    assert not r.clusters_comparable
    assert "cluster_km 0.5 in A, 0.9 in C" in r.reason
    assert "the same cluster id names different clusters" in r.reason
    assert r.clusters.empty and list(r.clusters.columns)[:3] == ["cluster_id", "category",
                                                                   "neighborhood"]  # fmt: skip
    assert r.totals["clusters_gained"] is None and r.totals["clusters_lost"] is None
    assert len(r.neighborhoods) > 0
    # the same cluster ids with another demand: not the same clusters either
    clusters = frame(fa["clusters.csv"])
    clusters.loc[0, "demand"] = str(float(clusters.loc[0, "demand"]) + 1)
    changed = fa | {"clusters.csv": clusters.to_csv(index=False).encode()}
    r = compare_plans(fa, changed)
    assert not r.clusters_comparable
    assert "1 with another category, demand, needs or centre" in r.reason
    assert "cluster_km" not in r.reason  # the parameters are the same


def test_tables_as_csv_with_cells_neutralised(dirs, tmp_path):
    fa, fb = files_of(dirs["a"]), files_of(dirs["b"])
    pid = compare_plans(fa, fb).partners["partner_id"].iloc[-1]  # its load changed
    a = frame(fb["assignments.csv"])
    assert (a["partner_id"] == pid).any()
    a.loc[a["partner_id"] == pid, "partner_name"] = '\'=HYPERLINK("x")'  # as written
    fb = fb | {"assignments.csv": a.to_csv(index=False).encode()}
    r = compare_plans(fa, fb)
    written = r.to_dir(tmp_path)
    assert sorted(written) == ["compare.json", "compare_clusters.csv",
                               "compare_neighborhoods.csv", "compare_partners.csv"]  # fmt: skip
    partners = frame((tmp_path / "compare_partners.csv").read_bytes()).set_index("partner_id")
    assert partners.loc[pid, "name"] == '\'=HYPERLINK("x")'
    assert r.partners.set_index("partner_id").loc[pid, "name"] == '=HYPERLINK("x")'
    clusters = frame((tmp_path / "compare_clusters.csv").read_bytes())
    assert clusters["cluster_id"].tolist() == r.clusters["cluster_id"].tolist()
    assert list(clusters.columns) == list(r.clusters.columns)
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert doc["format"] == "matcher.compare/1" and doc["totals"] == r.totals


def test_missing_files_are_named():
    with pytest.raises(InputValidationError) as info:
        compare_plans({}, {"summary.json": b"{}"}, labels=("one", "two"))
    files = [p.file for p in info.value.problems]
    assert files == [f"one/{n}" for n in REQUIRED_PLAN_FILES] + [
        "two/clusters.csv", "two/assignments.csv"
    ]  # fmt: skip


def test_cli_compare(dirs, tmp_path):
    out = tmp_path / "diff"
    res = run("compare", str(dirs["a"]), str(dirs["b"]), "--out", str(out))
    assert_clean_exit(res, 0)
    t = compare_plans(files_of(dirs["a"]), files_of(dirs["b"])).totals
    assert f"clusters: {t['clusters_gained']} gained, {t['clusters_lost']} lost" in res.stdout
    assert f"partners whose load changed: {t['partners_changed']}" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare_clusters.csv",
                                                     "compare_neighborhoods.csv",
                                                     "compare_partners.csv"]  # fmt: skip
    res = run("compare", str(dirs["a"]), str(dirs["c"]), "--format", "json")
    assert_clean_exit(res, 0)
    doc = json.loads(res.stdout)
    want = compare_plans(files_of(dirs["a"]), files_of(dirs["c"]),
                         labels=(str(dirs["a"]), str(dirs["c"]))).to_dict()  # fmt: skip
    assert doc == want and doc["clusters_comparable"] is False


def test_cli_compare_refuses_a_directory_that_is_not_a_plan(dirs, tmp_path):
    (tmp_path / "clusters.csv").write_text("cluster_id\n")
    res = run("compare", str(dirs["a"]), str(tmp_path))
    assert_clean_exit(res, 2)
    assert f"{tmp_path}/summary.json: missing" in res.stderr
    assert f"{tmp_path}/assignments.csv: missing" in res.stderr
    res = run("compare", str(dirs["a"]), str(tmp_path / "nope"))
    assert res.exit_code == 2 and "does not exist" in res.stderr


def copy_plan(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_figures_that_are_not_finite_numbers_are_refused_and_nothing_is_written(dirs, tmp_path):
    bad = copy_plan(dirs["b"], tmp_path / "bad")
    summary = json.loads((bad / "summary.json").read_text())
    summary["metrics"]["units"]["served"] = "1"  # text, not a number
    summary["metrics"]["counts"]["clusters"] = True  # a bool is not a number either
    hid = sorted(summary["metrics"]["coverage_by_neighborhood"])[0]
    summary["metrics"]["coverage_by_neighborhood"][hid]["served"] = float("inf")
    summary["metrics"]["coverage_by_neighborhood"][hid]["coverage"] = None  # allowed
    (bad / "summary.json").write_text(json.dumps(summary))  # writes Infinity
    clusters = frame((bad / "clusters.csv").read_bytes())
    clusters.loc[2, "served"] = "inf"  # the third data row: line 4 of the file
    clusters.to_csv(bad / "clusters.csv", index=False)
    assignments = frame((bad / "assignments.csv").read_bytes())
    assignments.loc[0, "units"] = "nan"
    assignments.loc[1, "capacity_left"] = ""  # allowed: no known capacity
    assignments.to_csv(bad / "assignments.csv", index=False)
    out = tmp_path / "out"
    for fmt in ("table", "json"):
        res = run("compare", str(dirs["a"]), str(bad), "--out", str(out), "--format", fmt)
        assert_clean_exit(res, 2)
        err = res.stderr
        assert f"{bad}/summary.json, field 'metrics.units.served', value '1': expected a " \
               "finite number" in err  # fmt: skip
        assert f"{bad}/summary.json, field 'metrics.counts.clusters', value 'True'" in err
        assert f"field 'metrics.coverage_by_neighborhood.{hid}.served', value 'inf'" in err
        assert f"coverage_by_neighborhood.{hid}.coverage" not in err
        assert f"{bad}/clusters.csv, row 4, field 'served', value 'inf': expected a " \
               "finite number" in err  # fmt: skip
        assert f"{bad}/assignments.csv, row 2, field 'units', value 'nan'" in err
        assert "capacity_left" not in err
        assert res.stdout == "" and not out.exists()  # nothing written, not even the directory
    # the core: every problem of both plans, with its row
    with pytest.raises(InputValidationError) as info:
        compare_plans(files_of(bad), files_of(bad), labels=("x", "y"))
    rows = {(p.file, p.row, p.field) for p in info.value.problems}
    assert ("y/clusters.csv", 4, "served") in rows and ("x/assignments.csv", 2, "units") in rows
    assert ("x/summary.json", None, "metrics.units.served") in rows


def test_a_number_is_found_on_its_line_when_a_cell_spans_lines(dirs):
    fa = files_of(dirs["a"])
    a = frame(fa["assignments.csv"])
    a.loc[0, "partner_name"] = "two\nlines"
    a.loc[1, "units"] = "-inf"
    with pytest.raises(InputValidationError) as info:
        compare_plans(fa | {"assignments.csv": a.to_csv(index=False).encode()}, fa)
    (p,) = info.value.problems
    assert (p.file, p.row, p.field, p.value) == ("a/assignments.csv", 4, "units", "-inf")


def test_a_summary_that_is_not_an_object_is_refused(dirs):
    fa = files_of(dirs["a"])
    for doc in (b"[]", b'{"metrics": {"units": 1, "counts": {}}}', b"{"):
        with pytest.raises(InputValidationError) as info:
            compare_plans(fa | {"summary.json": doc}, fa)
        assert {p.file for p in info.value.problems} == {"a/summary.json"}


def test_compare_files_have_the_usual_permissions(dirs, tmp_path):
    old = os.umask(0o027)
    try:
        res = run("compare", str(dirs["a"]), str(dirs["b"]), "--out", str(tmp_path / "cli"))
        assert_clean_exit(res, 0)
        compare_plans(files_of(dirs["a"]), files_of(dirs["b"])).to_dir(tmp_path / "core")
    finally:
        os.umask(old)
    for d in ("cli", "core"):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / d).iterdir()}
        assert len(modes) == 4 and set(modes.values()) == {0o640}, modes


def test_compare_beside_a_plan_touches_none_of_its_files(dirs, tmp_path):
    plan = copy_plan(dirs["a"], tmp_path / "plan")
    (plan / "report.html").write_text("kept")  # an optional file of the plan
    before = files_of(plan)
    res = run("compare", str(dirs["b"]), str(plan), "--out", str(plan))
    assert_clean_exit(res, 0)
    after = files_of(plan)
    assert {n: after[n] for n in before} == before
    assert sorted(set(after) - set(before)) == ["compare.json", "compare_clusters.csv",
                                                "compare_neighborhoods.csv",
                                                "compare_partners.csv"]  # fmt: skip


def test_cli_compare_does_not_echo_unprintable_names(dirs, tmp_path):
    plan = copy_plan(dirs["a"], tmp_path / "plan")
    gaps = frame((plan / "gaps.csv").read_bytes())
    hid = gaps.loc[0, "neighborhood"]
    gaps.loc[gaps["neighborhood"] == hid, "neighborhood_name"] = "Bad\x1b[2JName\u202e\x07"
    gaps.to_csv(plan / "gaps.csv", index=False)
    r = compare_plans(files_of(plan), files_of(dirs["b"]))
    assert "Bad\x1b[2JName\u202e\x07" in set(r.neighborhoods["name"])  # kept in the data
    res = run("compare", str(plan), str(dirs["b"]))
    assert_clean_exit(res, 0)
    assert f"  {hid} Bad?[2JName??: served" in res.stdout
    assert not any(c in res.stdout for c in "\x1b\x07\u202e")


# --------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def stored(module_store_url, tmp_path_factory):
    """A store (each backend) with plans of every kind and state; an app that runs none.

    In order: a plan from volunteers' exact points (an older store's, by the CLI), a plan
    (planner), a scenario of it (planner), a plan with another cluster_km (admin: the
    plan in force), then a queued plan (system) and a failed one (planner's key).
    """
    url = module_store_url
    keys = load_store(url, write_slice(tmp_path_factory.mktemp("slice")))
    app = create_app({"DB": url, "TESTING": True})
    client = app.test_client()
    st = app.extensions["matcher_store"]
    exact = st.create_plan({"objective": "distance", "volunteer_points": "exact",
                            "taxonomy": None}, actor="cli")  # fmt: skip
    app.extensions["matcher_jobs"].wake()
    assert wait(client, auth(keys["admin"]), exact)["status"] == "done"
    planner, admin = auth(keys["planner"]), auth(keys["admin"])
    base = done(client, planner, body={"objective": "distance"})["plan_id"]
    scenario = done(client, planner, f"/api/v1/plans/{base}/scenarios", {"scale_capacity": 0.5})
    other = done(client, admin, body={"objective": "distance", "cluster_km": 1.0,
                                      "publish": True})  # fmt: skip
    close_app(app)
    app = create_app({"DB": url, "TESTING": True, "PLAN_WORKERS": 0})
    st = app.extensions["matcher_store"]
    queued = st.create_plan({"objective": "distance", "volunteer_points": "grid"})
    failed = st.create_plan({"objective": "distance", "volunteer_points": "grid"},
                            actor=st.get_plan(base).created_by)  # fmt: skip
    assert st.claim_plan("test", plan_id=failed) is not None
    st.plan_failed(failed, "stopped by the test", worker="test")
    ids = {"exact": exact, "base": base, "scenario": scenario["plan_id"],
           "other": other["plan_id"], "queued": queued, "failed": failed}  # fmt: skip
    yield {"app": app, "client": app.test_client(), "keys": keys, "ids": ids}
    close_app(app)


def listing(stored, role="outreach", query=""):
    r = stored["client"].get(f"/api/v1/plans{query}", headers=auth(stored["keys"][role]))
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_list_plans_newest_first_with_who_and_figures(stored):
    ids = stored["ids"]
    st = stored["app"].extensions["matcher_store"]
    body = listing(stored)
    assert body["total"] == 6 and body["limit"] == 50 and body["offset"] == 0
    assert body["next"] is None
    items = {r["plan_id"]: r for r in body["results"]}
    assert [r["plan_id"] for r in body["results"]] == [p.plan_id for p in st.list_plans()]
    assert [r["plan_id"] for r in body["results"]][:2] == [ids["failed"], ids["queued"]]
    assert items[ids["scenario"]]["kind"] == "scenario"
    assert items[ids["scenario"]]["base_plan"] == ids["base"]
    assert {items[i]["kind"] for i in ids.values() if i != ids["scenario"]} == {"plan"}
    assert items[ids["base"]]["base_plan"] is None
    roles = {k: items[i]["created_by_role"] for k, i in ids.items()}
    assert roles == {"exact": None, "base": "planner", "scenario": "planner",
                     "other": "admin", "queued": None, "failed": "planner"}  # fmt: skip
    assert items[ids["exact"]]["created_by"] == "cli"
    assert items[ids["queued"]]["created_by"] == "system"
    # the plan in force: the one published (at grid points); the others are drafts
    assert [i for i, r in items.items() if r["in_force"]] == [ids["other"]]
    assert [i for i, r in items.items() if r["published_at"]] == [ids["other"]]
    latest = stored["client"].get("/api/v1/plans/latest", headers=auth(stored["keys"]["admin"]))
    assert latest.get_json()["plan"]["plan_id"] == ids["other"]
    # headline figures of done plans, from their summaries
    for key in ("base", "scenario", "other"):
        summary = st.get_plan(ids[key]).summary
        assert items[ids[key]]["headline"] == headline(summary["metrics"])
        assert items[ids[key]]["headline"]["units_served"] == summary["metrics"]["units"]["served"]
        assert items[ids[key]]["url"] == f"/api/v1/plans/{ids[key]}"
    assert items[ids["queued"]]["headline"] is None and items[ids["queued"]]["status"] == "queued"
    assert items[ids["failed"]]["error"] == "stopped by the test"
    assert items[ids["other"]]["parameters"]["cluster_km"] == 1.0


def test_a_plan_from_exact_points_shows_its_figures_to_admins_only(stored):
    exact = stored["ids"]["exact"]
    for role in ("outreach", "planner"):
        item = next(r for r in listing(stored, role)["results"] if r["plan_id"] == exact)
        assert item["admin_only"] is True and item["headline"] is None and not item["in_force"]
    item = next(r for r in listing(stored, "admin")["results"] if r["plan_id"] == exact)
    assert item["admin_only"] is True and item["headline"]["units_served"] > 0
    others = [r for r in listing(stored, "planner")["results"] if r["plan_id"] != exact]
    assert not any(r["admin_only"] for r in others)


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("?kind=scenario", ["scenario"]),
        ("?kind=plan&status=done", ["other", "base", "exact"]),
        ("?status=queued", ["queued"]),
        ("?status=failed&kind=plan", ["failed"]),
        ("?status=running", []),
    ],
)
def test_list_filters(stored, query, want):
    body = listing(stored, "planner", query)
    assert [r["plan_id"] for r in body["results"]] == [stored["ids"][k] for k in want]
    assert body["total"] == len(want) and body["next"] is None


def test_list_pages(stored):
    everything = [r["plan_id"] for r in listing(stored)["results"]]
    body = listing(stored, query="?limit=4")
    assert [r["plan_id"] for r in body["results"]] == everything[:4]
    assert body["next"] == "/api/v1/plans?limit=4&offset=4" and body["total"] == 6
    body = listing(stored, query="?" + body["next"].split("?")[1])
    assert [r["plan_id"] for r in body["results"]] == everything[4:] and body["next"] is None
    body = listing(stored, query="?kind=plan&limit=2&offset=1")
    assert body["next"] == "/api/v1/plans?limit=2&offset=3&kind=plan" and body["total"] == 5
    assert listing(stored, query="?offset=100000")["results"] == []


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("limit=0", "limit", "greater than or equal to 1 and less than or equal to 200"),
        ("limit=201", "limit", "less than or equal to 200"),
        ("offset=-1", "offset", "greater than or equal to 0"),
        ("offset=100001", "offset", "less than or equal to 100000"),
        ("kind=plans", "kind", "plan, scenario"),
        ("status=finished", "status", "queued, running, done, failed"),
        ("limit=ten", "limit", "integer"),
    ],
)
def test_list_arguments_are_validated(stored, query, field, reason):
    r = stored["client"].get(f"/api/v1/plans?{query}", headers=auth(stored["keys"]["planner"]))
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    problems = r.get_json()["problems"]
    assert [p["field"] for p in problems] == [field]
    assert reason in problems[0]["reason"], problems


def test_list_needs_a_key_and_any_role_reads_it(stored):
    assert stored["client"].get("/api/v1/plans").status_code == 401
    for role in ("outreach", "planner", "admin"):
        assert listing(stored, role)["total"] == 6
    st = stored["app"].extensions["matcher_store"]
    with pytest.raises(ValueError, match="kind"):
        st.list_plans(kind="plans")
    with pytest.raises(ValueError, match="status"):
        st.count_plans(status="finished")


def compare(stored, a, b, role="outreach"):
    path = f"/api/v1/plans/{stored['ids'].get(a, a)}/compare/{stored['ids'].get(b, b)}"
    return stored["client"].get(path, headers=auth(stored["keys"][role]))


def test_compare_a_scenario_with_its_base_plan(stored):
    ids, client = stored["ids"], stored["client"]
    r = compare(stored, "base", "scenario")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["a"]["plan_id"] == ids["base"] and body["a"]["kind"] == "plan"
    assert body["b"]["kind"] == "scenario" and body["b"]["base_plan"] == ids["base"]
    assert body["clusters_comparable"] is True and body["reason"] is None
    planner = auth(stored["keys"]["planner"])

    def file(plan, name):
        return client.get(f"/api/v1/plans/{ids[plan]}/files/{name}", headers=planner).data

    # the same as the core on the plans' files, and as the scenario's own diff
    want = compare_plans(
        {n: file("base", n) for n in (*REQUIRED_PLAN_FILES, "gaps.csv")},
        {n: file("scenario", n) for n in (*REQUIRED_PLAN_FILES, "gaps.csv")},
    ).to_dict()
    assert {k: v for k, v in body.items() if k not in ("a", "b")} == want
    sc = stored["app"].extensions["matcher_store"].get_plan(ids["scenario"]).summary["scenario"]
    assert body["totals"]["units_served_delta"] == sc["metrics"]["delta"]["units_served"] < 0
    changed = [c for c in body["clusters"] if c["change"] != "same"]
    assert len(changed) == sc["clusters_changed"] == body["totals"]["clusters_lost"]
    la = loads({"assignments.csv": file("base", "assignments.csv")})
    lb = loads({"assignments.csv": file("scenario", "assignments.csv")})
    for p in body["partners"]:
        assert p["delta"] == round(lb.get(p["partner_id"], 0.0) - la.get(p["partner_id"], 0.0), 6)
    assert {h["neighborhood_id"] for h in body["neighborhoods"]} == {"6", "7", "8"}
    assert all(h["name"] for h in body["neighborhoods"])


def test_compare_plans_with_other_clusters(stored):
    body = compare(stored, "base", "other", "planner").get_json()
    assert body["clusters_comparable"] is False and "cluster_km 0.5" in body["reason"]
    assert body["clusters"] == [] and body["totals"]["clusters_gained"] is None
    assert len(body["neighborhoods"]) == 3


def test_compare_errors(stored):
    ids = stored["ids"]
    unknown = "0123456789abcdef0123456789abcdef"
    for a, b in ((unknown, "base"), ("base", unknown)):
        r = compare(stored, a, b)
        assert r.status_code == 404 and r.mimetype == "application/problem+json"
        assert unknown in r.get_json()["detail"]
    for state in ("queued", "failed"):
        r = compare(stored, "base", state)
        assert r.status_code == 409 and r.mimetype == "application/problem+json"
        detail = r.get_json()["detail"]
        assert ids[state] in detail and state in detail and "done" in detail
    r = compare(stored, "exact", "base", "planner")
    assert r.status_code == 403 and "exact points" in r.get_json()["detail"]
    assert compare(stored, "base", "exact", "admin").status_code == 200
    assert stored["client"].get(f"/api/v1/plans/{ids['base']}/compare/{ids['other']}"
                                ).status_code == 401  # fmt: skip


def test_openapi_documents_the_list_and_the_comparison(stored):
    spec = stored["client"].get("/api/v1/openapi.json").get_json()
    get = spec["paths"]["/api/v1/plans"]["get"]
    params = {p["name"]: p["schema"] for p in get["parameters"]}
    assert params["limit"]["maximum"] == 200 and params["offset"]["maximum"] == 100000
    assert params["kind"]["enum"] == ["plan", "scenario"]
    path = spec["paths"]["/api/v1/plans/{plan_id}/compare/{other_id}"]["get"]
    assert {"200", "403", "404", "409"} <= set(path["responses"])
    schemas = spec["components"]["schemas"]
    assert {"in_force", "created_by_role", "headline", "kind"} <= set(
        schemas["PlanListItem"]["properties"]
    )
    assert schemas["ClusterChange"]["properties"]["change"]["enum"] == ["gained", "lost", "same"]


def test_compare_is_cached_after_the_checks(stored, monkeypatch):
    import matcher_api.plans as plans

    app, ids = stored["app"], stored["ids"]
    first = compare(stored, "exact", "base", "admin")
    assert first.status_code == 200
    cache = app.extensions["matcher_compare"]
    assert (ids["exact"], ids["base"]) in cache
    st = app.extensions["matcher_store"]
    monkeypatch.setattr(st, "plan_file", lambda *a: pytest.fail("read again"))
    again = compare(stored, "exact", "base", "admin")
    assert again.status_code == 200 and again.data == first.data  # from the cache
    # the privacy check still runs on every request: the cached body is not for a planner
    r = compare(stored, "exact", "base", "planner")
    assert r.status_code == 403 and "exact points" in r.get_json()["detail"]
    # bounded: the least recently used goes
    monkeypatch.undo()
    monkeypatch.setattr(plans, "COMPARE_CACHE_SIZE", 1)
    assert compare(stored, "scenario", "other").status_code == 200
    assert list(cache) == [(ids["scenario"], ids["other"])]


def test_compare_of_a_plan_with_a_non_finite_number_is_a_conflict(stored, monkeypatch):
    ids = stored["ids"]
    st = stored["app"].extensions["matcher_store"]
    real = st.plan_file

    def plan_file(plan_id, name):
        content = real(plan_id, name)
        if plan_id == ids["other"] and name == "clusters.csv":
            clusters = frame(content)
            clusters.loc[0, "served"] = "inf"
            return clusters.to_csv(index=False).encode()
        return content

    monkeypatch.setattr(st, "plan_file", plan_file)
    r = compare(stored, "other", "base", "planner")
    assert r.status_code == 409 and r.mimetype == "application/problem+json"
    detail = r.get_json()["detail"]
    assert f"{ids['other']}/clusters.csv, row 2, field 'served', value 'inf'" in detail
    assert (ids["other"], ids["base"]) not in stored["app"].extensions["matcher_compare"]
    monkeypatch.undo()
    assert compare(stored, "other", "base", "planner").status_code == 200
