"""The service's equity and recruit plan options, and what-if scenarios of a stored plan.

On the small slice of the sample city of the map tests (3 community areas: 431 needs,
276 partners, their polygons with ``hardship_index``); a plan takes about a second.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from openapi_spec_validator import validate

from api import create_app
from matcher.report import WHAT_IF_TITLE, report_html

from .conftest import BACKENDS, StoreTemplate, close_app, store_template, stored_plan
from .test_webmap import load_store, write_slice


@pytest.fixture(scope="module")
def slice_paths(tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="module", params=BACKENDS)
def slice_template(request, slice_paths) -> Iterator[StoreTemplate]:
    """The slice loaded once per backend; each test gets a copy of its own (``app``)."""
    with store_template(request, request.param, lambda url: load_store(url, slice_paths)) as t:
        yield t


@pytest.fixture()
def app(slice_template):
    url, drop = slice_template.copy()
    app = create_app({"DB": url, "TESTING": True})
    app.config["KEYS"] = slice_template.keys
    yield app
    close_app(app)
    drop()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def planner(app):
    return auth(app.config["KEYS"]["planner"])


def wait(client, headers, plan_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/api/v1/plans/{plan_id}", headers=headers).get_json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError("the plan did not finish")


def start(client, headers, path, body):
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.headers["Location"] == f"/api/v1/plans/{r.get_json()['plan_id']}"
    return r.get_json()["plan_id"]


def done(client, headers, path="/api/v1/plans", body=None):
    rec = wait(client, headers, start(client, headers, path, body or {}))
    assert rec["status"] == "done", rec
    return rec


def csv(client, headers, plan_id, name):
    r = client.get(f"/api/v1/plans/{plan_id}/files/{name}", headers=headers)
    assert r.status_code == 200, (name, r.get_data(as_text=True))
    return pd.read_csv(io.BytesIO(r.data), keep_default_na=False, dtype=str)


# --------------------------------------------------------------------------- plan options


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"min_coverage": 1.5}, 400, "min_coverage"),
        ({"min_coverage": -0.1}, 400, "min_coverage"),
        ({"min_coverage": "most"}, 400, "min_coverage"),
        ({"max_partner_share": 0}, 400, "max_partner_share"),
        ({"max_partner_share": 1.2}, 400, "max_partner_share"),
        ({"vulnerability_weight": -1}, 400, "vulnerability_weight"),
        ({"vulnerability_column": ""}, 400, "vulnerability_column"),
        ({"vulnerability_column": "median_income"}, 422, "vulnerability_column"),
        ({"vulnerability_column": "side"}, 422, "vulnerability_column"),  # not numeric
        ({"recruit_k": 0}, 400, "recruit_k"),
        ({"recruit_k": 1.5}, 400, "recruit_k"),
        ({"recruit_k": 2, "recruit_radius_km": 0}, 400, "recruit_radius_km"),
        ({"recruit_k": 2, "recruit_capacity": -3}, 400, "recruit_capacity"),
        ({"recruit_radius_km": 3}, 400, "recruit_radius_km"),  # without recruit_k
        ({"recruit_capacity": 3}, 400, "recruit_capacity"),
        ({"report": "yes"}, 400, "report"),  # a JSON boolean, nothing like one
        ({"report": 1}, 400, "report"),
        ({"min_coverge": 0.5}, 400, "min_coverge"),  # a typo is not ignored
    ],
)
def test_plan_options_are_validated(app, client, planner, body, status, field):
    r = client.post("/api/v1/plans", json=body, headers=planner)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    problems = r.get_json()["problems"]
    assert [p["field"] for p in problems] == [field], problems
    assert problems[0]["value"] == body[field]
    assert app.extensions["matcher_store"].list_plans() == []  # nothing was queued


def test_plan_with_floors_vulnerability_and_recruit_sites(app, client, planner, tmp_path):
    params = {
        "objective": "distance",
        "min_coverage": 0.8,
        "vulnerability_column": "hardship_index",
        "vulnerability_weight": 2,
        "recruit_k": 2,
        "recruit_radius_km": 1.5,
    }
    rec = done(client, planner, body=params)
    plan_id, summary = rec["plan_id"], rec["summary"]
    assert summary["parameters"]["min_coverage"] == 0.8
    assert summary["parameters"]["vulnerability_column"] == "hardship_index"
    assert rec["parameters"]["recruit"] == {"k": 2, "radius_km": 1.5, "capacity": None}
    floors = summary["metrics"]["floors"]
    assert floors["neighborhoods"] == 3 and set(floors) >= {"met", "shortfall_units", "not_met"}
    assert summary["recruit_parameters"]["k"] == 2
    assert summary["recruit_parameters"]["radius_km"] == 1.5
    for name in ("floors.csv", "gaps.csv", "gaps.geojson", "recruit.csv", "recruit.geojson"):
        assert name in rec["files"], rec["files"]
    # byte for byte what the library writes over the same stored data
    direct = stored_plan(
        app.extensions["matcher_store"],
        objective="distance",
        min_coverage=0.8,
        vulnerability_column="hardship_index",
        vulnerability_weight=2.0,
    ).with_recruit(2, 1.5)
    files = direct.to_dir(tmp_path / "direct")
    for name in ("floors.csv", "gaps.geojson", "recruit.csv", "assignments.csv"):
        got = client.get(f"/api/v1/plans/{plan_id}/files/{name}", headers=planner)
        assert got.data == files[name].read_bytes(), name
    floor_rows = csv(client, planner, plan_id, "floors.csv")
    assert (floor_rows["floor_met"] == "true").sum() == floors["met"]
    # the map carries the gap polygons, the recruit sites and the floors with their reasons
    outreach = auth(app.config["KEYS"]["outreach"])
    body = client.get(f"/api/v1/plans/{plan_id}/map", headers=outreach).get_json(force=True)
    gaps = [f for f in body["features"] if f["properties"]["feature_type"] == "gap"]
    sites = [f for f in body["features"] if f["properties"]["feature_type"] == "recruit_site"]
    assert len(gaps) == 3 and all(
        f["geometry"]["type"] in ("Polygon", "MultiPolygon") for f in gaps
    )
    assert len(sites) == len(csv(client, planner, plan_id, "recruit.csv")) > 0
    assert all(f["geometry"]["type"] == "Point" for f in sites)
    assert [r["neighborhood_id"] for r in body["floors"]] == floor_rows["neighborhood_id"].tolist()
    for row in body["floors"]:
        assert isinstance(row["floor_met"], bool) and isinstance(row["served"], float)
        assert bool(row["reason"]) == (not row["floor_met"])
    assert sum(r["floor_met"] for r in body["floors"]) == floors["met"]


def test_a_plan_without_floors_or_recruit_has_no_such_files(client, planner):
    rec = done(client, planner, body={"objective": "distance"})
    assert "floors" not in rec["summary"]["metrics"] and "recruit" not in rec["summary"]
    assert "floors.csv" not in rec["files"] and "recruit.csv" not in rec["files"]
    assert "report.html" not in rec["files"] and "report" not in rec["parameters"]
    assert "gaps.geojson" in rec["files"]  # neighborhoods are stored
    r = client.get(f"/api/v1/plans/{rec['plan_id']}/files/recruit.csv", headers=planner)
    assert r.status_code == 404 and r.mimetype == "application/problem+json"
    r = client.get(f"/api/v1/plans/{rec['plan_id']}/files/report.html", headers=planner)
    assert r.status_code == 404 and r.mimetype == "application/problem+json"
    assert "'report.html'" in r.get_json()["detail"] and "report: true" in r.get_json()["detail"]
    body = client.get(f"/api/v1/plans/{rec['plan_id']}/map", headers=planner).get_json(force=True)
    assert body["floors"] is None
    assert not any(f["properties"]["feature_type"] == "recruit_site" for f in body["features"])


def test_a_plan_with_a_report_serves_it_safely_and_its_scenarios_have_one(app, client, planner):
    rec = done(client, planner, body={"objective": "distance", "report": True})
    plan_id = rec["plan_id"]
    assert rec["parameters"]["report"] is True
    assert rec["files"]["report.html"] == f"/api/v1/plans/{plan_id}/files/report.html"
    # every role that reads plans may read it: the plan was made at volunteers' grid points
    r = client.get(rec["files"]["report.html"], headers=auth(app.config["KEYS"]["outreach"]))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Content-Disposition"] == 'attachment; filename="report.html"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = [d.strip() for d in r.headers["Content-Security-Policy"].split(";")]
    assert {"default-src 'none'", "img-src data:", "style-src 'unsafe-inline'", "sandbox"} <= set(
        csp
    )
    assert not any(d.startswith(("script-src", "connect-src")) for d in csp)
    text = r.get_data(as_text=True)
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text
    # the report of the very plan the job made, which drew volunteers at their grid
    # points: what the library renders of that plan of the same stored data, byte for byte
    direct = stored_plan(app.extensions["matcher_store"], objective="distance")
    assert r.data == report_html(direct).encode("utf-8")
    # a what-if of a plan with a report has one, of its own "after" plan
    sc = done(client, planner, f"/api/v1/plans/{plan_id}/scenarios", {"scale_capacity": 0.5})
    assert sc["parameters"]["report"] is True and "report.html" in sc["files"]
    what_if = client.get(sc["files"]["report.html"], headers=planner)
    assert what_if.status_code == 200 and what_if.headers["Content-Security-Policy"]
    assert f"<title>{WHAT_IF_TITLE}</title>" in what_if.get_data(as_text=True)
    assert what_if.data != r.data


# --------------------------------------------------------------------------- scenarios


def test_no_change_scenario_has_zero_delta_and_never_becomes_the_latest_plan(app, client, planner):
    base = done(client, planner, body={"objective": "distance", "min_coverage": 0.5,
                                       "publish": True})  # fmt: skip
    base_id = base["plan_id"]
    r = client.post(f"/api/v1/plans/{base_id}/scenarios", json={}, headers=planner)
    assert r.status_code == 202 and r.get_json()["base_plan"] == base_id
    assert "publish" not in app.extensions["matcher_store"].get_plan(
        r.get_json()["plan_id"]).parameters  # a what-if is never published
    rec = wait(client, planner, r.get_json()["plan_id"])
    assert rec["status"] == "done", rec
    assert rec["parameters"]["scenario"]["base_plan"] == base_id
    sc = rec["summary"]["scenario"]
    assert sc["base_plan"] == base_id and sc["data_changed"] is False
    assert sc["changed_inputs"] == [] and sc["base_reproduced"] is True
    assert sc["metrics"]["delta"]["units_served"] == 0
    assert sc["metrics"]["before"] == sc["metrics"]["after"]
    assert sc["clusters_changed"] == 0
    assert rec["summary"]["parameters"]["min_coverage"] == 0.5  # the base plan's parameters
    for name in ("scenario.json", "scenario_clusters.csv", "scenario_partners.csv"):
        assert name in rec["files"]
    assert "report.html" not in rec["files"]  # nor had its base plan
    assert csv(client, planner, rec["plan_id"], "scenario_clusters.csv").empty
    doc = client.get(rec["files"]["scenario.json"], headers=planner).get_json()
    assert doc["format"] == "matcher.scenario/1" and doc["metrics"] == sc["metrics"]
    # the after-plan's files are those of the base plan (same data, same parameters)
    for name in ("assignments.csv", "clusters.csv"):
        a = client.get(f"/api/v1/plans/{base_id}/files/{name}", headers=planner).data
        assert client.get(rec["files"][name], headers=planner).data == a
    # a what-if is not the plan in force: the map and nearby keep using the base plan
    latest = client.get("/api/v1/plans/latest", headers=planner).get_json()
    assert latest["plan"]["plan_id"] == base_id and latest["pending"] == []
    assert app.extensions["matcher_store"].latest_done_plan()["plan_id"] == rec["plan_id"]
    # a scenario is not the base of another one
    r = client.post(f"/api/v1/plans/{rec['plan_id']}/scenarios", json={}, headers=planner)
    assert r.status_code == 422 and r.get_json()["problems"][0]["field"] == "plan_id"


def test_removing_and_adding_partners(app, client, planner):
    base = done(client, planner, body={"objective": "distance"})
    base_id = base["plan_id"]
    used = csv(client, planner, base_id, "assignments.csv")
    used["units"] = used["units"].astype(float)
    busiest = used.groupby("partner_id")["units"].sum().sort_values().index[-1]
    new = {
        "partner_id": "NEW-1",
        "name": "Pop-up pantry",
        "kind": "organization",
        "lat": 41.92,
        "lon": -87.65,
        "categories": ["food_access", "elderly_support"],
        "capacity": 25,
        "radius_km": 3,
    }
    body = {"remove_partners": [busiest], "add_partners": [new]}
    rec = done(client, planner, f"/api/v1/plans/{base_id}/scenarios", body)
    sc = rec["summary"]["scenario"]
    assert sc["change"] == {
        "remove_partners": [busiest],
        "add_partners": ["NEW-1"],
        "scale_capacity": None,
        "radius_km": None,
    }
    partners = csv(client, planner, rec["plan_id"], "scenario_partners.csv").set_index("partner_id")
    assert partners.loc[busiest, "status"] == "removed"
    assert float(partners.loc[busiest, "change"]) < 0
    assert partners.loc["NEW-1", "status"] == "added"
    assert sc["metrics"]["after"]["partners"] == sc["metrics"]["before"]["partners"]
    after = csv(client, planner, rec["plan_id"], "assignments.csv")
    assert busiest not in set(after["partner_id"])
    # the stored partners are untouched by a what-if
    st = app.extensions["matcher_store"]
    assert st.get_partner(busiest) is not None and st.get_partner("NEW-1") is None


def test_scaled_capacity_scenario_serves_less(client, planner):
    base = done(client, planner, body={"objective": "distance"})
    body = {"scale_capacity": 0.5, "radius_km": 1.0}
    rec = done(client, planner, f"/api/v1/plans/{base['plan_id']}/scenarios", body)
    delta = rec["summary"]["scenario"]["metrics"]["delta"]
    assert delta["units_served"] < 0 and rec["summary"]["scenario"]["clusters_changed"] > 0
    clusters = csv(client, planner, rec["plan_id"], "scenario_clusters.csv")
    assert set(clusters["status"]) <= {"gained", "lost"} and "lost" in set(clusters["status"])


def test_a_scenario_says_when_the_stored_data_changed(app, client, planner):
    base = done(client, planner, body={"objective": "distance"})
    pid = app.extensions["matcher_store"].list_partners(limit=1, offset=0)[0]["partner_id"]
    r = client.get(f"/api/v1/partners/{pid}", headers=planner)
    rec = {k: v for k, v in r.get_json().items() if k != "version"}
    put = client.put(
        f"/api/v1/partners/{rec['partner_id']}",
        json=rec | {"capacity": rec["capacity"] + 40},
        headers=planner | {"If-Match": r.headers["ETag"]},
    )
    assert put.status_code == 200, put.get_data(as_text=True)
    out = done(client, planner, f"/api/v1/plans/{base['plan_id']}/scenarios", {})
    sc = out["summary"]["scenario"]
    assert sc["data_changed"] is True and sc["changed_inputs"] == ["partners"]
    assert sc["base_reproduced"] is False and "changed since the base plan" in sc["note"]


def test_scenario_errors(app, client, planner):
    st = app.extensions["matcher_store"]
    base = done(client, planner, body={"objective": "distance"})
    path = f"/api/v1/plans/{base['plan_id']}/scenarios"
    known = st.list_partners(limit=1, offset=0)[0]["partner_id"]

    def problems(r, status):
        assert r.status_code == status, r.get_data(as_text=True)
        assert r.mimetype == "application/problem+json"
        assert "Traceback" not in r.get_data(as_text=True)
        return [(p["field"], p["value"]) for p in r.get_json().get("problems", [])]

    r = client.post(path, json={"remove_partners": [known, "NOPE-1", "NOPE-2"]}, headers=planner)
    assert problems(r, 422) == [("remove_partners", "NOPE-1"), ("remove_partners", "NOPE-2")]
    dup = {
        "partner_id": known,
        "kind": "organization",
        "lat": 41.92,
        "lon": -87.65,
        "categories": "food_access",
        "capacity": 5,
        "radius_km": 2,
    }
    r = client.post(path, json={"add_partners": [dup]}, headers=planner)
    assert problems(r, 422) == [("add_partners.partner_id", known)]
    bad = dup | {"partner_id": "NEW-2", "lat": 95, "categories": "food_acess"}
    got = problems(client.post(path, json={"add_partners": [bad]}, headers=planner), 400)
    assert {f for f, _ in got} >= {"lat", "categories"}
    r = client.post(path, json={"add_partners": [{"partner_id": "X"}]}, headers=planner)
    assert ("add_partners.0.lat", None) in problems(r, 400)
    got = problems(client.post(path, json={"scale_capacity": -1}, headers=planner), 400)
    assert got == [("scale_capacity", -1)]
    got = problems(client.post(path, json={"radius_km": 0}, headers=planner), 400)
    assert got == [("radius_km", 0)]
    got = problems(client.post(path, json={"remove_partners": "ORG-1"}, headers=planner), 400)
    assert got[0][0] == "remove_partners"
    # unknown base plan, a base plan that is not done, roles
    r = client.post("/api/v1/plans/0123abcd/scenarios", json={}, headers=planner)
    assert problems(r, 404) == []
    queued = st.create_plan({"objective": "distance"})
    r = client.post(f"/api/v1/plans/{queued}/scenarios", json={}, headers=planner)
    problems(r, 409)
    assert "queued" in r.get_json()["detail"]
    assert client.post(path, json={}).status_code == 401
    r = client.post(path, json={}, headers=auth(app.config["KEYS"]["outreach"]))
    assert r.status_code == 403 and r.mimetype == "application/problem+json"
    # nothing was queued by any of these
    assert [p.plan_id for p in st.list_plans()] == [queued, base["plan_id"]]


def test_openapi_documents_the_new_options_and_route(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    post = spec["paths"]["/api/v1/plans/{plan_id}/scenarios"]["post"]
    assert post["requestBody"]
    schemas = spec["components"]["schemas"]
    plan_props = schemas["PlanRequest"]["properties"]
    for name in ("min_coverage", "vulnerability_column", "max_partner_share", "recruit_k"):
        assert name in plan_props
    assert plan_props["report"]["type"] == "boolean" and plan_props["report"]["default"] is False
    files = spec["paths"]["/api/v1/plans/{plan_id}/files/{name}"]["get"]
    assert "text/html" in files["responses"]["200"]["content"]
    assert set(schemas["ScenarioRequest"]["properties"]) == {
        "remove_partners",
        "add_partners",
        "scale_capacity",
        "radius_km",
    }
    assert json.dumps(spec).count("recruit_site") >= 1
