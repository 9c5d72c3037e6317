"""Time matcher.recruit.recruit_sites on synthetic unmet-cluster tables.

Usage::

    python benchmarks/recruit.py [--n 2000] [--k 5] [--radius 2.0] [--capacity 40]
                                 [--time-limit 30] [--seed 1]

One category of ``--n`` unmet clusters in a 30 km x 30 km city around Chicago: 60%
in 12 hot spots (Gaussian, sigma 0.8 km), 40% uniform; unmet units 0.1 .. 25.
``--capacity none`` for the classic (uncapacitated) maximal covering problem.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from matcher.recruit import recruit_sites


def city(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lat0, lon0, side = 41.85, -87.7, 30.0
    hot = rng.uniform(0, side, size=(12, 2))
    n_hot = int(0.6 * n)
    pick = rng.integers(0, 12, n_hot)
    xy = np.vstack(
        [hot[pick] + rng.normal(0, 0.8, (n_hot, 2)), rng.uniform(0, side, (n - n_hot, 2))]
    )
    lat = lat0 + xy[:, 1] / 111.195
    lon = lon0 + xy[:, 0] / (111.195 * np.cos(np.radians(lat0)))
    unmet = np.round(rng.gamma(1.2, 3.0, n).clip(0.1, 25.0), 1)
    return pd.DataFrame(
        {
            "cluster_id": [f"c{i:05d}" for i in range(n)],
            "category": "food_access",
            "centroid_lat": lat,
            "centroid_lon": lon,
            "unmet": unmet,
            "unmet_reason": "no_partner_in_range",
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--radius", type=float, default=2.0)
    ap.add_argument("--capacity", default="40")
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cap = None if args.capacity.lower() == "none" else float(args.capacity)
    clusters = city(args.n, args.seed)
    start = time.perf_counter()
    s = recruit_sites(clusters, args.k, args.radius, cap, time_limit=args.time_limit)
    wall = time.perf_counter() - start
    print(s.solves.to_string(index=False))
    print(s.sites.drop(columns=["cluster_ids"]).to_string(index=False))
    print(f"wall {wall:.2f} s")


if __name__ == "__main__":
    main()
