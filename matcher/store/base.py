"""The :class:`Store` interface: what every backend (SQLite, PostgreSQL/PostGIS) does.

One contract, tested by one suite against every backend (``tests/test_store_contract.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Self

import geopandas as gpd
import pandas as pd

from .records import ApiKeyInfo, AuditEntry, ImportResult, KeyIdentity, PlanRecord

if TYPE_CHECKING:
    from ..io import LoadedTable

__all__ = ["DEFAULT_LEASE_S", "IDEMPOTENCY_HOURS", "MAX_PLAN_ATTEMPTS", "Store"]

#: Seconds a worker holds a claimed plan unless it renews the lease (it renews every
#: third of this while the plan runs).
DEFAULT_LEASE_S = 60.0
#: Hours an ``Idempotency-Key`` and its response are kept (a retry within them replays it).
IDEMPOTENCY_HOURS = 24.0
#: Claims of one plan before a plan whose worker keeps dying is failed, not re-queued.
MAX_PLAN_ATTEMPTS = 2


class Store(abc.ABC):
    """The persistent store behind the service: one interface, several backends.

    Every write takes an ``actor`` (the API key id, ``"cli"``, ``"system"``) and is
    recorded in the audit log in the same transaction. Records of partners and needs
    are dicts of their contract columns (``categories`` and ``languages`` as
    ``;``-separated text, as in ``read_partners(...).frame``) plus ``version`` and
    ``updated_at``.
    """

    # -- lifecycle

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def revision(self) -> int:
        """Return a number that increases with every committed write (0 for a new store).

        Cheap; for caches of derived data (e.g. the nearby index) to notice changes
        made by any thread or process.
        """

    # -- bulk import

    @abc.abstractmethod
    def replace_partners(self, df: pd.DataFrame | LoadedTable, actor: str) -> ImportResult:
        """Replace all partners with the rows of ``df``, all or nothing.

        Parameters
        ----------
        df : LoadedTable or pandas.DataFrame
            Partners: what ``matcher.read_partners(...)`` returns (validated by it), or a
            table, validated here with the same rules (a GeoDataFrame without
            ``lat``/``lon`` gives them through its Point geometries).
        actor : str
            Who imports.

        Returns
        -------
        ImportResult
            ``rows``, ``added``, ``changed``, ``unchanged``, ``removed`` (``int(result)``
            is ``rows``). An unchanged row keeps its version (so clients' ETags stay
            valid); a changed one gets version + 1.

        Raises
        ------
        InputValidationError
            A row breaks a rule (every problem reported), an id is duplicated or a row
            breaks a constraint; nothing is changed.
        """

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Return a context in which every write is one transaction: all or nothing."""

    def load_if_empty(
        self,
        partners: pd.DataFrame | LoadedTable,
        needs: pd.DataFrame | LoadedTable,
        neighborhoods: gpd.GeoDataFrame | None,
        actor: str,
    ) -> bool:
        """Load a city into an empty store in one transaction; return whether it loaded.

        A process killed while loading leaves the store empty (and the next start loads
        it again), never half-loaded.
        """
        with self.transaction():
            if self.count_partners() or self.count_needs():
                return False
            self.replace_partners(partners, actor=actor)
            self.replace_needs(needs, actor=actor)
            if neighborhoods is not None:
                self.replace_neighborhoods(neighborhoods, actor=actor)
        return True

    @abc.abstractmethod
    def replace_needs(self, df: pd.DataFrame | LoadedTable, actor: str) -> ImportResult:
        """Replace all needs with the rows of ``df``, all or nothing.

        As :meth:`replace_partners`, from ``matcher.read_needs(...)``. A changed
        need loses its ``cluster_id``; an unchanged one keeps it.
        """

    @abc.abstractmethod
    def replace_neighborhoods(self, gdf: gpd.GeoDataFrame, actor: str) -> ImportResult:
        """Replace all neighborhoods with the polygons of ``gdf``, all or nothing.

        Parameters
        ----------
        gdf : geopandas.GeoDataFrame
            The first element of ``matcher.read_neighborhoods(...)``: EPSG:4326
            (Multi)Polygons with ``neighborhood_id`` and optional ``name``,
            ``population`` and any other attribute columns.
        actor : str
            Who imports.

        Returns
        -------
        ImportResult
            As :meth:`replace_partners` (a neighborhood is unchanged when its
            attributes and its geometry's WKB are).

        Raises
        ------
        InputValidationError
            Missing id column, duplicate or empty ids, non-polygons, another CRS.
        """

    # -- partners

    @abc.abstractmethod
    def list_partners(
        self, limit: int = 100, offset: int = 0, kind: str | None = None, *, exact: bool = False
    ) -> list[dict[str, Any]]:
        """Return partners ordered by ``partner_id``, a page at a time.

        Parameters
        ----------
        limit, offset : int
            The page.
        kind : {"organization", "volunteer"}, optional
            Only partners of this kind.
        exact : bool
            Return volunteers' exact point and contact (admin views only). Otherwise a
            volunteer's ``lat``/``lon`` are coarsened to the ~500 m grid of
            :mod:`matcher.privacy` and its
            ``contact`` is ``""``; every record has ``coarsened`` (bool).

        Returns
        -------
        list of dict
        """

    @abc.abstractmethod
    def count_partners(self, kind: str | None = None) -> int:
        """Return the number of partners (of ``kind``, when given)."""

    @abc.abstractmethod
    def get_partner(self, partner_id: str, *, exact: bool = False) -> dict[str, Any] | None:
        """Return one partner (see :meth:`list_partners` for ``exact``), or None."""

    @abc.abstractmethod
    def create_partner(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a new partner; return the stored record (version >= 1).

        Parameters
        ----------
        record : mapping
            The partner's fields (``partner_id, kind, lat, lon, categories, capacity,
            radius_km`` and optional ``name, languages, contact``). ``categories`` and
            ``languages`` may be lists. Category aliases are resolved as by
            :func:`matcher.read_partners`.
        actor : str
            Who creates it.

        Raises
        ------
        InputValidationError
            The field-level report (unknown fields are reported too).
        AlreadyExistsError
            A partner with this id exists.
        """

    @abc.abstractmethod
    def update_partner(
        self, partner_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a partner, if it is still at ``expected_version``; return the new record.

        Parameters
        ----------
        partner_id : str
            The partner.
        record : mapping
            The fields to change (a full record replaces every field; a partial one
            changes only those given). ``partner_id``, when given, must be the same.
        expected_version : int
            The version the client read (from the record or ``If-Match``).
        actor : str
            Who changes it.

        Returns
        -------
        dict
            The stored record, with ``version = expected_version + 1``.

        Raises
        ------
        NotFoundError
            No such partner.
        VersionConflictError
            The partner was changed since the client read it; nothing is changed.
        InputValidationError
            The merged record is invalid.
        """

    @abc.abstractmethod
    def delete_partner(self, partner_id: str, expected_version: int, actor: str) -> None:
        """Delete a partner, if it is still at ``expected_version``.

        Raises
        ------
        NotFoundError
            No such partner.
        VersionConflictError
            The partner was changed since the client read it; nothing is deleted.
        """

    # -- needs

    @abc.abstractmethod
    def list_needs(
        self, limit: int = 100, offset: int = 0, category: str | None = None
    ) -> list[dict[str, Any]]:
        """Return needs ordered by ``need_id``, a page at a time (of ``category``)."""

    @abc.abstractmethod
    def count_needs(self, category: str | None = None) -> int:
        """Return the number of needs (of ``category``, when given)."""

    @abc.abstractmethod
    def get_need(self, need_id: str) -> dict[str, Any] | None:
        """Return one need (with ``cluster_id``, ``version``), or None."""

    @abc.abstractmethod
    def create_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a new need; it never replaces one.

        This is the intake path (``POST /api/v1/needs``).

        Raises
        ------
        AlreadyExistsError
            A need with this id exists (the API answers 409).
        InputValidationError
            The field-level report.
        """

    @abc.abstractmethod
    def upsert_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a need, new or replacing the one with its id.

        No version check: an existing need is replaced whole and gets version + 1
        (for loading data you own; the service's intake uses :meth:`create_need`).

        Parameters
        ----------
        record : mapping
            ``need_id, category, lat, lon, demand`` and optional ``severity,
            neighborhood, languages, reported_at, source`` and ``cluster_id`` (the
            existing cluster the need was placed in, if any).
        actor : str
            Who reports it.

        Returns
        -------
        dict
            The stored record.

        Raises
        ------
        InputValidationError
            The field-level report.
        """

    @abc.abstractmethod
    def needs_near(
        self, category: str, lat: float, lon: float, km: float
    ) -> list[dict[str, Any]]:
        """Return the needs of ``category`` within ``km`` (great circle) of a point.

        Each with ``distance_m``, nearest first (ties by ``need_id``); for the intake's
        near-duplicate check (:func:`matcher.intake.take_report`).
        """

    @abc.abstractmethod
    def link_report(
        self, report: Mapping[str, Any], need_id: str, actor: str
    ) -> dict[str, Any]:
        """Keep a report that duplicates need ``need_id``, without adding its demand.

        ``report`` is a validated need record; it is stored as a linked report (its id
        ``report_id``), audited, and returned. The need is unchanged.
        """

    @abc.abstractmethod
    def linked_reports(self, need_id: str) -> list[dict[str, Any]]:
        """Return the reports linked to a need, oldest first."""

    @abc.abstractmethod
    def get_linked_report(self, report_id: str) -> dict[str, Any] | None:
        """Return one linked report (as :meth:`linked_reports` gives them) or None."""

    @abc.abstractmethod
    def needs_reported(
        self, since: str, until: str, categories: Sequence[str] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Return needs whose ``reported_at`` text is in ``[since, until)``, newest first.

        ``since`` and ``until`` are compared as text (ISO dates or date-times sort as
        text); the caller checks exact times. Ties by ``need_id``; at most ``limit``.
        """

    @abc.abstractmethod
    def add_report_note(self, report_id: str, need_id: str, note: str, actor: str) -> None:
        """Keep a reporter's note on a report of need ``need_id`` (audited, never changed).

        Inside the transaction that stores the report. Notes go with their need: deleted
        with it (by :meth:`delete_need` or an import that leaves it out; only roles that
        may read notes may do either), so a later need of the same id never shows them.
        """

    @abc.abstractmethod
    def report_notes(self, need_id: str) -> list[dict[str, Any]]:
        """Return the notes on a need's reports, oldest first."""

    @abc.abstractmethod
    def report_notes_of(self, need_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the notes on the reports of several needs (a listing's), in one query."""

    @abc.abstractmethod
    def idempotent_response(self, actor: str, key: str) -> tuple[str, int, str] | None:
        """Return ``(request_hash, status, response)`` kept for an ``Idempotency-Key``.

        Keys are per actor (API key) and kept :data:`IDEMPOTENCY_HOURS`; None when unknown.
        """

    @abc.abstractmethod
    def remember_response(
        self, actor: str, key: str, request_hash: str, status: int, response: str
    ) -> None:
        """Keep the response to a request made with an ``Idempotency-Key``.

        Inside the transaction that did the request's writes, so that both or neither
        are kept; keys older than :data:`IDEMPOTENCY_HOURS` are dropped.
        """

    @abc.abstractmethod
    def create_hold(self, hold: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a hold (``hold_id, partner_id, need_id, units, expires_at``); return it.

        The caller checks the partner's free capacity in the same transaction
        (:func:`matcher.holds.place_hold`).
        """

    @abc.abstractmethod
    def get_hold(self, hold_id: str) -> dict[str, Any] | None:
        """Return one hold (with ``active``) or None."""

    @abc.abstractmethod
    def list_holds(
        self,
        *,
        partner_id: str | None = None,
        actor: str | None = None,
        active_only: bool = True,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Return holds, newest first (only those neither released nor expired by default)."""

    @abc.abstractmethod
    def release_hold(self, hold_id: str, reason: str, actor: str) -> dict[str, Any]:
        """Release an active hold (``reason``: declined, cancelled, used); return it.

        Raises
        ------
        NotFoundError
            No such hold.
        HoldStateError
            It was released or expired already.
        """

    @abc.abstractmethod
    def held_units(self) -> tuple[dict[str, float], str | None]:
        """Return units held now per partner, and when the first active hold expires."""

    @abc.abstractmethod
    def update_need(
        self, need_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a need, if it is still at ``expected_version`` (see :meth:`update_partner`).

        Moving a need (``lat``, ``lon`` or ``category``) clears its ``cluster_id``
        unless the record gives one.
        """

    @abc.abstractmethod
    def delete_need(self, need_id: str, expected_version: int, actor: str) -> None:
        """Delete a need, if it is still at ``expected_version`` (see :meth:`delete_partner`)."""

    # -- frames for planning

    @abc.abstractmethod
    def partners_frame(self) -> gpd.GeoDataFrame:
        """All partners, exact, as ``read_partners(...).frame`` gives them.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns :data:`PARTNER_FRAME_COLUMNS` and Point ``geometry`` (EPSG:4326),
            sorted by ``partner_id``; accepted by :func:`matcher.plan`.
        """

    @abc.abstractmethod
    def needs_frame(self) -> gpd.GeoDataFrame:
        """All needs as ``read_needs(...).frame`` gives them (see :meth:`partners_frame`)."""

    @abc.abstractmethod
    def neighborhoods_frame(self) -> gpd.GeoDataFrame | None:
        """All neighborhoods (EPSG:4326, sorted by id), or None when none are stored.

        The columns are ``neighborhood_id``, the attribute columns as imported, and
        ``geometry``; the result can be passed to :func:`matcher.plan` as
        ``neighborhoods=`` whether or not it is None.
        """

    # -- plans

    @abc.abstractmethod
    def create_plan(self, parameters: Mapping[str, Any], *, actor: str = "system") -> str:
        """Queue a plan run; return its ``plan_id`` (32 hex digits).

        Parameters
        ----------
        parameters : mapping
            The run's parameters (JSON-serialisable).
        actor : str
            Who asked for it.
        """

    @abc.abstractmethod
    def claim_plan(
        self,
        worker: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        plan_id: str | None = None,
    ) -> PlanRecord | None:
        """Claim a queued plan for ``worker``: mark it running under a lease; return it.

        Several workers (threads, processes, machines) may call this on one store:
        each queued plan is claimed by exactly one of them (PostgreSQL: ``SELECT ...
        FOR UPDATE SKIP LOCKED``). Plans whose lease expired are recovered first (see
        :meth:`recover_plans`).

        Parameters
        ----------
        worker : str
            Who claims (unique per worker, e.g. ``host:pid:thread``).
        lease_s : float
            Seconds the claim lasts unless renewed with :meth:`renew_plan_lease`.
        plan_id : str, optional
            Claim this plan (if still queued); by default the oldest queued plan.

        Returns
        -------
        PlanRecord or None
            The claimed plan (status ``running``), or None when there is none to claim.
        """

    @abc.abstractmethod
    def renew_plan_lease(
        self, plan_id: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S
    ) -> bool:
        """Extend ``worker``'s lease on a running plan; False when it no longer holds it."""

    @abc.abstractmethod
    def recover_plans(self, *, actor: str = "system") -> list[str]:
        """Recover running plans whose lease expired (their worker stopped); return their ids.

        A plan claimed fewer than :data:`MAX_PLAN_ATTEMPTS` times is queued again;
        otherwise it is failed with the reason (its worker stopped while running it,
        so it is not tried again). Either way it is never left running forever.
        """

    @abc.abstractmethod
    def plan_done(
        self,
        plan_id: str,
        summary: Mapping[str, Any],
        files: Mapping[str, bytes | str],
        *,
        usage: Mapping[str, float] | None = None,
        actor: str = "system",
        worker: str | None = None,
    ) -> None:
        """Mark a queued or running plan done and store its summary and output files.

        Parameters
        ----------
        plan_id : str
            The plan.
        summary : mapping
            Its ``summary.json`` document.
        files : mapping of str to bytes
            Output files by name (e.g. from :func:`plan_artifacts`); text is stored
            UTF-8 encoded. Names are plain file names (letters, digits, ``._-``).
        usage : mapping of str to float, optional
            Units allocated per partner. By default they are summed from the
            ``units`` column of ``files["assignments.csv"]`` (none when absent).
        actor : str
            Who finished it.
        worker : str, optional
            The worker that claimed it: then the plan must still be running under its
            lease (a worker whose lease expired cannot finish a plan another worker
            now holds).

        Raises
        ------
        NotFoundError, PlanStateError
            No such plan, or it is done or failed already (or held by another worker).
        """

    @abc.abstractmethod
    def plan_failed(
        self, plan_id: str, error: str, *, actor: str = "system", worker: str | None = None
    ) -> None:
        """Mark a queued or running plan failed with the reason ``error``.

        ``worker``, when given, must still hold the plan (see :meth:`plan_done`).

        Raises
        ------
        NotFoundError, PlanStateError
            No such plan, or it is done or failed already.
        """

    @abc.abstractmethod
    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """Return a plan, or None."""

    @abc.abstractmethod
    def list_plans(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        kind: str | None = None,
    ) -> list[PlanRecord]:
        """Return plans, newest first.

        Parameters
        ----------
        limit, offset : int
            The page.
        status : {"queued", "running", "done", "failed"}, optional
            Only plans in this state.
        kind : {"plan", "scenario"}, optional
            Only plans, or only what-if scenarios (a ``scenario`` parameter).

        Raises
        ------
        ValueError
            A bad page, status or kind.
        """

    @abc.abstractmethod
    def count_plans(self, *, status: str | None = None, kind: str | None = None) -> int:
        """Return the number of plans (in ``status``, of ``kind``: see :meth:`list_plans`)."""

    @abc.abstractmethod
    def latest_done_plan(self, *, exclude_scenarios: bool = False) -> PlanRecord | None:
        """Return the plan that finished last with status ``done``, or None.

        With ``exclude_scenarios``, plans whose parameters have a ``scenario`` key
        (what-if runs of the service, see ``POST /api/v1/plans/{id}/scenarios``) are
        skipped: they are not the plan in force.
        """

    @abc.abstractmethod
    def plan_file(self, plan_id: str, name: str) -> bytes | None:
        """Return the content of a plan's output file, or None when there is none."""

    @abc.abstractmethod
    def partner_usage(self, plan_id: str) -> dict[str, float]:
        """Units allocated per ``partner_id`` by a done plan (partners with none omitted).

        Raises
        ------
        NotFoundError
            No such plan.
        PlanStateError
            The plan is not done.
        """

    # -- publishing and partnerships (rules: matcher.partnerships)

    @abc.abstractmethod
    def mark_published(self, plan_id: str, actor: str) -> str:
        """Mark a done plan published (the plan in force); return when (UTC, ISO 8601).

        Raises
        ------
        NotFoundError, PlanStateError
            No such plan, or it is not done.
        """

    @abc.abstractmethod
    def published_plan(self) -> PlanRecord | None:
        """Return the done plan (no scenario) published last, or None."""

    @abc.abstractmethod
    def lapse_offers(self, actor: str = "system") -> int:
        """Record as ``lapsed`` the offers past their ``expires_at``; return how many.

        Reads already show such an offer as lapsed; this writes it (and its audit entry),
        keeping its version (its representation, and so its ETag, do not change).
        """

    @abc.abstractmethod
    def create_partnerships(self, offers: Sequence[Mapping[str, Any]], actor: str) -> int:
        """Store offers (state ``offered``, version 1); return how many.

        Each has ``partnership_id, plan_id, cluster_id, partner_id, category,
        neighborhood, units, centroid_lat, centroid_lon, expires_at``.
        """

    @abc.abstractmethod
    def get_partnership(self, partnership_id: str) -> dict[str, Any] | None:
        """Return a partnership (``state`` as of now), or None."""

    @abc.abstractmethod
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
        """Return partnerships, newest offer first, filtered (``limit`` None: all)."""

    @abc.abstractmethod
    def count_partnerships(
        self,
        *,
        states: Sequence[str] | None = None,
        partner_id: str | None = None,
        neighborhood: str | None = None,
        category: str | None = None,
        plan_id: str | None = None,
    ) -> int:
        """Return how many partnerships match the filters of :meth:`list_partnerships`."""

    @abc.abstractmethod
    def update_partnership(
        self,
        partnership_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        actor: str,
        *,
        action: str,
    ) -> dict[str, Any]:
        """Change ``state``, ``reason``, ``cleared``, ``plan_id`` or ``cluster_id``.

        A compare-and-set: the change is made only at ``expected_version`` (the
        version then increases by one) and audited as ``action``.

        Raises
        ------
        NotFoundError, VersionConflictError
            No such partnership; it is at another version.
        """

    # -- deliveries and need outcomes (rules: matcher.outcomes)

    @abc.abstractmethod
    def create_delivery(self, delivery: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a delivery; return it.

        ``delivery`` has ``delivery_id, partnership_id, partner_id, period_start,
        period_end, units``.

        Raises
        ------
        AlreadyExistsError
            The partnership has a delivery for this ``period_start`` already.
        """

    @abc.abstractmethod
    def list_deliveries(
        self, *, partnership_id: str | None = None, partner_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Return deliveries (of a partnership, or of a partner), by period start."""

    @abc.abstractmethod
    def get_outcome(self, need_id: str) -> dict[str, Any] | None:
        """Return a need's outcome (``status, date, rating, comment, version, ...``) or None."""

    @abc.abstractmethod
    def put_outcome(
        self,
        need_id: str,
        outcome: Mapping[str, Any],
        expected_version: int | None,
        actor: str,
    ) -> dict[str, Any]:
        """Create (``expected_version`` None) or replace a need's outcome; return it.

        Raises
        ------
        VersionConflictError
            The stored outcome is at another version (or exists, or does not).
        """

    @abc.abstractmethod
    def list_outcomes(self) -> list[dict[str, Any]]:
        """Return every need outcome, by need id."""

    # -- API keys

    @abc.abstractmethod
    def create_api_key(
        self,
        role: str,
        *,
        label: str = "",
        actor: str = "system",
        partner_id: str | None = None,
    ) -> tuple[str, str]:
        """Create an API key; return ``(key_id, key)``.

        The key (``"mk_"`` + 43 URL-safe characters, 256 random bits) is returned
        only here: the store keeps its SHA-256 and an 11-character prefix to find it.

        Parameters
        ----------
        role : {"planner", "outreach", "admin", "partner"}
            What the key may do.
        label : str
            A note for admins (whose key it is).
        actor : str
            Who creates it.
        partner_id : str, optional
            The partner a ``partner`` key acts for (required for that role, refused
            for the others).

        Raises
        ------
        ValueError
            An unknown role, or a partner id given or missing against the role.
        NotFoundError
            No such partner.
        """

    @abc.abstractmethod
    def authenticate(self, key: str) -> KeyIdentity | None:
        """Return ``(key_id, role, partner_id)`` of a valid, unrevoked key, else None."""

    @abc.abstractmethod
    def revoke_api_key(self, key_id: str, *, actor: str = "system") -> None:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises
        ------
        NotFoundError
            No such key.
        """

    @abc.abstractmethod
    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Return every key's public description, oldest first."""

    # -- audit

    @abc.abstractmethod
    def audit(
        self,
        action: str,
        entity: str,
        entity_id: str | None,
        *,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an entry to the audit log (for events outside the store's own writes).

        Inside another write of this store (same thread) the entry joins its
        transaction.
        """

    @abc.abstractmethod
    def audit_entries(
        self,
        limit: int = 100,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first (of one entity or entity type, when given)."""
