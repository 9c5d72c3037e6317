"""The outreach page and the routes it reads: places, escalation contacts, notes, catalogs.

The routes run through Flask's test client on a loaded store of their own (every backend).
The page runs in Debian's headless ``chromium`` driven by Playwright, at a phone viewport
(390×844), against the session's real ``matcher serve`` on both stores (the ``served``
fixture): near me (geolocation granted to the browser context), place search, the
free-capacity filter, the fallback answer with its escalation contact, reporting a concern,
the offline queue (the network cut in the browser context, then restored) and a response
lost on the way back (the retry with the same Idempotency-Key makes no second need), in
English and in Spanish. Expected answers come from the API itself, asked with the same key.
Screenshots go to the test's tmp path and to ``out/outreach/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import matcher
from api import create_app
from matcher import InputValidationError
from matcher.outreach import MAX_PLACE_QUERY_CHARS, NeighborhoodLookup, Places, fold
from matcher.store import open_store

from .conftest import SERVED_ESCALATION, SERVED_GEOCODER, Served, close_app
from .test_api import auth, loaded_template  # noqa: F401 - a fixture
from .test_api import loaded as served_app  # noqa: F401 - a fixture: a loaded app of its own
from .test_webmap import PNG_1PX, browser, chromium_path  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "matcher" / "web"
SAMPLE = ROOT / "data" / "sample"
LINCOLN_PARK = (41.9215, -87.6495)  # inside community area 7
LAKE = (41.93, -87.55)  # Lake Michigan: in no community area
NEARBY = "/api/v1/resources/nearby"


# --------------------------------------------------------------------------- catalogs


def _catalog(code: str) -> dict[str, str]:
    return json.loads((WEB / "locales" / f"{code}.json").read_text(encoding="utf-8"))


def test_every_text_of_the_page_is_in_every_catalog() -> None:
    from matcher_api.webmap import LOCALES

    en = _catalog("en")
    html = (WEB / "outreach.html").read_text(encoding="utf-8")
    js = (WEB / "outreach.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-placeholder|-aria-label)?="([^"]+)"', html))
    # keys built from a prefix ("kind." + kind) are added in full below
    used |= {k for k in re.findall(r'\bt\("([a-z0-9_.]+)"', js) if not k.endswith(".")}
    used |= {f"category.{code}" for code in matcher.default_taxonomy().codes}
    used |= {f"kind.{kind}" for kind in ("organization", "volunteer")}
    used |= {f"place.{kind}" for kind in ("neighborhood", "organization")}
    assert len(used) > 60
    for code in LOCALES:
        cat = _catalog(code)
        assert set(cat) == set(en), code  # the same keys in every language
        assert used <= set(cat), (code, sorted(used - set(cat)))
        for key, text in cat.items():
            assert isinstance(text, str) and text.strip(), (code, key)
            # the same placeholders as English, so no value goes missing in a translation
            assert set(re.findall(r"\{(\w+)\}", text)) == set(
                re.findall(r"\{(\w+)\}", en[key])
            ), (code, key)
    es = _catalog("es")
    translated = [k for k in en if k.startswith("category.") and es[k] != en[k]]
    assert len(translated) == len(matcher.default_taxonomy().codes)


# --------------------------------------------------------------------------- core


def test_places_fold_rank_and_never_list_volunteers() -> None:
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    hoods = gpd.GeoDataFrame(
        {"neighborhood_id": ["31", "7"], "name": ["Lower West Side", "Lincoln Park"]},
        geometry=[box(-87.68, 41.84, -87.64, 41.86), box(-87.66, 41.91, -87.63, 41.93)],
        crs=4326,
    )
    partners = pd.DataFrame(
        {
            "partner_id": ["o1", "o2", "v1"],
            "name": ["Casa Doña Pantry", "Lincoln Park Pantry", "Lincoln Volunteer"],
            "kind": ["organization", "organization", "volunteer"],
            "lat": [41.85, 41.92, 41.92],
            "lon": [-87.66, -87.65, -87.65],
        }
    )
    places = Places.from_store_frames(hoods, partners)
    assert [p["id"] for p in places.search("lincoln")] == ["7", "o2"]  # no volunteer
    assert [p["id"] for p in places.search("DONA")] == ["o1"]  # accents and case folded
    assert [p["id"] for p in places.search("pantry park")] == ["o2"]  # every word
    assert places.search("   ") == [] and places.search("x" * 500) == []
    assert [p["id"] for p in places.search("7")] == ["7"]  # a neighborhood id
    lp = places.search("lincoln park")[0]
    assert hoods.geometry.iloc[1].contains(
        __import__("shapely").Point(lp["lon"], lp["lat"])
    )  # a point inside its polygon
    assert fold("Ñandú  Park") == "nandu park"
    lookup = NeighborhoodLookup(hoods.assign(escalation_contact=["", "CAPS 19"]), "311")
    assert lookup.locate(41.92, -87.65) == {
        "neighborhood_id": "7", "name": "Lincoln Park", "escalation_contact": "CAPS 19"
    }  # fmt: skip
    assert lookup.locate(41.85, -87.66)["escalation_contact"] == "311"  # none named: default
    assert lookup.locate(40.0, -80.0) is None and lookup.neighborhood_id(40.0, -80.0) == ""
    assert NeighborhoodLookup(None, "311").locate(41.92, -87.65) is None


# --------------------------------------------------------------------------- routes


def _hoods_with_contacts(contacts: dict[str, Any]) -> bytes:
    doc = json.loads((SAMPLE / "neighborhoods.geojson").read_text())
    for f in doc["features"]:
        nid = f["properties"]["neighborhood_id"]
        if nid in contacts:
            f["properties"]["escalation_contact"] = contacts[nid]
    return json.dumps(doc).encode()


def test_places_route_roles_and_bounds(served_app) -> None:  # noqa: F811
    app, keys, c = served_app
    r = c.get("/api/v1/places?q=lincoln", headers=auth(keys["outreach"]))
    assert r.status_code == 200, r.get_json()
    found = r.get_json()["places"]
    assert found[0] == {**found[0], "name": "Lincoln Park", "kind": "neighborhood", "id": "7"}
    assert {p["kind"] for p in found} <= {"neighborhood", "organization"}
    # volunteers are never places, whatever their name
    vols = c.get("/api/v1/places?q=volunteer&limit=20", headers=auth(keys["admin"]))
    assert all(p["kind"] != "volunteer" for p in vols.get_json()["places"])
    assert not any(p["name"].startswith("Volunteer ") for p in vols.get_json()["places"])
    assert c.get("/api/v1/places?q=lincoln").status_code == 401
    long = c.get(f"/api/v1/places?q={'x' * (MAX_PLACE_QUERY_CHARS + 1)}",
                 headers=auth(keys["outreach"]))  # fmt: skip
    assert long.status_code in (400, 422) and long.mimetype == "application/problem+json"
    assert "q" in long.get_data(as_text=True)
    assert c.get("/api/v1/places?q=a&limit=21", headers=auth(keys["outreach"])).status_code in (
        400, 422,
    )  # fmt: skip
    assert c.get("/api/v1/places", headers=auth(keys["outreach"])).status_code in (400, 422)


def test_nearby_names_the_neighborhood_and_whom_to_escalate_to(served_app) -> None:  # noqa: F811
    app, keys, c = served_app
    app.config["ESCALATION_CONTACT"] = "Chicago 311"
    key = auth(keys["outreach"])
    lat, lon = LINCOLN_PARK
    found = c.get(f"{NEARBY}?lat={lat}&lon={lon}&radius_km=2", headers=key).get_json()
    assert any(r["free_capacity"] > 0 for r in found["results"])
    assert found["neighborhood"] == {"neighborhood_id": "7", "name": "Lincoln Park"}
    assert found["escalate_to"] is None and found["in_radius"] is None
    assert all(isinstance(r["languages"], list) for r in found["results"])
    # nothing within 50 m: the default contact (no neighborhood names one yet)
    none = c.get(f"{NEARBY}?lat={lat}&lon={lon}&radius_km=0.05", headers=key).get_json()
    assert none["results"] == [] and none["in_radius"] == 0 and none["nearest_free"]
    assert none["escalate_to"] == "Chicago 311"
    # a neighborhood's own contact wins, once imported with its polygons
    body = _hoods_with_contacts({"7": "District 18 CAPS office, 312-742-5778"})
    r = c.post("/api/v1/imports/neighborhoods", data=body, content_type="application/geo+json",
               headers=auth(keys["planner"]))  # fmt: skip
    assert r.status_code == 201, r.get_json()
    again = c.get(f"{NEARBY}?lat={lat}&lon={lon}&radius_km=0.05", headers=key).get_json()
    assert again["escalate_to"] == "District 18 CAPS office, 312-742-5778"
    # in no neighborhood (the lake): no neighborhood, the default contact
    lake = c.get(f"{NEARBY}?lat={LAKE[0]}&lon={LAKE[1]}&radius_km=0.1", headers=key).get_json()
    assert lake["neighborhood"] is None and lake["escalate_to"] == "Chicago 311"
    # a bad contact is refused at import, naming the row, the field and why
    for bad, reason in (("x" * 501, "at most 500"), ("a\nb", "control character"),
                        (7, "must be text")):  # fmt: skip
        r = c.post("/api/v1/imports/neighborhoods", data=_hoods_with_contacts({"7": bad}),
                   content_type="application/geo+json", headers=auth(keys["planner"]))  # fmt: skip
        assert r.status_code == 400, r.get_json()
        problem = r.get_json()["problems"][0]
        assert problem["field"] == "escalation_contact" and reason in problem["reason"]
    kept = c.get(f"{NEARBY}?lat={lat}&lon={lon}&radius_km=0.05", headers=key).get_json()
    assert kept["escalate_to"] == "District 18 CAPS office, 312-742-5778"  # all or nothing
    # a reported concern no partner can take names whom to escalate to as its next step
    far = c.post("/api/v1/needs", json={"category": "reentry_support", "lat": 42.0,
                                        "lon": -87.2, "demand": 1}, headers=key)  # mid-lake
    assert far.status_code == 201 and far.get_json()["recommendations"] == []
    assert far.get_json()["escalate_to"] == "Chicago 311"
    near = c.post("/api/v1/needs", json={"category": "food_access", "lat": lat, "lon": lon,
                                         "demand": 1}, headers=key)
    assert near.get_json()["recommendations"] and near.get_json()["escalate_to"] is None


def test_a_reporters_note_is_kept_and_shown_to_planners_only(served_app) -> None:  # noqa: F811
    app, keys, c = served_app
    st = app.extensions["matcher_store"]
    here = {"category": "transportation", "lat": 41.8801, "lon": -87.7301, "demand": 1}
    r = c.post("/api/v1/needs", json=here | {"note": "  no bus shelter\nat the corner "},
               headers=auth(keys["outreach"]))  # fmt: skip
    assert r.status_code == 201, r.get_json()
    need_id = r.get_json()["need"]["need_id"]
    assert "note" not in r.get_json()["need"]
    # a second report of the same concern: linked, its note kept with it
    r2 = c.post("/api/v1/needs", json=here | {"lat": 41.88012, "note": "still broken"},
                headers=auth(keys["outreach"]))  # fmt: skip
    assert r2.status_code == 200 and r2.get_json()["linked_to"] == need_id
    notes = c.get(f"/api/v1/report-notes?need_id={need_id}", headers=auth(keys["planner"]))
    assert notes.status_code == 200
    rows = notes.get_json()["notes"]
    assert [n["note"] for n in rows] == ["no bus shelter\nat the corner", "still broken"]
    assert rows[1]["report_id"] == r2.get_json()["report_id"]
    assert all("actor" not in n for n in rows)  # who wrote it: admins only
    admin = c.get(f"/api/v1/report-notes?need_id={need_id}", headers=auth(keys["admin"]))
    assert all(n["actor"] for n in admin.get_json()["notes"])
    forbidden = c.get(f"/api/v1/report-notes?need_id={need_id}", headers=auth(keys["outreach"]))
    assert forbidden.status_code == 403
    missing = c.get("/api/v1/report-notes?need_id=nope", headers=auth(keys["planner"]))
    assert missing.status_code == 404
    # a bad note: 400 naming the field, and nothing stored
    before = st.count_needs()
    elsewhere = here | {"lat": 41.95, "category": "education"}
    for bad, reason in (("x" * 501, "at most 500"), ("a\x07b", "control character"),
                        (5, "must be text")):  # fmt: skip
        r = c.post("/api/v1/needs", json=elsewhere | {"note": bad},
                   headers=auth(keys["outreach"]))  # fmt: skip
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["problems"][0]["field"] == "note"
        assert reason in r.get_json()["problems"][0]["reason"]
    assert st.count_needs() == before
    # notes go with their need: a need deleted and made again under its id shows none
    made = c.post("/api/v1/needs", json=elsewhere | {"need_id": "N-NOTE", "note": "private"},
                  headers=auth(keys["outreach"]))  # fmt: skip
    assert made.status_code == 201
    etag = c.get("/api/v1/needs/N-NOTE", headers=auth(keys["planner"])).headers["ETag"]
    gone = c.delete("/api/v1/needs/N-NOTE", headers=auth(keys["planner"]) | {"If-Match": etag})
    assert gone.status_code == 204
    again = c.post("/api/v1/needs", json=elsewhere | {"need_id": "N-NOTE"},
                   headers=auth(keys["outreach"]))  # fmt: skip
    assert again.status_code == 201
    assert c.get("/api/v1/report-notes?need_id=N-NOTE",
                 headers=auth(keys["planner"])).get_json()["notes"] == []  # fmt: skip
    etag = c.get("/api/v1/needs/N-NOTE", headers=auth(keys["planner"])).headers["ETag"]
    c.delete("/api/v1/needs/N-NOTE", headers=auth(keys["planner"]) | {"If-Match": etag})
    third = c.post("/api/v1/needs", json=elsewhere | {"need_id": "N-NOTE", "note": "new"},
                   headers=auth(keys["outreach"]))  # fmt: skip
    assert third.status_code == 201  # never a 500 on the old note's id
    assert [n["note"] for n in c.get("/api/v1/report-notes?need_id=N-NOTE", headers=auth(
        keys["planner"])).get_json()["notes"]] == ["new"]  # fmt: skip


def test_page_settings_are_checked_and_the_page_is_served(tmp_path, monkeypatch) -> None:
    for bad in ({"GEOCODER_URL": "ftp://geo.example.org/?q={q}"},
                {"GEOCODER_URL": "https://geo.example.org/search"},
                {"GEOCODER_URL": "http://[x/{q}"},
                # a host that would add a directive to the page's Content-Security-Policy
                {"GEOCODER_URL": "https://geo.org; script-src 'unsafe-inline'/s?q={q}"},
                {"TILE_URL": "https://t.org; script-src */{z}/{x}/{y}.png"},
                {"TILE_URL": "ftp://t.org/{z}/{x}/{y}.png"},
                {"ESCALATION_CONTACT": "x" * 501}):  # fmt: skip
        with pytest.raises(InputValidationError) as err:
            create_app({"DB": str(tmp_path / "s.db"), "PLAN_WORKERS": 0} | bad)
        assert next(iter(bad)) in str(err.value)
    # settings from the environment are text as written, in the app as in `matcher serve`
    monkeypatch.setenv("MATCHER_ESCALATION_CONTACT", "311")
    app = create_app({"DB": str(tmp_path / "s.db"), "PLAN_WORKERS": 0})
    assert app.config["ESCALATION_CONTACT"] == "311"
    close_app(app)
    monkeypatch.delenv("MATCHER_ESCALATION_CONTACT")
    exe = Path(sys.executable).parent / "matcher"
    run = subprocess.run(
        [str(exe), "serve", "--db", str(tmp_path / "cli.db"), "--port", "1"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "MATCHER_GEOCODER_URL": "javascript:alert(1)//{q}"},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "GEOCODER_URL" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "cli.db").exists()  # nothing started, nothing written
    app = create_app(
        {"DB": str(tmp_path / "s.db"), "PLAN_WORKERS": 0, "TESTING": True,
         "GEOCODER_URL": "https://geo.example.org/search?format=json&q={q}"}
    )  # fmt: skip
    try:
        c = app.test_client()
        page = c.get("/outreach")
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(as_text=True)
        page.close()
        assert 'src="web/outreach.js"' in html and 'src="vendor/leaflet/leaflet.js"' in html
        csp = page.headers["Content-Security-Policy"]
        assert "connect-src 'self' https://geo.example.org;" in csp
        assert "script-src 'self';" in csp
        assert page.headers["Permissions-Policy"].startswith("geolocation=(self)")
        for name in ("outreach.js", "outreach.css", "locales/en.json", "locales/es.json"):
            r = c.get(f"/web/{name}")
            assert r.status_code == 200, name
            r.close()
        assert c.get("/web/locales/fr.json").status_code == 404
        assert c.get("/web/outreach.html").status_code == 404
        cfg = c.get("/api/v1/map/config").get_json()
        assert cfg["categories"] == list(matcher.default_taxonomy().codes)
        assert cfg["geocoder_url"] == "https://geo.example.org/search?format=json&q={q}"
    finally:
        close_app(app)


# --------------------------------------------------------------------------- the page


class Phone:
    """A phone-sized browser context on the served outreach page, every error recorded."""

    def __init__(self, browser, served: Served, *, locale: str = "en-US",  # noqa: F811
                 at: tuple[float, float] = LINCOLN_PARK) -> None:  # fmt: skip
        self.served = served
        self.context = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale=locale,
            geolocation={"latitude": at[0], "longitude": at[1]},
            permissions=["geolocation"],
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda m: self.errors.append(f"{m.text} @ {m.location.get('url')}")
            if m.type == "error" else None,
        )  # fmt: skip
        self.page.route(
            served.tile_prefix + "**",
            lambda route: route.fulfill(status=200, content_type="image/png", body=PNG_1PX),
        )

    def sign_in(self, role: str = "outreach") -> None:
        page = self.page
        page.goto(self.served.url + "/outreach")
        page.wait_for_selector("body[data-state=signin]", timeout=30_000)
        page.fill("#key-input", self.served.keys[role])
        page.click("#key-use")
        page.wait_for_selector("body[data-state=ready]", timeout=30_000)

    def results_done(self, action) -> None:
        """Run ``action`` and wait until the page has the nearby answer it asked for."""
        self.page.evaluate("document.body.dataset.results = 'waiting'")
        action()
        self.page.wait_for_selector("body[data-results=done]", timeout=30_000)

    def shown(self, css: str = "#results li.result") -> list[str]:
        return [el.get_attribute("data-partner") for el in self.page.locator(css).all()]

    def screenshot(self, tmp_path: Path, name: str) -> None:
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        keep = ROOT / "out" / "outreach"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, keep / path.name)
        assert path.stat().st_size > 10_000

    def close(self) -> None:
        self.context.close()


def _api(served: Served, path: str, role: str = "outreach", **kw: Any) -> Any:
    r = served.call("GET" if "json_body" not in kw else "POST", path,
                    key=served.keys[role], **kw)  # fmt: skip
    assert r.status < 300, (path, r.status, r.text)
    return r.json()


def _nearby(served: Served, lat: float, lon: float, radius: float, *, free_only: bool = True,
            category: str | None = None) -> dict[str, Any]:  # fmt: skip
    q = (f"{NEARBY}?lat={lat}&lon={lon}&radius_km={radius:g}&limit=10"
         f"&free_only={str(free_only).lower()}")  # fmt: skip
    return _api(served, q + (f"&category={category}" if category else ""))  # type: ignore[no-any-return]


@pytest.fixture()
def phone(browser, served):  # noqa: F811
    made: list[Phone] = []

    def make(**kw: Any) -> Phone:
        p = Phone(browser, served, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_near_me_and_the_free_capacity_filter(phone, served, tmp_path) -> None:
    p = phone()
    p.sign_in()
    page = p.page
    assert page.locator("#free-only").is_checked()  # on by default
    p.results_done(lambda: page.click("#near-me"))
    lat, lon = LINCOLN_PARK
    expected = _nearby(served, lat, lon, 2)
    assert p.shown() == [r["partner_id"] for r in expected["results"]] and p.shown()
    assert "Lincoln Park" in page.inner_text("#where")
    first = expected["results"][0]
    item = page.locator(f"#results li[data-partner='{first['partner_id']}']")
    assert first["name"] in item.inner_text() and "km" in item.inner_text()
    p.screenshot(tmp_path, "outreach-near-me")
    # hold all of the nearest partner's free units: with the filter on it is gone, off it
    # is listed as full
    hold = _api(served, "/api/v1/holds", json_body={
        "partner_id": first["partner_id"], "units": first["free_capacity"], "minutes": 5})
    try:
        p.results_done(lambda: page.select_option("#radius", "1"))
        p.results_done(lambda: page.select_option("#radius", "2"))
        assert first["partner_id"] not in p.shown()
        assert p.shown() == [r["partner_id"] for r in _nearby(served, lat, lon, 2)["results"]]
        p.results_done(lambda: page.uncheck("#free-only"))
        every = _nearby(served, lat, lon, 2, free_only=False)["results"]
        assert p.shown() == [r["partner_id"] for r in every]
        assert first["partner_id"] in p.shown()
        full = page.locator(f"#results li[data-partner='{first['partner_id']}'] .full")
        assert full.inner_text() == "full"
        p.screenshot(tmp_path, "outreach-filter-off")
    finally:
        served.call("DELETE", f"/api/v1/holds/{hold['hold_id']}?reason=cancelled",
                    key=served.keys["outreach"])  # fmt: skip
    # signing out leaves nothing of the session on screen for the next person
    page.click("#key-forget")
    page.wait_for_selector("body[data-state=signin]")
    page.fill("#key-input", served.keys["planner"])  # the same page: no reload
    page.click("#key-use")
    page.wait_for_selector("body[data-state=ready]")
    assert p.shown() == [] and page.inner_text("#where") == "No location yet."
    assert page.inner_text("#summary") == ""
    assert page.locator(".leaflet-interactive").count() == 0
    assert p.errors == []


def test_place_search_and_the_fallback_with_whom_to_escalate_to(phone, served, tmp_path) -> None:
    p = phone()
    p.sign_in()
    page = p.page
    page.fill("#place-q", "lincoln park")
    page.click("#place-go")
    page.wait_for_selector("#place-results li button")
    expected = _api(served, "/api/v1/places?q=lincoln%20park&limit=8")["places"]
    buttons = page.locator("#place-results li button").all()
    assert [(b.get_attribute("data-kind"), b.get_attribute("data-id")) for b in buttons] == [
        (e["kind"], e["id"]) for e in expected
    ]
    assert buttons[0].inner_text() == "Lincoln Park neighborhood"
    spot = expected[0]
    assert spot["kind"] == "neighborhood"
    p.results_done(lambda: page.locator("#place-results li button").first.click())
    assert p.shown() == [r["partner_id"] for r in _nearby(served, spot["lat"], spot["lon"], 2)[
        "results"]]  # fmt: skip
    # a category with no free capacity within 1 km of this place: the page says so, lists
    # the nearest that have some and whom to escalate to
    chosen = None
    for code in matcher.default_taxonomy().codes:
        answer = _nearby(served, spot["lat"], spot["lon"], 1, category=code)
        if not answer["results"] and answer["nearest_free"]:
            chosen = (code, answer)
            break
    assert chosen is not None, "every category has free capacity within 1 km of Lincoln Park"
    code, answer = chosen
    p.results_done(lambda: page.select_option("#radius", "1"))
    p.results_done(lambda: page.click(f"button.chip[data-category={code}]"))
    assert page.locator(f"button.chip[data-category={code}]").get_attribute("aria-pressed") == (
        "true"
    )
    assert p.shown() == []
    assert page.locator("#fallback").is_visible()
    assert p.shown("#nearest-free li.result") == [r["partner_id"] for r in answer["nearest_free"]]
    summary = page.inner_text("#summary")
    assert summary == (
        f"None of the {answer['in_radius']} partner(s) within 1 km has free capacity."
        if answer["in_radius"] else "No partner within 1 km."
    )
    assert page.inner_text("#escalate") == (
        f"Escalate in Lincoln Park to: {SERVED_ESCALATION}"
    )
    p.screenshot(tmp_path, "outreach-fallback")
    # a tap on the map moves the point there (and keeps the category and radius)
    box = page.locator("#map").bounding_box()
    p.results_done(lambda: page.locator("#map").click(
        position={"x": box["width"] * 0.7, "y": box["height"] * 0.3}))  # fmt: skip
    lat, lon = map(float, page.get_attribute("body", "data-point").split(","))
    assert (lat, lon) != (spot["lat"], spot["lon"])
    tapped = _nearby(served, lat, lon, 1, category=code)
    assert p.shown() == [r["partner_id"] for r in tapped["results"]]
    assert p.shown("#nearest-free li.result") == [r["partner_id"] for r in tapped["nearest_free"]]
    assert p.errors == []


def test_a_place_the_store_does_not_know_comes_from_the_geocoder(phone, served) -> None:
    p = phone()
    asked: list[str] = []

    def nominatim(route) -> None:  # the configured geocoder, answered as Nominatim would
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps([
            {"display_name": "Wrigley Field, 1060 West Addison Street, Chicago",
             "lat": "41.9484", "lon": "-87.6553"},
            {"display_name": "not a place", "lat": "north", "lon": "-87"},
        ]))  # fmt: skip

    p.page.route(SERVED_GEOCODER.split("/search")[0] + "/**", nominatim)
    p.sign_in()
    page = p.page
    page.fill("#place-q", "Wrigley Field")
    page.click("#place-go")
    page.wait_for_selector("#place-results li button[data-kind=geocoder]")
    assert len(asked) == 1 and "q=Wrigley%20Field" in asked[0]  # the store knew no such place
    buttons = page.locator("#place-results li button")
    assert buttons.count() == 1  # the answer without a usable point is dropped
    assert buttons.first.inner_text().startswith("Wrigley Field, 1060 West Addison Street")
    p.results_done(lambda: buttons.first.click())
    assert page.inner_text("#where").startswith("Here: 41.9484, -87.6553")
    expected = _nearby(served, 41.9484, -87.6553, 2)
    assert p.shown() == [r["partner_id"] for r in expected["results"]]
    assert p.errors == []


def _delete_needs(served: Served, ids: list[str]) -> None:
    with open_store(served.db) as st:
        for need_id in ids:
            need = st.get_need(need_id)
            if need is not None and not st.linked_reports(need_id):
                st.delete_need(need_id, int(need["version"]), actor="test")


def test_report_a_concern_offline_and_with_a_lost_answer(phone, served, tmp_path) -> None:
    p = phone()
    p.sign_in()
    page = p.page
    p.results_done(lambda: page.click("#near-me"))
    made: list[str] = []
    with open_store(served.db) as st:
        start = st.count_needs()
    try:
        # 1. online: the answer names the new need, its cluster and the partners
        page.click("#report-open")
        page.select_option("#report-category", "digital_access")
        page.select_option("#report-severity", "4")
        page.fill("#report-demand", "3")
        page.fill("#report-languages", "es, en")
        page.fill("#report-note", "library wifi down for a week")
        page.click("#report-send")
        page.wait_for_selector("#report-result .outcome", timeout=30_000)
        need_id = page.get_attribute("#report-result", "data-need-id")
        made.append(need_id)
        assert page.inner_text("#report-result .outcome") == f"Reported: new concern {need_id}."
        need = _api(served, f"/api/v1/needs/{need_id}")
        assert (need["category"], need["severity"], need["demand"], need["languages"]) == (
            "digital_access", 4, 3.0, "en;es"  # languages are stored sorted
        )
        assert need["neighborhood"] == "7" and need["source"] == "outreach page"
        notes = _api(served, f"/api/v1/report-notes?need_id={need_id}", role="planner")
        assert [n["note"] for n in notes["notes"]] == ["library wifi down for a week"]
        p.screenshot(tmp_path, "outreach-reported")
        # 2. offline: kept on the device, sent once the network is back, one need
        p.context.set_offline(True)
        page.click("#report-open")
        page.select_option("#report-category", "language_access")
        page.click("#report-send")
        page.wait_for_selector("body[data-queue='1']")
        page.wait_for_selector("#report-result:has-text('No connection')")
        assert page.locator("#queue-status").is_visible()
        p.screenshot(tmp_path, "outreach-offline-queued")
        with open_store(served.db) as st:
            assert st.count_needs() == start + 1  # nothing reached the server
        p.context.set_offline(False)
        page.wait_for_selector("body[data-queue='0']", timeout=60_000)
        page.wait_for_selector("#report-result .outcome", timeout=30_000)
        made.append(page.get_attribute("#report-result", "data-need-id"))
        with open_store(served.db) as st:
            assert st.count_needs() == start + 2
            assert st.get_need(made[1])["category"] == "language_access"
        # 3. the server takes the report but its answer is lost: the page retries with
        # the same Idempotency-Key and the server replays its answer, one need
        sent: list[tuple[str, str]] = []

        def lose_first_answer(route) -> None:
            key = route.request.headers.get("idempotency-key", "")
            sent.append((route.request.method, key))
            if len(sent) == 1:
                first = route.fetch()
                assert first.status == 201
                made.append(first.json()["need"]["need_id"])
                route.abort("connectionreset")
            else:
                route.continue_()

        page.route("**/api/v1/needs", lose_first_answer)
        page.click("#report-open")
        page.select_option("#report-category", "education")
        page.click("#report-send")
        page.wait_for_selector("body[data-queue='0']", timeout=60_000)
        page.wait_for_selector("#report-result .outcome", timeout=30_000)
        assert len(sent) == 2 and sent[0] == sent[1] and sent[0][1]  # the same key, twice
        assert page.get_attribute("#report-result", "data-need-id") == made[2]
        page.unroute("**/api/v1/needs")
        with open_store(served.db) as st:
            assert st.count_needs() == start + 3
        assert page.evaluate("localStorage.getItem('matcher.outreach.queue')") == "[]"
        p.screenshot(tmp_path, "outreach-replayed")
    finally:
        _delete_needs(served, made)
    # the only console errors are the requests the cut network and the lost answer failed
    unexpected = [e for e in p.errors
                  if "ERR_INTERNET_DISCONNECTED" not in e and "ERR_CONNECTION_RESET" not in e
                  and "ERR_FAILED" not in e]  # fmt: skip
    assert unexpected == []


def test_the_page_speaks_spanish_and_switches(phone, served, tmp_path) -> None:
    p = phone(locale="es-ES")
    p.sign_in()
    page = p.page
    assert page.evaluate("document.documentElement.lang") == "es"
    assert page.inner_text("#near-me") == "Cerca de mí"
    es = _catalog("es")
    chips = page.locator("#chips button.chip").all()
    names = [c.inner_text() for c in chips]
    codes = matcher.default_taxonomy().codes
    assert names == [es["what.all"]] + [es[f"category.{c}"] for c in codes]
    p.results_done(lambda: page.click("#near-me"))
    assert "socio(s) con capacidad libre" in page.inner_text("#summary")
    p.screenshot(tmp_path, "outreach-es")
    page.select_option("#lang", "en")
    page.wait_for_selector("html[lang=en]")
    assert page.inner_text("#near-me") == "Near me"
    assert "partner(s) with free capacity" in page.inner_text("#summary")
    assert page.locator("#chips button.chip").nth(1).inner_text() == "Youth engagement"
    # the choice is remembered on this device
    page.reload()
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert page.inner_text("#near-me") == "Near me"
    assert p.errors == []
