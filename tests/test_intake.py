"""Intake that never loses a report: server ids, 409, idempotency keys, near-duplicates.

Through Flask's test client on the sample city (700 needs, partners, neighborhoods), on
every store backend; the concurrent cases use one client per thread.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from api import create_app
from matcher import InputValidationError
from matcher.intake import IntakePolicy, neighborhood_of

from .test_api import auth, loaded_template  # noqa: F401 - a fixture
from .test_api import loaded as served  # noqa: F401 - a fixture: a loaded app of its own

NEEDS = "/api/v1/needs"
# Humboldt Park (community area 23); no sample need of these categories is near
HERE = {"category": "food_access", "lat": 41.9012, "lon": -87.7203, "demand": 2}


def _post(c: Any, key: str, body: dict[str, Any], **headers: str) -> Any:
    return c.post(NEEDS, json=body, headers=auth(key) | headers)


def _count(app: Any) -> int:
    return int(app.extensions["matcher_store"].count_needs())


def test_the_server_gives_the_id_neighborhood_and_time(served) -> None:  # noqa: F811
    app, keys, c = served
    before = _count(app)
    r = _post(c, keys["outreach"], HERE | {"severity": 4, "languages": "es"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    need = body["need"]
    assert need["need_id"].startswith("r-") and len(need["need_id"]) == 22
    assert body["created"] is True and body["linked_to"] is None
    assert body["report_id"] == need["need_id"] and body["intake"] == "a new need"
    assert r.headers["Location"] == f"/api/v1/needs/{need['need_id']}"
    hoods = app.extensions["matcher_store"].neighborhoods_frame()
    assert need["neighborhood"] == neighborhood_of(HERE["lat"], HERE["lon"], hoods) == "23"
    at = dt.datetime.fromisoformat(need["reported_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - at).total_seconds()) < 120
    assert (need["severity"], need["languages"]) == (4, "es")
    assert _count(app) == before + 1
    # an id sent is kept; sent again it is 409 and the stored need is unchanged
    r = _post(c, keys["outreach"], HERE | {"need_id": "N-1", "lat": 41.95, "severity": 5})
    assert r.status_code == 201
    again = _post(c, keys["outreach"], HERE | {"need_id": "N-1", "lat": 41.96, "severity": 1})
    assert again.status_code == 409
    assert c.get(f"{NEEDS}/N-1", headers=auth(keys["outreach"])).get_json()["severity"] == 5


def test_a_near_duplicate_is_linked_not_counted_twice(served) -> None:  # noqa: F811
    app, keys, c = served
    st = app.extensions["matcher_store"]
    first = _post(c, keys["outreach"], HERE).get_json()["need"]
    before = _count(app)
    # 20 m north, an hour later: the same concern
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(timespec="seconds")
    r = _post(c, keys["planner"], HERE | {"lat": 41.90138, "reported_at": later, "demand": 5})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["created"] is False and body["linked_to"] == first["need_id"]
    assert body["need"] == st.get_need(first["need_id"]) and body["need"]["demand"] == 5
    assert body["intake"].startswith(f"linked to need {first['need_id']}: the same food_access")
    assert "its demand is not counted twice" in body["intake"]
    assert _count(app) == before
    (kept,) = st.linked_reports(first["need_id"])
    assert kept["report_id"] == body["report_id"] and kept["demand"] == 5
    assert st.get_need(body["report_id"]) is None
    # the linked reports of a need, through the API: who reported them for admins only
    url = f"/api/v1/linked-reports?need_id={first['need_id']}"
    (mine,) = c.get(url, headers=auth(keys["planner"])).get_json()["reports"]
    assert mine["report_id"] == body["report_id"] and mine["mine"] and "actor" not in mine
    (theirs,) = c.get(url, headers=auth(keys["outreach"])).get_json()["reports"]
    assert theirs["mine"] is False and "actor" not in theirs
    assert "actor" in c.get(url, headers=auth(keys["admin"])).get_json()["reports"][0]
    missing = c.get("/api/v1/linked-reports?need_id=NOPE", headers=auth(keys["outreach"]))
    assert missing.status_code == 404
    # not the same concern: another category, 200 m away, or two days apart
    for other in (
        HERE | {"category": "elderly_support"},
        HERE | {"lat": 41.9030},
        HERE | {"reported_at": "2026-01-01T10:00:00Z"},
    ):
        assert _post(c, keys["outreach"], other).status_code == 201, other
    assert _count(app) == before + 3


def test_an_idempotency_key_replays_the_first_answer(served) -> None:  # noqa: F811
    app, keys, c = served
    before = _count(app)
    body = HERE | {"lat": 41.8801, "note_free": None}
    body.pop("note_free")
    first = _post(c, keys["outreach"], body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    retry = _post(c, keys["outreach"], body, **{"Idempotency-Key": "k-1"})
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json()["need"] == first.get_json()["need"]
    assert _count(app) == before + 1
    # the same key with another body is refused; another key holder has keys of its own
    other = _post(c, keys["outreach"], body | {"demand": 9}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422
    assert other.get_json()["problems"][0]["field"] == "Idempotency-Key"
    mine = _post(c, keys["planner"], body | {"lat": 41.8701}, **{"Idempotency-Key": "k-1"})
    assert mine.status_code == 201 and "Idempotent-Replayed" not in mine.headers
    for bad in ("", "a b", "x" * 256, "é"):
        r = c.post(NEEDS, json=body, headers=auth(keys["outreach"]) | {"Idempotency-Key": bad})
        assert r.status_code == 400, bad
    assert _count(app) == before + 2


@pytest.mark.parametrize("keyed", [False, True])
def test_concurrent_reports_of_one_concern_make_one_need(served, keyed: bool) -> None:  # noqa: F811
    app, keys, _ = served
    before = _count(app)
    body = HERE | {"lat": 41.8905, "category": "transportation"}
    answers: list[Any] = []
    lock = threading.Lock()

    def report() -> None:
        client = app.test_client()
        headers = {"Idempotency-Key": "same-report"} if keyed else {}
        r = _post(client, keys["outreach"], body, **headers)
        with lock:
            answers.append((r.status_code, r.get_json(), dict(r.headers)))

    threads = [threading.Thread(target=report) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(app) == before + 1
    ids = {a[1]["need"]["need_id"] for a in answers}
    assert len(ids) == 1 and len(answers) == 6
    codes = sorted(a[0] for a in answers)
    if keyed:  # one made it, five replayed its answer
        assert codes == [201] * 6
        assert sum(a[2].get("Idempotent-Replayed") == "true" for a in answers) == 5
    else:  # one made it, five were linked to it
        assert codes == [200] * 5 + [201]
        st = app.extensions["matcher_store"]
        assert len(st.linked_reports(ids.pop())) == 5


def test_the_duplicate_rule_is_bounded_and_can_be_turned_off(store_url: str) -> None:
    with pytest.raises(InputValidationError, match="duplicate_m"):
        create_app({"DB": store_url, "TESTING": True, "DUPLICATE_M": -1, "PLAN_WORKERS": 0})
    with pytest.raises(InputValidationError, match="duplicate_hours"):
        IntakePolicy(50.0, 24.0 * 365)
    assert IntakePolicy(0, 0) == IntakePolicy(duplicate_m=0.0, duplicate_hours=0.0)


def test_a_larger_report_raises_its_need_and_links_keep_their_need(served) -> None:  # noqa: F811
    app, keys, c = served
    st = app.extensions["matcher_store"]
    first = _post(c, keys["outreach"], HERE | {"lat": 41.8601}).get_json()["need"]
    r = _post(c, keys["outreach"], HERE | {"lat": 41.86012, "demand": 7, "severity": 5})
    body = r.get_json()
    assert r.status_code == 200 and body["linked_to"] == first["need_id"]
    assert (body["need"]["demand"], body["need"]["severity"]) == (7, 5)
    assert body["intake"].endswith("the need now has demand 7 and severity 5")
    assert st.linked_reports(first["need_id"])[0]["neighborhood"] == first["neighborhood"]
    # a need with linked reports is not deleted, nor left out of an import
    etag = c.get(f"{NEEDS}/{first['need_id']}", headers=auth(keys["planner"])).headers["ETag"]
    gone = c.delete(f"{NEEDS}/{first['need_id']}",
                    headers=auth(keys["planner"]) | {"If-Match": etag})  # fmt: skip
    assert gone.status_code == 409 and "1 linked report(s)" in gone.get_json()["detail"]
    csv = "need_id,category,lat,lon,demand\nA,food_access,41.9,-87.7,1\n"
    r = c.post("/api/v1/imports/needs", data=csv, content_type="text/csv",
               headers=auth(keys["planner"]))  # fmt: skip
    assert r.status_code == 400
    assert any(p["value"] == first["need_id"] for p in r.get_json()["problems"])
    csv += f"{first['need_id']},food_access,41.9,-87.7,1\n"
    csv += f"{body['report_id']},food_access,41.9,-87.7,1\n"
    r = c.post("/api/v1/imports/needs", data=csv, content_type="text/csv",
               headers=auth(keys["planner"]))  # fmt: skip
    assert r.status_code == 400
    assert [p["reason"] for p in r.get_json()["problems"]] == ["is the id of a linked report"]


def test_a_replay_after_its_need_was_deleted_and_report_times(served) -> None:  # noqa: F811
    app, keys, c = served
    h = {"Idempotency-Key": "k-gone"}
    first = _post(c, keys["planner"], HERE | {"lat": 41.8501}, **h).get_json()["need"]
    etag = c.get(f"{NEEDS}/{first['need_id']}", headers=auth(keys["planner"])).headers["ETag"]
    assert c.delete(f"{NEEDS}/{first['need_id']}",
                    headers=auth(keys["planner"]) | {"If-Match": etag}).status_code == 204
    again = _post(c, keys["planner"], HERE | {"lat": 41.8501}, **h)
    assert again.status_code == 410 and first["need_id"] in again.get_json()["detail"]
    for when in ("2000-01-01", "2099-01-01T00:00:00Z"):
        r = _post(c, keys["outreach"], HERE | {"lat": 41.8401, "reported_at": when})
        assert r.status_code == 400 and r.get_json()["problems"][0]["field"] == "reported_at"
