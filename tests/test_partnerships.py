"""From plan to action: publishing, the partnership state machine, partner keys, re-plans.

Every test runs on both stores (SQLite and PostgreSQL/PostGIS). Plans are made by the real
plan worker over a real store; re-plans with agreements are checked against the LP oracle
(tests/oracle.py), which fixes agreed pairs and forbids declined ones by its own bounds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from matcher.access import ForbiddenError
from matcher.jobs import PlanWorker, plan_in_force
from matcher.partnerships import (
    PartnershipStateError,
    carry_clusters,
    clear_decline,
    publish_plan,
    transition,
)
from matcher.privacy import coarsen
from matcher.store import NotFoundError, PlanStateError, VersionConflictError, open_store

from .oracle import assignment_cost_m, equity_optimum

CATS = ("food_access", "youth_engagement")
PARAMS = {"objective": "distance", "volunteer_points": "grid"}


def city() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Needs in six groups and organizations too few to serve them all (unmet remains)."""
    rng = np.random.default_rng(7)
    rows = []
    for g, (lat, lon) in enumerate([(41.88, -87.63), (41.90, -87.65), (41.86, -87.66),
                                    (41.89, -87.61), (41.87, -87.64), (41.91, -87.62)]):
        for i in range(6):
            rows.append({
                "need_id": f"n{g}{i:02d}", "category": CATS[g % 2],
                "lat": lat + rng.uniform(-0.002, 0.002), "lon": lon + rng.uniform(-0.002, 0.002),
                "demand": int(rng.integers(1, 4)), "severity": int(rng.integers(1, 6)),
            })  # fmt: skip
    partners = pd.DataFrame(
        {
            "partner_id": ["P1", "P2", "P3", "P4", "P5"],
            "name": ["Food One", "Food Two", "Youth One", "Youth Two", "Both"],
            "kind": ["organization"] * 5,
            "lat": [41.881, 41.899, 41.870, 41.905, 41.885],
            "lon": [-87.631, -87.651, -87.640, -87.620, -87.640],
            "categories": ["food_access", "food_access", "youth_engagement",
                           "youth_engagement", "food_access;youth_engagement"],
            "capacity": [12, 10, 8, 6, 9],
            "radius_km": [6, 6, 6, 6, 6],
        }
    )  # fmt: skip
    return pd.DataFrame(rows), partners


def load_city(st: Any) -> Any:
    needs, partners = city()
    st.replace_partners(partners, "test")
    st.replace_needs(needs, "test")
    return st


@pytest.fixture
def store(where: str) -> Iterator[Any]:
    st = load_city(open_store(where))
    yield st
    st.close()


def run_plan(st: Any, **extra: Any) -> str:
    """Queue a plan and run it with the real plan worker; return its id."""
    plan_id = st.create_plan(PARAMS | extra, actor="planner-key")
    assert PlanWorker(st).run_once() == plan_id
    rec = st.get_plan(plan_id)
    assert rec.status == "done", rec.error
    return plan_id


def table(st: Any, plan_id: str, name: str) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(st.plan_file(plan_id, name)),
        dtype={"cluster_id": str, "partner_id": str},
        keep_default_na=False,
    )


def test_a_plan_is_a_draft_until_published_and_publishing_offers_its_assignments(store):
    first = run_plan(store)
    assert plan_in_force(store) is None  # a draft: nearby, intake and holds do not use it
    assert store.count_partnerships() == 0
    result = publish_plan(store, first, "planner-key")
    assignments = table(store, first, "assignments.csv")
    assert result["offered"] == len(assignments) and result["superseded"] is None
    assert result["units_offered"] == pytest.approx(assignments["units"].sum())
    assert plan_in_force(store).plan_id == first
    assert store.get_plan(first).published_by == "planner-key"
    offers = store.list_partnerships(limit=None)
    got = {(o["cluster_id"], o["partner_id"]): o["units"] for o in offers}
    want = dict(zip(zip(assignments["cluster_id"], assignments["partner_id"], strict=True),
                    assignments["units"], strict=True))  # fmt: skip
    assert got == pytest.approx(want)
    assert {o["state"] for o in offers} == {"offered"} and all(o["version"] == 1 for o in offers)
    clusters = table(store, first, "clusters.csv").set_index("cluster_id")
    for o in offers:
        assert o["centroid_lat"] == pytest.approx(clusters.loc[o["cluster_id"], "centroid_lat"])
        assert o["category"] == clusters.loc[o["cluster_id"], "category"]
    with pytest.raises(PlanStateError, match="in force already"):
        publish_plan(store, first, "planner-key")
    entries = store.audit_entries(entity="plan", entity_id=first)
    assert "publish" in [e.action for e in entries]


def test_scenarios_drafts_of_exact_points_and_unfinished_plans_are_never_published(store):
    base = run_plan(store)
    queued = store.create_plan(PARAMS, actor="k")
    with pytest.raises(PlanStateError, match="queued"):
        publish_plan(store, queued, "k")
    with pytest.raises(NotFoundError):
        publish_plan(store, "0" * 32, "k")
    assert PlanWorker(store).run_once() == queued
    exact = store.create_plan({"objective": "distance"}, actor="k")
    assert PlanWorker(store).run_once() == exact
    with pytest.raises(PlanStateError, match="exact points"):
        publish_plan(store, exact, "k")
    what_if = store.create_plan(PARAMS | {"scenario": {"base_plan": base, "change": {}}},
                                actor="k")  # fmt: skip
    assert PlanWorker(store).run_once() == what_if
    with pytest.raises(PlanStateError, match="scenario"):
        publish_plan(store, what_if, "k")
    assert plan_in_force(store) is None and store.count_partnerships() == 0


#: The lifecycle as the issue states it (independent of matcher.partnerships.TRANSITIONS):
#: step -> who may take it ("partner": the key of the partnership's own partner).
LIFECYCLE = {
    ("offered", "accepted"): {"partner", "planner", "admin"},
    ("offered", "declined"): {"partner", "planner", "admin"},
    ("offered", "cancelled"): {"planner", "admin"},
    ("accepted", "active"): {"partner", "planner", "admin"},
    ("accepted", "cancelled"): {"partner", "planner", "admin"},
    ("active", "completed"): {"partner", "planner", "admin"},
    ("active", "cancelled"): {"partner", "planner", "admin"},
}
STATES = ("offered", "accepted", "declined", "active", "completed", "cancelled", "lapsed")
CALLERS = ("partner", "other partner", "planner", "admin", "outreach")


