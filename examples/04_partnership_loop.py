"""From plan to action on the sample city: publish a plan, partners answer, re-plan.

Run from anywhere: ``python examples/04_partnership_loop.py [WORK_DIR]``. It starts
``matcher serve`` on a new store (loaded with the bundled Chicago sample) and, over HTTP
as a planner and as two partners would:

1. runs a plan (a draft: nothing uses it yet) and publishes it, so that it is the plan in
   force and each assignment is offered to its partner;
2. a partner key (bound to one organization) lists its own offers and accepts one; another
   partner declines one, saying why; the first starts the work and records a delivery, and
   a planner records that a need was resolved, with a resident's rating;
3. runs a re-plan, published when done: the accepted partnership keeps its units, the
   declined pair is not proposed again, and the plan is still exactly optimal under those
   two constraints (``metrics.agreements`` in its summary says what was kept).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from matcher.store import open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A few JSON calls to the service with one API key."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def call(self, method: str, path: str, body: Any = None, etag: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if etag is not None:
            headers["If-Match"] = etag
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def wait(self, plan_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rec: dict[str, Any] = self.call("GET", f"/api/v1/plans/{plan_id}")
            if rec["status"] in ("done", "failed"):
                if rec["status"] == "failed":
                    raise SystemExit(f"plan {plan_id} failed: {rec['error']}")
                return rec
            time.sleep(0.5)
        raise SystemExit(f"plan {plan_id} did not finish")


def verify_replan(
    base: str, key: str, db: Path, plan_id: str, work: Path, resolved: str,
    lock: dict[tuple[str, str], float], exclude: dict[tuple[str, str], None],
) -> tuple[list[str], int]:
    """Run examples/02_verify_plan.py's checks on a stored plan: (failed ones, passed).

    Its inputs are what the plan job planned: the store's needs but the resolved one, and
    the partners with volunteers at their grid points (the service plans them there).
    """
    import contextlib
    import importlib.util
    import io

    import pandas as pd

    from matcher.privacy import public_partners

    spec = importlib.util.spec_from_file_location(
        "verify_plan", Path(__file__).with_name("02_verify_plan.py"))  # fmt: skip
    assert spec is not None and spec.loader is not None
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    plan_dir = work / "replan"
    plan_dir.mkdir(exist_ok=True)
    for name in ("summary.json", "clusters.csv", "assignments.csv", "need_clusters.csv"):
        req = urllib.request.Request(f"{base}/api/v1/plans/{plan_id}/files/{name}",
                                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            (plan_dir / name).write_bytes(resp.read())
    with open_store(db) as store:
        needs = pd.DataFrame(store.needs_frame().drop(columns="geometry"))
        partners = pd.DataFrame(public_partners(store.partners_frame()).drop(columns="geometry"))
    needs[needs["need_id"] != resolved].to_csv(work / "needs.csv", index=False)
    partners.to_csv(work / "partners.csv", index=False)
    lines = io.StringIO()
    with contextlib.redirect_stdout(lines):  # one line per check: counted, not shown
        failures: list[str] = checker.verify(work / "needs.csv", work / "partners.csv",
                                             plan_dir, lock, exclude)  # fmt: skip
    return failures, lines.getvalue().count("ok   ")


def main(work: Path) -> None:
    db = work / "city.db"
    with open_store(db) as store:  # a new store: `matcher serve` loads the sample city
        planner_key = store.create_api_key("planner", label="example planner")[1]
    port = free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen(
        [sys.executable, "-m", "matcher.cli", "serve", "--db", str(db), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/v1/health", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        planner = Client(base, planner_key)

        # 1. a draft, then published
        first = planner.call("POST", "/api/v1/plans", {"objective": "distance"})["plan_id"]
        planner.wait(first)
        assert planner.call("GET", "/api/v1/plans/latest")["plan"] is None  # a draft
        published = planner.call("POST", f"/api/v1/plans/{first}/publish", {})
        print(f"plan {first[:8]} published: {published['offered']} offers "
              f"({published['units_offered']:g} units)")  # fmt: skip

        # 2. two organizations answer through their own keys
        rows = planner.call("GET", f"/api/v1/plans/{first}/assignments")["results"]
        orgs = sorted({r["partner_id"] for r in rows if r["partner_id"].startswith("ORG-")})
        with open_store(db) as store:
            keys = {pid: store.create_api_key("partner", partner_id=pid)[1] for pid in orgs[:2]}
        one, two = (Client(base, keys[pid]) for pid in orgs[:2])
        mine = one.call("GET", "/api/v1/partnerships")
        print(f"{orgs[0]} sees {mine['total']} offer(s), all its own: "
              f"{ {p['partner_id'] for p in mine['results']} == {orgs[0]} }")  # fmt: skip
        first_of = sorted(mine["results"], key=lambda p: p["cluster_id"])[0]
        accepted = one.call("POST", f"/api/v1/partnerships/{first_of['partnership_id']}"
                            "/transitions", {"to": "accepted"}, etag='"1"')  # fmt: skip
        theirs = sorted(two.call("GET", "/api/v1/partnerships")["results"],
                        key=lambda p: p["cluster_id"])[0]  # fmt: skip
        declined = two.call("POST", f"/api/v1/partnerships/{theirs['partnership_id']}/transitions",
                            {"to": "declined", "reason": "no van that month"}, etag='"1"')
        for ps in (accepted, declined):
            print(f"{ps['partner_id']} {ps['state']} {ps['units']:g} units of {ps['cluster_id']}")
        # the work starts; the partner records what it delivered, a planner what became of
        # a need (with the resident's feedback, which only staff see)
        active = one.call("POST", f"/api/v1/partnerships/{accepted['partnership_id']}"
                          "/transitions", {"to": "active"}, etag='"2"')  # fmt: skip
        today = time.strftime("%Y-%m-%d", time.gmtime())
        one.call("POST", f"/api/v1/partnerships/{active['partnership_id']}/deliveries",
                 {"period_start": today, "period_end": today, "units": 2})  # fmt: skip
        got = one.call("GET", f"/api/v1/partnerships/{active['partnership_id']}/deliveries")
        print(f"{orgs[0]} delivered {got['units']:g} of {active['units']:g} units so far")
        table = urllib.request.Request(
            f"{base}/api/v1/plans/{first}/files/need_clusters.csv",
            headers={"Authorization": f"Bearer {planner_key}"},
        )
        with urllib.request.urlopen(table, timeout=60) as resp:
            lines = resp.read().decode().splitlines()[1:]
        busy = {active["cluster_id"], declined["cluster_id"]}  # (resolving their only need
        need = next(n for n, c in (line.split(",") for line in lines)  # would end them)
                    if c not in busy)  # fmt: skip
        outcome = planner.call("PUT", f"/api/v1/needs/{need}/outcome",
                               {"status": "resolved", "date": today, "rating": 5,
                                "comment": "came the same week"})  # fmt: skip
        print(f"need {need}: {outcome['status']} on {outcome['date'] == today and 'today'}, "
              f"rated {outcome['rating']}")
        try:  # a partner key cannot touch another partner's offer: it does not exist for it
            one.call("GET", f"/api/v1/partnerships/{declined['partnership_id']}")
        except urllib.error.HTTPError as exc:
            print(f"{orgs[0]} reading {orgs[1]}'s partnership: HTTP {exc.code}")

        # 3. the re-plan keeps the agreement and avoids the declined pair; published when done
        second = planner.call("POST", "/api/v1/plans", {"objective": "distance",
                                                        "publish": True})["plan_id"]
        rec = planner.wait(second)
        facts = rec["summary"]["metrics"]["agreements"]
        print("re-plan agreements:", json.dumps({k: v for k, v in facts.items()
                                                 if k != "revision"}))  # fmt: skip
        rows = planner.call("GET", f"/api/v1/plans/{second}/assignments")["results"]
        units = {(r["cluster_id"], r["partner_id"]): float(r["units"]) for r in rows}
        kept = planner.call("GET", f"/api/v1/partnerships/{accepted['partnership_id']}")
        print(f"accepted pair in the re-plan: {units.get((kept['cluster_id'], orgs[0])):g} "
              f"units (agreed {accepted['units']:g}); declined pair proposed again: "
              f"{(declined['cluster_id'], orgs[1]) in units}")  # fmt: skip
        # the re-plan checked independently: the verifier of examples/02_verify_plan.py on
        # its files, with the agreed pair fixed and the declined pair left out of its LPs
        failures, passed = verify_replan(base, planner_key, db, second, work, need,
                                 {(kept["cluster_id"], orgs[0]): float(kept["units"])},
                                 {(declined["cluster_id"], orgs[1]): None})  # fmt: skip
        print(f"re-plan = the LP optimum under the agreement and the decline: "
              f"{'NO: ' + '; '.join(failures) if failures else 'yes'} ({passed} checks passed)")
        latest = planner.call("GET", "/api/v1/plans/latest")["plan"]["plan_id"]
        print(f"plan in force: {latest[:8]} (the re-plan: {latest == second})")
        print(f"map: {base}/ (key {planner_key[:11]}..., a planner's) shows the states")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        main(target)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
