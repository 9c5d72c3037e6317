"""Plan jobs over a :class:`~matcher.store.Store`: claim, run, store (no web framework here).

A plan job is a plan record whose ``parameters`` say everything needed to run it from
the store's data: the :class:`~matcher.config.MatchConfig` parameters, the options of
:data:`JOB_OPTIONS` (``recruit``: ``k``, ``radius_km``, ``capacity``; ``report``: true
for ``report.html``; ``publish``: true to publish the plan when it is done; ``agreements``:
false to plan without the store's partnerships), and for a what-if ``scenario``
(``base_plan`` and the full ``change``). So any worker, in any process or machine on the
same store, can run it, and a plan can be re-run from its record.

* :func:`run_plan_job` runs one record and returns its :class:`Artifacts`.
* :func:`plan_artifacts` turns a finished :class:`~matcher.pipeline.Plan` (or
  :class:`~matcher.scenario.Scenario`) into everything stored once: the output files,
  the summary, the units used per partner, the map payload and the clustering model.
* :class:`PlanWorker` claims queued plans from the store (under a lease it renews while
  the plan runs) and runs them in background threads; several workers on one store
  never run the same plan, and a plan whose worker died is recovered by the store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._errors import InputValidationError, MatcherError, Problem
from .io import LoadedTable, hash_table
from .mapview import map_files
from .output import plan_files
from .report import REPORT_NAME, REPORT_TITLE, WHAT_IF_TITLE, report_html
from .scenario import (
    Scenario,
    ScenarioChange,
    config_from_parameters,
    replan,
    with_recruit_parameters,
)
from .store import DEFAULT_LEASE_S, PlanStateError, Store

if TYPE_CHECKING:
    import geopandas as gpd

    from .clustering import ClusterModel
    from .partnerships import OfferPolicy
    from .pipeline import Plan
    from .store import PlanRecord

__all__ = [
    "Artifacts",
    "JOB_OPTIONS",
    "MODEL_NAME",
    "SCENARIO_OPTIONS",
    "PlanWorker",
    "load_plan_model",
    "plan_artifacts",
    "run_plan_job",
]

logger = logging.getLogger(__name__)

#: Stored files of a plan's clustering model: ``MODEL_NAME.json`` and ``MODEL_NAME.npz``.
MODEL_NAME = "cluster_model"
#: Options of a plan job besides its MatchConfig parameters, in the record's ``parameters``:
#: ``recruit`` (``k``, ``radius_km``, ``capacity``: recruit sites, as ``matcher plan
#: --recruit``) and ``report`` (true: ``report.html``, as ``matcher plan --report``). A
#: what-if scenario of a plan takes them from its base plan (as ``matcher scenario`` does).
#: ``publish`` (true: put the plan in force when it is done, see
#: :func:`matcher.partnerships.publish_plan`) and ``agreements`` (default true: accepted and
#: active partnerships are kept, declined pairs not proposed, see
#: :func:`matcher.partnerships.agreements`); ``reliability`` (true: plan with expected
#: capacity, :mod:`matcher.reliability`).
JOB_OPTIONS = ("recruit", "report", "publish", "agreements", "reliability")
#: The options a what-if scenario takes from its base plan (a scenario is never published;
#: it plans with the base plan's expected capacity, but without the agreements: it shows
#: the change alone).
SCENARIO_OPTIONS = ("recruit", "report", "reliability")
_FAILED = "an unexpected error occurred; see the server log"


@dataclass(frozen=True)
class Artifacts:
    """What a finished plan job stores (see :meth:`matcher.store.Store.plan_done`).

    Attributes
    ----------
    summary : dict
        The ``summary.json`` document (with ``scenario`` facts for a what-if).
    files : dict of str to bytes
        The output files (``report.html`` when asked for), the map payload
        (:data:`matcher.mapview.MAP_PARTS`) and the clustering model (:data:`MODEL_NAME`
        ``.json``/``.npz``).
    usage : dict of str to float
        Units allocated per partner.
    """

    summary: dict[str, Any]
    files: dict[str, bytes]
    usage: dict[str, float] = field(default_factory=dict)


def plan_artifacts(
    result: Plan | Scenario,
    plan_id: str = "",
    neighborhoods: gpd.GeoDataFrame | None = None,
    *,
    report: bool = False,
) -> Artifacts:
    """Return everything stored of a finished plan or scenario, built once.

    Parameters
    ----------
    result : Plan or Scenario
        The finished plan (a scenario's files are its "after" plan's plus its diffs).
    plan_id : str
        The plan's id (in the map payload).
    neighborhoods : GeoDataFrame, optional
        The neighborhoods it was planned with (drawn on the map with its coverage).
    report : bool
        Also render ``report.html`` (:func:`matcher.report.report_html`) of the plan (a
        scenario's: of its "after" plan, titled as ``matcher scenario`` titles it). It
        is drawn from this plan alone, so it shows what its other files show: in a plan
        made at volunteers' grid points (the service's), no volunteer's exact point.
    """
    plan = result.plan if isinstance(result, Scenario) else result
    files = result.files() if isinstance(result, Scenario) else plan_files(plan)
    if report:
        title = WHAT_IF_TITLE if isinstance(result, Scenario) else REPORT_TITLE
        files[REPORT_NAME] = report_html(plan, title=title).encode("utf-8")
    summary = json.loads(files["summary.json"])
    used = plan.partners.set_index("partner_id")["used"]
    usage = {str(k): float(v) for k, v in used.items()}
    files.update(map_files(plan_id, files, summary, neighborhoods))
    if plan.model is not None and not isinstance(result, Scenario):
        files.update(plan.model.to_files(MODEL_NAME))
    return Artifacts(summary, dict(sorted(files.items())), usage)


def plan_in_force(store: Store) -> PlanRecord | None:
    """Return the plan published last (no scenario) if made at volunteers' grid points.

    A finished plan is a draft until it is published (:func:`matcher.partnerships.publish_plan`).
    A plan of an older store, made from exact points, is never in force: nothing computed
    from it (free capacity, clusters, its summary) reaches a non-admin.
    """
    latest = store.published_plan()
    grid = latest is not None and (latest.parameters or {}).get("volunteer_points") == "grid"
    return latest if grid else None


def load_plan_model(store: Store, plan_id: str) -> ClusterModel | None:
    """Return the clustering model stored with a plan, or None when it has none."""
    from .clustering import ClusterModel

    manifest = store.plan_file(plan_id, f"{MODEL_NAME}.json")
    arrays = store.plan_file(plan_id, f"{MODEL_NAME}.npz")
    if manifest is None or arrays is None:
        return None
    return ClusterModel.from_files(manifest, arrays, f"plan {plan_id} {MODEL_NAME}")


def _stored(frame: gpd.GeoDataFrame, name: str) -> LoadedTable:
    """Return a table of the store as a validated input (validated when it was stored).

    Its hash is that of the table (the hash ``read_needs`` gives the same frame).
    """
    data = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    return LoadedTable(frame, pd.DataFrame(), hash_table(data), f"stored {name}")


def _scenario_change(change: Mapping[str, Any]) -> ScenarioChange:
    added = list(change.get("add_partners") or [])
    return ScenarioChange(
        add_partners=pd.DataFrame(added) if added else None,
        remove_partners=tuple(change.get("remove_partners") or ()),
        scale_capacity=change.get("scale_capacity"),
        radius_km=change.get("radius_km"),
    )


def run_plan_job(store: Store, record: PlanRecord) -> Artifacts:
    """Run a queued plan or scenario over the store's current data; return its artifacts.

    Raises
    ------
    MatcherError
        The plan cannot be made (bad parameters, the base plan of a scenario is gone);
        the message is the plan's error.
    """
    from .partnerships import binding
    from .pipeline import plan

    params = dict(record.parameters)
    scenario = params.pop("scenario", None)
    recruit = params.pop("recruit", None)
    report = bool(params.pop("report", False))
    params.pop("publish", None)  # the worker publishes the plan once it is stored
    keep_agreements = bool(params.pop("agreements", True))
    expected = bool(params.pop("reliability", False))
    params.pop("taxonomy", None)  # the store's records use the default taxonomy
    # units held for referrals are taken: a plan gives a partner only what is left
    held, _ = store.held_units()
    frame = store.partners_frame()
    if held:
        frame = _less_capacity(frame, held)
    scaled: pd.DataFrame | None = None
    if expected:  # expected capacity: capacity x delivery reliability (matcher.reliability)
        frame, scaled = _expected_capacity(store, frame)
    # a resolved need is served: it is not planned again (its record and outcome stay)
    resolved = {o["need_id"] for o in store.list_outcomes() if o["status"] == "resolved"}
    need_frame = store.needs_frame()
    left_out = 0
    if resolved:
        served = need_frame["need_id"].astype(str).isin(resolved)
        need_frame, left_out = need_frame[~served], int(served.sum())
    needs, partners = _stored(need_frame, "needs"), _stored(frame, "partners")
    empty = [t.name for t in (needs, partners) if not len(t.frame)]
    if empty:  # as read_needs / read_partners say of an empty table
        raise InputValidationError(
            [Problem(name, None, None, None, "the table has no rows") for name in empty]
        )
    hoods = store.neighborhoods_frame()
    hoods = hoods if hoods is not None and len(hoods) else None
    if scenario is None:
        config = config_from_parameters(params)
        lock = exclude = None
        facts: dict[str, Any] | None = None
        if keep_agreements and binding(store):
            lock, exclude, facts, reserved = _agreements(store, needs, partners, hoods, config)
            if reserved:  # agreements that cannot be locked keep their partner's units
                partners = _stored(_less_capacity(partners.frame, reserved), "partners")
        result = plan(
            needs, partners, neighborhoods=hoods, config=config, lock=lock, exclude=exclude
        )
        extra: dict[str, Any] = {}
        if facts is not None:  # in summary.json's metrics, as the plan's own figures are
            extra["agreements"] = facts
        if left_out:
            extra["resolved_needs_left_out"] = left_out
        if scaled is not None:
            extra["reliability"] = {
                "partners_scaled": int(len(scaled)),
                "units_removed": round(float((scaled["capacity"] - scaled["expected"]).sum()), 6),
            }
            result = dataclasses.replace(
                result, assignment_table=_say_expected(result.assignment_table, scaled)
            )
        if extra:
            result = dataclasses.replace(result, metrics=result.metrics | extra)
        result = with_recruit_parameters(result, recruit)
        return plan_artifacts(result, record.plan_id, hoods, report=report)
    base_id = str(scenario.get("base_plan"))
    base = store.get_plan(base_id)
    if base is None or base.summary is None:
        raise MatcherError(f"the base plan {base_id!r} is gone")
    change = scenario.get("change") or {}
    sc = replan(
        base.summary,
        needs,
        partners,
        _scenario_change(change),
        neighborhoods=hoods,
        strict=False,
        volunteer_points="grid",  # even for a base plan from an older store
        recruit=(base.parameters or {}).get("recruit"),
    )
    artifacts = plan_artifacts(sc, record.plan_id, hoods, report=report)
    artifacts.summary["scenario"] = {
        "base_plan": base_id,
        "change": {
            "remove_partners": list(change.get("remove_partners") or []),
            "add_partners": [str(r["partner_id"]) for r in change.get("add_partners") or []],
            "scale_capacity": change.get("scale_capacity"),
            "radius_km": change.get("radius_km"),
        },
        "metrics": sc.metrics,
        "clusters_changed": int(len(sc.clusters)),
        "partners_changed": int(len(sc.partners)),
        **sc.facts,
    }
    return artifacts


def _less_capacity(frame: gpd.GeoDataFrame, taken: Mapping[str, float]) -> gpd.GeoDataFrame:
    """Return partners with ``taken`` units per partner id off their capacity (at least 0)."""
    units = frame["partner_id"].astype(str).map(taken).fillna(0.0).to_numpy(dtype=float)
    return frame.assign(capacity=(frame["capacity"].to_numpy(dtype=float) - units).clip(0))


def _agreements(
    store: Store,
    needs: LoadedTable,
    partners: LoadedTable,
    hoods: gpd.GeoDataFrame | None,
    config: Any,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict[str, Any], dict[str, float]]:
    """Return the lock and exclude rows of the store's partnerships, on this plan's clusters."""
    from .partnerships import PlanShape, agreements
    from .pipeline import plan_clusters
    from .privacy import public_partners
    from .transport import capacity_quanta, need_quanta

    need_cluster, clusters = plan_clusters(needs, partners, neighborhoods=hoods, config=config)
    q = float(config.quantum)
    # the model's own quanta (matcher.transport), summed per cluster
    frame = needs.frame
    per_need = need_quanta(frame["demand"], q, warn=False)
    by_need = pd.Series(per_need, index=frame["need_id"].astype(str).to_numpy())
    demand_q = by_need.groupby(need_cluster.reindex(by_need.index).to_numpy()).sum()
    placed = pd.DataFrame(partners.frame.drop(columns=partners.frame.geometry.name))
    if config.volunteer_points == "grid":
        placed = pd.DataFrame(public_partners(placed))
    cap_q = capacity_quanta(placed["capacity"], q, warn=False)
    shape = PlanShape(
        need_cluster,
        clusters,
        {str(k): int(v) for k, v in demand_q.items()},
        placed,
        dict(zip(placed["partner_id"].astype(str), cap_q.tolist(), strict=True)),
        q,
        float(config.max_partner_share),
    )
    return agreements(store, shape)


def _expected_capacity(
    store: Store, frame: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Scale partners' capacity by their delivery reliability; return it and who changed."""
    from .reliability import partner_reliability

    rel = partner_reliability(store).set_index("partner_id")["reliability"]
    factor = frame["partner_id"].astype(str).map(rel).fillna(1.0).to_numpy(dtype=float)
    capacity = frame["capacity"].to_numpy(dtype=float)
    expected = capacity * factor
    changed = factor < 1.0
    scaled = pd.DataFrame(
        {
            "partner_id": frame["partner_id"].astype(str).to_numpy()[changed],
            "capacity": capacity[changed],
            "reliability": factor[changed],
            "expected": expected[changed],
        }
    )
    return frame.assign(capacity=expected), scaled


