"""Open311 GeoReport v2 under ``/open311/v2/``, through real Open311 clients from PyPI.

Two published clients talk to the session's real ``matcher serve`` on both stores (the
``served`` fixture): ``georeport`` (reads services and service definitions, in JSON and in
XML through ``xmltodict``) and ``civicbot``'s ``Open311Client`` (creates requests with the
standard's form POST and ``api_key``, validating them against our service definitions
first; reads requests, its transport sending the key as ``Authorization: Bearer``, since
a request is a concern at a location and is never public). Linking, notes and the error
format are also checked through Flask's test client on a store of their own.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

import matcher
from matcher.open311 import GeoReportError, request_from_form, span
from matcher.store import open_store

from .conftest import Served
from .test_api import auth, loaded_template  # noqa: F401 - a fixture
from .test_api import loaded as served_app  # noqa: F401 - a fixture: a loaded app of its own

georeport = pytest.importorskip("georeport", reason="pip install -e '.[test]' (georeport)")
civic_open311 = pytest.importorskip("civicbot.open311", reason="pip install -e '.[test]'")
civic_http = pytest.importorskip("civicbot.http", reason="pip install -e '.[test]'")
civic_registry = pytest.importorskip("civicbot.registry", reason="pip install -e '.[test]'")

CODES = list(matcher.default_taxonomy().codes)
HUMBOLDT_PARK = (41.9012, -87.7203)


class KeyedTransport(civic_http.HttpTransport):
    """civicbot's own transport, sending an API key with every read; no politeness delay."""

    def __init__(self, key: str | None) -> None:
        super().__init__(rate_limiter=civic_http.RateLimiter(min_interval=0.0))
        self.key = key

    def get_json(self, url: str, params: Any = None, headers: Any = None) -> Any:
        sent = dict(headers or {})
        if self.key:
            sent["Authorization"] = f"Bearer {self.key}"
        return super().get_json(url, params, sent)


def civic(served: Served, key: str | None = None) -> Any:
    endpoint = civic_registry.Endpoint(
        id="matcher-test", name="matcher under test", base_url=served.url + "/open311/v2",
        write=True, api_key_required_for_write=True,
    )  # fmt: skip
    return civic_open311.Open311Client(endpoint, transport=KeyedTransport(key))


def test_services_and_definitions_through_georeport(served) -> None:
    root = served.url + "/open311/v2"
    client = georeport.GeoReport(root)
    listed = client.get_service_list()
    assert [s["service_code"] for s in listed] == CODES
    food = next(s for s in listed if s["service_code"] == "food_access")
    assert food["service_name"] == "Food access" and food["metadata"] is True
    assert food["type"] == "realtime" and food["group"] == "community needs"
    definition = client.get_service_definition("food_access")
    attrs = {a["code"]: a for a in definition["attributes"]}
    assert set(attrs) == {"severity", "demand", "languages"}
    assert [v["key"] for v in attrs["severity"]["values"]] == ["1", "2", "3", "4", "5"]
    # the same in XML, read by the client through xmltodict
    xml = georeport.GeoReport(root, output_format="xml")
    assert [s["service_code"] for s in xml.get_service_list()] == CODES
    xml_def = xml.get_service_definition("food_access")
    assert xml_def["service_code"] == "food_access"
    assert [a["code"] for a in xml_def["attributes"]["attribute"]] == [
        "severity", "demand", "languages"
    ]  # fmt: skip
    # an unknown service: 404 in the standard's error format
    import requests

    r = requests.get(f"{root}/services/gardening.json", timeout=30)
    assert r.status_code == 404
    assert r.json() == [{"code": 404, "description": "service_code 'gardening' not found"}]
    r = requests.get(f"{root}/services/gardening.xml", timeout=30)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/xml")
    assert "<errors><error><code>404</code>" in r.text