def _offer(st: Any, plan_id: str, partner_id: str = "P1", *, days: float = 7.0) -> str:
    pid = f"ps-{partner_id}-{np.random.default_rng().integers(1 << 40):x}"
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    st.create_partnerships([{
        "partnership_id": pid, "plan_id": plan_id, "cluster_id": "food_access-000000",
        "partner_id": partner_id, "category": "food_access", "neighborhood": "",
        "units": 2.0, "centroid_lat": 41.88, "centroid_lon": -87.63,
        "expires_at": until.isoformat().replace("+00:00", "Z"),
    }], "test")  # fmt: skip
    return pid


def _at(st: Any, pid: str, state: str) -> int:
    """Put a partnership in ``state`` (the store's own write, as a setup); return its version."""
    rec = st.get_partnership(pid)
    if state == "lapsed":
        return int(st.update_partnership(pid, rec["version"], {"state": "lapsed"}, "test",
                                         action="lapsed")["version"])  # fmt: skip
    if state != "offered":
        rec = st.update_partnership(pid, rec["version"], {"state": state}, "test", action=state)
    return int(rec["version"])


def test_every_step_of_the_state_machine_for_every_caller(store):
    plan_id = run_plan(store)
    for state in STATES:
        for to in STATES:
            for caller in CALLERS:
                pid = _offer(store, plan_id)
                version = _at(store, pid, state)
                role = "partner" if "partner" in caller else caller
                bound = "P1" if caller == "partner" else "P2"
                allowed = caller in LIFECYCLE.get((state, to), set()) or (
                    caller == "partner" and "partner" in LIFECYCLE.get((state, to), set())
                )
                reason = "not this month" if to in ("declined", "cancelled") else ""
                try:
                    rec = transition(store, pid, to, version, f"key-{caller}", role=role,
                                     partner_id=bound if role == "partner" else None,
                                     reason=reason)  # fmt: skip
                except (ForbiddenError, PartnershipStateError, NotFoundError, ValueError) as exc:
                    assert not allowed, (state, to, caller, exc)
                    if caller == "other partner":  # never told that it exists
                        assert isinstance(exc, NotFoundError), (state, to, exc)
                    after = store.get_partnership(pid)
                    assert after["state"] == state and after["version"] == version
                else:
                    assert allowed, (state, to, caller)
                    assert rec["state"] == to and rec["version"] == version + 1
                    if to in ("accepted", "declined"):
                        assert rec["answered_at"] is not None


def test_declining_and_cancelling_need_a_reason(store):
    plan_id = run_plan(store)
    pid = _offer(store, plan_id)
    for to in ("declined", "cancelled"):
        with pytest.raises(ValueError, match="say why"):
            transition(store, pid, to, 1, "k", role="planner", reason="  ")
    with pytest.raises(ValueError, match="at most 500"):
        transition(store, pid, "declined", 1, "k", role="planner", reason="x" * 501)
    rec = transition(store, pid, "declined", 1, "k", role="partner", partner_id="P1",
                     reason="no driver that week")  # fmt: skip
    assert rec["reason"] == "no driver that week"
    entry = store.audit_entries(entity="partnership", entity_id=pid)[0]
    assert entry.action == "declined" and "no driver" not in str(entry.detail)


