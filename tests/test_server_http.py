"""The service as users run it: ``matcher serve`` in its own process, over real HTTP.

Every test here talks to the session's one server (the ``served`` fixture of
``conftest.py``: keys made with ``matcher keys create``, then ``matcher serve --db PATH
--host 127.0.0.1 --port PORT`` on a new store with the sample city) through the standard
library's ``http.client``, each thread on a connection of its own. Nothing here depends on
which WSGI server ``matcher serve`` runs. Tests that write create their own partners (ids
``T-HTTP-*``) and delete them again, so the sample city stays as it was for the others.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import defaultdict
from urllib.parse import urlsplit

import pytest

from .conftest import Reply, Served, http_call
from .oracle import gc_km

BASE_FILES = {
    "assignments.csv",
    "clusters.csv",
    "need_clusters.csv",
    "unmet.csv",
    "plan.geojson",
    "summary.json",
}
MIMETYPES = {"csv": "text/csv", "geojson": "application/geo+json", "json": "application/json"}


def _problem(r: Reply, status: int, what: str = "") -> dict:
    """Assert an RFC 9457 answer of ``status`` with no server internals; return its body."""
    assert r.status == status, (what, r.status, r.text)
    assert r.mimetype == "application/problem+json", r.headers.get("Content-Type")
    body = r.json()
    assert body["status"] == status and body["title"] and "detail" in body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def _partner(partner_id: str, **extra) -> dict:
    return {
        "partner_id": partner_id,
        "name": f"Test partner {partner_id}",
        "kind": "organization",
        "lat": 41.8781,
        "lon": -87.6298,
        "categories": "food_access",
        "capacity": 100,
        "radius_km": 2.0,
    } | extra


def _create(served: Served, key: str, record: dict) -> str:
    """POST a new partner; return its ETag."""
    r = served.call("POST", "/api/v1/partners", key=key, json_body=record)
    assert r.status == 201, r.text
    assert r.headers["ETag"] and r.json()["partner_id"] == record["partner_id"]
    return r.headers["ETag"]


def _delete(served: Served, key: str, partner_id: str) -> None:
    current = served.call("GET", f"/api/v1/partners/{partner_id}", key=key)
    if current.status == 200:
        r = served.call(
            "DELETE",
            f"/api/v1/partners/{partner_id}",
            key=key,
            headers={"If-Match": current.headers["ETag"]},
        )
        assert r.status == 204, r.text


# --------------------------------------------------------------------------- basics


def test_health_keys_nearby_and_refusals(served):
    r = served.call("GET", "/api/v1/health")
    assert r.status == 200 and r.mimetype == "application/json" and r.json()["status"] == "ok"
    # every key made by `matcher keys create` works, with its role
    for role, key in served.keys.items():
        me = served.call("GET", "/api/v1/me", key=key)
        assert me.status == 200 and me.json()["role"] == role
    # nearby on the sample city: exact great-circle radius, nearest first
    lat, lon, radius = 41.8781, -87.6298, 2.0
    r = served.call(
        "GET",
        f"/api/v1/resources/nearby?lat={lat}&lon={lon}&radius_km={radius}&limit=50",
        key=served.keys["outreach"],
    )
    assert r.status == 200, r.text
    results = r.json()["results"]
    assert 0 < len(results) <= 50
    assert results == sorted(results, key=lambda g: (g["distance_km"], g["partner_id"]))
    for g in results:
        assert g["distance_km"] <= radius
        if g["kind"] == "organization":  # exact points: the distance is checkable
            assert g["distance_km"] == pytest.approx(gc_km(lat, lon, g["lat"], g["lon"]), abs=1e-3)


def test_refusals_are_problems_over_real_http(served):
    # no key: 401 with a challenge; a key of the wrong role: 403
    body = _problem(served.call("GET", "/api/v1/resources/nearby?lat=41.8&lon=-87.6"), 401)
    assert body["title"] == "Unauthorized"
    r = served.call("GET", "/api/v1/me")
    _problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = served.call("POST", "/api/v1/plans", key=served.keys["outreach"], json_body={})
    assert _problem(r, 403)["title"] == "Forbidden"


# --------------------------------------------------------------------------- a plan job


def _csv(r: Reply) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(r.body.decode("utf-8"))))


def _all_partners(served: Served) -> dict[str, dict]:
    out: dict[str, dict] = {}
    offset = 0
    while True:
        r = served.call(
            "GET", f"/api/v1/partners?limit=500&offset={offset}", key=served.keys["admin"]
        )
        assert r.status == 200, r.text
        rows = r.json()["results"]
        out |= {p["partner_id"]: p for p in rows}
        if len(rows) < 500:
            return out
        offset += 500


def test_plan_job_end_to_end_files_and_assignments_agree(served):
    planner = served.keys["planner"]
    params = {"min_coverage": 0.5, "recruit_k": 2, "recruit_radius_km": 1.5, "publish": True}
    r = served.call("POST", "/api/v1/plans", key=planner, json_body=params)
    assert r.status == 202, r.text
    assert r.mimetype == "application/json"
    started = r.json()
    assert started["status"] == "queued" and started["plan_id"]
    location = urlsplit(r.headers["Location"]).path
    assert location == f"/api/v1/plans/{started['plan_id']}"

    # while it is queued or running, its files, assignments and map are 404 problems
    early = {
        path: served.call("GET", location + path, key=planner)
        for path in ("/files/summary.json", "/assignments", "/map")
    }
    # (a plan of the sample city takes seconds; these few requests take milliseconds)
    assert served.call("GET", location, key=planner).json()["status"] in ("queued", "running")
    for path, reply in early.items():
        body = _problem(reply, 404, path)
        assert body["title"] == "Not Found" and started["plan_id"] in body["detail"], path

    rec = served.wait_plan(location, planner)
    assert rec["status"] == "done", rec
    assert rec["error"] is None and rec["started_at"] and rec["finished_at"]
    assert rec["parameters"]["min_coverage"] == 0.5
    summary = rec["summary"]
    m = summary["metrics"]

    # every file it lists is served, with its type, and parses
    expected = BASE_FILES | {"gaps.csv", "gaps.geojson", "floors.csv"}
    expected |= {"recruit.csv", "recruit.geojson"}
    assert set(rec["files"]) == expected
    files: dict[str, Reply] = {}
    for name, url in rec["files"].items():
        assert url == f"{location}/files/{name}"
        got = served.call("GET", url, key=served.keys["outreach"])
        assert got.status == 200, (name, got.text)
        assert got.mimetype == MIMETYPES[name.rsplit(".", 1)[1]], name
        files[name] = got
    assert files["summary.json"].json() == summary
    geo = {n: files[n].json() for n in ("plan.geojson", "gaps.geojson", "recruit.geojson")}
    for name, collection in geo.items():
        assert collection["type"] == "FeatureCollection" and collection["features"], name
    tables = {n: _csv(files[n]) for n in files if n.endswith(".csv")}
    for name, rows in tables.items():
        assert rows, name
    # a file this plan does not have
    _problem(served.call("GET", f"{location}/files/scenario.json", key=planner), 404)

    # assignments as JSON are assignments.csv, row for row
    r = served.call("GET", rec["assignments"], key=served.keys["outreach"])
    assert r.status == 200 and r.mimetype == "application/json"
    rows = r.json()["results"]
    assert rows == tables["assignments.csv"]
    assert len(rows) == m["counts"]["assignments"] > 0

    # the rows add up to the summary: units served overall, by category, by cluster
    clusters = {c["cluster_id"]: c for c in tables["clusters.csv"]}
    assert len(clusters) == m["counts"]["clusters"]
    served_units = sum(float(a["units"]) for a in rows)
    assert served_units == pytest.approx(m["units"]["served"], abs=1e-6)
    unmet_units = sum(float(u["units"]) for u in tables["unmet.csv"])
    assert unmet_units == pytest.approx(m["units"]["unmet"], abs=1e-6)
    assert served_units + unmet_units == pytest.approx(m["units"]["demand"], abs=1e-6)
    assert sum(float(c["demand"]) for c in clusters.values()) == pytest.approx(
        m["units"]["demand"], abs=1e-6
    )
    by_category: dict[str, float] = defaultdict(float)
    by_cluster: dict[str, float] = defaultdict(float)
    by_partner: dict[str, float] = defaultdict(float)
    for a in rows:
        by_category[clusters[a["cluster_id"]]["category"]] += float(a["units"])
        by_cluster[a["cluster_id"]] += float(a["units"])
        by_partner[a["partner_id"]] += float(a["units"])
    for category, figures in m["units_by_category"].items():
        assert by_category.get(category, 0.0) == pytest.approx(figures["served"], abs=1e-6)
    for cid, c in clusters.items():
        assert by_cluster.get(cid, 0.0) == pytest.approx(float(c["served"]), abs=1e-6)
        assert float(c["served"]) + float(c["unmet"]) == pytest.approx(float(c["demand"]))
    # partners: stored, within capacity, and capacity_used is their total
    partners = _all_partners(served)
    for a in rows:
        pid = a["partner_id"]
        assert pid in partners
        assert float(a["capacity_used"]) == pytest.approx(by_partner[pid], abs=1e-6)
        assert by_partner[pid] <= partners[pid]["capacity"] + 1e-6
    # every need is in one stored cluster; plan.geojson draws every cluster and assignment
    need_clusters = tables["need_clusters.csv"]
    assert len(need_clusters) == m["counts"]["needs"]
    assert len({n["need_id"] for n in need_clusters}) == len(need_clusters)
    assert {n["cluster_id"] for n in need_clusters} == set(clusters)
    types = defaultdict(int)
    for f in geo["plan.geojson"]["features"]:
        types[f["properties"]["feature_type"]] += 1
    assert types["cluster"] == len(clusters) and types["assignment"] == len(rows)
    # gaps, floors and recruit sites agree with the summary
    gaps = tables["gaps.csv"]
    assert sum(float(g["served"]) for g in gaps) == pytest.approx(m["units"]["served"], abs=1e-3)
    floors, figures = tables["floors.csv"], m["floors"]
    assert len(floors) == figures["neighborhoods"]
    assert sum(f["floor_met"].lower() == "true" for f in floors) == figures["met"]
    recruit = tables["recruit.csv"]
    per_category = defaultdict(list)
    for site in recruit:
        per_category[site["category"]].append(int(site["rank"]))
        assert float(site["covered_units"]) > 0
    assert all(sorted(ranks) == list(range(1, len(ranks) + 1)) for ranks in per_category.values())
    assert all(len(ranks) <= 2 for ranks in per_category.values())
    # it is the plan in force now
    latest = served.call("GET", "/api/v1/plans/latest", key=served.keys["outreach"]).json()
    assert latest["plan"]["plan_id"] == started["plan_id"]


# --------------------------------------------------------------------------- concurrency


def _race(served: Served, key: str, sends: list[dict], headers: dict) -> list[tuple[int, Reply]]:
    """Send one PUT per body, each from its own thread and connection, all at once."""
    path = f"/api/v1/partners/{sends[0]['partner_id']}"
    barrier = threading.Barrier(len(sends))
    out: list[tuple[int, Reply]] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        conn = served.connect()
        try:
            conn.connect()  # connected before the start line: only the request races
            barrier.wait(timeout=30)
            r = http_call(conn, "PUT", path, key=key, json_body=sends[i], headers=headers)
            with lock:
                out.append((i, r))
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(sends))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == len(sends), "a writer did not finish"
    return out


def test_two_writers_with_the_same_if_match_exactly_one_wins(served):
    key, pid = served.keys["admin"], "T-HTTP-RACE"
    tag = _create(served, key, _partner(pid))
    try:
        for round_ in range(5):
            sends = [_partner(pid, capacity=200 + 10 * round_ + i) for i in range(2)]
            out = _race(served, key, sends, {"If-Match": tag})
            codes = sorted(r.status for _, r in out)
            assert codes == [200, 412], [(r.status, r.text) for _, r in out]
            winner, won = next((i, r) for i, r in out if r.status == 200)
            loser = next(r for _, r in out if r.status == 412)
            assert _problem(loser, 412)["title"] == "Precondition Failed"
            now = served.call("GET", f"/api/v1/partners/{pid}", key=key)
            assert now.json()["capacity"] == sends[winner]["capacity"]
            assert now.headers["ETag"] == won.headers["ETag"] != tag
            # the loser's tag stays stale
            again = served.call(
                "PUT",
                f"/api/v1/partners/{pid}",
                key=key,
                json_body=sends[1 - winner],
                headers={"If-Match": tag},
            )
            _problem(again, 412)
            tag = now.headers["ETag"]
    finally:
        _delete(served, key, pid)


def test_many_writers_with_fresh_etags_lose_no_update(served):
    """N writers each add 1 to a partner's capacity M times (read, then write If-Match)."""
    writers, updates, start = 4, 5, 100
    key, pid = served.keys["admin"], "T-HTTP-COUNTER"
    path = f"/api/v1/partners/{pid}"
    _create(served, key, _partner(pid, capacity=start))
    first_version = served.call("GET", path, key=key).json()["version"]
    statuses: list[int] = []
    written: list[float] = []  # the capacity each successful write stored
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def writer() -> None:
        conn = served.connect()
        done = attempts = 0
        deadline = time.monotonic() + 120
        try:
            barrier.wait(timeout=30)
            while done < updates and attempts < 50 * updates and time.monotonic() < deadline:
                attempts += 1
                cur = http_call(conn, "GET", path, key=key)
                if cur.status != 200:
                    with lock:
                        statuses.append(cur.status)
                        errors.append(f"GET {cur.status}: {cur.text}")
                    return
                value = cur.json()["capacity"] + 1
                r = http_call(
                    conn,
                    "PUT",
                    path,
                    key=key,
                    json_body=_partner(pid, capacity=value),
                    headers={"If-Match": cur.headers["ETag"]},
                )
                with lock:
                    statuses.append(r.status)
                if r.status == 200:
                    done += 1
                    with lock:
                        written.append(r.json()["capacity"])
                elif r.status == 429:  # throttled: wait as told, then try again
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                elif r.status != 412:
                    with lock:
                        errors.append(f"PUT {r.status}: {r.text}")
                    return
            if done < updates:
                with lock:
                    errors.append(f"a writer made {done} of {updates} updates")
        finally:
            conn.close()

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
        assert errors == []
        assert not any(s >= 500 for s in statuses), statuses
        assert set(statuses) <= {200, 412, 429}, statuses
        total = writers * updates
        assert statuses.count(200) == total
        print(f"{writers} writers x {updates} updates: {statuses.count(412)} x 412 on the way")
        # every successful write stored a different value: none overwrote another
        assert sorted(written) == [start + i for i in range(1, total + 1)]
        final = served.call("GET", path, key=key).json()
        assert final["capacity"] == start + total
        assert final["version"] == first_version + total
    finally:
        _delete(served, key, pid)


