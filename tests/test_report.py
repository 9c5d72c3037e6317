"""The HTML report (``matcher plan --report``) and the CLI's progress display and log levels."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from matcher.config import MatchConfig
from matcher.pipeline import plan
from matcher.progress import PLAN_STAGES, StageProgress, progress_enabled
from matcher.report import (
    REPORT_NAME,
    _floors_section,
    _Frame,
    _hood_category_gaps,
    _neighborhood_section,
    _partner_section,
    render_report,
    report_html,
)
from matcher.synthetic import generate_city, write_city

from .conftest import TINY_NEEDS, TINY_PARTNERS, plan_cli, write_input
from .oracle import gc_km

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '<script>alert("x")</script> & "Sons" <u>co</u> <img src=x onerror=alert(1)>'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Four maps (clusters, partners, assignments, unmet), the neighborhood map, the chart.
IMAGES_WITH_HOODS = 7  # four maps, coverage and gap maps, the category chart


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class ReportParser(HTMLParser):
    """Collect images, tables (header and body rows of cells' text), links and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self.urls: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self._table: str | None = None
        self._part = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        for key in ("src", "href", "action", "data"):
            if key in a:
                self.urls.append(a[key])
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = a.get("id", f"anonymous-{len(self.tables)}")
            self.tables[self._table] = {"thead": [], "tbody": [], "tfoot": []}
        elif tag in ("thead", "tbody", "tfoot"):
            self._part = tag
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table][self._part or "tbody"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table, self._part = None, ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    return parser


def check_png(src: str) -> bytes:
    """Decode a data: URI and check it is a whole, valid PNG (chunk CRCs included)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    png = base64.b64decode(src[len(prefix) :], validate=True)
    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 5_000, len(png)
    pos, kinds = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + data) & 0xFFFFFFFF == crc, kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    assert b"tEXt" not in kinds or b"Software" not in png  # no version stamp
    return png


def body_column(table: dict[str, list[list[str]]], i: int) -> list[str]:
    return [row[i] for row in table["tbody"]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic city whose partners all have hostile names."""
    base = tmp_path_factory.mktemp("city")
    paths = write_city(generate_city(600, 60, seed=5), base)
    partners = pd.read_csv(paths["partners"], dtype=str, keep_default_na=False)
    partners["name"] = [f"{HOSTILE} #{i}" for i in range(len(partners))]
    partners.to_csv(paths["partners"], index=False)
    return paths


@pytest.fixture(scope="module")
def city_run(city: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("run")
    out = base / "out"
    result = plan_cli(
        city["needs"],
        city["partners"],
        out,
        base / "models",
        "--neighborhoods",
        str(city["neighborhoods"]),
        "--report",
    )
    text = (out / REPORT_NAME).read_text(encoding="utf-8") if (out / REPORT_NAME).exists() else ""
    return {"result": result, "out": out, "text": text}


@pytest.fixture(scope="module")
def full_report(city: dict[str, Path]) -> tuple[Any, str]:
    """The city's plan with coverage floors and recruit sites, and its report."""
    p = plan(
        city["needs"],
        city["partners"],
        neighborhoods=city["neighborhoods"],
        config=MatchConfig(min_coverage=0.5),
    ).with_recruit(2, radius_km=2.0)
    return p, report_html(p)


# ---------------------------------------------------------------------------------------
# the report written by `matcher plan --report`
# ---------------------------------------------------------------------------------------


def test_report_is_written_with_the_plan(city_run: dict[str, Any]) -> None:
    result, out = city_run["result"], city_run["out"]
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / REPORT_NAME).is_file()
    assert REPORT_NAME in result.stdout
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    assert city_run["text"].startswith("<!DOCTYPE html>")
    mode = (out / REPORT_NAME).stat().st_mode
    assert mode == (out / "summary.json").stat().st_mode, oct(mode)  # not a 0600 temp file


def test_report_images_are_embedded_pngs(city_run: dict[str, Any]) -> None:
    doc = parse(city_run["text"])
    assert len(doc.images) == IMAGES_WITH_HOODS
    for img in doc.images:
        png = check_png(img["src"])
        width, height = struct.unpack(">II", png[16:24])
        assert (img["width"], img["height"]) == (str(width), str(height))
        assert width >= 600 and height >= 300
        assert img.get("alt"), "every image has a text alternative"
    # different pictures, not one image six times
    assert len({img["src"] for img in doc.images}) == IMAGES_WITH_HOODS


def test_report_is_self_contained(city_run: dict[str, Any]) -> None:
    text = city_run["text"]
    doc = parse(text)
    assert "http://" not in text and "https://" not in text
    assert "//" not in "".join(u for u in doc.urls if not u.startswith("data:"))
    for url in doc.urls:
        assert url.startswith(("data:image/png;base64,", "#")), url[:60]
    assert not {"script", "link", "iframe", "object", "embed"} & set(doc.tags)
    assert "@import" not in text and "url(" not in text
    assert "@media print" in text


def test_report_tables_match_the_plan_metrics(city_run: dict[str, Any]) -> None:
    out = city_run["out"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    metrics = summary["metrics"]
    tables = parse(city_run["text"]).tables
    expected = {
        "table-summary",
        "table-categories",
        "table-neighborhoods",
        "table-gap-clusters",
        "table-gap-neighborhoods",
        "table-unmet-reasons",
        "table-partner-kinds",
        "table-partners",
        "table-solver",
        "table-parameters",
        "table-inputs",
    }
    assert expected <= set(tables), sorted(set(tables))

    cats = tables["table-categories"]
    by_cat = metrics["units_by_category"]
    assert body_column(cats, 0) == sorted(by_cat)
    for row in cats["tbody"]:
        m = by_cat[row[0]]
        assert number(row[1]) == pytest.approx(m["demand"], abs=0.05)
        assert number(row[2]) == pytest.approx(m["served"], abs=0.05)
        assert number(row[3]) == pytest.approx(m["unmet"], abs=0.05)
        assert number(row[4]) == pytest.approx(100 * m["coverage"], abs=0.05)
    assert number(cats["tfoot"][0][1]) == pytest.approx(metrics["units"]["demand"], abs=0.05)

    hoods = tables["table-neighborhoods"]
    cov = metrics["coverage_by_neighborhood"]
    assert len(cov) > 1
    assert sorted(body_column(hoods, 0)) == sorted(cov)
    shares = [number(c) for c in body_column(hoods, len(hoods["thead"][0]) - 1)]
    assert shares == sorted(shares), "lowest coverage first"

    unmet = pd.read_csv(out / "unmet.csv")
    gaps = tables["table-gap-clusters"]
    assert len(gaps["tbody"]) == min(20, len(unmet)) > 0
    top = unmet.sort_values(["units", "cluster_id"], ascending=[False, True]).head(20)
    assert body_column(gaps, 0) == top["cluster_id"].tolist()
    short = [k for k, v in cov.items() if v["unmet"] > 0]
    assert len(tables["table-gap-neighborhoods"]["tbody"]) == min(20, len(short))
    reasons = dict(tables["table-unmet-reasons"]["tbody"])
    assert {k.replace(" ", "_") for k in reasons} == set(metrics["unmet_by_reason"])

    inputs = {k: v for k, v in tables["table-inputs"]["tbody"]}
    assert inputs == summary["input_hashes"]
    solver = dict(tables["table-solver"]["tbody"])
    assert solver["status"] == "optimal"
    assert dict(tables["table-summary"]["tbody"])["status"] == "optimal"


def test_report_escapes_user_text(city_run: dict[str, Any]) -> None:
    text = city_run["text"]
    assert "<script" not in text.lower()
    assert "<u>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;" in text
    partners = parse(text).tables["table-partners"]
    names = body_column(partners, 1)
    assert names and all(n.startswith(HOSTILE) for n in names)


def test_report_failure_leaves_no_partial_output(
    tmp_path: Path,
    write: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matcher.report

    def broken(*args: Any, **kwargs: Any) -> str:
        raise OSError("disk on fire")

    monkeypatch.setattr(matcher.report, "report_html", broken)
    needs = write(tmp_path, "needs.csv", TINY_NEEDS)
    partners = write(tmp_path, "partners.csv", TINY_PARTNERS)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--report")
    assert result.exit_code == 1
    assert "disk on fire" in result.stderr
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------------------
# the library: determinism and edge cases
# ---------------------------------------------------------------------------------------


def tiny_plan(tmp_path: Path, needs: str = TINY_NEEDS, partners: str = TINY_PARTNERS) -> Any:
    return plan(
        write_input(tmp_path, "needs.csv", needs), write_input(tmp_path, "partners.csv", partners)
    )


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """The tiny plan (fully served, no neighborhood polygons) and its report."""
    p = tiny_plan(tmp_path_factory.mktemp("tiny"))
    return p, report_html(p)


def test_report_is_deterministic_and_render_report_writes_it(
    tmp_path: Path, tiny_report: tuple[Any, str]
) -> None:
    p, first = tiny_report
    path = render_report(p, tmp_path)
    assert path == tmp_path / REPORT_NAME
    assert path.read_text(encoding="utf-8") == first  # same plan, same bytes
    assert not [f.name for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_report_of_a_fully_served_plan_without_neighborhoods(
    tiny_report: tuple[Any, str],
) -> None:
    p, text = tiny_report
    assert p.metrics["units"]["unmet"] == 0
    doc = parse(text)
    assert len(doc.images) == IMAGES_WITH_HOODS - 2  # no neighborhood coverage or gap map
    for img in doc.images:
        check_png(img["src"])
    assert "table-gap-clusters" not in doc.tables
    assert "Every cluster is fully served." in "".join(doc.text)
    assert len(doc.tables["table-categories"]["tbody"]) == 2


def test_report_of_a_plan_without_assignments(tmp_path: Path) -> None:
    far = TINY_PARTNERS.replace("41.8810,-87.6300", "45.0,-93.0").replace(
        "41.9510,-87.6500", "45.1,-93.1"
    )
    p = tiny_plan(tmp_path, partners=far)
    assert len(p.assignments) == 0
    doc = parse(report_html(p))
    assert len(doc.images) == IMAGES_WITH_HOODS - 2
    assert len(doc.tables["table-gap-clusters"]["tbody"]) == len(p.unmet) == 3
    assert "table-partners" not in doc.tables


def test_report_across_the_antimeridian(tmp_path: Path) -> None:
    needs = (
        "need_id,category,lat,lon,demand,severity\n"
        "n1,food_access,-17.70,179.99,4,3\n"
        "n2,food_access,-17.70,-179.99,3,2\n"
    )
    partners = (
        "partner_id,name,kind,lat,lon,categories,capacity,radius_km\n"
        "p1,Fiji Food,organization,-17.70,179.999,food_access,10,5\n"
    )
    p = tiny_plan(tmp_path, needs, partners)
    # both needs (2.1 km apart across 180 degrees) are served by the one partner
    a = p.assignments.set_index("cluster_id")
    assert len(p.clusters) == 2 and len(p.unmet) == 0
    assert sorted(a["units"]) == [3.0, 4.0] and set(a["partner_id"]) == {"p1"}
    cl = p.clusters.set_index("cluster_id")
    for cid, row in a.iterrows():
        km = gc_km(-17.70, 179.999, cl.loc[cid, "centroid_lat"], cl.loc[cid, "centroid_lon"])
        assert km == pytest.approx(row["distance_km"], abs=1e-6) and km < 5
    text = report_html(p)
    doc = parse(text)
    assert len(doc.images) == IMAGES_WITH_HOODS - 2
    for img in doc.images:
        check_png(img["src"])
    assert "Every cluster is fully served." in "".join(doc.text)
    cats = doc.tables["table-categories"]["tbody"]
    assert [r[:5] for r in cats] == [["food_access", "7", "7", "0", "100%"]]
    partner = doc.tables["table-partners"]["tbody"]
    assert [r[0] for r in partner] == ["p1"] and partner[0][4:7] == ["2", "10", "7"]
    # the maps are drawn around 180 degrees (a few km wide), not across the whole world:
    # longitudes are unwrapped to 0..360, where both needs and the partner are neighbours
    frame = _Frame(p)
    assert frame.wrap
    x = frame.x(np.array([179.99, -179.99, 179.999]))
    assert x.tolist() == pytest.approx([179.99, 180.01, 179.999])
    assert frame.xlim[0] < x.min() and x.max() < frame.xlim[1]
    assert frame.xlim[1] - frame.xlim[0] < 0.1, frame.xlim
    assert frame.ylim[0] < -17.70 < frame.ylim[1] and frame.ylim[1] - frame.ylim[0] < 0.1


def test_report_renders_extra_tables_when_the_plan_has_them(
    tiny_report: tuple[Any, str],
) -> None:
    p = tiny_report[0]

    class WithExtras:
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.recruit = pd.DataFrame({"site": ["<i>north</i>"], "units": [2.5]})
            self.churn = {"pairs_kept": 3, "units_moved": 1.5}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    text = report_html(WithExtras(p))  # type: ignore[arg-type]
    doc = parse(text)
    assert doc.tables["table-recruit"]["thead"] == [["site", "units"]]
    assert doc.tables["table-recruit"]["tbody"] == [["<i>north</i>", "2.5"]]
    assert dict(doc.tables["table-churn"]["tbody"]) == {"pairs kept": "3", "units moved": "1.5"}
    assert "<i>" not in text
    assert "table-floors" not in doc.tables


def test_report_shows_gaps_by_neighborhood_and_category(city_run: dict[str, Any]) -> None:
    table = parse(city_run["text"]).tables["table-gap-hood-categories"]
    rows = table["tbody"]
    assert 0 < len(rows) <= 20
    unmet_col = table["thead"][0].index("unmet")
    unmet = [number(r[unmet_col]) for r in rows]
    assert unmet == sorted(unmet, reverse=True) and unmet[-1] > 0


def test_report_shows_coverage_floors(city: dict[str, Path]) -> None:
    from matcher.config import MatchConfig

    p = plan(
        city["needs"],
        city["partners"],
        neighborhoods=city["neighborhoods"],
        config=MatchConfig(min_coverage=0.9),
    )
    assert p.floors is not None and len(p.floors)
    doc = parse(report_html(p))
    floors = doc.tables["table-floors"]
    assert len(floors["tbody"]) == len(p.floors)
    met = floors["thead"][0].index("met")
    flags = [r[met] for r in floors["tbody"]]
    assert flags == sorted(flags), "unmet floors first"
    assert flags.count("yes") == int(p.floors["floor_met"].sum())
    summary = dict(doc.tables["table-summary"]["tbody"])
    assert (
        summary["coverage floors met"] == f"{int(p.floors['floor_met'].sum())} of {len(p.floors)}"
    )


# ---------------------------------------------------------------------------------------
# progress and log levels
# ---------------------------------------------------------------------------------------

BAR_MARKS = ("%|", "\r")


def test_progress_handler_follows_stage_records() -> None:
    buf = io.StringIO()
    log = logging.getLogger("matcher.plan")
    root = logging.getLogger("matcher")
    root.setLevel(logging.INFO)
    stages = [*PLAN_STAGES, "write"]
    with StageProgress(stages, enabled=True, file=buf, desc="plan") as progress:
        for name in PLAN_STAGES:
            log.info("stage %-11s %.2f s", name, 0.01)
        log.info("stage %-11s %.2f s", "extra", 0.01)  # an unannounced stage adds a step
        log.info("unrelated message")
        assert progress.bar.n == len(PLAN_STAGES) + 1
        assert progress.bar.total == len(stages) + 1
        with progress.stage("write"):
            pass
        assert progress.bar.n == progress.bar.total
    assert progress.done_stages == [*PLAN_STAGES, "extra", "write"]
    assert progress.bar is None
    assert progress not in root.handlers
    drawn = buf.getvalue()
    assert "plan: cluster" in drawn and "plan: done" in drawn and "%|" in drawn


def test_progress_disabled_writes_nothing() -> None:
    buf = io.StringIO()
    logging.getLogger("matcher").setLevel(logging.INFO)
    with StageProgress(PLAN_STAGES, enabled=False, file=buf) as progress:
        logging.getLogger("matcher.plan").info("stage %-11s %.2f s", "read", 0.1)
    assert progress.done_stages == ["read"]
    assert buf.getvalue() == ""


def test_progress_enabled_only_on_a_terminal_without_quiet() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_enabled(False, Tty())
    assert not progress_enabled(True, Tty())
    assert not progress_enabled(False, io.StringIO())


def test_cli_without_a_terminal_shows_no_bar(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "models", "--report")
    assert result.exit_code == 0, result.output
    assert "stage cluster" in result.stderr and "stage report" in result.stderr
    assert not any(mark in result.stderr for mark in BAR_MARKS), result.stderr
    assert "DEBUG" not in result.stderr


def test_cli_verbose_shows_debug_logs(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    for flag in ("--verbose", "-v"):
        result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "models", flag)
        assert result.exit_code == 0, result.output
        assert "DEBUG matcher." in result.stderr
        assert "INFO matcher.plan: stage read" in result.stderr


def test_cli_quiet_shows_warnings_only(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "models", "-q", "--report")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "out" / REPORT_NAME).is_file()


def run_on_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m matcher.cli`` with stderr on a pseudo-terminal; return code, out, err."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "matcher.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=120), out, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pseudo-terminal")
def test_cli_on_a_terminal_shows_a_bar_unless_quiet(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    base = ["plan", "--needs", str(needs), "--partners", str(partners)]
    base += ["--models-dir", str(tmp_path / "models")]
    code, out, err = run_on_terminal([*base, "--out", str(tmp_path / "a")], tmp_path)
    assert code == 0, err
    assert "plan: read" in err and "plan: done" in err and "%|" in err
    assert "stage solve" in err  # log lines still shown, around the bar
    assert "%|" not in out and "served" in out
    code, out, err = run_on_terminal([*base, "--out", str(tmp_path / "b"), "--quiet"], tmp_path)
    assert code == 0, err
    assert err == "" and out == ""


def test_report_maps_recruit_sites(tmp_path: Path, tiny_report: tuple[Any, str]) -> None:
    # every partner is far away: all 9 units are unmet, so recruiting has sites to suggest
    far = TINY_PARTNERS.replace("41.8810,-87.6300", "45.0,-93.0").replace(
        "41.9510,-87.6500", "45.1,-93.1"
    )
    base = tiny_plan(tmp_path, partners=far)
    assert base.metrics["units"]["unmet"] == 9
    p = base.with_recruit(2, radius_km=2.0, capacity=10)
    sites = p.recruit.sites
    # one site per category covers all of it (the two food needs are 70 m apart)
    assert len(sites) == 2
    assert sites["category"].tolist() == ["food_access", "youth_engagement"]
    assert sites["covered_units"].tolist() == [7.0, 2.0]
    doc = parse(report_html(p))
    alts = [img.get("alt", "") for img in doc.images]
    assert len(doc.images) == len(parse(report_html(base)).images) + 1
    assert sum("recruit" in a.lower() for a in alts) == 1
    table = doc.tables["table-recruit"]
    head = table["thead"][0]
    # people's labels; the radius and capacity asked for are said once, in the caption
    assert head == ["category", "rank", "site (lat, lon)", "site cluster",
                    "unmet units served", "clusters served", "unmet units in range"]  # fmt: skip
    assert "within 2 km, capacity 10." in "".join(doc.text)
    rows = table["tbody"]
    assert len(rows) == len(sites) == 2
    for row, site in zip(rows, sites.itertuples(index=False), strict=True):
        cell = dict(zip(head, row, strict=True))
        assert cell["category"] == site.category and cell["rank"] == str(site.rank)
        assert cell["site cluster"] == site.site_cluster_id
        assert number(cell["unmet units served"]) == pytest.approx(site.covered_units)
        lat, lon = map(float, cell["site (lat, lon)"].split(", "))
        assert (lat, lon) == pytest.approx((site.lat, site.lon), abs=1e-4)
    # without unmet demand there is nothing to recruit for: an empty table, a map saying so
    full = tiny_report[0].with_recruit(2, radius_km=2.0, capacity=10)
    assert len(full.recruit.sites) == 0
    assert not parse(report_html(full)).tables.get("table-recruit", {}).get("tbody")


# ---------------------------------------------------------------------------------------
# numbers, labels, order and layout for people
# ---------------------------------------------------------------------------------------

#: A cell that is one number (a share with %).
NUMBER = re.compile(r"-?[0-9][0-9,]*(\.[0-9]+)?%?")


def test_report_numbers_are_formatted_for_people(full_report: tuple[Any, str]) -> None:
    p, text = full_report
    tables = parse(text).tables
    assert {"table-floors", "table-recruit"} <= set(tables)
    cells = [
        cell
        for tid, table in tables.items()
        if tid != "table-inputs"  # hashes
        for part in ("tbody", "tfoot")
        for row in table[part]
        for cell in row
    ]
    numbers = [c for c in cells if NUMBER.fullmatch(c)]
    assert len(numbers) > 300
    for cell in cells:
        assert not re.search(r"[0-9]\.0\b", cell), cell  # "19,736", never "19,736.0"
    for n in numbers:
        assert not re.search(r"\.[0-9]*0%?$", n), n  # no trailing zero decimals
        assert re.fullmatch(r"-?[0-9]{1,3}(,[0-9]{3})*(\.[0-9]+)?%?", n), n  # 1,064
        if n.endswith("%"):
            assert len(n[:-1].partition(".")[2]) <= 1, n  # "21.1%", "85%"
    assert any("," in n for n in numbers)
    # the headline and the cards say the same numbers the same way
    served, demand = (_people(p.metrics["units"][k]) for k in ("served", "demand"))
    assert f"Served {served} of {demand} units" in text
    assert f'units demanded<b>{demand}</b>' in text
    summary = dict(tables["table-summary"]["tbody"])
    for key in ("distance per unit served, mean", "distance per unit served, p90"):
        assert re.fullmatch(r"[0-9,]+\.[0-9]{2} km", summary[key]), summary[key]


def _people(units: float) -> str:
    """Units as people write them: "19,736", "1,234.5"."""
    return f"{units:,.1f}".removesuffix(".0")


def test_report_tables_have_labels_for_people(full_report: tuple[Any, str]) -> None:
    tables = parse(full_report[1]).tables
    for tid, table in tables.items():
        for header in (h for row in table["thead"] for h in row):
            assert "_" not in header, (tid, header)  # "site cluster", not site_cluster_id
    for tid in ("table-summary", "table-solver"):
        for name in body_column(tables[tid], 0):
            assert "_" not in name, (tid, name)
    head = tables["table-recruit"]["thead"][0]
    assert "unmet units served" in head and "covered_units" not in head


def test_report_tables_sort_ids_as_people_do() -> None:
    from types import SimpleNamespace

    ids = ["10", "x2", "9", "1", "x10"]
    people = ["1", "9", "10", "x10", "x2"]  # whole numbers by value, then text
    same = {"demand": 4.0, "served": 4.0, "unmet": 0.0, "coverage": 1.0}
    stub = SimpleNamespace(
        metrics={"coverage_by_neighborhood": {i: same for i in ids}},
        neighborhoods=None,
        partners=pd.DataFrame(
            {"partner_id": ids, "name": "n", "kind": "organization",
             "categories": "food_access", "capacity": 5.0, "used": 5.0}  # fmt: skip
        ),
        assignment_table=pd.DataFrame({"partner_id": ids, "units": 5.0}),
        floors=pd.DataFrame({"neighborhood_id": ids, "floor_met": True, "shortfall": 0.0}),
        gap_table=pd.DataFrame({"neighborhood": ids, "category": "food_access", "unmet": 2.0}),
    )
    for html, table in (
        (_neighborhood_section(stub), "table-neighborhoods"),  # type: ignore[arg-type]
        (_partner_section(stub), "table-partners"),  # type: ignore[arg-type]
        (_floors_section(stub), "table-floors"),  # type: ignore[arg-type]
        (_hood_category_gaps(stub), "table-gap-hood-categories"),  # type: ignore[arg-type]
    ):
        assert body_column(parse(html).tables[table], 0) == people, table


def test_report_fits_a_printed_page_and_scrolls_on_a_narrow_screen(
    full_report: tuple[Any, str], tmp_path: Path
) -> None:
    text = full_report[1]
    css = text[text.index("<style>") : text.index("</style>")]
    printed = css[css.index("@media print") :]
    for rule in ("table-layout", "overflow-wrap: anywhere", "font-size: 7.5pt"):
        assert rule in printed, rule
    assert "size: A4" not in css  # the printer's paper: A4 or Letter
    assert ".scroll { overflow-x: auto" in css
    assert text.count('<div class="scroll"><table') == text.count("<table") > 10
    # in a browser: a phone's width scrolls tables in their box, not the page; printed on
    # A4 and Letter (less 14 mm margins), no table is wider than the page
    from .test_webmap import _chromium

    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / REPORT_NAME
    page_file.write_text(text, encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 700})
            page.goto(page_file.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            boxes = page.evaluate(
                "[...document.querySelectorAll('.scroll')]"
                ".filter(d => d.scrollWidth > d.clientWidth).length"
            )
            assert boxes > 0  # some tables are wider than a phone: they scroll
            page.emulate_media(media="print")
            for paper_mm in (210, 215.9):  # A4, Letter
                width = round((paper_mm - 28) / 25.4 * 96)
                page.set_viewport_size({"width": width, "height": 1000})
                wide = page.evaluate(
                    "[...document.querySelectorAll('table')].filter(t => "
                    "t.getBoundingClientRect().width > document.body.clientWidth + 0.5)"
                    ".map(t => t.id)"
                )
                assert wide == [], (paper_mm, wide)
                assert page.evaluate("document.documentElement.scrollWidth") <= width
        finally:
            browser.close()
