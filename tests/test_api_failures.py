"""The service's failure paths: each answer's status, problem+json type and body fields.

The stateless failures run twice: in process (Flask's test client on a small store) and
over real HTTP against the session's ``matcher serve`` (the ``served`` fixture). Failures
that need a particular state run in process on a store of their own: a plan job that fails
inside matcher, an unexpected exception (a test-only route on an app from ``create_app``),
and a store that another connection keeps locked.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from api import create_app
from matcher.jobs import PlanWorker
from matcher.store import open_store

from .conftest import BACKENDS, ROLES, TINY_NEEDS, TINY_PARTNERS, Reply, close_app

PROBLEM = "application/problem+json"


def assert_problem(r: Reply, status: int, *, title: str | None = None) -> dict:
    """An RFC 9457 answer of ``status``, with no server internals in it; return the body."""
    assert r.status == status, (r.status, r.text)
    assert r.mimetype == PROBLEM, r.headers.get("Content-Type")
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    assert body.get("type", "about:blank") == "about:blank"
    if title is not None:
        assert body["title"] == title
    for leak in ("Traceback", 'File "', "sqlite3.", "site-packages"):
        assert leak not in r.text, leak
    return body


# --------------------------------------------------------------------------- two transports


class InProcess:
    """Flask's test client with the same calling convention as :class:`conftest.Served`."""

    def __init__(self, app, keys: dict[str, str]) -> None:
        self.app, self.keys, self.client = app, keys, app.test_client()

    def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body=None,
        body: bytes | str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if json_body is not None:
            body, content_type = json.dumps(json_body), content_type or "application/json"
        if content_type is not None:
            sent["Content-Type"] = content_type
        r = self.client.open(path, method=method, data=body, headers=sent)
        try:
            return Reply(r.status_code, r.headers, r.get_data())
        finally:
            r.close()


def _make_app(where: str, **config):
    app = create_app({"DB": where} | config)
    st = app.extensions["matcher_store"]
    keys = {role: st.create_api_key(role)[1] for role in ROLES}
    return app, keys


def _load_tiny(app, keys) -> None:
    c = InProcess(app, keys)
    for kind, text in (("partners", TINY_PARTNERS), ("needs", TINY_NEEDS)):
        r = c.call(
            "POST",
            f"/api/v1/imports/{kind}",
            key=keys["planner"],
            body=text,
            content_type="text/csv",
        )
        assert r.status == 201, r.text


@pytest.fixture()
def app_keys(store_url):
    app, keys = _make_app(store_url)
    _load_tiny(app, keys)
    yield app, keys
    close_app(app)


@pytest.fixture(
    params=[(way, backend) for way in ("in-process", "http") for backend in BACKENDS],
    ids="-".join,
)
def api(request, tmp_path):
    """The API in process (a small store) or over HTTP (the session's ``matcher serve``).

    Either on each store backend.
    """
    way, backend = request.param
    if way == "http":
        yield request.getfixturevalue(f"served_{backend}")
        return
    where = str(tmp_path / "store.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    app, keys = _make_app(where)
    _load_tiny(app, keys)
    yield InProcess(app, keys)
    close_app(app)


def _partner(partner_id: str, **extra) -> dict:
    return {
        "partner_id": partner_id,
        "kind": "organization",
        "lat": 41.88,
        "lon": -87.63,
        "categories": "food_access",
        "capacity": 10,
        "radius_km": 2.0,
    } | extra


def _create(api, partner_id: str) -> str:
    r = api.call(
        "POST", "/api/v1/partners", key=api.keys["planner"], json_body=_partner(partner_id)
    )
    assert r.status == 201, r.text
    return r.headers["ETag"]


def _delete(api, partner_id: str) -> None:
    cur = api.call("GET", f"/api/v1/partners/{partner_id}", key=api.keys["planner"])
    if cur.status == 200:
        r = api.call(
            "DELETE",
            f"/api/v1/partners/{partner_id}",
            key=api.keys["planner"],
            headers={"If-Match": cur.headers["ETag"]},
        )
        assert r.status == 204, r.text


def _wait(api, location: str, key: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = api.call("GET", location, key=key).json()
        if rec["status"] in ("done", "failed"):
            return rec
        time.sleep(0.05)
    raise AssertionError(f"{location} did not finish")


# --------------------------------------------------------------------------- 404, 409, 415, 400

UNKNOWN_PLAN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("GET", "/api/v1/partners/NO-SUCH-PARTNER", "partner"),
        ("PUT", "/api/v1/partners/NO-SUCH-PARTNER", "partner"),
        ("DELETE", "/api/v1/partners/NO-SUCH-PARTNER", "partner"),
        ("GET", "/api/v1/needs/NO-SUCH-NEED", "need"),
        ("PUT", "/api/v1/needs/NO-SUCH-NEED", "need"),
        ("DELETE", "/api/v1/needs/NO-SUCH-NEED", "need"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}", "plan"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}/assignments", "plan"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}/map", "plan"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}/files/summary.json", "plan"),
        ("POST", f"/api/v1/plans/{UNKNOWN_PLAN}/scenarios", "plan"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}/files/passwd", "file"),
        ("GET", f"/api/v1/plans/{UNKNOWN_PLAN}/files/..%2F..%2Fstore.db", "route"),
    ],
)
def test_unknown_things_are_404_problems(api, method, path, what):
    kwargs: dict = {"key": api.keys["admin"]}
    if method == "PUT":
        record = (
            _partner("NO-SUCH-PARTNER")
            if what == "partner"
            else {
                "need_id": "NO-SUCH-NEED",
                "category": "food_access",
                "lat": 41.9,
                "lon": -87.6,
                "demand": 1,
            }
        )
        kwargs |= {"json_body": record, "headers": {"If-Match": '"1"'}}
    elif method == "DELETE":
        kwargs["headers"] = {"If-Match": '"1"'}
    elif method == "POST":
        kwargs["json_body"] = {"scale_capacity": 0.5}
    body = assert_problem(api.call(method, path, **kwargs), 404, title="Not Found")
    if what == "file":
        assert "summary.json" in body["detail"]  # the detail lists the files there are
    elif what != "route":
        assert path.split("/")[4] in body["detail"]  # the id that was not found