def test_concurrent_steps_on_one_partnership_one_wins_the_other_is_stale(store):
    plan_id = run_plan(store)
    for _ in range(5):
        pid = _offer(store, plan_id)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def step(
            to: str,
            pid: str = pid,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                transition(store, pid, to, 1, f"k-{to}", role="planner",
                           reason="x" if to == "declined" else "")  # fmt: skip
                outcomes.append("won")
            except VersionConflictError:
                outcomes.append("stale")

        threads = [threading.Thread(target=step, args=(to,)) for to in ("accepted", "declined")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["stale", "won"]
        rec = store.get_partnership(pid)
        assert rec["version"] == 2 and rec["state"] in ("accepted", "declined")


def test_an_unanswered_offer_lapses(store):
    plan_id = run_plan(store)
    pid = _offer(store, plan_id, days=-1 / 24)
    read = store.get_partnership(pid)
    assert read["state"] == "lapsed" and read["updated_at"] == read["expires_at"]
    assert [p["partnership_id"] for p in store.list_partnerships(states=("lapsed",))] == [pid]
    assert store.count_partnerships(states=("offered",)) == 0
    with pytest.raises(PartnershipStateError, match="lapsed"):
        transition(store, pid, "accepted", 1, "k", role="partner", partner_id="P1")
    assert store.lapse_offers() == 0  # the failed step wrote the lapse already
    assert store.get_partnership(pid) == read  # written as read before: the same ETag
    entries = store.audit_entries(entity="partnership", entity_id=pid)
    assert [e.action for e in entries][:1] == ["lapsed"] and entries[0].actor == "system"


def test_carry_clusters_matches_by_most_needs():
    old = pd.Series(["a", "a", "b", "b", "c"], index=["n1", "n2", "n3", "n4", "n5"])
    new = pd.Series(["y", "x", "x", "x"], index=["n1", "n2", "n3", "n9"])
    assert carry_clusters(old, new) == {"a": "x", "b": "x"}  # a: tie -> smaller id; c: gone


def quanta(assignments: pd.DataFrame, q: float) -> dict[tuple[str, str], int]:
    return {
        (r.cluster_id, r.partner_id): round(r.units / q)
        for r in assignments.itertuples(index=False)
    }


def test_a_replan_keeps_agreements_avoids_declines_and_equals_the_oracle(store):
    first = run_plan(store)
    publish_plan(store, first, "planner-key")
    offers = sorted(store.list_partnerships(limit=None),
                    key=lambda o: (o["cluster_id"], o["partner_id"]))  # fmt: skip
    assert len(offers) >= 4
    accepted, declined = offers[0], offers[1]
    transition(store, accepted["partnership_id"], "accepted", 1, "pk",
               role="partner", partner_id=accepted["partner_id"])  # fmt: skip
    transition(store, declined["partnership_id"], "declined", 1, "pk",
               role="partner", partner_id=declined["partner_id"], reason="too far")  # fmt: skip
    # the data moved on: one need resolved (deleted), so clusters may be renumbered
    needs = store.needs_frame()
    store.replace_needs(pd.DataFrame(needs.drop(columns="geometry")).iloc[1:], "test")
    second = run_plan(store)
    facts = store.get_plan(second).summary["metrics"]["agreements"]
    assert facts["locked"] == 1 and facts["excluded"] == 1
    a2 = table(store, second, "assignments.csv")
    nc1 = table(store, first, "need_clusters.csv").set_index("need_id")["cluster_id"]
    nc2 = table(store, second, "need_clusters.csv").set_index("need_id")["cluster_id"]
    moved = carry_clusters(nc1, nc2)
    q = store.get_plan(second).summary["solver"]["quantum"]
    got = quanta(a2, q)
    keep = (moved[accepted["cluster_id"]], accepted["partner_id"])
    avoid = (moved[declined["cluster_id"]], declined["partner_id"])
    # held at its agreed units, or all of its cluster's demand now if that is less
    demand = table(store, second, "clusters.csv").set_index("cluster_id")["demand"]
    held = min(accepted["units"], float(demand[keep[0]]))
    assert got.get(keep, 0) == round(held / q)
    assert facts["reduced"] == int(held < accepted["units"])
    assert avoid not in got  # never proposed again
    # exactly optimal under those constraints: the oracle's own LP, agreed pair fixed and
    # declined pair forbidden by bounds
    clusters = table(store, second, "clusters.csv")
    partners = pd.DataFrame(store.partners_frame().drop(columns="geometry"))
    opt = equity_optimum(
        clusters, partners, q, lock={keep: got[keep]}, exclude={avoid}
    )
    assert sum(got.values()) == opt["served"]
    assert assignment_cost_m(a2, clusters, partners, q) == round(opt["cost"])
    # publishing the re-plan: the agreement is carried, no second offer for its units,
    # the unanswered offers of the first plan are withdrawn
    result = publish_plan(store, second, "planner-key")
    assert result["superseded"] == first and result["carried"] >= 1
    assert result["withdrawn"] == len(offers) - 2
    kept = store.get_partnership(accepted["partnership_id"])
    assert kept["state"] == "accepted" and kept["plan_id"] == second
    assert kept["cluster_id"] == keep[0] and kept["origin_plan_id"] == first
    where = clusters.set_index("cluster_id").loc[keep[0]]
    assert kept["centroid_lat"] == pytest.approx(where["centroid_lat"])  # the new cluster's
    new = store.list_partnerships(states=("offered",), limit=None)
    assert all(o["plan_id"] == second for o in new)
    assert not [o for o in new if (o["cluster_id"], o["partner_id"]) == keep
                and o["units"] >= accepted["units"] - 1e-9]  # fmt: skip
    assert not [o for o in new if (o["cluster_id"], o["partner_id"]) == avoid]
    stale = store.get_partnership(offers[2]["partnership_id"])
    assert stale["state"] == "cancelled" and second in stale["reason"]
    # a planner clears the decline: the next re-plan may propose the pair again
    version = store.get_partnership(declined["partnership_id"])["version"]
    clear_decline(store, declined["partnership_id"], version, "planner-key")
    third = run_plan(store)
    assert store.get_plan(third).summary["metrics"]["agreements"]["excluded"] == 0


def test_a_carried_partnership_keeps_the_neighborhood_it_was_made_in(where):
    """A re-plan moves an agreement to its needs' new cluster, not to another neighborhood."""
    def needs(n_b: int) -> pd.DataFrame:
        hoods = ["A"] * 3 + ["B"] * n_b
        return pd.DataFrame({
            "need_id": [f"n{i}" for i in range(len(hoods))], "category": "food_access",
            "lat": [41.88 + 0.0001 * i for i in range(len(hoods))], "lon": -87.63,
            "demand": 1, "neighborhood": hoods,
        })  # fmt: skip

    _, partners = city()
    with open_store(where) as st:
        st.replace_partners(partners, "test")
        st.replace_needs(needs(1), "test")
        first = run_plan(st)
        publish_plan(st, first, "k")
        ps = st.list_partnerships(partner_id="P1", limit=None)[0]
        assert ps["neighborhood"] == "A"  # 3 of the cluster's 4 units
        transition(st, ps["partnership_id"], "accepted", 1, "k", role="partner",
                   partner_id="P1")  # fmt: skip
        st.replace_needs(needs(5), "test")  # the cluster is now mostly B
        second = run_plan(st)
        clusters = table(st, second, "clusters.csv")
        assert clusters["neighborhood"].tolist() == ["B"]
        publish_plan(st, second, "k")
        kept = st.get_partnership(ps["partnership_id"])
        assert kept["plan_id"] == second and kept["cluster_id"] == clusters["cluster_id"][0]
        assert kept["neighborhood"] == "A" and kept["state"] == "accepted"


def test_a_plan_made_under_other_agreements_is_not_published(store):
    first = run_plan(store)
    publish_plan(store, first, "k")
    draft = run_plan(store)  # made before the answers below
    ignoring = run_plan(store, agreements=False)
    offer = store.list_partnerships(limit=1)[0]
    transition(store, offer["partnership_id"], "accepted", 1, "k",
               role="partner", partner_id=offer["partner_id"])  # fmt: skip
    with pytest.raises(PlanStateError, match="answered, cancelled or cleared since"):
        publish_plan(store, draft, "k")
    after = run_plan(store, agreements=False)
    for plan_id in (ignoring, after):
        with pytest.raises(PlanStateError, match="agreements: false"):
            publish_plan(store, plan_id, "k")
    kept = run_plan(store)
    assert publish_plan(store, kept, "k")["superseded"] == first
    assert plan_in_force(store).plan_id == kept
    # a plan queued with publish never replaces one queued after it that finished first
    older = store.create_plan(PARAMS | {"publish": True}, actor="k")
    newer = store.create_plan(PARAMS | {"publish": True}, actor="k")
    worker = PlanWorker(store)
    record = store.claim_plan(worker.worker_id(), plan_id=newer)
    worker._execute(record, worker.worker_id())  # the newer one runs first
    assert plan_in_force(store).plan_id == newer
    assert worker.run_once() == older
    assert store.get_plan(older).status == "done" and plan_in_force(store).plan_id == newer
    entry = next(e for e in store.audit_entries(entity="plan", entity_id=older)
                 if e.action == "publish_failed")  # fmt: skip
    assert "queued after" in entry.detail["error"]


def test_a_plan_without_agreements_ignores_them(store):
    first = run_plan(store)
    publish_plan(store, first, "k")
    offer = store.list_partnerships(limit=1)[0]
    transition(store, offer["partnership_id"], "declined", 1, "k", role="planner", reason="no")
    plain = run_plan(store, agreements=False)
    assert "agreements" not in store.get_plan(plain).summary["metrics"]
    assert table(store, plain, "assignments.csv").equals(table(store, first, "assignments.csv"))


def test_a_plan_queued_with_publish_is_published_when_done(store):
    plan_id = run_plan(store, publish=True)
    assert plan_in_force(store).plan_id == plan_id
    assert store.count_partnerships(plan_id=plan_id) == len(table(store, plan_id,
                                                                  "assignments.csv"))


# ----------------------------------------------------------------------------- the API


def auth(key: str, etag: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {key}"}
    return h | ({"If-Match": etag} if etag is not None else {})


@pytest.fixture
def service(where: str) -> Iterator[tuple[Any, dict[str, str], Any]]:
    """The app on a loaded store (no plan threads: the test runs plans), a key per role."""
    from api import create_app

    from .conftest import close_app

    app = create_app({"DB": where, "TESTING": True, "PLAN_WORKERS": 0})
    st = load_city(app.extensions["matcher_store"])
    keys = {r: st.create_api_key(r)[1] for r in ("admin", "planner", "outreach")}
    keys["P1"] = st.create_api_key("partner", partner_id="P1", label="Food One")[1]
    keys["P5"] = st.create_api_key("partner", partner_id="P5")[1]
    try:
        yield app, keys, app.test_client()
    finally:
        close_app(app)


def published(app: Any, c: Any, keys: dict[str, str]) -> str:
    """Plan through the API, run it, publish it as the planner; return its id."""
    r = c.post("/api/v1/plans", json={"objective": "distance"}, headers=auth(keys["planner"]))
    assert r.status_code == 202, r.get_data(as_text=True)
    plan_id = r.get_json()["plan_id"]
    assert PlanWorker(app.extensions["matcher_store"]).run_once() == plan_id
    latest = c.get("/api/v1/plans/latest", headers=auth(keys["outreach"])).get_json()
    assert latest["plan"] is None  # a draft is not in force
    for role in ("outreach", "P1"):
        r = c.post(f"/api/v1/plans/{plan_id}/publish", json={}, headers=auth(keys[role]))
        assert r.status_code == 403, role
    r = c.post(f"/api/v1/plans/{plan_id}/publish", json={"offer_days": 3},
               headers=auth(keys["planner"]))  # fmt: skip
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["offered"] > 0
    latest = c.get("/api/v1/plans/latest", headers=auth(keys["outreach"])).get_json()
    assert latest["plan"]["plan_id"] == plan_id
    listed = c.get("/api/v1/plans", headers=auth(keys["planner"])).get_json()["results"]
    assert [p["published_at"] is not None for p in listed] == [True]
    return str(plan_id)


def test_partners_answer_their_offers_through_the_api(service):
    app, keys, c = service
    plan_id = published(app, c, keys)
    everyone = c.get("/api/v1/partnerships?limit=1000", headers=auth(keys["planner"])).get_json()
    mine = c.get("/api/v1/partnerships", headers=auth(keys["P1"])).get_json()
    assert mine["total"] == sum(p["partner_id"] == "P1" for p in everyone["results"]) > 0
    assert {p["partner_id"] for p in mine["results"]} == {"P1"}
    assert c.get("/api/v1/partnerships?partner_id=P5",
                 headers=auth(keys["P1"])).get_json()["total"] == 0  # fmt: skip
    other = next(p for p in everyone["results"] if p["partner_id"] != "P1")
    assert c.get(f"/api/v1/partnerships/{other['partnership_id']}",
                 headers=auth(keys["P1"])).status_code == 404  # fmt: skip
    r = c.post(f"/api/v1/partnerships/{other['partnership_id']}/transitions",
               json={"to": "accepted"}, headers=auth(keys["P1"], '"1"'))  # fmt: skip
    assert r.status_code == 404 and other["partnership_id"] in r.get_json()["detail"]
    assert c.get("/api/v1/partnerships", headers=auth(keys["outreach"])).status_code == 403

    offer = mine["results"][0]
    url = f"/api/v1/partnerships/{offer['partnership_id']}"
    got = c.get(url, headers=auth(keys["P1"]))
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    # a partner sees the cluster's centre on the privacy grid, a planner the centre itself
    exact = c.get(url, headers=auth(keys["planner"])).get_json()
    grid = coarsen(np.array([exact["centroid_lat"]]), np.array([exact["centroid_lon"]]))
    assert (got.get_json()["centroid_lat"], got.get_json()["centroid_lon"]) == (
        float(grid[0][0]), float(grid[1][0]))  # fmt: skip
    assert offer["centroid_lat"] == got.get_json()["centroid_lat"]  # in the list too
    step = f"{url}/transitions"
    assert c.post(step, json={"to": "accepted"}, headers=auth(keys["P1"])).status_code == 428
    assert c.post(step, json={"to": "accepted"},
                  headers=auth(keys["P1"], '"7"')).status_code == 412  # fmt: skip
    assert c.post(step, json={"to": "finished"},
                  headers=auth(keys["P1"], '"1"')).status_code == 400  # fmt: skip
    assert c.post(step, json={"to": "accepted", "extra": 1},
                  headers=auth(keys["P1"], '"1"')).status_code == 400  # fmt: skip
    ok = c.post(step, json={"to": "accepted"}, headers=auth(keys["P1"], '"1"'))
    assert ok.status_code == 200 and ok.get_json()["state"] == "accepted"
    assert ok.headers["ETag"] == '"2"'
    # the same ETag again: the partnership changed since, so it is stale
    again = c.post(step, json={"to": "declined", "reason": "x"}, headers=auth(keys["P1"], '"1"'))
    assert again.status_code == 412
    # a step the state does not allow
    r = c.post(step, json={"to": "completed"}, headers=auth(keys["P1"], '"2"'))
    assert r.status_code == 409 and "accepted" in r.get_json()["detail"]
    assert c.post(step, json={"to": "active"},
                  headers=auth(keys["P1"], '"2"')).status_code == 200  # fmt: skip
    if len(mine["results"]) > 1:
        second = f"/api/v1/partnerships/{mine['results'][1]['partnership_id']}"
        r = c.post(f"{second}/transitions", json={"to": "declined"},
                   headers=auth(keys["P1"], '"1"'))  # fmt: skip
        assert r.status_code == 400 and r.get_json()["problems"][0]["field"] == "reason"
        r = c.post(f"{second}/transitions", json={"to": "declined", "reason": "no van"},
                   headers=auth(keys["P1"], '"1"'))  # fmt: skip
        assert r.status_code == 200
        assert c.post(f"{second}/clear", headers=auth(keys["P1"], '"2"')).status_code == 403
        r = c.post(f"{second}/clear", headers=auth(keys["planner"], '"2"'))
        assert r.status_code == 200 and r.get_json()["cleared"] is True
    states = c.get("/api/v1/partnerships?state=active", headers=auth(keys["planner"])).get_json()
    assert [p["partnership_id"] for p in states["results"]] == [offer["partnership_id"]]
    assert c.get("/api/v1/me", headers=auth(keys["P1"])).get_json() == {
        "key_id": c.get("/api/v1/me", headers=auth(keys["P1"])).get_json()["key_id"],
        "role": "partner",
        "partner_id": "P1",
    }
    del plan_id


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


#: What a partner key may reach besides the public routes: its own partnerships.
PARTNER_ROUTES = {
    ("get", "/api/v1/me"),
    ("get", "/api/v1/partnerships"),
    ("get", "/api/v1/partnerships/{partnership_id}"),
    ("post", "/api/v1/partnerships/{partnership_id}/transitions"),
    ("get", "/api/v1/partnerships/{partnership_id}/deliveries"),
    ("post", "/api/v1/partnerships/{partnership_id}/deliveries"),
}


def test_a_partner_key_reaches_nothing_but_its_own_partnerships(service):
    """Every route of the OpenAPI document, with a partner key, on another partner's ids."""
    app, keys, c = service
    plan_id = published(app, c, keys)
    st = app.extensions["matcher_store"]
    theirs = st.list_partnerships(partner_id="P5", limit=1)[0]["partnership_id"]
    need = st.list_needs(limit=1, offset=0)[0]["need_id"]
    ids = {"plan_id": plan_id, "partnership_id": theirs, "partner_id": "P5", "need_id": need,
           "hold_id": "h-1", "report_id": "r-1", "name": "summary.json", "kind": "needs",
           "other_id": plan_id, "part": "clusters"}  # fmt: skip
    spec = c.get("/api/v1/openapi.json").get_json()
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            url = _fill(path, ids)
            assert "{" not in url, url
            body = {"to": "accepted"} if path.endswith("/transitions") else (
                {"period_start": "2026-01-01", "period_end": "2026-01-01", "units": 1}
                if path.endswith("/deliveries") else {})  # fmt: skip
            r = getattr(c, method)(url, headers=auth(keys["P1"], '"1"'), json=body)
            tried += 1
            text = r.get_data(as_text=True)
            if op.get("security") == []:  # public: the same for everyone
                continue
            if (method, path) in PARTNER_ROUTES:
                assert r.status_code in (200, 404), (method, path, r.status_code)
                assert theirs not in text or r.status_code == 404, (method, path)
                assert need not in text and "P5" not in text.replace(theirs, ""), (method, path)
            else:
                assert r.status_code == 403, (method, path, r.status_code, text[:200])
    assert tried > 30
    # Open311 (its own door, api_key in the query): a partner key may not report nor read
    for method, url in (("get", "/open311/v2/requests.json"), ("post", "/open311/v2/requests.json"),
                        ("get", f"/open311/v2/requests/{need}.json")):  # fmt: skip
        r = getattr(c, method)(f"{url}?api_key={keys['P1']}", data={"service_code": "food_access",
                                                                    "lat": 41.88, "long": -87.63})
        assert r.status_code == 403, (method, url, r.status_code)


# ----------------------------------------------------------------------------- the CLI


def test_the_cli_publishes_lists_and_steps(store, where):
    from click.testing import CliRunner

    from matcher.cli import main

    run = CliRunner().invoke
    plan_id = run_plan(store)
    bad = run(main, ["publish", "f" * 32, "--db", where])
    assert bad.exit_code == 2 and "PLAN_ID" in bad.output and "no such plan" in bad.output
    ok = run(main, ["publish", plan_id, "--db", where, "--offer-days", "2"])
    assert ok.exit_code == 0, ok.output
    result = json.loads(ok.stdout)
    assert result["plan_id"] == plan_id and result["offered"] > 0
    again = run(main, ["publish", plan_id, "--db", where])
    assert again.exit_code == 1 and "in force already" in again.output
    listed = run(main, ["partnerships", "list", "--db", where, "--state", "offered"])
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert len(rows) == result["offered"] and {r["state"] for r in rows} == {"offered"}
    pid = rows[0]["partnership_id"]
    no_reason = run(main, ["partnerships", "step", pid, "--db", where, "--to", "declined"])
    assert no_reason.exit_code == 2 and "reason" in no_reason.output
    stale = run(main, ["partnerships", "step", pid, "--db", where, "--to", "accepted",
                       "--version", "5"])  # fmt: skip
    assert stale.exit_code == 1 and "expected version 5" in stale.output
    done = run(main, ["partnerships", "step", pid, "--db", where, "--to", "declined",
                      "--reason", "=cmd|' /C calc'!A0"])  # fmt: skip
    assert done.exit_code == 0, done.output
    mine = run(main, ["partnerships", "list", "--db", where, "--state", "declined"])
    row = next(csv.DictReader(io.StringIO(mine.stdout)))
    assert row["partnership_id"] == pid and row["reason"].startswith("'=")  # neutralised
    for args, code in (
        (["--role", "partner"], 2),
        (["--role", "planner", "--partner-id", "P1"], 2),
        (["--role", "partner", "--partner-id", "nobody"], 2),
        (["--role", "partner", "--partner-id", "P1", "--label", "Food One"], 0),
    ):
        res = run(main, ["keys", "create", "--db", where, *args])
        assert res.exit_code == code, (args, res.output)
    long = run(main, ["partnerships", "list", "--db", where, "--partner", "x" * 129])
    assert long.exit_code == 2 and "--partner" in long.output and "at most 128" in long.output
    assert run(main, ["partnerships", "clear", pid, "--db", where]).exit_code == 0
    assert store.get_partnership(pid)["cleared"] is True
    keys = run(main, ["keys", "list", "--db", where]).stdout.splitlines()
    assert keys[0].endswith("partner_id") and keys[1].split("\t")[-1] == "P1"


def test_a_partner_key_dies_with_its_partner(store):
    _, one = store.create_api_key("partner", partner_id="P1")
    _, two = store.create_api_key("partner", partner_id="P2")
    p1 = store.get_partner("P1")
    store.delete_partner("P1", p1["version"], "planner-key")
    assert store.authenticate(one) is None and store.authenticate(two) is not None
    partners = pd.DataFrame(store.partners_frame().drop(columns="geometry"))
    store.replace_partners(partners[partners["partner_id"] != "P2"], "planner-key")
    assert store.authenticate(two) is None  # left out of an import: revoked too
    store.create_partner(p1 | {"version": None}, "planner-key")  # the same id, a new partner
    assert store.authenticate(one) is None


def test_a_plan_that_cannot_be_published_is_stored_as_a_draft_and_says_why(store):
    plan_id = store.create_plan({"objective": "distance", "publish": True}, actor="k")  # exact
    assert PlanWorker(store).run_once() == plan_id
    assert store.get_plan(plan_id).status == "done" and plan_in_force(store) is None
    entry = next(e for e in store.audit_entries(entity="plan", entity_id=plan_id)
                 if e.action == "publish_failed")  # fmt: skip
    assert "exact points" in entry.detail["error"]


# ------------------------------------------------------------ deliveries and outcomes


def _days(n: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n)).isoformat()


def _active(store: Any) -> dict[str, Any]:
    """A partnership offered some days ago, accepted and active."""
    plan_id = run_plan(store)
    pid = _offer(store, plan_id, "P1")
    with store._write() as conn:  # offered ten days ago (deliveries never predate the offer)
        conn.execute("UPDATE partnerships SET offered_at = ? WHERE partnership_id = ?",
                     (_days(-10) + "T00:00:00.000000Z", pid))  # fmt: skip
    transition(store, pid, "accepted", 1, "k", role="partner", partner_id="P1")
    return transition(store, pid, "active", 2, "k", role="partner", partner_id="P1")


def test_deliveries_are_recorded_per_period_and_checked(store):
    from matcher.outcomes import record_delivery
    from matcher.store import AlreadyExistsError

    ps = _active(store)
    pid = ps["partnership_id"]
    got = record_delivery(store, pid, _days(-7), _days(-1), 1.5, "pk", role="partner",
                          partner_id="P1")  # fmt: skip
    assert got["units"] == 1.5 and got["partner_id"] == "P1"
    with pytest.raises(AlreadyExistsError):
        record_delivery(store, pid, _days(-7), _days(-2), 1.0, "pk", role="planner")
    with pytest.raises(NotFoundError):  # another partner's: not found
        record_delivery(store, pid, _days(-3), _days(-2), 1.0, "pk", role="partner",
                        partner_id="P2")  # fmt: skip
    for start, end, units, field in (
        (_days(-2), _days(-3), 1, "period_end"),     # ends before it starts
        (_days(-1), _days(1), 1, "period_end"),      # in the future
        (_days(-20), _days(-9), 1, "period_start"),  # before the offer
        ("2026-13-01", _days(-1), 1, "period_start"),
        (_days(-3), _days(-2), -1, "units"),
        (_days(-3), _days(-2), float("nan"), "units"),
    ):
        with pytest.raises(ValueError) as err:
            record_delivery(store, pid, start, end, units, "pk", role="planner")
        assert [p.field for p in err.value.problems] == [field], (start, end, units)
    offered = _offer(store, ps["plan_id"], "P1")
    with pytest.raises(PartnershipStateError, match="offered"):
        record_delivery(store, offered, _days(-1), _days(-1), 1, "pk", role="planner")
    assert [d["period_start"] for d in store.list_deliveries(partner_id="P1")] == [_days(-7)]


def test_need_outcomes_with_feedback_and_their_csv_import(store, where, tmp_path):
    from click.testing import CliRunner

    from matcher.cli import main
    from matcher.outcomes import set_outcome

    need = store.list_needs(limit=3, offset=0)
    first = set_outcome(store, need[0]["need_id"], {"status": "in_progress", "date": _days(-2)},
                        "k", expected_version=None)  # fmt: skip
    assert first["version"] == 1 and first["rating"] is None
    with pytest.raises(VersionConflictError):
        set_outcome(store, need[0]["need_id"], {"status": "resolved", "date": _days(-1)}, "k",
                    expected_version=None)  # fmt: skip
    with pytest.raises(ValueError, match="resolved need only"):
        set_outcome(store, need[0]["need_id"], {"status": "in_progress", "date": _days(-1),
                                                "rating": 4}, "k", expected_version=1)
    done = set_outcome(store, need[0]["need_id"], {"status": "resolved", "date": _days(-1),
                                                   "rating": 5, "comment": "quick, kind"},
                       "k", expected_version=1)  # fmt: skip
    assert (done["status"], done["rating"], done["version"]) == ("resolved", 5, 2)
    entry = store.audit_entries(entity="need", entity_id=need[0]["need_id"])[0]
    assert "kind" not in str(entry.detail)  # a resident's words stay out of the log

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "need_id,status,date,rating,comment\n"
        f"{need[1]['need_id']},resolved,{_days(-1)},6,\n"
        f"{need[2]['need_id']},done,{_days(-1)},,\n"
        f"{need[1]['need_id']},open,{_days(1)},,\n"
    )
    res = CliRunner().invoke(main, ["outcomes", "import", str(bad), "--db", where])
    assert res.exit_code == 2, res.output
    for text in ("row 2", "'rating'", "row 3", "'status'", "row 4", "listed twice",
                 "in the future"):
        assert text in res.output, text
    good = tmp_path / "good.csv"
    good.write_text(
        "need_id,status,date,rating,comment\n"
        f"{need[1]['need_id']},resolved,{_days(-1)},4,\"=HYPERLINK(\"\"x\"\")\"\n"
        f"{need[2]['need_id']},not_resolved,{_days(-1)},,\n"
        "nobody,open,2026-01-01,,\n"
    )
    res = CliRunner().invoke(main, ["outcomes", "import", str(good), "--db", where])
    assert res.exit_code == 2 and "nobody" in res.output and "no such need" in res.output
    assert store.get_outcome(need[1]["need_id"]) is None  # all or nothing
    good.write_text("\n".join(good.read_text().splitlines()[:3]) + "\n")
    res = CliRunner().invoke(main, ["outcomes", "import", str(good), "--db", where])
    assert res.exit_code == 0, res.output
    assert store.get_outcome(need[1]["need_id"])["rating"] == 4
    assert store.get_outcome(need[2]["need_id"])["status"] == "not_resolved"


def test_deliveries_and_outcomes_through_the_api(service):
    app, keys, c = service
    published(app, c, keys)
    st = app.extensions["matcher_store"]
    mine = st.list_partnerships(partner_id="P1", limit=1)[0]
    theirs = st.list_partnerships(partner_id="P5", limit=1)[0]
    step = f"/api/v1/partnerships/{mine['partnership_id']}/transitions"
    for version, to in ((1, "accepted"), (2, "active")):
        assert c.post(step, json={"to": to},
                      headers=auth(keys["P1"], f'"{version}"')).status_code == 200  # fmt: skip
    url = f"/api/v1/partnerships/{mine['partnership_id']}/deliveries"
    today = _days(0)
    r = c.post(url, json={"period_start": today, "period_end": today, "units": 2},
               headers=auth(keys["P1"]))  # fmt: skip
    assert r.status_code == 201, r.get_data(as_text=True)
    assert "actor" not in r.get_json()
    again = c.post(url, json={"period_start": today, "period_end": today, "units": 2},
                   headers=auth(keys["P1"]))  # fmt: skip
    assert again.status_code == 409
    listed = c.get(url, headers=auth(keys["P1"])).get_json()
    assert listed["units"] == 2 and len(listed["results"]) == 1
    other = f"/api/v1/partnerships/{theirs['partnership_id']}/deliveries"
    assert c.get(other, headers=auth(keys["P1"])).status_code == 404
    assert c.post(other, json={"period_start": today, "period_end": today, "units": 1},
                  headers=auth(keys["P1"])).status_code == 404  # fmt: skip
    assert c.get(url, headers=auth(keys["outreach"])).status_code == 403
    # a need's outcome: planners and admins only
    need = st.list_needs(limit=1, offset=0)[0]["need_id"]
    out = f"/api/v1/needs/{need}/outcome"
    body = {"status": "resolved", "date": _days(-1), "rating": 4, "comment": "thank you"}
    for role in ("P1", "outreach"):
        assert c.put(out, json=body, headers=auth(keys[role])).status_code == 403
        assert c.get(out, headers=auth(keys[role])).status_code == 403
    assert c.get(out, headers=auth(keys["planner"])).status_code == 404
    r = c.put(out, json=body, headers=auth(keys["planner"]))
    assert r.status_code == 200 and r.headers["ETag"] == '"1"' and r.get_json()["rating"] == 4
    assert c.put(out, json=body, headers=auth(keys["planner"])).status_code == 428
    assert c.put(out, json=body, headers=auth(keys["planner"], '"7"')).status_code == 412
    r = c.put(out, json=body | {"rating": 9}, headers=auth(keys["planner"], '"1"'))
    assert r.status_code == 400 and r.get_json()["problems"][0]["field"] == "rating"
    r = c.put(out, json={"status": "open", "date": _days(0)}, headers=auth(keys["admin"], '"1"'))
    assert r.status_code == 200 and r.get_json()["comment"] == "" and r.headers["ETag"] == '"2"'


def test_a_resolved_need_is_not_planned_again(store):
    from matcher.outcomes import set_outcome

    first = run_plan(store)
    gone = table(store, first, "need_clusters.csv")["need_id"].iloc[0]
    set_outcome(store, gone, {"status": "resolved", "date": _days(0)}, "k", expected_version=None)
    other = table(store, first, "need_clusters.csv")["need_id"].iloc[1]
    set_outcome(store, other, {"status": "not_resolved", "date": _days(0)}, "k",
                expected_version=None)  # fmt: skip
    second = run_plan(store)
    planned = set(table(store, second, "need_clusters.csv")["need_id"])
    assert gone not in planned and other in planned  # not resolved: still a need
    assert store.get_plan(second).summary["metrics"]["resolved_needs_left_out"] == 1
    assert store.get_need(gone) is not None  # kept, with its outcome


def test_review_mends_closed_needs_outcomes_and_unlockable_agreements(store, where, tmp_path):
    from click.testing import CliRunner

    from matcher.cli import main
    from matcher.outcomes import record_delivery, set_outcome
    from matcher.store import AlreadyExistsError

    # a resolved or closed need takes no new report: it is not a duplicate candidate
    need = store.list_needs(limit=1, offset=0)[0]
    near = store.needs_near(need["category"], need["lat"], need["lon"], 0.05)
    assert need["need_id"] in [n["need_id"] for n in near]
    set_outcome(store, need["need_id"], {"status": "resolved", "date": _days(0), "rating": 3},
                "k", expected_version=None)  # fmt: skip
    near = store.needs_near(need["category"], need["lat"], need["lon"], 0.05)
    assert need["need_id"] not in [n["need_id"] for n in near]
    # a status update without feedback columns keeps what the resident said
    csv_path = tmp_path / "o.csv"
    csv_path.write_text(f" need_id , status ,date\n\n{need['need_id']},resolved,{_days(0)}\n")
    res = CliRunner().invoke(main, ["outcomes", "import", str(csv_path), "--db", where])
    assert res.exit_code == 0, res.output
    assert store.get_outcome(need["need_id"])["rating"] == 3
    csv_path.write_text(f"need_id,status,date\n\n{need['need_id']},resolved,2026-W01-1\n")
    res = CliRunner().invoke(main, ["outcomes", "import", str(csv_path), "--db", where])
    assert res.exit_code == 2 and "row 3" in res.output and "YYYY-MM-DD" in res.output
    # an outcome goes with its need
    store.delete_need(need["need_id"], store.get_need(need["need_id"])["version"], "k")
    assert store.get_outcome(need["need_id"]) is None
    # overlapping delivery periods count units twice: refused
    ps = _active(store)
    record_delivery(store, ps["partnership_id"], _days(-6), _days(-3), 1, "k", role="planner")
    with pytest.raises(AlreadyExistsError, match="days of"):
        record_delivery(store, ps["partnership_id"], _days(-4), _days(-1), 1, "k", role="planner")
    # control characters never reach the store
    other = _offer(store, ps["plan_id"], "P2")
    with pytest.raises(ValueError, match="control characters"):
        transition(store, other, "declined", 1, "k", role="planner", reason="no\x00")


def test_an_agreement_that_cannot_be_locked_keeps_its_partners_units(store):
    first = run_plan(store)
    publish_plan(store, first, "k")
    offer = max(store.list_partnerships(limit=None), key=lambda o: (o["units"], o["cluster_id"]))
    transition(store, offer["partnership_id"], "accepted", 1, "k",
               role="partner", partner_id=offer["partner_id"])  # fmt: skip
    partner = store.get_partner(offer["partner_id"])
    store.update_partner(offer["partner_id"], partner | {"radius_km": 0.001},
                         partner["version"], "k")  # out of reach of its cluster now
    second = run_plan(store)
    facts = store.get_plan(second).summary["metrics"]["agreements"]
    assert facts["ineligible"] == 1 and facts["locked"] == 0
    assert facts["reserved_units"] == pytest.approx(offer["units"])
    used = table(store, second, "assignments.csv").groupby("partner_id")["units"].sum()
    capacity = float(partner["capacity"])
    assert used.get(offer["partner_id"], 0.0) <= capacity - offer["units"] + 1e-9


def test_reliability_by_hand_and_planning_with_expected_capacity(store, where):
    from click.testing import CliRunner

    from matcher.cli import main
    from matcher.outcomes import record_delivery
    from matcher.reliability import partner_reliability

    assert partner_reliability(store).empty
    first = run_plan(store)
    publish_plan(store, first, "k")
    offers = store.list_partnerships(partner_id="P1", limit=None)
    assert len(offers) >= 2
    one = _active(store)  # P1: offered (10 days ago), accepted, active
    with store._write() as conn:  # accepted 13 days ago: two weeks agreed by today
        conn.execute("UPDATE partnerships SET answered_at = ? WHERE partnership_id = ?",
                     (_days(-13) + "T08:00:00.000000Z", one["partnership_id"]))  # fmt: skip
    record_delivery(store, one["partnership_id"], _days(-5), _days(-1),
                    one["units"], "k", role="partner", partner_id="P1")  # fmt: skip
    transition(store, one["partnership_id"], "completed", 3, "k", role="partner",
               partner_id="P1")  # fmt: skip
    transition(store, offers[0]["partnership_id"], "declined", 1, "k", role="partner",
               partner_id="P1", reason="full")  # fmt: skip
    rel = partner_reliability(store).set_index("partner_id")
    p1 = rel.loc["P1"]
    # by hand: offers answered 2 (one accepted, one declined); one finished partnership,
    # agreed for two weeks (units a week x 2 committed), one week's units delivered, so
    # half: acceptance (1 + 2) / (2 + 2), reliability (0.5 + 2) / (1 + 2)
    assert (p1["offers"], p1["accepted"], p1["declined"], p1["finished"]) == (2, 1, 1, 1)
    assert p1["acceptance"] == pytest.approx(3 / 4)
    assert p1["reliability"] == pytest.approx(2.5 / 3)
    assert p1["committed_units"] == pytest.approx(2 * one["units"])
    assert p1["delivered_units"] == pytest.approx(one["units"])
    assert rel.loc["P2"]["reliability"] == 1.0  # no history: trusted
    res = CliRunner().invoke(main, ["partnerships", "reliability", "--db", where])
    assert res.exit_code == 0 and "P1" in res.stdout and "0.833333" in res.stdout
    # a plan with expected capacity: P1 planned at 83% of its capacity, and it says so
    plan_id = run_plan(store, reliability=True)
    summary = store.get_plan(plan_id).summary
    assert summary["metrics"]["reliability"]["partners_scaled"] == 1
    capacity = float(store.get_partner("P1")["capacity"])
    assert summary["metrics"]["reliability"]["units_removed"] == pytest.approx(
        capacity - capacity * 2.5 / 3, abs=1e-4)  # fmt: skip
    a = table(store, plan_id, "assignments.csv")
    mine = a[a["partner_id"] == "P1"]
    assert mine["units"].sum() <= capacity * 2.5 / 3 + 1e-9
    assert len(mine) and all("planned at 83%" in r for r in mine["reason"])
    assert not any("planned at" in r for r in a.loc[a["partner_id"] != "P1", "reason"])
