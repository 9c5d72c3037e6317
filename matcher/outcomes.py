"""What was delivered and what became of the needs: deliveries, need outcomes, feedback.

* A **delivery** records the units a partnership delivered over one period (a start and an
  end date, at most :data:`MAX_PERIOD_DAYS` days, not in the future, not before the offer).
  The partner records its own (a ``partner`` key), or a planner or an admin does; only an
  active or completed partnership delivers. One record per partnership and period start.
* A need's **outcome**: its status (``open`` -> ``in_progress`` -> ``resolved`` |
  ``not_resolved``; reopening is allowed) with the date it holds from, and, once resolved,
  optional resident feedback (a rating 1-5 and a comment of at most 500 characters),
  which planners and admins see and nobody else. Outcomes are also imported in batch from
  CSV (:func:`read_outcomes`): ``need_id, status, date[, rating, comment]``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import limits
from ._errors import InputValidationError, Problem
from .limits import MAX_ID_CHARS, MAX_UNITS

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "DELIVERY_COLUMNS",
    "read_deliveries",
    "DELIVERING",
    "MAX_OUTCOME_ROWS",
    "MAX_PERIOD_DAYS",
    "NEED_STATUSES",
    "OUTCOME_COLUMNS",
    "import_outcomes",
    "read_outcomes",
    "record_delivery",
    "set_outcome",
]

#: A need's statuses.
NEED_STATUSES: tuple[str, ...] = ("open", "in_progress", "resolved", "not_resolved")
#: Partnership states that deliver.
DELIVERING: tuple[str, ...] = ("active", "completed")
#: The longest delivery period, in days.
MAX_PERIOD_DAYS = 366
#: The columns of an outcomes CSV (the first three required).
OUTCOME_COLUMNS: tuple[str, ...] = ("need_id", "status", "date", "rating", "comment")
#: Most rows of one outcomes import.
MAX_OUTCOME_ROWS = 1_000_000
#: The columns read from a deliveries file (others, e.g. ``delivery_id``, are ignored).
DELIVERY_COLUMNS: tuple[str, ...] = ("partnership_id", "period_start", "period_end", "units")


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Characters no free text may hold (C0 controls but tab and line breaks, DEL).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _date(value: Any, where: str, row: int | None, field: str) -> _dt.date | Problem:
    """Parse an ISO date (``YYYY-MM-DD``), or return the problem."""
    text = "" if value is None else str(value)
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return _dt.date.fromisoformat(text)
    except ValueError:
        return Problem(where, row, field, text[:40], "must be a date as YYYY-MM-DD")


def text_problem(text: str) -> str | None:
    """Return why a free text (a comment, a reason) cannot be stored, or None.

    The length rule of every free text (:func:`matcher.limits.text_problem`), and no
    control characters (a NUL is refused by PostgreSQL).
    """
    too_long = limits.text_problem(text)
    if too_long is not None:
        return too_long
    if _CONTROL.search(text):
        return "must not hold control characters"
    return None


def _today() -> _dt.date:
    return _dt.datetime.now(_dt.UTC).date()


def check_delivery(
    partnership: Mapping[str, Any], period_start: Any, period_end: Any, units: Any
) -> tuple[str, str, float]:
    """Return a delivery's period and units, checked against its partnership.

    Raises
    ------
    InputValidationError
        A date that is not ``YYYY-MM-DD``, a period that ends before it starts, is longer
        than :data:`MAX_PERIOD_DAYS`, ends in the future or starts before the offer;
        units that are not a number from 0 to :data:`~matcher.limits.MAX_UNITS`.
    """
    where = f"partnership {partnership['partnership_id']} delivery"
    start = _date(period_start, where, None, "period_start")
    end = _date(period_end, where, None, "period_end")
    problems = [p for p in (start, end) if isinstance(p, Problem)]
    ok = isinstance(units, int | float) and not isinstance(units, bool)
    if not (ok and math.isfinite(units) and 0 <= units <= MAX_UNITS):
        problems.append(Problem(where, None, "units", units, f"must be a number from 0 to "
                                f"{MAX_UNITS:,.0f}"))  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    assert isinstance(start, _dt.date) and isinstance(end, _dt.date)
    offered = _dt.date.fromisoformat(str(partnership["offered_at"])[:10])
    if end < start:
        problems.append(Problem(where, None, "period_end", end.isoformat(),
                                f"must not be before period_start ({start})"))  # fmt: skip
    elif (end - start).days + 1 > MAX_PERIOD_DAYS:
        problems.append(Problem(where, None, "period_end", end.isoformat(),
                                f"a period is at most {MAX_PERIOD_DAYS} days"))  # fmt: skip
    if end > _today():
        problems.append(Problem(where, None, "period_end", end.isoformat(),
                                "must not be in the future"))  # fmt: skip
    if start < offered:
        problems.append(Problem(where, None, "period_start", start.isoformat(),
                                f"must not be before the offer ({offered})"))  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    return start.isoformat(), end.isoformat(), float(units)


def record_delivery(
    store: Store,
    partnership_id: str,
    period_start: Any,
    period_end: Any,
    units: Any,
    actor: str,
    *,
    role: str,
    partner_id: str | None = None,
) -> dict[str, Any]:
    """Record the units a partnership delivered over a period; return the delivery.

    Raises
    ------
    NotFoundError
        No such partnership (or, for a partner key, another partner's).
    InputValidationError
        See :func:`check_delivery`.
    PartnershipStateError
        The partnership is not active or completed.
    AlreadyExistsError
        A delivery of this partnership for this period start exists.
    """
    from .partnerships import PartnershipStateError
    from .store import NotFoundError

    with store.transaction():
        ps = store.get_partnership(partnership_id)
        if ps is None or (role == "partner" and ps["partner_id"] != partner_id):
            raise NotFoundError("partnership", partnership_id)
        if ps["state"] not in DELIVERING:
            raise PartnershipStateError(
                f"partnership {partnership_id} is {ps['state']}: only an active or completed "
                "partnership records deliveries"
            )
        start, end, amount = check_delivery(ps, period_start, period_end, units)
        return store.create_delivery(
            {
                "delivery_id": "d-" + uuid.uuid4().hex[:20],
                "partnership_id": partnership_id,
                "partner_id": ps["partner_id"],
                "period_start": start,
                "period_end": end,
                "units": amount,
            },
            actor,
        )


def check_outcome(
    record: Mapping[str, Any], where: str, row: int | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """Return a need outcome (``status, date, rating, comment``) and the problems found."""
    problems: list[Problem] = []
    status = str(record.get("status") or "")
    if status not in NEED_STATUSES:
        problems.append(Problem(where, row, "status", status[:40],
                                f"must be one of {', '.join(NEED_STATUSES)}"))  # fmt: skip
    day = _date(record.get("date"), where, row, "date")
    if isinstance(day, Problem):
        problems.append(day)
    elif day > _today():
        problems.append(Problem(where, row, "date", day.isoformat(), "must not be in the future"))
    rating = record.get("rating")
    if rating in ("", None) or (isinstance(rating, float) and math.isnan(rating)):
        rating = None
    else:
        try:
            number = float(rating)
            if not (number.is_integer() and 1 <= number <= 5) or isinstance(rating, bool):
                raise ValueError
            rating = int(number)
        except (TypeError, ValueError):
            problems.append(Problem(where, row, "rating", str(rating)[:40],
                                    "must be a whole number from 1 to 5, or empty"))  # fmt: skip
            rating = None
    comment = "" if record.get("comment") is None else str(record.get("comment"))
    why = text_problem(comment)
    if why is not None:
        problems.append(Problem(where, row, "comment", f"{len(comment)} characters", why))
    if (rating is not None or comment) and status != "resolved":
        problems.append(Problem(where, row, "rating" if rating is not None else "comment",
                                status[:40], "feedback is given on a resolved need only"))
    out = {
        "status": status,
        "date": day.isoformat() if isinstance(day, _dt.date) else "",
        "rating": rating,
        "comment": comment,
    }
    return out, problems


def set_outcome(
    store: Store,
    need_id: str,
    record: Mapping[str, Any],
    actor: str,
    *,
    expected_version: int | None,
) -> dict[str, Any]:
    """Set a need's outcome; return it.

    ``expected_version`` is the version read (None: the need has no outcome yet).

    Raises
    ------
    NotFoundError
        No such need.
    InputValidationError
        See :func:`check_outcome`.
    VersionConflictError
        The outcome changed since it was read (or exists when None was expected).
    """
    from .store import NotFoundError

    outcome, problems = check_outcome(record, f"need {need_id} outcome")
    if problems:
        raise InputValidationError(problems)
    with store.transaction():
        if store.get_need(need_id) is None:
            raise NotFoundError("need", need_id)
        return store.put_outcome(need_id, outcome, expected_version, actor)


def read_outcomes(content: bytes, label: str) -> pd.DataFrame:
    """Read and check an outcomes CSV (``need_id, status, date[, rating, comment]``).

    Returns
    -------
    pandas.DataFrame
        One row per need, checked (``rating`` as a nullable integer); ``attrs["feedback"]``
        says whether the file has a ``rating`` or ``comment`` column (without either, an
        import keeps the feedback stored).

    Raises
    ------
    InputValidationError
        With every problem: a missing column, a bad value, a need listed twice (by row;
        the header is row 1).
    """
    from .io import text_cells

    frame = text_cells(content, label, MAX_OUTCOME_ROWS, skip_blank_lines=False)
    missing = [c for c in OUTCOME_COLUMNS[:3] if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in OUTCOME_COLUMNS]
    problems = [Problem(label, None, c, None, f"column missing; the file has "
                        f"{list(frame.columns)}") for c in missing]  # fmt: skip
    problems += [Problem(label, None, c, None, f"unknown column; the columns are "
                         f"{', '.join(OUTCOME_COLUMNS)}") for c in unknown]  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    if len(frame) > MAX_OUTCOME_ROWS:
        raise InputValidationError(
            [Problem(label, None, None, None, f"more than {MAX_OUTCOME_ROWS:,} rows")]
        )
    feedback = "rating" in frame.columns or "comment" in frame.columns
    rows = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(frame.to_dict("records")):
        row = i + 2  # the header is row 1; blank lines are rows too (skip_blank_lines=False)
        if not any(str(v).strip() for v in rec.values()):
            continue
        long = [k for k, v in rec.items() if len(str(v)) > limits.MAX_CELL_CHARS]
        if long:
            problems += [Problem(label, row, k, f"{len(str(rec[k]))} characters",
                                 f"a cell is at most {limits.MAX_CELL_CHARS} characters")
                         for k in long]  # fmt: skip
            continue
        need_id = str(rec["need_id"])
        if not 1 <= len(need_id) <= MAX_ID_CHARS:
            problems.append(Problem(label, row, "need_id", need_id[:40],
                                    f"must be 1 to {MAX_ID_CHARS} characters"))  # fmt: skip
        elif need_id in seen:
            problems.append(Problem(label, row, "need_id", need_id,
                                    f"listed twice (row {seen[need_id]} too)"))  # fmt: skip
        seen.setdefault(need_id, row)
        outcome, found = check_outcome(rec, label, row)
        problems += found
        rows.append({"need_id": need_id, **outcome, "row": row})
        if len(problems) > 1000:
            break
    if problems:
        raise InputValidationError(problems)
    out = pd.DataFrame(rows, columns=["need_id", "status", "date", "rating", "comment", "row"])
    out.attrs["feedback"] = feedback
    return out


def import_outcomes(store: Store, rows: pd.DataFrame, label: str, actor: str) -> int:
    """Set the outcomes of :func:`read_outcomes` rows, all or nothing; return how many.

    A file without ``rating`` and ``comment`` columns keeps the feedback stored for a need
    that stays resolved (a status update does not erase what residents said).

    Raises
    ------
    InputValidationError
        A row names no stored need (nothing is changed).
    """
    with store.transaction():
        missing = [
            Problem(label, int(r.row), "need_id", r.need_id, "no such need in the store")
            for r in rows.itertuples(index=False)
            if store.get_need(str(r.need_id)) is None
        ]
        if missing:
            raise InputValidationError(missing)
        keep = not rows.attrs.get("feedback", True)
        for r in rows.itertuples(index=False):
            current = store.get_outcome(str(r.need_id))
            rating = None if pd.isna(r.rating) else int(r.rating)
            comment = r.comment
            if keep and current is not None and r.status == "resolved":
                rating, comment = current["rating"], current["comment"]
            store.put_outcome(
                str(r.need_id),
                {"status": r.status, "date": r.date, "rating": rating, "comment": comment},
                None if current is None else int(current["version"]),
                actor,
            )
    return len(rows)



def read_deliveries(content: bytes, label: str) -> list[dict[str, Any]]:
    """Read a deliveries CSV (``partnership_id, period_start, period_end, units``).

    Returns
    -------
    list of dict
        One record per row (``units`` a float), as
        :func:`matcher.reliability.reliability_table` takes them.

    Raises
    ------
    InputValidationError
        With the bad rows (at most 1,000): an id out of bounds, a day that is not
        ``YYYY-MM-DD``, a period that ends before it starts, units that are not a number
        from 0 to ``limits.MAX_UNITS``.
    """
    from .io import RowProblems, text_table, utc_days

    frame = text_table(content, label, DELIVERY_COLUMNS, MAX_OUTCOME_ROWS)
    frame = frame[list(DELIVERY_COLUMNS)]
    problems = RowProblems(label)
    ids = frame["partnership_id"]
    problems.flag(ids.map(limits.id_problem).notna(), ids, "partnership_id", limits.id_problem)
    days = {}
    for col in ("period_start", "period_end"):
        days[col] = utc_days(frame[col]).where(frame[col].str.fullmatch(r"\d{4}-\d{2}-\d{2}"))
        problems.flag(days[col].isna(), frame[col], col, "must be a day, YYYY-MM-DD")
    backwards = days["period_end"] < days["period_start"]
    problems.flag(backwards, frame["period_end"], "period_end", "before period_start")
    units = pd.to_numeric(frame["units"], errors="coerce")
    problems.flag(~units.between(0, MAX_UNITS), frame["units"], "units",
                  f"must be a number from 0 to {MAX_UNITS:g}")  # fmt: skip
    problems.raise_any()
    return frame.assign(units=units).to_dict("records")
