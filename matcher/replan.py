"""Stable re-planning: locked pairs, the previous plan's pairs and churn."""

from __future__ import annotations

import io
import logging
from collections.abc import Collection
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from ._errors import InputValidationError, Problem
from .limits import read_file

__all__ = ["churn", "exclude_mask", "pair_units", "read_pairs"]

logger = logging.getLogger(__name__)

#: What :func:`read_pairs` reads: a CSV file, a plan directory or a table.
PairsSource: TypeAlias = str | Path | pd.DataFrame


def read_pairs(source: PairsSource, what: str) -> tuple[pd.DataFrame, str]:
    """Read ``cluster_id, partner_id, units`` rows (an assignments file or a plan directory).

    Parameters
    ----------
    source : str, Path or DataFrame
        A CSV file, a plan directory (its ``assignments.csv``) or a table.
    what : str
        ``"lock"``, ``"previous"`` or ``"exclude"``, for messages. Excluded pairs need
        no ``units`` column (one present is ignored).

    Returns
    -------
    (pandas.DataFrame, str)
        The rows (with ``row``: the CSV line number, header = 1) and the file's label.

    Raises
    ------
    InputValidationError
        When the file cannot be read, lacks a column, or has a bad ``units`` value.
    """
    if isinstance(source, pd.DataFrame):
        frame, label, first_row = source.copy(), f"<{what}>", 0
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "assignments.csv"
        label, first_row = str(path), 2
        try:
            frame = pd.read_csv(
                io.BytesIO(read_file(path)), dtype={"cluster_id": str, "partner_id": str}
            )
        except (OSError, ValueError) as exc:
            raise InputValidationError(
                [Problem(label, None, None, None, f"cannot read the {what} pairs: {exc}")]
            ) from None
    needed = ("cluster_id", "partner_id") + (() if what == "exclude" else ("units",))
    problems = [
        Problem(label, None, col, None, f"column missing; the file has {list(frame.columns)}")
        for col in needed
        if col not in frame.columns
    ]
    if problems:
        raise InputValidationError(problems)
    if what == "exclude":  # a pair is excluded whole: its units say nothing
        frame["units"] = 1.0
    units = pd.to_numeric(frame["units"], errors="coerce")
    frame["row"] = np.arange(len(frame)) + first_row
    for i in np.flatnonzero(~(np.isfinite(units) & (units > 0)).to_numpy()):
        problems.append(
            Problem(label, int(frame["row"].iloc[i]), "units", frame["units"].iloc[i],
                    "must be a number > 0")
        )  # fmt: skip
    dup = frame.duplicated(["cluster_id", "partner_id"])
    for i in np.flatnonzero(dup.to_numpy()):
        problems.append(
            Problem(label, int(frame["row"].iloc[i]), "partner_id", frame["partner_id"].iloc[i],
                    f"pair ({frame['cluster_id'].iloc[i]}, {frame['partner_id'].iloc[i]}) "
                    "listed twice")
        )  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    frame["units"] = units
    frame["cluster_id"] = frame["cluster_id"].astype(str)
    frame["partner_id"] = frame["partner_id"].astype(str)
    return frame, label


