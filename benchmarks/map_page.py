"""The planner map page on the sample city: how soon it is interactive, in a real browser.

Usage (from the repository root)::

    python benchmarks/map_page.py [--runs 7] [--out results.md]

Starts ``matcher serve`` on a fresh SQLite store loaded with the bundled sample city
(``data/sample``: 20,000 needs, 1,871 partners, 77 neighborhoods) on a free loopback port,
runs one plan through the API (``POST /api/v1/plans``), then opens ``/`` in Debian's headless
``chromium`` through Playwright, with a planner key already in the tab's ``sessionStorage``,
``--runs`` times (a new browser context each time: nothing cached). Per run:

* **interactive**: from the start of navigation until the page has drawn the plan
  (``body[data-drawn]``: the map's base part is fetched, its layers drawn and its handlers
  bound) and the browser has painted that frame (one ``requestAnimationFrame`` later);
* the page's own performance marks: when the map was requested, parsed and drawn, and when
  the assignment lines (fetched after the first drawing) were in;
* **select**: a real mouse click on a cluster until its panel, its partners and its
  assignment lines are shown;
* **all layers**: switching on every layer the page hides at first (the page's old
  default: every assignment line, partner and unmet outline), side by side with the
  default view's drawing time, for the ratio.

The target of issue #14 is "interactive within 1.5 s of opening on loopback". Base-map
tiles are off (no ``MATCHER_TILE_URL``): the benchmark is offline. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
HIDDEN_AT_FIRST = ("unmet", "assignments", "organizations", "volunteers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, key: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _matcher() -> str:
    exe = Path(sys.executable).with_name("matcher")
    return str(exe) if exe.exists() else "matcher"


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``matcher serve`` on the sample city; return the process, its URL and a key."""
    db = workdir / "store.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHER_")}
    key = subprocess.run(
        [_matcher(), "keys", "create", "--role", "planner", "--db", str(db)],
        check=True, capture_output=True, text=True, env=env, cwd=workdir,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = _free_port()
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 (open for the server's life)
    proc = subprocess.Popen(
        [_matcher(), "serve", "--db", str(db), "--port", str(port), "--sample", str(SAMPLE), "-q"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url, key
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"matcher serve did not start; see {workdir / 'server.log'}")


def run_plan(url: str, key: str) -> str:
    """Run the default plan and wait for it; return its id."""
    plan_id = _call(url + "/api/v1/plans", key, {})["plan_id"]
    while True:
        rec = _call(f"{url}/api/v1/plans/{plan_id}", key)
        if rec["status"] in ("done", "failed"):
            if rec["status"] != "done":
                raise SystemExit(f"the plan failed: {rec.get('error')}")
            return plan_id
        time.sleep(0.3)


def one_run(browser, url: str, key: str, plan_id: str) -> dict[str, float]:
    """Open the page once in a new context; return its timings in milliseconds."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.add_init_script(f"sessionStorage.setItem('matcher.apiKey', {json.dumps(key)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url + "/")
        page.wait_for_selector("body[data-drawn]", timeout=60_000)
        painted = page.evaluate(
            "new Promise(r => requestAnimationFrame(() => setTimeout(() => r(performance.now()))))"
        )
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        if page.evaluate("document.body.dataset.planId") != plan_id:
            raise SystemExit("the page shows another plan than the benchmark's")
        marks = dict(
            page.evaluate("performance.getEntriesByType('mark').map(m => [m.name, m.startTime])")
        )
        # a real click at the centre of the biggest cluster with partners (on the canvas)
        x, y = page.evaluate(
            """() => {
                const m = window.matcherMap, d = m.state.data;
                const ids = Object.keys(d.linesByCluster).sort((a, b) =>
                  d.clustersById[b].properties.demand - d.clustersById[a].properties.demand);
                const p = d.clustersById[ids[0]].properties;
                const pt = m.map.latLngToContainerPoint([p.centroid_lat, p.centroid_lon]);
                const box = document.getElementById("map").getBoundingClientRect();
                return [box.left + pt.x, box.top + pt.y];
            }"""
        )
        t0 = page.evaluate("performance.now()")
        page.mouse.click(x, y)
        page.wait_for_selector("#cluster-panel:not([hidden])")
        page.wait_for_selector("path.mm-sel-outline")
        page.wait_for_selector("path.mm-sel-line")
        selected = page.evaluate(
            "new Promise(r => requestAnimationFrame(() => setTimeout(() => r(performance.now()))))"
        )
        # every layer the page hides at first, in one go
        t1 = page.evaluate("performance.now()")
        page.evaluate(
            """layers => { for (const id of layers) {
                const box = document.querySelector(`input[data-layer="${id}"]`);
                box.checked = true; box.dispatchEvent(new Event('change'));
            } }""",
            list(HIDDEN_AT_FIRST),
        )
        all_on = page.evaluate(
            "new Promise(r => requestAnimationFrame(() => setTimeout(() => r(performance.now()))))"
        )
        if errors:
            raise SystemExit(f"page errors: {errors}")
        return {
            "interactive": painted,
            "map requested": marks["matcher:map-requested"],
            "map parsed": marks["matcher:map-parsed"],
            "layers drawn": marks["matcher:map-ready"],
            "assignment lines in": marks["matcher:lines-ready"],
            "draw (default layers)": marks["matcher:map-ready"] - marks["matcher:map-parsed"],
            "select a cluster": selected - t0,
            "draw (every hidden layer)": all_on - t1,
        }
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: install Debian's 'chromium' (tests/system-deps.sh does)")
    with tempfile.TemporaryDirectory(prefix="matcher-map-bench-") as tmp:
        proc, url, key = start_server(Path(tmp))
        try:
            plan_id = run_plan(url, key)
            with urllib.request.urlopen(
                urllib.request.Request(
                    f"{url}/api/v1/plans/{plan_id}/map",
                    headers={"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"},
                )
            ) as r:
                gz = len(r.read())
            raw = len(json.dumps(_call(f"{url}/api/v1/plans/{plan_id}/map", key)).encode())
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True)
                one_run(browser, url, key, plan_id)  # warm-up: the server's first answers
                runs = [one_run(browser, url, key, plan_id) for _ in range(args.runs)]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = [
        f"Map page on the sample city (plan {plan_id[:8]}; map payload {gz / 1e6:.1f} MB "
        f"gzip, {raw / 1e6:.1f} MB JSON), {args.runs} runs after one warm-up, "
        f"headless Chromium on loopback, {os.cpu_count()} CPUs:",
        "",
        "| measure | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name in runs[0]:
        values = [r[name] for r in runs]
        lines.append(
            f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} |"
        )
    default = statistics.median(r["draw (default layers)"] for r in runs)
    hidden = statistics.median(r["draw (every hidden layer)"] for r in runs)
    interactive = statistics.median(r["interactive"] for r in runs)
    lines += [
        "",
        f"Drawing every layer the page now hides at first would add {hidden / default:.1f}x "
        "the default view's drawing time.",
        f"Target: interactive within 1,500 ms; median {interactive:,.0f} ms.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
