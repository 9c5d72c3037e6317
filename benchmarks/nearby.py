"""Nearby search: in-process query latency at 50k partners, and HTTP load on loopback.

Usage (from the repository root)::

    python benchmarks/nearby.py [--partners 50000] [--queries 20000] [--http] [--seconds 10]
        [--workers 2] [--threads 4] [--pg-url postgresql://...]

The in-process part times ``NearbyIndex.query`` one call at a time (radius 2 km,
limit 20; half of the queries with a category filter) on a seeded synthetic city.
``--http`` also starts ``matcher serve --workers N --threads T`` on a free loopback
port over a fresh store holding the same partners, once on SQLite and once on
PostgreSQL/PostGIS (``--pg-url``, or a throwaway server started like the tests do),
one after the other in the same run, and loads ``GET /api/v1/resources/nearby`` with
``wrk`` (Debian package ``wrk``) at 32 concurrent connections for a bounded time. The
per-key request rate limit is lifted for the run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _stores import store_urls

from matcher.nearby import NearbyIndex
from matcher.store import open_store
from matcher.synthetic import generate_city
from matcher.taxonomy import DEFAULT_CATEGORIES


def in_process(n_partners: int, n_queries: int) -> dict[str, float]:
    city = generate_city(max(10 * n_partners, 1000), n_partners, seed=7)
    index = NearbyIndex.from_frame(city.partners)
    rng = np.random.default_rng(1)
    pts = city.needs.sample(n_queries, replace=True, random_state=3)[["lat", "lon"]].to_numpy()
    cats = [
        None if rng.random() < 0.5 else str(rng.choice(DEFAULT_CATEGORIES))
        for _ in range(n_queries)
    ]
    for (lat, lon), cat in zip(pts[:200], cats[:200], strict=True):  # warm up
        index.query(lat, lon, 2.0, category=cat)
    times = np.empty(n_queries)
    counts = np.empty(n_queries)
    for i, ((lat, lon), cat) in enumerate(zip(pts, cats, strict=True)):
        t = time.perf_counter()
        res = index.query(lat, lon, 2.0, category=cat, limit=20)
        times[i] = time.perf_counter() - t
        counts[i] = len(res)
    return {
        "p50_us": float(np.percentile(times, 50) * 1e6),
        "p99_us": float(np.percentile(times, 99) * 1e6),
        "mean_results": float(counts.mean()),
        "partners": n_partners,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_load(
    n_partners: int, seconds: int, db: str, workers: int, threads: int
) -> dict[str, float]:
    city = generate_city(max(10 * n_partners, 1000), n_partners, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(db)
        store.replace_partners(city.partners, actor="bench")
        _, key = store.create_api_key("outreach")
        store.close()
        port = _free_port()
        with (
            open(Path(tmp) / "server.log", "wb") as log,
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "matcher.cli",
                    "serve",
                    "--db",
                    str(db),
                    "--port",
                    str(port),
                    "--threads",
                    str(threads),
                    "--workers",
                    str(workers),
                    "--quiet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(
                    os.environ,
                    MATCHER_RATE_LIMIT_PER_MINUTE="1000000000",
                    MATCHER_RATE_LIMIT_BURST="1000000000",
                ),
            ) as server,
        ):
            try:
                lat, lon = city.partners[["lat", "lon"]].median()
                url = (
                    f"http://127.0.0.1:{port}/api/v1/resources/nearby?lat={lat:.5f}&lon={lon:.5f}"
                    "&radius_km=2&limit=20"
                )
                ready = 0
                for _ in range(600):  # every worker builds its index on its first query
                    try:
                        req = urllib.request.Request(
                            url, headers={"Authorization": f"Bearer {key}"}
                        )
                        urllib.request.urlopen(req, timeout=5).close()
                        ready += 1
                        if ready >= 8 * workers:
                            break
                    except OSError:
                        time.sleep(0.1)
                out = subprocess.run(
                    [
                        "wrk",
                        "-t2",
                        "-c32",
                        f"-d{seconds}s",
                        "--latency",
                        "-H",
                        f"Authorization: Bearer {key}",
                        url,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            finally:
                server.terminate()
                server.wait(timeout=10)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat_ms = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)  # type: ignore[union-attr]
        lat_ms[pct] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rps,
        "p50_ms": lat_ms["50"],
        "p99_ms": lat_ms["99"],
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "connections": 32.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partners", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--pg-url", default=os.environ.get("MATCHER_TEST_PG_URL"))
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    r = in_process(args.partners, args.queries)
    print("| in-process nearby | partners | p50 µs | p99 µs | mean results |")
    print("|---|---|---|---|---|")
    print(
        f"| NearbyIndex.query (2 km, limit 20) | {r['partners']:,} | {r['p50_us']:.1f} | "
        f"{r['p99_us']:.1f} | {r['mean_results']:.1f} |"
    )
    print(f"target p50 <= 50 µs: {'holds' if r['p50_us'] <= 50 else 'FAILS'}")
    if not args.http:
        return 0
    with tempfile.TemporaryDirectory() as tmp, store_urls(Path(tmp), args.pg_url) as stores:
        results = {
            name: http_load(args.partners, args.seconds, db, args.workers, args.threads)
            for name, db in stores.items()
        }
    print(
        f"\n| HTTP nearby (wrk, loopback, {args.workers} workers x {args.threads} threads) "
        "| store | requests/s | p50 ms | p99 ms | non-2xx | target |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, h in results.items():
        ok = h["requests_per_s"] >= 1000 and h["p99_ms"] <= 20
        print(
            f"| GET /api/v1/resources/nearby, 32 connections | {name} | "
            f"{h['requests_per_s']:.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
            f"{h['non_2xx']:.0f} | {'holds' if ok else 'misses'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
