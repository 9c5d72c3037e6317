"""The HTTP service through Flask's test client and through a real server process."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from openapi_spec_validator import validate

import matcher
from api import create_app

from .oracle import gc_km

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def _needs_csv(n: int = 700) -> bytes:
    df = pd.read_csv(SAMPLE / "needs.csv", dtype=str, keep_default_na=False).iloc[:n]
    return df.to_csv(index=False).encode()


@pytest.fixture()
def app(tmp_path):
    app = create_app(
        {"DB": str(tmp_path / "store.db"), "MODELS_DIR": str(tmp_path / "models"), "TESTING": True}
    )
    yield app
    app.extensions["matcher_jobs"].shutdown(wait=True)


@pytest.fixture()
def keys(app):
    st = app.extensions["matcher_store"]
    return {role: st.create_api_key(role)[1] for role in ("admin", "planner", "outreach")}


def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def loaded(app, keys):
    c = app.test_client()
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
    return c


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
def test_role_matrix_every_endpoint(app, keys, loaded, method, path, body, allowed):
    st = app.extensions["matcher_store"]
    needs = [r["need_id"] for r in st.list_needs(limit=2, offset=0)]
    plan_id = st.create_plan({"objective": "distance"})
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
        elif body == "csv":
            kwargs |= {"data": (SAMPLE / "partners.csv").read_bytes(), "content_type": "text/csv"}
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


def test_lists_answer_geojson(loaded, keys):
    r = loaded.get("/api/v1/needs?format=geojson&limit=3", headers=auth(keys["outreach"]))
    body = r.get_json(force=True)
    assert r.mimetype == "application/geo+json" and body["type"] == "FeatureCollection"
    assert len(body["features"]) == 3
    assert body["features"][0]["geometry"]["type"] == "Point"


def test_nearby_equals_brute_force_and_hides_volunteers(loaded, keys):
    partners = matcher.read_partners(SAMPLE / "partners.csv").frame
    lat, lon, radius = 41.8781, -87.6298, 3.0
    for category in (None, "food_access"):
        q = f"/api/v1/resources/nearby?lat={lat}&lon={lon}&radius_km={radius}&limit=200"
        q += f"&category={category}" if category else ""
        got = loaded.get(q, headers=auth(keys["outreach"])).get_json()["results"]
        want = sorted(
            (gc_km(lat, lon, r.lat, r.lon), r.partner_id)
            for r in partners.itertuples()
            if gc_km(lat, lon, r.lat, r.lon) <= radius
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
                assert (g["lat"], g["lon"]) != (
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


def test_plan_job_results_match_the_cli_files_and_feed_nearby_and_intake(
    loaded, keys, app, tmp_path
):
    h = auth(keys["planner"])
    r = loaded.post("/api/v1/plans", json={"objective": "distance"}, headers=h)
    assert r.status_code == 202
    body = wait_plan(loaded, r.headers["Location"], keys["planner"])
    assert body["status"] == "done", body
    plan_id = body["plan_id"]
    # the same content as the CLI's files over the same stored data
    st = app.extensions["matcher_store"]
    direct = matcher.plan(
        st.needs_frame(),
        st.partners_frame(),
        neighborhoods=st.neighborhoods_frame(),
        config=matcher.MatchConfig(objective="distance"),
    )
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
    # intake: a new concern next to an existing dense need joins its cluster
    dense = direct.clusters.sort_values("n_needs").iloc[-1]
    member = direct.need_clusters.loc[
        direct.need_clusters["cluster_id"] == dense["cluster_id"], "need_id"
    ].iloc[0]
    nrow = direct.needs.set_index("need_id").loc[member]
    new = {
        "need_id": "new-1",
        "category": dense["category"],
        "lat": float(nrow["lat"]),
        "lon": float(nrow["lon"]),
        "demand": 2,
    }
    r = loaded.post("/api/v1/needs", json=new, headers=auth(keys["outreach"]))
    assert r.status_code == 201, r.get_data(as_text=True)
    out = r.get_json()
    assert out["cluster_id"] == dense["cluster_id"]
    assert out["statement"]
    for rec in out["recommendations"]:
        assert rec["free_capacity"] > 0 and rec["reason"]


def test_etag_if_match_and_two_concurrent_writers(loaded, keys, app):
    h = auth(keys["planner"])
    r = loaded.get("/api/v1/partners/ORG-0001", headers=h)
    assert r.status_code == 200
    tag, rec = r.headers["ETag"], r.get_json()
    rec.pop("version", None)
    assert loaded.put("/api/v1/partners/ORG-0001", json=rec, headers=h).status_code == 428
    results = []

    def writer(capacity):
        client = app.test_client()
        resp = client.put(
            "/api/v1/partners/ORG-0001",
            json=rec | {"capacity": capacity},
            headers=h | {"If-Match": tag},
        )
        results.append((resp.status_code, capacity))

    threads = [threading.Thread(target=writer, args=(c,)) for c in (11, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in results)
    assert codes == [200, 412]
    winner = next(cap for code, cap in results if code == 200)
    now = loaded.get("/api/v1/partners/ORG-0001", headers=h)
    assert now.get_json()["capacity"] == winner and now.headers["ETag"] != tag
    assert (
        loaded.put("/api/v1/partners/ORG-0001", json=rec, headers=h | {"If-Match": tag}).status_code
        == 412
    )


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
def test_bad_requests_get_problem_json(loaded, keys, kwargs, status, field):
    r = loaded.post("/api/v1/needs", headers=auth(keys["outreach"]), **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    body = r.get_json()
    assert "Traceback" not in r.get_data(as_text=True)
    if field:
        assert any(p["field"] == field for p in body["problems"]), body
    if field == "category":
        assert "food_access" in json.dumps(body)


def test_more_bad_requests(app, keys, loaded):
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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_process(tmp_path):
    db, port = tmp_path / "served.db", _free_port()
    key = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "matcher.cli",
                "keys",
                "create",
                "--role",
                "outreach",
                "--db",
                str(db),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    log = tmp_path / "server.log"
    with (
        open(log, "wb") as out,
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "matcher.cli",
                "serve",
                "--db",
                str(db),
                "--port",
                str(port),
                "--models-dir",
                str(tmp_path / "models"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            cwd=tmp_path,
        ) as proc,
    ):
        try:
            _talk_to_server(f"http://127.0.0.1:{port}/api/v1", key, proc, log)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _talk_to_server(base, key, proc, log):
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as resp:
                assert json.load(resp)["status"] == "ok"
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(log.read_text()) from None
            time.sleep(0.1)
    else:
        raise AssertionError("the server did not answer: " + log.read_text())
    req = urllib.request.Request(
        f"{base}/resources/nearby?lat=41.8781&lon=-87.6298&radius_km=2",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        results = json.load(io.TextIOWrapper(resp))["results"]
    assert results and results == sorted(results, key=lambda r: (r["distance_km"], r["partner_id"]))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/resources/nearby?lat=41.8&lon=-87.6", timeout=5)
    assert err.value.code == 401
    err.value.close()
