"""The OpenAPI document tells the truth (issue #10, item 7): Schemathesis against the real server.

``matcher serve`` runs in its own process on a temporary store (the sample city, loaded on
the first start), once on SQLite and once on PostgreSQL/PostGIS; the document is read
from the live ``/api/v1/openapi.json`` with Schemathesis' Python API, and every operation
is called with generated requests, valid and invalid, as an admin. Every answer must be
documented: no 5xx, a documented status, content type, body schema and headers.

Bounded for CI: a fixed number of examples per operation and mode, derandomized (the same
requests every run), no example database; about 2,000 requests, 70-90 s on two cores. No
``matcher`` code runs in this process (the server is another one), so coverage is paused
while it runs (``no_cover``): tracing Hypothesis and Schemathesis measured nothing.
Excluded: nothing. Plans and scenarios are in: the server caps the plans queued per role
and answers 429 past the cap (documented); the cap is set to 2 here and every run waits
for the jobs it started before it sends more plans or scenarios (and before the imports
and deletes), so the server never has a long queue. The request rate limit is
lifted (else most answers would be 429). The imports replace the stored tables: they run
last, on this test's own store.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from .pgserver import schema_name

#: Examples per operation and generation mode (positive and negative).
EXAMPLES = 50
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
#: Operations that replace or delete stored data run after the others.
LAST = ("DELETE ", "POST /api/v1/imports/")
#: Operations that queue plan jobs (plans and scenarios).
QUEUES = ("POST /api/v1/plans",)
#: Server bugs this test found whose fix belongs to ``matcher`` (not to the service):
#: a marker of the server's traceback -> the bug. While a run meets only these, the test
#: is an expected failure that names them; any other 5xx, traceback, undocumented status,
#: content type, header or body fails it. Delete an entry when its fix lands.
#: (found here and fixed: CSV bodies that did not parse, a cluster_km too small for DBSCAN)
KNOWN_MATCHER_BUGS: dict[str, str] = {}


def _matcher_command() -> list[str]:
    exe = shutil.which("matcher", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "matcher.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """``matcher serve`` on a new store with an admin key: (base URL, headers, log path).

    Once on a SQLite file, once on a PostgreSQL/PostGIS database.
    """
    tmp = tmp_path_factory.mktemp("contract")
    if request.param == "sqlite":
        db = str(tmp / "matcher.db")
    else:
        db = request.getfixturevalue("pg_cluster").new_schema(schema_name("contract"))
    created = subprocess.run(
        [*_matcher_command(), "keys", "create", "--role", "admin", "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    env = dict(os.environ)
    env.update(
        # the per-key request rate would answer most of the run with 429: lifted here (the
        # 429 itself is documented on every operation behind a key)
        MATCHER_RATE_LIMIT_PER_MINUTE="1000000",
        MATCHER_RATE_LIMIT_BURST="1000000",
        # at most two plans queued or running: no long queue, and 429 past it
        MATCHER_PLAN_QUEUE_CAP='{"admin": 2, "planner": 2}',
    )
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*_matcher_command(), "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"matcher serve did not start:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.25)
        yield base, {"Authorization": f"Bearer {key}"}, tmp / "server.log", request.param
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _done_plan(base: str, headers: dict[str, str]) -> str:
    # equity floors and recruit sites: the plan has every optional file and map layer;
    # published, so that it has partnerships
    body = {"min_coverage": 0.3, "recruit_k": 2, "publish": True}
    r = requests.post(f"{base}/api/v1/plans", json=body, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    plan_id = r.json()["plan_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = requests.get(f"{base}/api/v1/plans/{plan_id}", headers=headers, timeout=30)
        if status.json()["status"] in ("done", "failed"):
            assert status.json()["status"] == "done", status.text
            return plan_id
        time.sleep(0.1)
    raise AssertionError("the plan did not finish")


def _wait_for(base: str, headers: dict[str, str], plan_ids: list[str]) -> dict[str, str]:
    """Wait until the plans have finished (done or failed); return their errors."""
    errors = {}
    deadline = time.monotonic() + 180
    for plan_id in plan_ids:
        while True:
            rec = requests.get(f"{base}/api/v1/plans/{plan_id}", headers=headers, timeout=30)
            if rec.json()["status"] in ("done", "failed"):
                errors[plan_id] = rec.json()["error"]
                break
            assert time.monotonic() < deadline, f"plan {plan_id} did not finish"
            time.sleep(0.1)
    return errors


def _first_id(base: str, headers: dict[str, str], what: str, key: str) -> str:
    r = requests.get(f"{base}/api/v1/{what}?limit=1", headers=headers, timeout=30)
    return str(r.json()["results"][0][key])


@pytest.mark.no_cover
def test_every_operation_conforms_to_the_document(server):
    base, auth, log, backend = server
    # the routes' code is the same on both stores: PostgreSQL gets a third of the examples
    # (CI time; what differs there, the store, has its own contract tests)
    examples = EXAMPLES if backend == "sqlite" else max(EXAMPLES // 3, 1)
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    # every request carries the admin key (below); Schemathesis does not fuzz it away
    schema.config.generation.update(with_security_parameters=False)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.label.startswith(LAST))
    assert len(operations) >= 22, [op.label for op in operations]

    # a finished plan and stored records, so that the item routes answer more than 404
    stored = {
        "plan_id": _done_plan(base, auth),
        "partner_id": _first_id(base, auth, "partners", "partner_id"),
        "need_id": _first_id(base, auth, "needs", "need_id"),
        "partnership_id": _first_id(base, auth, "partnerships", "partnership_id"),
    }
    session = requests.Session()
    statuses: dict[str, Counter[int]] = {}
    failures: list[tuple[str, BaseException]] = []
    queued: list[str] = []  # plans and scenarios the run started
    job_errors: dict[str, str | None] = {}

    def settle() -> None:
        """Wait for the jobs the runs started (done or failed) and keep their errors."""
        job_errors.update(_wait_for(base, auth, queued))
        queued.clear()

    def run(op, mode: GenerationMode, examples: int, **fixed) -> None:
        if op.label.startswith(QUEUES + LAST):
            # a run that queues jobs starts with none queued: its plans and scenarios are
            # not all refused for a full queue; the imports and deletes run on a quiet
            # store. Other runs (reads) go on while the jobs run.
            settle()
        label = f"{op.label} [{mode.value}{', stored ids' if fixed else ''}]"

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode, **fixed))
        def call(case):
            if isinstance(case.body, dict) and case.body.get("report") is True:
                # a report is rendered after the plan (seconds of matplotlib): its route
                # and files have their own tests; here the plans stay cheap (CI time)
                case.body["report"] = False
            response = case.call(base_url=base, session=session, headers=auth, timeout=60)
            statuses.setdefault(label, Counter())[response.status_code] += 1
            if response.status_code == 202:
                queued.append(response.json()["plan_id"])
            case.validate_response(response, checks=CHECKS, headers=auth)

        try:
            call()
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all reported
            failures.append((label, exc))

    for op in operations:
        run(op, GenerationMode.POSITIVE, examples)
        inputs = (op.path_parameters, op.query, op.headers, op.cookies, op.body)
        if any(len(x) for x in inputs):  # else no request is invalid (health, map config)
            run(op, GenerationMode.NEGATIVE, examples)
        path_ids = {name: stored[name] for name in stored if f"{{{name}}}" in op.path}
        if path_ids:
            # the pass with the ids of stored records and of a done plan: half as many
            run(op, GenerationMode.POSITIVE, examples // 2, path_parameters=path_ids)
    settle()

    elapsed = time.monotonic() - started
    total = sum(sum(c.values()) for c in statuses.values())
    print(f"\nSchemathesis: {len(operations)} operations, {total} requests, {elapsed:.0f} s")
    for label, seen in statuses.items():
        print(f"  {label}: {dict(sorted(seen.items()))}")
    # every traceback the server logged (a 500, or a plan job failed on an unexpected
    # error: a server bug that no status shows), and the known bugs they are
    tracebacks = log.read_text(errors="replace").split("Traceback (most recent call last)")[1:]
    known = {
        KNOWN_MATCHER_BUGS[marker]
        for block in tracebacks
        for marker in KNOWN_MATCHER_BUGS
        if marker in block
    }
    unknown = [b for b in tracebacks if not any(m in b for m in KNOWN_MATCHER_BUGS)]
    assert not unknown, "the server logged a traceback:\n" + unknown[0][-6000:]
    not_5xx = [(label, exc) for label, exc in failures if not _only_server_errors(exc)]
    assert not not_5xx, "\n\n".join(f"{label}:\n{exc}" for label, exc in not_5xx)
    unexpected = {k: v for k, v in job_errors.items() if v and "unexpected" in v}
    if failures or unexpected:  # each 5xx and job failure logged a known traceback
        assert known, (failures, unexpected)
        pytest.xfail("known matcher bugs: " + "; ".join(sorted(known)))


def _only_server_errors(exc: BaseException) -> bool:
    """Whether Schemathesis failed on 5xx answers only (their tracebacks are checked)."""
    subs = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return all(getattr(sub, "status_code", 0) >= 500 for sub in subs)
