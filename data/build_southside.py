"""Build the South Side street sample: the sample city's needs and partners on real streets.

``data/southside/`` holds two real OpenStreetMap street networks of part of Chicago's
South Side (walk and drive, copied unchanged from the project's shared data; ODbL,
attribution in ``data/README.md``) and the rows of the sample city (``data/sample/``)
that lie on them: every need and partner within :data:`NEAR_M` metres of a node of both
networks (points in the lake or past the networks' edge are left out).

The outputs are byte-identical on every run. Run from the repository root::

    python data/build_southside.py [--streets DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from matcher.network import read_network

logger = logging.getLogger("build_southside")

ROOT = Path(__file__).resolve().parent
#: A row is kept when it is at most this far from a node of both networks (m).
NEAR_M = 300.0
#: The networks, as named in the shared data and in data/southside/.
NETWORKS = {"walk": "southside_walk.gpkg", "drive": "southside_drive.gpkg"}


def build(streets: Path, out: Path) -> dict[str, int]:
    """Copy the networks and write the South Side needs and partners to ``out``.

    Parameters
    ----------
    streets : Path
        The directory with ``southside_walk.gpkg`` and ``southside_drive.gpkg``.
    out : Path
        The output directory (``data/southside``).

    Returns
    -------
    dict
        Rows written per table.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in NETWORKS.values():
        if (streets / name).resolve() != (out / name).resolve():
            shutil.copyfile(streets / name, out / name)
    nets = [read_network(out / name, mode) for mode, name in NETWORKS.items()]
    counts = {}
    for table in ("needs", "partners"):
        frame = pd.read_csv(ROOT / "sample" / f"{table}.csv", dtype=str, keep_default_na=False)
        lat, lon = frame["lat"].astype(float), frame["lon"].astype(float)
        near = np.ones(len(frame), dtype=bool)
        for net in nets:
            near &= net.snap(lat, lon)[1] <= NEAR_M
        frame[near].to_csv(out / f"{table}.csv", index=False, lineterminator="\n")
        counts[table] = int(near.sum())
        logger.info("%s: %d of %d rows", table, near.sum(), len(frame))
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    """Run :func:`build` from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streets", type=Path, default=ROOT / "southside")
    parser.add_argument("--out", type=Path, default=ROOT / "southside")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.streets, args.out)


if __name__ == "__main__":
    main()
