"""The service's stores side by side: a plan from the store against the same plan from files.

Usage (from the repository root)::

    python benchmarks/stores.py [--needs 100000] [--partners 10000] [--repeat 3]
        [--pg-url postgresql://...]

One seeded synthetic city is written to CSV files and loaded into a SQLite store and a
PostgreSQL/PostGIS store (``--pg-url``, or a throwaway server started like the tests do,
``tests/pgserver.py``). Then, interleaved, ``--repeat`` times each:

* **files**: read the CSV files, plan, build the output files in memory
  (:func:`matcher.output.plan_files`) -- what ``matcher plan`` does, without the disk;
* **sqlite** / **postgresql**: a queued plan job over the store
  (:func:`matcher.jobs.run_plan_job`: read the frames from the store, plan, build every
  artifact: the files, the map payload and the clustering model) and storing them
  (:meth:`Store.plan_done`).

The fastest run of each is reported, with its ratio to **files** (target: at most 1.3x).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _stores import store_urls

import matcher
from matcher.config import MatchConfig
from matcher.jobs import run_plan_job
from matcher.output import plan_files
from matcher.store import open_store
from matcher.synthetic import generate_city


def _from_files(needs: Path, partners: Path, config: MatchConfig) -> float:
    t = time.perf_counter()
    plan = matcher.plan(needs, partners, config=config)
    plan_files(plan)
    return time.perf_counter() - t


def _from_store(where: str, parameters: dict[str, Any]) -> float:
    with open_store(where) as st:
        plan_id = st.create_plan(parameters, actor="bench")
        record = st.claim_plan("bench", plan_id=plan_id)
        assert record is not None
        t = time.perf_counter()
        artifacts = run_plan_job(st, record)
        st.plan_done(plan_id, artifacts.summary, artifacts.files, usage=artifacts.usage)
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--needs", type=int, default=100_000)
    ap.add_argument("--partners", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg-url", default=os.environ.get("MATCHER_TEST_PG_URL"))
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}", file=sys.stderr)
    city = generate_city(args.needs, args.partners, seed=7)
    config = MatchConfig(volunteer_points="grid")
    parameters = config.parameters() | {"taxonomy": None}
    with tempfile.TemporaryDirectory() as tmp, store_urls(Path(tmp), args.pg_url) as urls:
        wheres = {name.lower(): url for name, url in urls.items()}
        needs, partners = Path(tmp, "needs.csv"), Path(tmp, "partners.csv")
        city.needs.drop(columns="geometry", errors="ignore").to_csv(needs, index=False)
        city.partners.drop(columns="geometry", errors="ignore").to_csv(partners, index=False)
        read_needs = matcher.read_needs(needs)
        read_partners = matcher.read_partners(partners)
        for where in wheres.values():
            with open_store(where) as st:
                st.replace_needs(read_needs, actor="bench")
                st.replace_partners(read_partners, actor="bench")
        best: dict[str, float] = {}
        for i in range(args.repeat):
            runs = {"files": lambda: _from_files(needs, partners, config)}
            for name, where in wheres.items():
                runs[name] = lambda where=where: _from_store(where, parameters)
            for name, run in runs.items():
                seconds = run()
                best[name] = min(best.get(name, seconds), seconds)
                print(f"run {i + 1}: {name} {seconds:.2f} s", file=sys.stderr)
    print(f"| plan of {args.needs:,} needs x {args.partners:,} partners | seconds (best of "
          f"{args.repeat}) | ratio to files | target <= 1.3x |")  # fmt: skip
    print("|---|---|---|---|")
    for name, seconds in best.items():
        ratio = seconds / best["files"]
        verdict = "" if name == "files" else ("holds" if ratio <= 1.3 else "misses")
        print(f"| {name} | {seconds:.2f} | {ratio:.2f}x | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