def _wait_for_reads(
    seen: list[tuple[int, int, float]], lock: threading.Lock, at_least: int, timeout: float
) -> None:
    """Wait until the readers have recorded ``at_least`` answers (or the timeout passes)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with lock:
            if len(seen) >= at_least:
                return
        time.sleep(0.01)


def test_concurrent_reads_during_writes_see_whole_records(served):
    """Readers on their own connections while a writer changes a partner: every read is a
    committed version (its capacity and version move together), never an error."""
    key, pid = served.keys["admin"], "T-HTTP-READS"
    path = f"/api/v1/partners/{pid}"
    _create(served, key, _partner(pid, capacity=1000))
    base_version = served.call("GET", path, key=key).json()["version"]
    stop = threading.Event()
    seen: list[tuple[int, int, float]] = []
    lock = threading.Lock()

    def reader() -> None:
        conn = served.connect()
        try:
            while not stop.is_set():
                r = http_call(conn, "GET", path, key=served.keys["outreach"])
                body = r.json() if r.status == 200 else {}
                with lock:
                    seen.append((r.status, body.get("version", -1), body.get("capacity", -1)))
                time.sleep(0.03)
        finally:
            conn.close()

    readers = [threading.Thread(target=reader) for _ in range(2)]
    try:
        for t in readers:
            t.start()
        conn = served.connect()
        try:
            for i in range(1, 11):
                # the readers read between writes: on a fast or a busy machine the ten writes
                # could otherwise all pass before ten reads (a proof of nothing)
                _wait_for_reads(seen, lock, at_least=i, timeout=10.0)
                cur = http_call(conn, "GET", path, key=key)
                r = http_call(
                    conn,
                    "PUT",
                    path,
                    key=key,
                    json_body=_partner(pid, capacity=1000 + i),
                    headers={"If-Match": cur.headers["ETag"]},
                )
                assert r.status == 200, r.text
        finally:
            conn.close()
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=30)
        _delete(served, key, pid)
    assert not any(status >= 500 for status, _, _ in seen), seen
    assert {status for status, _, _ in seen} <= {200, 429}, seen  # 429: throttled, no data
    reads = [(version, capacity) for status, version, capacity in seen if status == 200]
    assert len(reads) >= 10, seen
    for version, capacity in reads:  # version v+i always carries capacity 1000+i
        assert capacity == 1000 + (version - base_version)
