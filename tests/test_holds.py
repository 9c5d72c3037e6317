"""Referrals hold capacity: holds placed, seen at once in free capacity, released, expired.

Through Flask's test client on the sample city, on every store backend; the concurrent
case sends many holds at one partner from several threads and checks it is never
over-committed.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from matcher.holds import HoldPolicy

from .test_api import auth, loaded_template  # noqa: F401 - a fixture
from .test_api import loaded as served  # noqa: F401 - a fixture: a loaded app of its own

HOLDS = "/api/v1/holds"
PARTNER = "ORG-0002"


def _partner(app: Any) -> dict[str, Any]:
    return app.extensions["matcher_store"].get_partner(PARTNER, exact=True)  # type: ignore[no-any-return]


def _free(c: Any, key: str, p: dict[str, Any]) -> float:
    category = p["categories"].split(";")[0]
    q = f"lat={p['lat']}&lon={p['lon']}&radius_km=0.5&category={category}&limit=200"
    rows = c.get(f"/api/v1/resources/nearby?{q}", headers=auth(key)).get_json()["results"]
    return next(float(r["free_capacity"]) for r in rows if r["partner_id"] == PARTNER)


def test_a_hold_is_seen_at_once_and_released(served) -> None:  # noqa: F811
    app, keys, c = served
    p = _partner(app)
    capacity = float(p["capacity"])
    assert _free(c, keys["outreach"], p) == capacity  # no plan yet: all free
    r = c.post(HOLDS, json={"partner_id": PARTNER, "units": 1.5}, headers=auth(keys["outreach"]))
    assert r.status_code == 201, r.get_json()
    hold = r.get_json()
    assert r.headers["Location"] == f"{HOLDS}/{hold['hold_id']}"
    assert (hold["units"], hold["active"], hold["mine"]) == (1.5, True, True)
    assert "actor" not in hold
    # everyone sees the free capacity fall, at once
    for role in ("outreach", "planner", "admin"):
        assert _free(c, keys[role], p) == capacity - 1.5
    seen = c.get(f"{HOLDS}/{hold['hold_id']}", headers=auth(keys["planner"])).get_json()
    assert seen["mine"] is False and "actor" not in seen
    admin = c.get(f"{HOLDS}?partner_id={PARTNER}", headers=auth(keys["admin"])).get_json()
    assert [h["hold_id"] for h in admin["holds"]] == [hold["hold_id"]]
    assert admin["holds"][0]["actor"]
    # too many units: 409 with what is free
    r = c.post(HOLDS, json={"partner_id": PARTNER, "units": capacity},
               headers=auth(keys["outreach"]))  # fmt: skip
    assert r.status_code == 409 and r.get_json()["free_capacity"] == capacity - 1.5
    # another outreach key may not release it; its maker may, once
    other = app.extensions["matcher_store"].create_api_key("outreach")[1]
    url = f"{HOLDS}/{hold['hold_id']}?reason=declined"
    assert c.delete(url, headers=auth(other)).status_code == 403
    r = c.delete(url, headers=auth(keys["outreach"]))
    assert r.status_code == 200 and r.get_json()["reason"] == "declined"
    assert r.get_json()["active"] is False
    assert c.delete(url, headers=auth(keys["outreach"])).status_code == 409
    assert _free(c, keys["outreach"], p) == capacity
    listed = c.get(f"{HOLDS}?active=false", headers=auth(keys["outreach"])).get_json()["holds"]
    assert [h["released_at"] is not None for h in listed] == [True]


def test_holds_expire_and_are_checked(served) -> None:  # noqa: F811
    app, keys, c = served
    p = _partner(app)
    h = auth(keys["outreach"])
    r = c.post(HOLDS, json={"partner_id": PARTNER, "units": 1, "minutes": 0.01}, headers=h)
    assert r.status_code == 201
    assert _free(c, keys["outreach"], p) == float(p["capacity"]) - 1
    time.sleep(1.0)  # 0.6 s: expired, with no write since
    assert _free(c, keys["outreach"], p) == float(p["capacity"])
    url = f"{HOLDS}/{r.get_json()['hold_id']}"
    assert c.get(url, headers=h).get_json()["active"] is False
    gone = c.delete(url, headers=auth(keys["planner"]))
    assert gone.status_code == 409 and "expired already" in gone.get_json()["detail"]
    # a need of a category the partner does not offer; unknown partner, need, fields
    st = app.extensions["matcher_store"]
    need = next(n for n in st.list_needs(limit=500) if n["category"] not in p["categories"])
    for body, status in [
        ({"partner_id": PARTNER, "units": 1, "need_id": need["need_id"]}, 400),
        ({"partner_id": "NOPE", "units": 1}, 404),
        ({"partner_id": PARTNER, "units": 1, "need_id": "NOPE"}, 404),
        ({"partner_id": PARTNER, "units": 0}, 400),
        ({"partner_id": PARTNER, "units": 1, "minutes": 10**6}, 400),
        ({"partner_id": PARTNER, "units": 1, "extra": 1}, 400),
    ]:
        assert c.post(HOLDS, json=body, headers=h).status_code == status, body
    assert c.delete(f"{HOLDS}/nope", headers=h).status_code == 404
    assert c.delete(f"{url}?reason=whatever", headers=h).status_code == 400


def test_concurrent_holds_never_over_commit_a_partner(served) -> None:  # noqa: F811
    app, keys, _ = served
    capacity = float(_partner(app)["capacity"])
    units = capacity / 3 + 0.01  # two holds fit, a third would over-commit
    codes: list[int] = []
    lock = threading.Lock()

    def hold() -> None:
        r = app.test_client().post(HOLDS, json={"partner_id": PARTNER, "units": units},
                                   headers=auth(keys["outreach"]))  # fmt: skip
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=hold) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 201] + [409] * 6
    held, _ = app.extensions["matcher_store"].held_units()
    assert held[PARTNER] == pytest.approx(2 * units) and held[PARTNER] <= capacity


def test_the_hold_policy_is_bounded() -> None:
    with pytest.raises(ValueError, match="minutes"):
        HoldPolicy(minutes=0)
    with pytest.raises(ValueError, match="max_minutes"):
        HoldPolicy(minutes=60, max_minutes=30)


def test_nearby_says_where_capacity_is_when_holds_fill_a_partner(served) -> None:  # noqa: F811
    app, keys, c = served
    p = _partner(app)
    category = p["categories"].split(";")[0]
    h = auth(keys["outreach"])
    q = f"/api/v1/resources/nearby?lat={p['lat']}&lon={p['lon']}&radius_km=0.01&category={category}"
    here = c.get(q, headers=h).get_json()["results"]  # the partner, and any at its address
    assert PARTNER in [r["partner_id"] for r in here]
    for r in here:  # every one of them held full
        body = {"partner_id": r["partner_id"], "units": r["free_capacity"]}
        assert c.post(HOLDS, json=body, headers=h).status_code == 201
    body = c.get(q, headers=h).get_json()
    assert [r["partner_id"] for r in body["results"]] == [r["partner_id"] for r in here]
    assert all(r["free_capacity"] == 0 for r in body["results"])
    assert body["nearest_free"] and all(r["free_capacity"] > 0 for r in body["nearest_free"])
    first = body["nearest_free"][0]
    assert first["distance_km"] > 0.01
    assert body["statement"] == (
        f"none of the {len(here)} {category} partner(s) within 0.01 km has free capacity; the "
        f"nearest with capacity is {first['name']}, {first['distance_km']:g} km away"
    )
    assert c.get(q + "&free_only=true", headers=h).get_json()["results"] == []


def test_plans_leave_held_units_alone_and_keys_have_a_bound(served) -> None:  # noqa: F811
    from matcher.holds import place_hold
    from matcher.jobs import run_plan_job
    from matcher.store import TooManyHoldsError

    app, keys, c = served
    st = app.extensions["matcher_store"]
    p = _partner(app)
    capacity = float(p["capacity"])
    h = auth(keys["outreach"]) | {"Idempotency-Key": "hold-1"}
    first = c.post(HOLDS, json={"partner_id": PARTNER, "units": capacity}, headers=h)
    again = c.post(HOLDS, json={"partner_id": PARTNER, "units": capacity}, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["hold_id"] == first.get_json()["hold_id"]
    other = c.post(HOLDS, json={"partner_id": PARTNER, "units": 1}, headers=h)
    assert other.status_code == 422
    # a plan made now gives the partner nothing: all its units are held
    record = st.get_plan(st.create_plan({"volunteer_points": "grid"}, actor="test"))
    artifacts = run_plan_job(st, record)
    assert artifacts.usage.get(PARTNER, 0.0) == 0.0
    assert artifacts.summary == json.loads(artifacts.files["summary.json"])
    # one key has at most max_active holds at once
    tight = HoldPolicy(max_active=1)
    place_hold(st, "ORG-0003", 0.5, "k", policy=tight)
    with pytest.raises(TooManyHoldsError, match="1 active holds"):
        place_hold(st, "ORG-0003", 0.5, "k", policy=tight)