def test_duplicate_partner_is_a_409_problem(api):
    pid = "T-FAIL-DUP"
    _create(api, pid)
    try:
        r = api.call(
            "POST",
            "/api/v1/partners",
            key=api.keys["planner"],
            json_body=_partner(pid, capacity=99),
        )
        body = assert_problem(r, 409, title="Conflict")
        assert pid in body["detail"] and "exists" in body["detail"]
        # the stored partner is the first one, unchanged
        got = api.call("GET", f"/api/v1/partners/{pid}", key=api.keys["planner"]).json()
        assert got["capacity"] == 10 and got["version"] == 1
    finally:
        _delete(api, pid)


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body"),
    [
        ("POST", "/api/v1/partners", "text/plain", "partner_id=x"),
        ("POST", "/api/v1/partners", "application/x-www-form-urlencoded", "partner_id=x"),
        ("PUT", "/api/v1/partners/{pid}", "text/csv", "partner_id\nx\n"),
        ("POST", "/api/v1/imports/partners", "application/xml", "<partners/>"),
        ("POST", "/api/v1/imports/neighborhoods", "text/csv", "neighborhood_id\n1\n"),
    ],
)
def test_wrong_content_type_is_a_415_problem(api, method, path, content_type, body):
    pid = "T-FAIL-415"
    tag = _create(api, pid) if "{pid}" in path else None
    try:
        r = api.call(
            method,
            path.format(pid=pid),
            key=api.keys["planner"],
            body=body,
            content_type=content_type,
            headers={"If-Match": tag} if tag else None,
        )
        detail = assert_problem(r, 415, title="Unsupported Media Type")["detail"]
        assert "json" in detail.lower()
    finally:
        if tag:
            _delete(api, pid)


