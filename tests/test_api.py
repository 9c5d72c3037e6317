"""The HTTP service through Flask's test client.

The same app under ``matcher serve`` in its own process, over real HTTP (a plan job end to
end, concurrent writers), is in tests/test_server_http.py; failure paths in
tests/test_api_failures.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from openapi_spec_validator import validate

import matcher
from api import create_app

from .conftest import BACKENDS, StoreTemplate, close_app, store_template, stored_plan
from .oracle import gc_km, grid_point

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def _needs_csv(n: int = 700) -> bytes:
    df = pd.read_csv(SAMPLE / "needs.csv", dtype=str, keep_default_na=False).iloc[:n]
    return df.to_csv(index=False).encode()


@pytest.fixture()
def app(store_url):
    app = create_app({"DB": store_url, "TESTING": True})
    yield app
    close_app(app)


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def _load(c, keys) -> None:
    """Import the sample partners, 700 needs and the neighborhoods through the API."""
    h = auth(keys["planner"])
    r = c.post(
        "/api/v1/imports/partners",
        data=(SAMPLE / "partners.csv").read_bytes(),
        headers=h,
        content_type="text/csv",
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    r = c.post("/api/v1/imports/needs", data=_needs_csv(), headers=h, content_type="text/csv")
    assert r.status_code == 201, r.get_data(as_text=True)
    r = c.post(
        "/api/v1/imports/neighborhoods",
        data=(SAMPLE / "neighborhoods.geojson").read_bytes(),
        headers=h,
        content_type="application/geo+json",
    )
    assert r.status_code == 201, r.get_data(as_text=True)


def _load_new_store(url: str) -> dict[str, str]:
    """Make a key per role in a new store and load it through the API; return the keys."""
    app = create_app({"DB": url, "TESTING": True})
    try:
        st = app.extensions["matcher_store"]
        keys = {role: st.create_api_key(role)[1] for role in ("admin", "planner", "outreach")}
        _load(app.test_client(), keys)
    finally:
        close_app(app)
    return keys


@pytest.fixture(scope="module", params=BACKENDS)
def loaded_template(request) -> Iterator[StoreTemplate]:
    """The sample (partners, 700 needs, neighborhoods) loaded through the API, per backend.

    Loading it was most of this module's time when every test did it: each test now gets a
    copy of its own (``loaded``).
    """
    with store_template(request, request.param, _load_new_store) as template:
        yield template


@pytest.fixture()
def loaded(loaded_template):
    """A new app on a loaded store of its own (a copy of the template): (app, keys, client)."""
    url, drop = loaded_template.copy()
    app = create_app({"DB": url, "TESTING": True})
    try:
        yield app, loaded_template.keys, app.test_client()
    finally:
        close_app(app)
        drop()


def wait_plan(c, location, key, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = c.get(location, headers=auth(key)).get_json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError("plan did not finish")


def test_health_and_openapi_document_is_valid(app):
    c = app.test_client()
    assert c.get("/api/v1/health").get_json()["status"] == "ok"
    spec = c.get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert "/api/v1/resources/nearby" in spec["paths"]


ALL = {"admin", "planner", "outreach"}
WRITE = {"admin", "planner"}
NEW_PARTNER = {
    "partner_id": "P-NEW",
    "kind": "organization",
    "lat": 41.9,
    "lon": -87.7,
    "categories": "food_access",
    "capacity": 10,
    "radius_km": 3,
}
NEW_NEED = {"need_id": "N-NEW", "category": "food_access", "lat": 41.9, "lon": -87.7, "demand": 2}

# every endpoint: (method, path, body kind, roles allowed)
ENDPOINTS = [
    ("get", "/api/v1/partners", None, ALL),
    ("get", "/api/v1/partners?format=geojson", None, ALL),
    ("post", "/api/v1/partners", "partner", WRITE),
    ("get", "/api/v1/partners/ORG-0002", None, ALL),
    ("put", "/api/v1/partners/ORG-0002", "partner-update", WRITE),
    ("delete", "/api/v1/partners/ORG-0003", "if-match", WRITE),
    ("get", "/api/v1/needs", None, ALL),
    ("post", "/api/v1/needs", "need", ALL),
    ("get", "/api/v1/needs/{need}", None, ALL),
    ("put", "/api/v1/needs/{need}", "need-update", WRITE),
    ("delete", "/api/v1/needs/{need2}", "if-match", WRITE),
    ("post", "/api/v1/imports/partners", "csv", WRITE),
    ("post", "/api/v1/imports/needs", "needs-csv", WRITE),
    ("post", "/api/v1/imports/neighborhoods", "geojson", WRITE),
    ("post", "/api/v1/plans", "plan", WRITE),
    ("get", "/api/v1/plans/{plan}", None, ALL),
    ("get", "/api/v1/plans/{plan}/files/summary.json", None, ALL),
    ("get", "/api/v1/plans/{plan}/assignments", None, ALL),
    ("get", "/api/v1/resources/nearby?lat=41.88&lon=-87.63", None, ALL),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
def test_role_matrix_every_endpoint(loaded, method, path, body, allowed):
    app, keys, _ = loaded
    st = app.extensions["matcher_store"]
    needs = [r["need_id"] for r in st.list_needs(limit=2, offset=0)]
    plan_id = st.create_plan({"objective": "distance", "volunteer_points": "grid"})
    st.plan_done(
        plan_id, {}, {"summary.json": b"{}", "assignments.csv": b"cluster_id,partner_id,units\n"}
    )
    path = path.format(need=needs[0], need2=needs[1], plan=plan_id)
    c = app.test_client()
    r = getattr(c, method)(path)
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert getattr(c, method)(path, headers=auth("mk_not-a-key")).status_code == 401
    for role in sorted(keys, key=lambda r: r in allowed):  # forbidden roles first
        key = keys[role]
        kwargs = {"headers": auth(key)}
        current = c.get(path.split("?")[0], headers=auth(keys["admin"]))
        if body in ("partner-update", "need-update", "if-match"):
            kwargs["headers"] = kwargs["headers"] | {"If-Match": current.headers.get("ETag", "")}
        if body == "partner":
            kwargs["json"] = NEW_PARTNER | {"partner_id": f"P-{role}"}
        elif body == "partner-update":
            kwargs["json"] = {k: v for k, v in current.get_json().items() if k != "version"}
        elif body == "need":
            kwargs["json"] = NEW_NEED | {"need_id": f"N-{role}"}
        elif body == "need-update":
            kwargs["json"] = {
                k: v
                for k, v in current.get_json().items()
                if k not in ("version", "cluster_id", "updated_at")
            }
        elif body == "csv":  # a planner sends volunteers as it reads them: grid, no contact
            table = pd.read_csv(SAMPLE / "partners.csv", dtype=str, keep_default_na=False)
            if role != "admin":
                vol = table["kind"] == "volunteer"
                lats, lons = table.loc[vol, "lat"], table.loc[vol, "lon"]
                seen = [grid_point(float(a), float(b)) for a, b in zip(lats, lons, strict=True)]
                table.loc[vol, "lat"] = [repr(p[0]) for p in seen]
                table.loc[vol, "lon"] = [repr(p[1]) for p in seen]
                table.loc[vol, "contact"] = ""
            kwargs |= {"data": table.to_csv(index=False).encode(), "content_type": "text/csv"}
        elif body == "needs-csv":
            kwargs |= {"data": _needs_csv(), "content_type": "text/csv"}
        elif body == "geojson":
            kwargs |= {
                "data": (SAMPLE / "neighborhoods.geojson").read_bytes(),
                "content_type": "application/geo+json",
            }
        elif body == "plan":
            kwargs["json"] = {}
        r = getattr(c, method)(path, **kwargs)
        if role in allowed:
            assert r.status_code < 400, (role, r.status_code, r.get_data(as_text=True))
            if method == "delete":  # gone now: the other allowed roles cannot delete it again
                break
        else:
            assert r.status_code == 403, (role, r.status_code)
            assert r.mimetype == "application/problem+json"


def test_lists_answer_geojson(loaded):
    _, keys, loaded = loaded
    r = loaded.get("/api/v1/needs?format=geojson&limit=3", headers=auth(keys["outreach"]))
    body = r.get_json(force=True)
    assert r.mimetype == "application/geo+json" and body["type"] == "FeatureCollection"
    assert len(body["features"]) == 3
    assert body["features"][0]["geometry"]["type"] == "Point"


def test_nearby_equals_brute_force_and_hides_volunteers(loaded):
    _, keys, loaded = loaded
    partners = matcher.read_partners(SAMPLE / "partners.csv").frame
    lat, lon, radius = 41.8781, -87.6298, 3.0
    for category in (None, "food_access"):
        q = f"/api/v1/resources/nearby?lat={lat}&lon={lon}&radius_km={radius}&limit=200"
        q += f"&category={category}" if category else ""
        got = loaded.get(q, headers=auth(keys["outreach"])).get_json()["results"]
        # outreach's answer is computed from each volunteer's grid point, not its home
        seen = {
            r.partner_id: grid_point(r.lat, r.lon) if r.kind == "volunteer" else (r.lat, r.lon)
            for r in partners.itertuples()
        }
        want = sorted(
            (gc_km(lat, lon, *seen[r.partner_id]), r.partner_id)
            for r in partners.itertuples()
            if gc_km(lat, lon, *seen[r.partner_id]) <= radius
            and (category is None or category in r.categories.split(";"))
        )[:200]
        assert [g["partner_id"] for g in got] == [p for _, p in want]
        exact = partners.set_index("partner_id")
        for g in got:
            assert set(g) >= {
                "partner_id",
                "name",
                "kind",
                "categories",
                "distance_km",
                "capacity",
                "free_capacity",
                "lat",
                "lon",
            }
            if g["kind"] == "volunteer":  # never the exact point for outreach
                assert (g["lat"], g["lon"]) == seen[g["partner_id"]] != (
                    exact.loc[g["partner_id"], "lat"],
                    exact.loc[g["partner_id"], "lon"],
                )
    vols = loaded.get("/api/v1/partners?kind=volunteer&limit=5", headers=auth(keys["outreach"]))
    for rec in vols.get_json()["results"]:
        assert not rec.get("contact")
        row = exact.loc[rec["partner_id"]]
        assert (rec["lat"], rec["lon"]) != (row["lat"], row["lon"])
    admin = loaded.get("/api/v1/partners?kind=volunteer&limit=5", headers=auth(keys["admin"]))
    rec = admin.get_json()["results"][0]
    assert (rec["lat"], rec["lon"]) == (
        exact.loc[rec["partner_id"], "lat"],
        exact.loc[rec["partner_id"], "lon"],
    )


def test_plan_job_results_match_the_cli_files_and_feed_nearby_and_intake(loaded, tmp_path):
    app, keys, loaded = loaded
    h = auth(keys["planner"])
    r = loaded.post("/api/v1/plans", json={"objective": "distance", "publish": True}, headers=h)
    assert r.status_code == 202
    body = wait_plan(loaded, r.headers["Location"], keys["planner"])
    assert body["status"] == "done", body
    plan_id = body["plan_id"]
    # the same content as the CLI's files over the same stored data
    direct = stored_plan(app.extensions["matcher_store"], objective="distance")
    files = direct.to_dir(tmp_path / "cli")
    for name in ("assignments.csv", "clusters.csv", "plan.geojson"):
        got = loaded.get(f"/api/v1/plans/{plan_id}/files/{name}", headers=h)
        assert got.status_code == 200
        assert got.data == files[name].read_bytes(), name
    rows = loaded.get(f"/api/v1/plans/{plan_id}/assignments", headers=h).get_json()["results"]
    assert len(rows) == len(direct.assignments)
    # free capacity = capacity - units of the latest plan
    used = direct.assignments.groupby("partner_id")["units"].sum()
    res = loaded.get(
        "/api/v1/resources/nearby?lat=41.8781&lon=-87.6298&radius_km=5&limit=200",
        headers=auth(keys["outreach"]),
    ).get_json()["results"]
    for g in res:
        assert g["free_capacity"] == pytest.approx(
            max(g["capacity"] - used.get(g["partner_id"], 0), 0)
        )
    # intake: a new concern at a need of a dense cluster joins that cluster and gets the
    # partners with free capacity in reach. Pick the densest cluster where at least one
    # organization (exact point) offering the category reaches the need and has capacity
    # left under this plan, so that recommendations cannot be empty.
    partners = direct.partners.set_index("partner_id")
    free = partners["capacity"] - used.reindex(partners.index, fill_value=0.0)
    offers = partners["categories"].map(lambda c: set(str(c).split(";")))
    needs = direct.needs.set_index("need_id")

    def free_in_reach(category, lat, lon, kind=None):
        return [
            pid
            for pid, p in partners.iterrows()
            if category in offers[pid]
            and free[pid] > 1e-9
            and (kind is None or p["kind"] == kind)
            and gc_km(lat, lon, p["lat"], p["lon"]) <= p["radius_km"]
        ]

    chosen = None
    by_size = direct.clusters.sort_values(["n_needs", "cluster_id"], ascending=False)
    for cluster in by_size.itertuples():
        if cluster.n_needs < 3:
            break
        member = direct.need_clusters.loc[
            direct.need_clusters["cluster_id"] == cluster.cluster_id, "need_id"
        ].iloc[0]
        nrow = needs.loc[member]
        if free_in_reach(cluster.category, nrow["lat"], nrow["lon"], kind="organization"):
            chosen = (cluster, nrow)
            break
    assert chosen is not None, "no dense cluster with a free organization in reach"
    cluster, nrow = chosen
    new = {
        "need_id": "new-1",
        "category": cluster.category,
        "lat": float(nrow["lat"]),
        "lon": float(nrow["lon"]),
        "demand": 2,
    }
    r = loaded.post("/api/v1/needs", json=new, headers=auth(keys["outreach"]))
    assert r.status_code == 201, r.get_data(as_text=True)
    out = r.get_json()
    assert out["cluster_id"] == cluster.cluster_id
    recs = out["recommendations"]
    assert recs, out  # the data guarantees at least one
    assert out["statement"].startswith(f"{len(recs)} partner(s) with free capacity")
    reachable = set(free_in_reach(cluster.category, new["lat"], new["lon"]))
    for rec in recs:
        pid = rec["partner_id"]
        assert rec["reason"] and cluster.category in rec["reason"]
        assert rec["free_capacity"] == pytest.approx(free[pid]) and rec["free_capacity"] > 0
        assert cluster.category in offers[pid]
        if rec["kind"] == "organization":  # exact points: the distance is checkable
            assert pid in reachable
            assert rec["distance_km"] == pytest.approx(
                gc_km(new["lat"], new["lon"], partners.at[pid, "lat"], partners.at[pid, "lon"]),
                abs=1e-3,
            )
    assert [r["distance_km"] for r in recs] == sorted(r["distance_km"] for r in recs)


def test_etag_if_match_sequence(loaded):
    """428 without If-Match, 200 with the current ETag, 412 with the old one afterwards.

    Two writers racing with the same ETag, and many writers with fresh ones, run over real
    HTTP against ``matcher serve`` in tests/test_server_http.py.
    """
    _, keys, loaded = loaded
    h = auth(keys["planner"])
    r = loaded.get("/api/v1/partners/ORG-0001", headers=h)
    assert r.status_code == 200
    tag, rec = r.headers["ETag"], r.get_json()
    rec = {k: v for k, v in rec.items() if k in ("partner_id", "name", "kind", "lat", "lon",
                                                "categories", "capacity", "radius_km")}  # fmt: skip
    r = loaded.put("/api/v1/partners/ORG-0001", json=rec, headers=h)
    assert r.status_code == 428 and r.mimetype == "application/problem+json"
    r = loaded.put(
        "/api/v1/partners/ORG-0001", json=rec | {"capacity": 11}, headers=h | {"If-Match": tag}
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["capacity"] == 11 and r.headers["ETag"] != tag
    now = loaded.get("/api/v1/partners/ORG-0001", headers=h)
    assert now.get_json()["capacity"] == 11 and now.headers["ETag"] == r.headers["ETag"]
    r = loaded.put(
        "/api/v1/partners/ORG-0001", json=rec | {"capacity": 22}, headers=h | {"If-Match": tag}
    )
    assert r.status_code == 412 and r.mimetype == "application/problem+json"
    assert loaded.get("/api/v1/partners/ORG-0001", headers=h).get_json()["capacity"] == 11


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, None),
        (
            {
                "json": {
                    "need_id": "x",
                    "category": "food_access",
                    "lat": "north",
                    "lon": -87.6,
                    "demand": 1,
                }
            },
            400,
            "lat",
        ),
        (
            {"json": {"need_id": "x", "category": "food_access", "lon": -87.6, "demand": 1}},
            400,
            "lat",
        ),
        (
            {
                "json": {
                    "need_id": "x",
                    "category": "food_access",
                    "lat": 95,
                    "lon": -87.6,
                    "demand": 1,
                }
            },
            400,
            "lat",
        ),
        (
            {
                "json": {
                    "need_id": "x",
                    "category": "food_acess",
                    "lat": 41.9,
                    "lon": -87.6,
                    "demand": 1,
                }
            },
            400,
            "category",
        ),
        ({"data": "need_id,category\n", "content_type": "text/csv"}, 415, None),
    ],
    ids=[
        "malformed-json",
        "wrong-type",
        "missing-field",
        "out-of-range",
        "unknown-category",
        "wrong-content-type",
    ],
)
def test_bad_requests_get_problem_json(loaded, kwargs, status, field):
    _, keys, loaded = loaded
    r = loaded.post("/api/v1/needs", headers=auth(keys["outreach"]), **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    body = r.get_json()
    assert "Traceback" not in r.get_data(as_text=True)
    if field:
        assert any(p["field"] == field for p in body["problems"]), body
    if field == "category":
        assert "food_access" in json.dumps(body)


def test_more_bad_requests(loaded):
    app, keys, loaded = loaded
    h = auth(keys["admin"])
    assert loaded.get("/api/v1/plans/0123456789abcdef", headers=h).status_code == 404
    assert loaded.get("/api/v1/partners?limit=100000", headers=h).status_code == 400
    app.config["MAX_CONTENT_LENGTH"] = 1024
    r = loaded.post("/api/v1/imports/needs", data=b"x" * 4096, headers=h, content_type="text/csv")
    assert r.status_code == 413 and r.mimetype == "application/problem+json"
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024
    bad = b"need_id,category,lat,lon,demand\nn1,food_access,0,0,1\n"
    r = loaded.post("/api/v1/imports/needs", data=bad, headers=h, content_type="text/csv")
    assert r.status_code == 400 and r.get_json()["problems"][0]["row"] == 2
    # all or nothing: the failed import left the stored needs as they were
    assert app.extensions["matcher_store"].count_needs() == 700