def _say_expected(a: pd.DataFrame, scaled: pd.DataFrame) -> pd.DataFrame:
    """Add to the reason of each assignment of a scaled partner that it was scaled."""
    by = scaled.set_index("partner_id")
    hit = a["partner_id"].astype(str).isin(by.index)
    if not hit.any():
        return a
    rows = by.reindex(a.loc[hit, "partner_id"].astype(str))
    notes = [
        f" Its capacity is planned at {r:.0%}, its delivery reliability so far: "
        f"{e:.4g} of {c:.4g} units."
        for r, e, c in zip(rows["reliability"], rows["expected"], rows["capacity"], strict=True)
    ]
    reason = a["reason"].astype(object).copy()
    reason.loc[hit] = reason.loc[hit].astype(str) + pd.Series(notes, index=reason.index[hit])
    return a.assign(reason=reason)


class _NotPublished(Exception):
    """A plan asked to be published when done could not be (it is stored as a draft)."""


class PlanWorker:
    """Claim queued plans from a store and run them in background threads of this process.

    Parameters
    ----------
    store : Store
        Where plans are queued and stored.
    threads : int
        Plans run at once by this worker.
    lease_s : float
        The lease of a claimed plan; renewed every third of it while the plan runs.
    poll_s : float
        Seconds between looks for queued plans when nothing woke the worker
        (:meth:`wake`), e.g. plans queued by another process.
    run : callable, optional
        ``run(store, record) -> Artifacts`` (default :func:`run_plan_job`).
    offer_policy : OfferPolicy, optional
        How long the offers of a plan published when done wait for their answers.
    """

    def __init__(
        self,
        store: Store,
        *,
        threads: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = 1.0,
        run: Callable[[Store, PlanRecord], Artifacts] = run_plan_job,
        offer_policy: OfferPolicy | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1, not {threads}")
        self.store = store
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        self._run = run
        self.offer_policy = offer_policy
        self._threads_wanted = int(threads)
        self._threads: list[threading.Thread] = []
        self._wake = threading.Event()
        self._stop = threading.Event()

    def worker_id(self) -> str:
        """Return this thread's worker name: ``host:pid:thread``."""
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def start(self) -> None:
        """Start the worker threads (once)."""
        if self._threads:
            return
        for i in range(self._threads_wanted):
            thread = threading.Thread(target=self._loop, name=f"matcher-plan-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Look for queued plans now (a plan was just queued in this process)."""
        self._wake.set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop claiming plans; with ``wait``, wait until the plans running here finish."""
        self._stop.set()
        self._wake.set()
        if wait:
            for thread in self._threads:
                thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # e.g. the database went away: log, wait, try again
                logger.exception("the plan worker could not claim a plan")
                ran = None
            if ran is None and not self._stop.is_set():
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def run_once(self) -> str | None:
        """Claim one queued plan and run it here; return its id, or None when none is queued."""
        worker = self.worker_id()
        record = self.store.claim_plan(worker, lease_s=self.lease_s)
        if record is None:
            return None
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(record.plan_id, worker, stop), daemon=True
        )
        beat.start()
        try:
            self._execute(record, worker)
        finally:
            stop.set()
            beat.join()
        return record.plan_id

    def _heartbeat(self, plan_id: str, worker: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            try:
                if not self.store.renew_plan_lease(plan_id, worker, lease_s=self.lease_s):
                    logger.warning("plan %s: lease lost (another worker holds it now)", plan_id)
                    return
            except Exception:  # the next beat tries again; the lease says how long we have
                logger.exception("plan %s: could not renew the lease", plan_id)

    def _execute(self, record: PlanRecord, worker: str) -> None:
        plan_id = record.plan_id
        try:
            artifacts = self._run(self.store, record)
            if not (record.parameters or {}).get("publish") or not self._done_and_published(
                record, artifacts, worker
            ):
                self.store.plan_done(
                    plan_id, artifacts.summary, artifacts.files, usage=artifacts.usage,
                    worker=worker,
                )  # fmt: skip
            logger.info("plan %s done", plan_id)
        except PlanStateError as exc:  # the lease expired and another worker took it over
            logger.warning("plan %s: not stored: %s", plan_id, exc)
        except MatcherError as exc:
            self._fail(plan_id, str(exc), worker)
        except Exception:
            logger.exception("plan %s failed", plan_id)
            self._fail(plan_id, _FAILED, worker)

    def _done_and_published(self, record: PlanRecord, artifacts: Artifacts, worker: str) -> bool:
        """Store a plan that asked to be published and publish it, in one transaction.

        So a client never sees it done but not yet in force. Returns False, having stored
        nothing, when it cannot be published (then it is stored as a draft, and why it
        was not published is logged and audited).
        """
        from .partnerships import publish_plan

        try:
            with self.store.transaction():
                # a PlanStateError here: the lease was lost, nothing is stored (_execute)
                self.store.plan_done(
                    record.plan_id, artifacts.summary, artifacts.files, usage=artifacts.usage,
                    worker=worker,
                )  # fmt: skip
                try:
                    publish_plan(self.store, record.plan_id, record.created_by,
                                 policy=self.offer_policy, only_if_newer=True)  # fmt: skip
                except MatcherError as exc:
                    raise _NotPublished(str(exc)) from exc  # rolls the transaction back
                except Exception as exc:  # a bug: the plan is kept (as a draft), and logged
                    logger.exception("plan %s: publishing failed", record.plan_id)
                    raise _NotPublished("an unexpected error occurred") from exc
            return True
        except _NotPublished as exc:
            logger.warning("plan %s: not published: %s", record.plan_id, exc)
            self.store.audit("publish_failed", "plan", record.plan_id, actor="system",
                             detail={"error": str(exc)[:500]})  # fmt: skip
            return False

    def _fail(self, plan_id: str, error: str, worker: str) -> None:
        try:
            self.store.plan_failed(plan_id, error, worker=worker)
        except PlanStateError as exc:
            logger.warning("plan %s: failure not stored: %s", plan_id, exc)