def test_requests_through_civicbot(served, tmp_path) -> None:
    outreach, planner = served.keys["outreach"], served.keys["planner"]
    writer = civic(served)
    made: list[str] = []
    try:
        # validate_remote: the client reads our service list and definition and checks the
        # request against them before it sends the standard's form POST with api_key
        sent = writer.create_request(
            "mental_health", lat=HUMBOLDT_PARK[0], lng=HUMBOLDT_PARK[1],
            description="neighbours worried about a man sleeping in the park",
            attributes={"severity": "4", "demand": "2", "languages": "es"},
            email="resident@example.org", first_name="Ana", phone="312-555-0100",
            api_key=outreach, dry_run=False, confirm="SEND", validate_remote=True,
        )  # fmt: skip
        answer = sent.response
        assert isinstance(answer, list) and len(answer) == 1
        request_id = answer[0]["service_request_id"]
        made.append(request_id)
        notice = answer[0]["service_notice"]
        assert notice.startswith("a new need; ")
        assert "email, first_name, phone not stored" in notice
        # read back with civicbot: as the outreach key (no description) and as a planner
        seen = civic(served, outreach).get_request(request_id)
        assert seen["service_request_id"] == request_id and seen["status"] == "open"
        assert (seen["service_code"], seen["lat"], seen["long"]) == (
            "mental_health", HUMBOLDT_PARK[0], HUMBOLDT_PARK[1]
        )
        assert seen["description"] == "" and seen["requested_datetime"].endswith("Z")
        by_planner = civic(served, planner).get_request(request_id)
        assert by_planner["description"] == "neighbours worried about a man sleeping in the park"
        listed = civic(served, outreach).list_requests(service_code="mental_health")
        assert request_id in [r["service_request_id"] for r in listed]
        assert all(r["service_code"] == "mental_health" for r in listed)
        assert civic(served, outreach).list_requests(status="closed") == []
        ids = civic(served, outreach).list_requests(service_request_ids=[request_id, "nope"])
        assert [r["service_request_id"] for r in ids] == [request_id]
        need = served.call("GET", f"/api/v1/needs/{request_id}", key=planner).json()
        assert (need["severity"], need["demand"], need["languages"], need["source"]) == (
            4, 2.0, "es", "open311"
        )
        assert need["neighborhood"] == "23"
        # personal details are never stored, anywhere in the store
        if not served.db.startswith("postgresql"):
            stored = b"".join(p.read_bytes() for p in Path(served.db).parent.glob(
                Path(served.db).name + "*"))  # fmt: skip
            for secret in (b"resident@example.org", b"312-555-0100"):
                assert secret not in stored
        # without a key, or with a wrong one: 401 in the standard's format
        for key in (None, "mk_wrong"):
            with pytest.raises(civic_http.HttpError) as err:
                civic(served, key).get_request(request_id)
            assert err.value.status == 401
            assert json.loads(err.value.body)[0]["code"] == 401
        with pytest.raises(civic_http.HttpError) as err:  # a POST with no api_key
            civic(served).http.post_form(
                served.url + "/open311/v2/requests.json",
                {"service_code": "food_access", "lat": 41.9, "long": -87.7},
            )
        assert err.value.status == 401
        # a retry with the same Idempotency-Key: the same answer, one need
        form = {"api_key": outreach, "service_code": "transportation", "lat": 41.8801,
                "long": -87.7301}  # fmt: skip
        with open_store(served.db) as st:
            before = st.count_needs()
        first = writer.http.post_form(served.url + "/open311/v2/requests.json", form,
                                      headers={"Idempotency-Key": "o311-retry-1"})  # fmt: skip
        again = writer.http.post_form(served.url + "/open311/v2/requests.json", form,
                                      headers={"Idempotency-Key": "o311-retry-1"})  # fmt: skip
        made.append(first[0]["service_request_id"])
        assert first == again
        with open_store(served.db) as st:
            assert st.count_needs() == before + 1
    finally:
        from .test_outreach import _delete_needs

        _delete_needs(served, made)


