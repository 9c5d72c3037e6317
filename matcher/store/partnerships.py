"""The partnerships and publishing part of :class:`~matcher.store.SQLStore`, in SQL.

A mixin: it uses the store's ``_read``, ``_write``, ``_audit`` and plan helpers. The
rules (who may take which step) are :mod:`matcher.partnerships`; here a step is only a
compare-and-set on the partnership's version, so of two concurrent steps one wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .entities import check_actor, check_page, now
from .records import NotFoundError, PlanRecord, PlanStateError, VersionConflictError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = ["PARTNERSHIP_FIELDS", "PartnershipSQL"]

#: The columns of a partnership, as the store returns them (``state`` as of now: an offer
#: past its ``expires_at`` reads ``lapsed`` even before :meth:`lapse_offers` wrote it).
PARTNERSHIP_FIELDS: tuple[str, ...] = (
    "partnership_id", "plan_id", "origin_plan_id", "cluster_id", "partner_id", "category",
    "neighborhood", "units", "centroid_lat", "centroid_lon", "state", "reason", "cleared",
    "offered_at", "expires_at", "answered_at", "updated_at", "version",
)  # fmt: skip
#: The state as of ``?`` (now).
_STATE_NOW = "CASE WHEN state = 'offered' AND expires_at <= ? THEN 'lapsed' ELSE state END"
#: When it last changed as of ``?`` (now): a lapse happened at ``expires_at``, whenever it
#: was written (so the representation, and its ETag, stay the same).
_UPDATED_NOW = (
    "CASE WHEN state = 'offered' AND expires_at <= ? THEN expires_at ELSE updated_at END"
)
_SELECT = ", ".join(
    {"state": _STATE_NOW, "updated_at": _UPDATED_NOW}.get(f, f) for f in PARTNERSHIP_FIELDS
)
#: The arguments ``_SELECT`` binds (now, twice).
_NOW_ARGS = 2
#: What a step may change.
_CHANGEABLE = ("state", "reason", "cleared", "plan_id", "cluster_id", "neighborhood",
               "centroid_lat", "centroid_lon")


def _row(row: Sequence[Any]) -> dict[str, Any]:
    rec = dict(zip(PARTNERSHIP_FIELDS, row, strict=True))
    for f in ("units", "centroid_lat", "centroid_lon"):
        rec[f] = float(rec[f])
    rec["cleared"] = bool(rec["cleared"])
    rec["version"] = int(rec["version"])
    return rec


class PartnershipSQL:
    """Publishing and partnerships over SQL (mixed into :class:`SQLStore`)."""

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Any]: ...
        def _write(self) -> AbstractContextManager[Any]: ...
        def _audit(self, conn: Any, actor: str, action: str, entity: str,
                   entity_id: str | None, detail: Mapping[str, Any] | None = None) -> None: ...
        def _plan_record(self, conn: Any, row: Sequence[Any]) -> PlanRecord: ...

        plan_order: ClassVar[str]
        not_scenario: ClassVar[str]

    # -- publishing

    def mark_published(self, plan_id: str, actor: str) -> str:
        """Mark a done plan published now; return when (see :meth:`Store.mark_published`)."""
        check_actor(actor)
        at = now()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE plans SET published_at = ?, published_by = ? "
                "WHERE plan_id = ? AND status = 'done'",
                (at, actor, str(plan_id)),
            )
            if cur.rowcount != 1:
                row = conn.execute(
                    "SELECT status FROM plans WHERE plan_id = ?", (str(plan_id),)
                ).fetchone()
                if row is None:
                    raise NotFoundError("plan", str(plan_id))
                raise PlanStateError(f"plan {plan_id!r} is {row[0]}: only a done plan is published")
            self._audit(conn, actor, "publish", "plan", str(plan_id))
        return at

    def published_plan(self) -> PlanRecord | None:
        """Return the plan published last, or None (see :meth:`Store.published_plan`)."""
        from .sql import _PLAN_COLUMNS

        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plans WHERE status = 'done' AND published_at "
                f"IS NOT NULL AND {self.not_scenario} "
                f"ORDER BY published_at DESC, {self.plan_order} DESC LIMIT 1"
            ).fetchone()
            return None if row is None else self._plan_record(conn, row)

    # -- partnerships

    def lapse_offers(self, actor: str = "system") -> int:
        """Write the lapse of offers past their time (see :meth:`Store.lapse_offers`).

        The version is kept: a read showed the offer lapsed already, at this version.
        """
        at = now()
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT partnership_id FROM partnerships WHERE state = 'offered' "
                    "AND expires_at <= ? ORDER BY partnership_id",
                    (at,),
                ).fetchall()
            ]
            for pid in ids:
                # as reads showed it already: the same version (ETag), updated at its expiry
                conn.execute(
                    "UPDATE partnerships SET state = 'lapsed', updated_at = expires_at "
                    "WHERE partnership_id = ?",
                    (pid,),
                )
                self._audit(conn, actor, "lapsed", "partnership", pid)
        return len(ids)

    def create_partnerships(self, offers: Iterable[Mapping[str, Any]], actor: str) -> int:
        """Store new offers (see :meth:`Store.create_partnerships`)."""
        check_actor(actor)
        at = now()
        rows = [
            (
                str(o["partnership_id"]), str(o["plan_id"]), str(o["plan_id"]),
                str(o["cluster_id"]), str(o["partner_id"]), str(o["category"]),
                str(o.get("neighborhood") or ""), float(o["units"]), float(o["centroid_lat"]),
                float(o["centroid_lon"]), "offered", "", 0, at, str(o["expires_at"]), None, at, 1,
            )
            for o in offers
        ]  # fmt: skip
        if not rows:
            return 0
        marks = ", ".join("?" for _ in PARTNERSHIP_FIELDS)
        with self._write() as conn:
            conn.executemany(
                f"INSERT INTO partnerships ({', '.join(PARTNERSHIP_FIELDS)}) VALUES ({marks})",
                rows,
            )
            for r in rows:
                self._audit(conn, actor, "offered", "partnership", r[0],
                            {"plan_id": r[1], "cluster_id": r[3], "partner_id": r[4],
                             "units": r[7]})  # fmt: skip
        return len(rows)

    def get_partnership(self, partnership_id: str) -> dict[str, Any] | None:
        """Return one partnership or None (see :meth:`Store.get_partnership`)."""
        with self._read() as conn:
            at = now()
            row = conn.execute(
                f"SELECT {_SELECT} FROM partnerships WHERE partnership_id = ?",
                (at, at, str(partnership_id)),
            ).fetchone()
        return None if row is None else _row(row)

    def _partnership_filter(
        self,
        states: Sequence[str] | None,
        partner_id: str | None,
        neighborhood: str | None,
        category: str | None,
        plan_id: str | None,
    ) -> tuple[str, list[Any]]:
        at = now()
        terms, args = [], [at] * _NOW_ARGS  # the select's own arguments come first
        if states is not None:
            terms.append(f"({_STATE_NOW}) IN ({', '.join('?' for _ in states)})")
            args += [at, *states]
        for column, value in (("partner_id", partner_id), ("neighborhood", neighborhood),
                              ("category", category), ("plan_id", plan_id)):  # fmt: skip
            if value is not None:
                terms.append(f"{column} = ?")
                args.append(str(value))
        return (f" WHERE {' AND '.join(terms)}" if terms else ""), args

    def list_partnerships(
        self,
        *,
        states: Sequence[str] | None = None,
        partner_id: str | None = None,
        neighborhood: str | None = None,
        category: str | None = None,
        plan_id: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Return partnerships, newest offer first (see :meth:`Store.list_partnerships`)."""
        if limit is not None:
            check_page(limit, offset)
        where, args = self._partnership_filter(states, partner_id, neighborhood, category,
                                               plan_id)  # fmt: skip
        page = "" if limit is None else " LIMIT ? OFFSET ?"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_SELECT} FROM partnerships{where} "
                f"ORDER BY offered_at DESC, partnership_id{page}",
                (*args, *(() if limit is None else (limit, offset))),
            ).fetchall()
        return [_row(r) for r in rows]

    def count_partnerships(
        self,
        *,
        states: Sequence[str] | None = None,
        partner_id: str | None = None,
        neighborhood: str | None = None,
        category: str | None = None,
        plan_id: str | None = None,
    ) -> int:
        """Return how many partnerships match (see :meth:`list_partnerships`)."""
        where, args = self._partnership_filter(states, partner_id, neighborhood, category,
                                               plan_id)  # fmt: skip
        with self._read() as conn:
            # no state column in the select: its own arguments are not bound
            row = conn.execute(
                f"SELECT COUNT(*) FROM partnerships{where}", args[_NOW_ARGS:]
            ).fetchone()
        return int(row[0])

    def update_partnership(
        self,
        partnership_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        actor: str,
        *,
        action: str,
    ) -> dict[str, Any]:
        """Change a partnership at ``expected_version`` (see :meth:`Store.update_partnership`)."""
        check_actor(actor)
        bad = sorted(set(changes) - set(_CHANGEABLE))
        if bad:
            raise ValueError(f"a partnership's {', '.join(bad)} cannot be changed")
        at = now()
        sets = [f"{k} = ?" for k in changes] + ["updated_at = ?", "version = version + 1"]
        args: list[Any] = [int(v) if k == "cleared" else v for k, v in changes.items()] + [at]
        if changes.get("state") in ("accepted", "declined"):
            sets.append("answered_at = ?")
            args.append(at)
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE partnerships SET {', '.join(sets)} "
                "WHERE partnership_id = ? AND version = ?",
                (*args, str(partnership_id), int(expected_version)),
            )
            if cur.rowcount != 1:
                row = conn.execute(
                    "SELECT version FROM partnerships WHERE partnership_id = ?",
                    (str(partnership_id),),
                ).fetchone()
                if row is None:
                    raise NotFoundError("partnership", str(partnership_id))
                raise VersionConflictError(
                    "partnership", str(partnership_id), int(expected_version), int(row[0])
                )
            detail = {k: v for k, v in changes.items() if k != "reason"}
            if changes.get("reason"):
                detail["reason_chars"] = len(str(changes["reason"]))
            detail["version"] = int(expected_version) + 1
            self._audit(conn, actor, action, "partnership", str(partnership_id), detail)
            stamp = now()
            row = conn.execute(
                f"SELECT {_SELECT} FROM partnerships WHERE partnership_id = ?",
                (stamp, stamp, str(partnership_id)),
            ).fetchone()
        return _row(row)

    # -- deliveries and outcomes (rules: matcher.outcomes)

    _DELIVERY = ("delivery_id", "partnership_id", "partner_id", "period_start", "period_end",
                 "units", "actor", "recorded_at")  # fmt: skip
    _OUTCOME = ("need_id", "status", "status_date", "rating", "comment", "actor",
                "updated_at", "version")  # fmt: skip

    def create_delivery(self, delivery: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a delivery (see :meth:`Store.create_delivery`)."""
        from .records import AlreadyExistsError

        check_actor(actor)
        row = (str(delivery["delivery_id"]), str(delivery["partnership_id"]),
               str(delivery["partner_id"]), str(delivery["period_start"]),
               str(delivery["period_end"]), float(delivery["units"]), actor, now())  # fmt: skip
        with self._write() as conn:
            dup = conn.execute(  # one record per day: periods never overlap
                "SELECT period_start, period_end FROM deliveries WHERE partnership_id = ? "
                "AND period_start <= ? AND period_end >= ? ORDER BY period_start LIMIT 1",
                (row[1], row[4], row[3]),
            ).fetchone()
            if dup is not None:
                raise AlreadyExistsError(
                    f"delivery of partnership {row[1]} for the days of", f"{dup[0]}..{dup[1]}"
                )
            marks = ", ".join("?" for _ in self._DELIVERY)
            conn.execute(
                f"INSERT INTO deliveries ({', '.join(self._DELIVERY)}) VALUES ({marks})", row
            )
            self._audit(conn, actor, "deliver", "partnership", row[1],
                        {"delivery_id": row[0], "period_start": row[3], "period_end": row[4],
                         "units": row[5]})  # fmt: skip
        return dict(zip(self._DELIVERY, row, strict=True))

    def list_deliveries(
        self, *, partnership_id: str | None = None, partner_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Return deliveries by period (see :meth:`Store.list_deliveries`)."""
        where, args = [], []
        for column, value in (("partnership_id", partnership_id), ("partner_id", partner_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(self._DELIVERY)} FROM deliveries{clause} "
                "ORDER BY period_start, partnership_id, delivery_id",
                args,
            ).fetchall()
        return [dict(zip(self._DELIVERY, r, strict=True)) | {"units": float(r[5])} for r in rows]

    def _outcome(self, row: Sequence[Any]) -> dict[str, Any]:
        rec = dict(zip(self._OUTCOME, row, strict=True))
        rec["date"] = rec.pop("status_date")
        rec["rating"] = None if rec["rating"] is None else int(rec["rating"])
        rec["version"] = int(rec["version"])
        return rec

    def get_outcome(self, need_id: str) -> dict[str, Any] | None:
        """Return a need's outcome or None (see :meth:`Store.get_outcome`)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(self._OUTCOME)} FROM need_outcomes WHERE need_id = ?",
                (str(need_id),),
            ).fetchone()
        return None if row is None else self._outcome(row)

    def put_outcome(
        self,
        need_id: str,
        outcome: Mapping[str, Any],
        expected_version: int | None,
        actor: str,
    ) -> dict[str, Any]:
        """Create or replace a need's outcome (see :meth:`Store.put_outcome`)."""
        check_actor(actor)
        values = (str(outcome["status"]), str(outcome["date"]), outcome.get("rating"),
                  str(outcome.get("comment") or ""), actor, now())  # fmt: skip
        with self._write() as conn:
            row = conn.execute(
                "SELECT version FROM need_outcomes WHERE need_id = ?", (str(need_id),)
            ).fetchone()
            current = None if row is None else int(row[0])
            if current != expected_version:
                raise VersionConflictError(
                    "need outcome", str(need_id), int(expected_version or 0), int(current or 0)
                )
            if current is None:
                conn.execute(
                    "INSERT INTO need_outcomes (need_id, status, status_date, rating, comment, "
                    "actor, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (str(need_id), *values),
                )
            else:
                conn.execute(
                    "UPDATE need_outcomes SET status = ?, status_date = ?, rating = ?, "
                    "comment = ?, actor = ?, updated_at = ?, version = version + 1 "
                    "WHERE need_id = ?",
                    (*values, str(need_id)),
                )
            self._audit(conn, actor, "outcome", "need", str(need_id),
                        {"status": values[0], "date": values[1],
                         "rating": values[2] is not None,
                         "comment_chars": len(values[3])})  # fmt: skip
            out = conn.execute(
                f"SELECT {', '.join(self._OUTCOME)} FROM need_outcomes WHERE need_id = ?",
                (str(need_id),),
            ).fetchone()
        return self._outcome(out)

    def list_outcomes(self) -> list[dict[str, Any]]:
        """Return every need outcome by need id (see :meth:`Store.list_outcomes`)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(self._OUTCOME)} FROM need_outcomes ORDER BY need_id"
            ).fetchall()
        return [self._outcome(r) for r in rows]