def pair_units(
    rows: pd.DataFrame,
    label: str,
    pairs: pd.DataFrame,
    cluster_ids: npt.NDArray[np.str_],
    partner_ids: npt.NDArray[np.str_],
    quantum: float,
    *,
    strict: bool,
    known_partners: Collection[str] | None = None,
) -> npt.NDArray[np.int64]:
    """Quanta per eligible pair of ``pairs`` named by ``rows``.

    Parameters
    ----------
    rows, label : pandas.DataFrame, str
        From :func:`read_pairs`.
    pairs : pandas.DataFrame
        The plan's eligible pairs (``cluster``, ``partner`` positions).
    cluster_ids, partner_ids : numpy.ndarray of str
        Ids by position.
    quantum : float
        Units per quantum; units are rounded to it.
    strict : bool
        Locks (True): a row naming an unknown cluster or partner, or a pair that is
        not eligible, is an error. Previous pairs (False): such rows are skipped with
        a log message (the input changed since).
    known_partners : collection of str, optional
        The partner ids that exist (default: ``partner_ids``); a plan solved in regions
        names a partner of another region "not eligible", as a whole plan would.

    Returns
    -------
    numpy.ndarray of int64
        One entry per pair.

    Raises
    ------
    InputValidationError
        ``strict`` and a row does not name an eligible pair.
    """
    out = np.zeros(len(pairs), dtype=np.int64)
    if rows.empty:
        return out
    index = pd.Series(
        np.arange(len(pairs)),
        index=pd.MultiIndex.from_arrays(
            [cluster_ids[pairs["cluster"].to_numpy()], partner_ids[pairs["partner"].to_numpy()]]
        ),
    )
    key = pd.MultiIndex.from_arrays([rows["cluster_id"], rows["partner_id"]])
    pos = index.reindex(key).to_numpy()
    missing = np.isnan(pos)
    if missing.any():
        known_c = set(cluster_ids)
        known_p = set(partner_ids) if known_partners is None else set(known_partners)
        problems = []
        for i in np.flatnonzero(missing):
            c, p, r = rows["cluster_id"].iloc[i], rows["partner_id"].iloc[i], rows["row"].iloc[i]
            if c not in known_c:
                problems.append(Problem(label, int(r), "cluster_id", c,
                                        "no such cluster in this plan (same needs and parameters "
                                        "give the same cluster ids)"))  # fmt: skip
            elif p not in known_p:
                problems.append(Problem(label, int(r), "partner_id", p, "no such partner"))
            else:
                problems.append(Problem(label, int(r), "partner_id", p,
                                        f"not eligible for cluster {c} (category not offered "
                                        "or out of its radius)"))  # fmt: skip
        if strict:
            raise InputValidationError(problems)
        logger.info("%s: %d pair(s) no longer eligible, ignored", label, len(problems))
    ok = ~missing
    q = np.rint(rows["units"].to_numpy(dtype=np.float64)[ok] / quantum).astype(np.int64)
    if strict and (q == 0).any():
        tiny = np.flatnonzero(ok)[q == 0]
        raise InputValidationError(
            [
                Problem(label, int(rows["row"].iloc[i]), "units", rows["units"].iloc[i],
                        f"smaller than the plan's resolution: at least {quantum / 2:g} units")
                for i in tiny
            ]
        )  # fmt: skip
    np.add.at(out, pos[ok].astype(np.int64), q)
    return out


def exclude_mask(
    rows: pd.DataFrame,
    pairs: pd.DataFrame,
    cluster_ids: npt.NDArray[np.str_],
    partner_ids: npt.NDArray[np.str_],
) -> npt.NDArray[np.bool_]:
    """Per candidate pair of ``pairs``: whether a row of ``rows`` excludes it.

    A row naming a pair that is not a candidate (the inputs changed since) excludes
    nothing, so it is no error.

    Examples
    --------
    >>> pairs = pd.DataFrame({"cluster": [0, 0, 1], "partner": [0, 1, 1]})
    >>> rows = pd.DataFrame({"cluster_id": ["c0", "c9"], "partner_id": ["p1", "p1"]})
    >>> exclude_mask(rows, pairs, np.array(["c0", "c1"]), np.array(["p0", "p1"])).tolist()
    [False, True, False]
    """
    if rows.empty or pairs.empty:
        return np.zeros(len(pairs), dtype=bool)
    key = pd.MultiIndex.from_arrays(
        [cluster_ids[pairs["cluster"].to_numpy()], partner_ids[pairs["partner"].to_numpy()]]
    )
    named = pd.MultiIndex.from_arrays(
        [rows["cluster_id"].astype(str), rows["partner_id"].astype(str)]
    )
    return np.asarray(key.isin(named), dtype=bool)


def churn(previous: pd.DataFrame, current: pd.DataFrame) -> dict[str, float | int]:
    """Compare two plans' assignments (``cluster_id, partner_id, units``).

    Returns
    -------
    dict
        ``pairs_kept``, ``pairs_added``, ``pairs_dropped``, ``units_kept`` (units on a
        pair of both plans, up to the smaller amount), ``units_moved`` (the current
        plan's other units) and ``churn`` (units moved / units served now).

    Examples
    --------
    >>> prev = pd.DataFrame({"cluster_id": ["a", "b"], "partner_id": ["x", "y"],
    ...                      "units": [3.0, 2.0]})
    >>> cur = pd.DataFrame({"cluster_id": ["a", "b"], "partner_id": ["x", "z"],
    ...                     "units": [4.0, 2.0]})
    >>> churn(prev, cur)["units_kept"], churn(prev, cur)["pairs_dropped"]
    (3.0, 1)
    """
    p = previous.set_index(["cluster_id", "partner_id"])["units"]
    c = current.set_index(["cluster_id", "partner_id"])["units"]
    both = p.index.intersection(c.index)
    kept = float(np.minimum(p.reindex(both), c.reindex(both)).sum())
    served = float(c.sum())
    return {
        "pairs_kept": int(len(both)),
        "pairs_added": int(len(c.index.difference(p.index))),
        "pairs_dropped": int(len(p.index.difference(c.index))),
        "units_kept": round(kept, 6),
        "units_moved": round(served - kept, 6),
        "churn": round((served - kept) / served, 6) if served > 0 else 0.0,
    }