def _post(c: Any, key: str, form: dict[str, Any], fmt: str = "json") -> Any:
    return c.post(f"/open311/v2/requests.{fmt}", data={"api_key": key, **form})


def test_linking_notes_and_errors(served_app) -> None:  # noqa: F811
    app, keys, c = served_app
    here = {"service_code": "food_access", "lat": "41.9012", "long": "-87.7203"}
    r1 = _post(c, keys["outreach"], here | {"description": "pantry closed"})
    assert r1.status_code == 201 and r1.mimetype == "application/json"
    first = r1.get_json()[0]["service_request_id"]
    assert r1.headers["Location"] == f"/open311/v2/requests/{first}.json"
    r2 = _post(c, keys["outreach"], here | {"lat": "41.90121", "attribute[severity]": "5"})
    assert r2.status_code == 200
    second = r2.get_json()[0]["service_request_id"]
    assert second != first and r2.get_json()[0]["service_notice"].startswith(
        f"linked to need {first}"
    )
    # the linked report is a request of its own, naming the one it duplicates
    got = c.get(f"/open311/v2/requests/{second}.json?api_key={keys['outreach']}").get_json()
    assert got[0]["status_notes"].startswith(f"the same concern as service request {first}")
    # XML of a request and of its errors
    xml = c.get(f"/open311/v2/requests/{first}.xml", headers=auth(keys["planner"]))
    assert xml.mimetype == "text/xml"
    assert f"<service_request_id>{first}</service_request_id>" in xml.get_data(as_text=True)
    assert "<description>pantry closed</description>" in xml.get_data(as_text=True)
    cases = [
        ({"service_code": "nope", "lat": "1", "long": "1"}, 404, "not found"),
        ({"lat": "1", "long": "1"}, 400, "service_code is required"),
        (here | {"lat": "north"}, 400, "lat 'north' is not a number"),
        (here | {"lat": "91"}, 400, "lat is -90 to 90"),
        (here | {"long": "nan"}, 400, "finite"),
        (here | {"attribute[severity]": "9"}, 400, "not one of 1, 2, 3, 4, 5"),
        (here | {"attribute[demand]": "0"}, 400, "not above 0"),
        (here | {"attribute[languages]": "klingon"}, 400, "languages 'klingon'"),
        (here | {"description": "x" * 501}, 400, "at most 500"),
        (here | {"colour": "red"}, 400, "unknown field 'colour'"),
        ({"service_code": "food_access", "address_string": "1 Main St"}, 400,
         "does not look up address_string"),
    ]  # fmt: skip
    with app.app_context():
        before = app.extensions["matcher_store"].count_needs()
    for form, status, text in cases:
        r = _post(c, keys["outreach"], form)
        assert r.status_code == status, (form, r.get_data(as_text=True))
        body = r.get_json()
        assert isinstance(body, list) and body[0]["code"] == status
        assert text in body[0]["description"], (text, body)
    assert app.extensions["matcher_store"].count_needs() == before  # nothing half-written
    xml_err = _post(c, keys["outreach"], here | {"lat": "north"}, fmt="xml")
    assert xml_err.status_code == 400 and "<errors><error><code>400</code>" in xml_err.get_data(
        as_text=True
    )
    twice = c.post("/open311/v2/requests.json",
                   data=urllib.parse.urlencode([("api_key", keys["outreach"]),
                                                ("service_code", "food_access"),
                                                ("lat", "1"), ("lat", "2"), ("long", "1")]),
                   content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert twice.status_code == 400 and "more than once" in twice.get_json()[0]["description"]
    # listing filters
    key = f"api_key={keys['outreach']}"
    assert c.get(f"/open311/v2/requests.json?{key}&status=pending").status_code == 400
    assert c.get(f"/open311/v2/requests.json?{key}&service_code=nope").status_code == 400
    assert c.get(f"/open311/v2/requests.json?{key}&start_date=yesterday").status_code == 400
    ids = ",".join(f"id{i}" for i in range(101))
    assert c.get(f"/open311/v2/requests.json?{key}&service_request_id={ids}").status_code == 400
    for query in ("start_date=0001-01-01", "end_date=0001-01-01", "start_date=9999-12-31",
                  "service_code=" + ",".join(["food_access"] * 16), "status=open,open,open"):
        r = c.get(f"/open311/v2/requests.json?{key}&{query}")
        assert r.status_code == 400, (query, r.get_data(as_text=True))  # never a 500
    listed = c.get(f"/open311/v2/requests.json?{key}&service_code=food_access").get_json()
    assert [r["service_request_id"] for r in listed] == [first]  # new in the last 90 days
    # a time stored with another zone is in the listing of its UTC time
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    kiribati = (now + dt.timedelta(hours=14)).strftime("%Y-%m-%dT%H:%M:%S+14:00")
    r = c.post("/api/v1/needs", json={"category": "education", "lat": 41.95, "lon": -87.7,
                                      "demand": 1, "reported_at": kiribati},
               headers=auth(keys["outreach"]))  # fmt: skip
    assert r.status_code == 201, r.get_json()
    window = (f"start_date={(now - dt.timedelta(hours=1)).isoformat()[:19]}Z"
              f"&end_date={(now + dt.timedelta(hours=1)).isoformat()[:19]}Z")  # fmt: skip
    listed = c.get(f"/open311/v2/requests.json?{key}&service_code=education&{window}")
    assert [x["service_request_id"] for x in listed.get_json()] == [
        r.get_json()["need"]["need_id"]
    ]
    # the form only, bounded before it is read
    as_json = c.post("/open311/v2/requests.json", json=here | {"api_key": keys["outreach"]})
    assert as_json.status_code == 415 and as_json.get_json()[0]["code"] == 415
    big = _post(c, keys["outreach"], here | {"description": "x" * 70_000})
    assert big.status_code == 413
    # an Idempotency-Key of POST /needs and the same key at Open311 are two requests
    k = {"Idempotency-Key": "same-key-1"}
    a = c.post("/api/v1/needs", json={"category": "education", "lat": 41.7, "lon": -87.6,
                                      "demand": 1}, headers=auth(keys["outreach"]) | k)
    b = c.post("/open311/v2/requests.json", headers=k, data={
        "api_key": keys["outreach"], "service_code": "education", "lat": "41.6",
        "long": "-87.6"})  # fmt: skip
    assert a.status_code == 201 and b.status_code == 201
    replay = c.post("/open311/v2/requests.json", headers=k, data={
        "api_key": keys["outreach"], "service_code": "education", "lat": "41.6",
        "long": "-87.6"})  # fmt: skip
    assert replay.get_json() == b.get_json() and replay.headers["Idempotent-Replayed"] == "true"
    assert c.get(f"/open311/v2/requests/nope.json?{key}").status_code == 404
    assert c.get("/open311/v2/requests.csv").status_code == 404


def test_form_and_span_rules() -> None:
    tax = matcher.default_taxonomy()
    rec, personal = request_from_form(
        {"service_code": "seniors", "lat": "41.9", "long": "-87.7"}.get,
        ["service_code", "lat", "long"], tax,
    )  # fmt: skip
    assert rec["category"] == "elderly_support" and rec["demand"] == 1.0
    assert rec["severity"] == 3 and personal == [] and "note" not in rec
    import datetime as dt

    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    assert span(None, None, now) == (now - dt.timedelta(days=90), now)
    t0, t1 = span("2026-11-01", None, now)
    assert (t0.day, t1) == (1, now)
    with pytest.raises(GeoReportError, match="before"):
        span("2026-11-02", "2026-11-01", now)
    with pytest.raises(GeoReportError, match="more than 90"):
        span("2026-01-01", "2026-11-01", now)