@pytest.mark.parametrize("header", ["not-an-etag", "3", "version 3"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_malformed_if_match_is_a_400_problem(api, method, header):
    pid = "T-FAIL-IFMATCH"
    _create(api, pid)
    try:
        r = api.call(
            method,
            f"/api/v1/partners/{pid}",
            key=api.keys["planner"],
            json_body=_partner(pid, capacity=11) if method == "PUT" else None,
            headers={"If-Match": header},
        )
        body = assert_problem(r, 400)
        assert any(p["field"] == "If-Match" for p in body["problems"]), body
        # nothing changed
        got = api.call("GET", f"/api/v1/partners/{pid}", key=api.keys["planner"])
        assert got.status == 200 and got.json()["capacity"] == 10
    finally:
        _delete(api, pid)


# ------------------------------------------------------------------ plans: failed, unfinished


@pytest.mark.parametrize(
    ("data", "params", "reason"),
    [
        # partners and needs, but no neighborhoods: an equity floor cannot be planned
        ("tiny", {"min_coverage": 0.5}, "need neighborhoods"),
        ("tiny", {"max_partner_share": 0.5}, "need neighborhoods"),
        # nothing stored at all
        ("empty", {}, "the table has no rows"),
    ],
    ids=["min-coverage-without-neighborhoods", "share-cap-without-neighborhoods", "empty-store"],
)
def test_a_plan_job_that_fails_in_matcher_ends_failed_with_a_reason(
    store_url, data, params, reason
):
    app, keys = _make_app(store_url)
    try:
        if data == "tiny":
            _load_tiny(app, keys)
        c, planner = InProcess(app, keys), keys["planner"]
        r = c.call("POST", "/api/v1/plans", key=planner, json_body=params)
        assert r.status == 202, r.text  # accepted: the problem is only found by the job
        location = r.headers["Location"]
        rec = _wait(c, location, planner)
        assert rec["status"] == "failed", rec
        assert rec["summary"] is None and rec["finished_at"]
        assert reason in rec["error"]
        for leak in ("Traceback", 'File "', "Error:", "raise "):
            assert leak not in rec["error"], rec["error"]
        assert "files" not in rec or not rec["files"]
        # nothing of a failed plan can be fetched, and it is not the plan in force
        plan_id = rec["plan_id"]
        for path in ("files/summary.json", "files/assignments.csv", "assignments", "map"):
            body = assert_problem(
                c.call("GET", f"{location}/{path}", key=keys["outreach"]), 404, title="Not Found"
            )
            assert plan_id in body["detail"]
        body = assert_problem(
            c.call("POST", f"{location}/scenarios", key=planner, json_body={}), 409
        )
        assert "failed" in body["detail"]
        latest = c.call("GET", "/api/v1/plans/latest", key=planner).json()
        assert latest["plan"] is None and latest["pending"] == []
    finally:
        close_app(app)


def test_an_unfinished_plan_has_no_files_map_or_scenarios(store_url):
    # a web-only process (no plan worker of its own): a plan posted here waits in the
    # queue until a worker (another process, here one made below) claims it
    app, keys = _make_app(store_url, PLAN_WORKERS=0)
    assert "matcher_jobs" not in app.extensions
    _load_tiny(app, keys)
    c, planner = InProcess(app, keys), keys["planner"]
    try:
        r = c.call("POST", "/api/v1/plans", key=planner, json_body={})
        assert r.status == 202, r.text
        location, plan_id = r.headers["Location"], r.json()["plan_id"]
        rec = c.call("GET", location, key=keys["outreach"]).json()
        assert rec["status"] == "queued" and not rec.get("files")
        for path in ("files/summary.json", "files/plan.geojson", "assignments", "map"):
            r = c.call("GET", f"{location}/{path}", key=keys["outreach"])
            body = assert_problem(r, 404, title="Not Found")
            assert plan_id in body["detail"], path
            if path == "map":
                assert "queued" in body["detail"]
        r = c.call("POST", f"{location}/scenarios", key=planner, json_body={})
        assert "queued" in assert_problem(r, 409, title="Conflict")["detail"]
        assert c.call("GET", location, key=planner).json()["status"] == "queued"
    finally:
        assert PlanWorker(app.extensions["matcher_store"]).run_once() == plan_id
    # once done: its files, but only those it has
    done = _wait(c, location, planner)
    assert done["status"] == "done", done
    assert c.call("GET", f"{location}/map", key=keys["outreach"]).status == 200
    assert "recruit.csv" not in done["files"]
    r = c.call("GET", f"{location}/files/recruit.csv", key=keys["outreach"])
    assert "recruit.csv" in assert_problem(r, 404, title="Not Found")["detail"]


# --------------------------------------------------------------------------- 500, 503


def test_an_unexpected_error_is_a_500_problem_without_details(tmp_path, caplog):
    app, keys = _make_app(str(tmp_path / "store.db"))
    try:
        secret = "/srv/secret/path.db: internal state 0xdeadbeef"

        def boom():  # a test-only route, outside the API blueprint, that fails unexpectedly
            raise RuntimeError(secret)

        app.add_url_rule("/test-only/boom", "test_only_boom", boom, methods=["GET", "POST"])
        c = InProcess(app, keys)
        with caplog.at_level(logging.ERROR, logger="matcher.api"):
            for method in ("GET", "POST"):
                r = c.call(method, "/test-only/boom", json_body={} if method == "POST" else None)
                body = assert_problem(r, 500, title="Internal Server Error")
                assert secret not in r.text and "RuntimeError" not in r.text
                assert body["detail"] == "an unexpected error occurred"
        # the details go to the server's log instead
        logged = [rec for rec in caplog.records if rec.exc_info]
        assert logged and secret in str(logged[0].exc_info[1])
        # and the app goes on answering
        assert c.call("GET", "/api/v1/health").status == 200
    finally:
        close_app(app)


def test_a_busy_store_is_a_503_problem_and_reads_go_on(store_url):
    app, keys = _make_app(store_url, PLAN_WORKERS=0)
    try:
        _load_tiny(app, keys)
        # the same database, with a short wait for other writers (the store's own option)
        app.extensions["matcher_store"].close()
        app.extensions["matcher_store"] = open_store(store_url, timeout=0.2)
        c, planner = InProcess(app, keys), keys["planner"]
        tag = c.call("GET", "/api/v1/partners/p1", key=planner).headers["ETag"]
        other = open_store(store_url)
        try:
            holding = other._write()  # another writer holds the write lock
            holding.__enter__()
            started = time.monotonic()
            writes = [
                c.call("POST", "/api/v1/partners", key=planner, json_body=_partner("T-BUSY")),
                c.call(
                    "PUT",
                    "/api/v1/partners/p1",
                    key=planner,
                    json_body=_partner("p1", capacity=12),
                    headers={"If-Match": tag},
                ),
                c.call(
                    "POST",
                    "/api/v1/imports/needs",
                    key=planner,
                    body=TINY_NEEDS,
                    content_type="text/csv",
                ),
            ]
            assert time.monotonic() - started < 10  # each waited its busy timeout only
            for r in writes:
                body = assert_problem(r, 503, title="Service Unavailable")
                assert "busy" in body["detail"]
            # readers are not blocked by a writer
            r = c.call("GET", "/api/v1/partners/p1", key=planner)
            assert r.status == 200 and r.headers["ETag"] == tag
        finally:
            holding.__exit__(None, None, None)
            other.close()
        # the lock gone, the same write goes through, and nothing of the failed ones stuck
        r = c.call(
            "PUT",
            "/api/v1/partners/p1",
            key=planner,
            json_body=_partner("p1", capacity=12),
            headers={"If-Match": tag},
        )
        assert r.status == 200, r.text
        assert c.call("GET", "/api/v1/partners/T-BUSY", key=planner).status == 404
    finally:
        app.extensions["matcher_store"].close()


# ------------------------------------------------------------- found by this suite, fixed


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_plan_request_that_is_not_json_is_a_415_problem(app_keys, content_type):
    app, keys = app_keys
    c = InProcess(app, keys)
    r = c.call(
        "POST",
        "/api/v1/plans",
        key=keys["planner"],
        body='{"objective": "distance"}',
        content_type=content_type,
    )
    if r.status == 202:  # let the job that should not have started finish before teardown
        _wait(c, r.headers["Location"], keys["planner"])
    assert_problem(r, 415, title="Unsupported Media Type")


def test_a_scenario_request_that_is_not_json_is_a_415_problem(app_keys):
    app, keys = app_keys
    c, planner = InProcess(app, keys), keys["planner"]
    r = c.call("POST", "/api/v1/plans", key=planner, json_body={})
    base = _wait(c, r.headers["Location"], planner)
    assert base["status"] == "done", base
    r = c.call(
        "POST",
        f"/api/v1/plans/{base['plan_id']}/scenarios",
        key=planner,
        body='{"scale_capacity": 0.5}',
        content_type="text/plain",
    )
    if r.status == 202:
        _wait(c, r.headers["Location"], planner)
    assert_problem(r, 415, title="Unsupported Media Type")


@pytest.mark.parametrize(
    ("kind", "content_type", "body"),
    [
        ("neighborhoods", "application/geo+json", b"{}"),
        ("partners", "text/csv", b""),
        ("needs", "text/csv", b""),
    ],
)
def test_import_problems_name_the_request_body_not_a_server_path(
    app_keys, kind, content_type, body
):
    app, keys = app_keys
    r = InProcess(app, keys).call(
        "POST", f"/api/v1/imports/{kind}", key=keys["planner"], body=body, content_type=content_type
    )
    problems = assert_problem(r, 400, title="Invalid input")["problems"]
    assert problems
    for p in problems:
        assert "(request body)" in p["file"] and not p["file"].startswith("/"), p
