"""What-if scenarios: re-plan with changed partners and compare with the base plan."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from ._errors import InputValidationError, MatcherError, Problem
from .compare import headline, load_changes, served_changes
from .config import MatchConfig
from .io import LoadedTable, Source, hash_table, read_partners
from .limits import read_file
from .output import csv_bytes, plan_files, write_files
from .pipeline import Plan, plan
from .taxonomy import Taxonomy, default_taxonomy

__all__ = ["Scenario", "ScenarioChange", "apply_change", "compare", "config_from_parameters",
           "replan", "run_scenario", "with_recruit_parameters"]  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScenarioChange:
    """A change to the partners of a plan.

    Parameters
    ----------
    add_partners : str, Path, DataFrame or None
        New partners (same columns as the partners input); their ids must be new.
    remove_partners : tuple of str
        Ids of partners that leave.
    scale_capacity : float or None
        Multiply every partner's capacity by this factor (>= 0).
    radius_km : float or None
        Every partner's travel radius becomes this many km (> 0).
    """

    add_partners: Source | None = None
    remove_partners: tuple[str, ...] = ()
    scale_capacity: float | None = None
    radius_km: float | None = None

    def describe(self) -> dict[str, Any]:
        """Describe the change as JSON (a table of added partners by its row count)."""
        add = self.add_partners
        return {
            "add_partners": None
            if add is None
            else (f"{len(add)} rows" if isinstance(add, pd.DataFrame) else str(add)),
            "remove_partners": sorted(self.remove_partners),
            "scale_capacity": self.scale_capacity,
            "radius_km": self.radius_km,
        }

    @property
    def empty(self) -> bool:
        """Whether the change changes nothing."""
        return (
            self.add_partners is None
            and not self.remove_partners
            and self.scale_capacity in (None, 1.0)
            and self.radius_km is None
        )


def apply_change(
    partners: pd.DataFrame,
    change: ScenarioChange,
    *,
    taxonomy: Taxonomy | None = None,
    input_crs: str | None = None,
) -> pd.DataFrame:
    """Return the validated partners table with a change applied.

    Raises
    ------
    InputValidationError
        Unknown ids to remove, added ids that already exist, or a bad factor/radius.
    """
    problems: list[Problem] = []
    out = partners.copy()
    known = set(out["partner_id"].astype(str))
    unknown = sorted(set(change.remove_partners) - known)
    for pid in unknown:
        problems.append(Problem(None, None, "remove_partners", pid, "no partner with this id"))
    if change.scale_capacity is not None and not (
        np.isfinite(change.scale_capacity) and change.scale_capacity >= 0
    ):
        problems.append(Problem(None, None, "scale_capacity", change.scale_capacity,
                                "must be a finite number >= 0"))  # fmt: skip
    if change.radius_km is not None and not (
        np.isfinite(change.radius_km) and change.radius_km > 0
    ):
        problems.append(Problem(None, None, "radius_km", change.radius_km,
                                "must be a finite number > 0"))  # fmt: skip
    added = None
    if change.add_partners is not None:
        try:
            added = read_partners(
                change.add_partners,
                taxonomy=taxonomy or default_taxonomy(),
                input_crs=input_crs,
                name="add_partners" if isinstance(change.add_partners, pd.DataFrame) else None,
            ).frame
        except InputValidationError as exc:
            problems.extend(exc.problems)
        else:
            for pid in sorted(set(added["partner_id"].astype(str)) & known):
                problems.append(Problem(str(change.add_partners), None, "partner_id", pid,
                                        "already a partner of the base plan"))  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    out = out[~out["partner_id"].astype(str).isin(set(change.remove_partners))]
    if added is not None:
        out = pd.concat([out, added[out.columns]], ignore_index=True)
    if change.scale_capacity is not None:
        out["capacity"] = out["capacity"] * float(change.scale_capacity)
    if change.radius_km is not None:
        out["radius_km"] = float(change.radius_km)
    return out.sort_values("partner_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Scenario:
    """A base plan, the re-planned scenario and their differences.

    Attributes
    ----------
    base, plan : Plan
        Before and after.
    change : ScenarioChange
        What changed.
    metrics : dict
        ``before``, ``after`` and ``delta`` of the headline metrics.
    clusters : pandas.DataFrame
        Clusters whose served units changed: ``cluster_id, category, neighborhood,
        served_before, served_after, change, status`` (``gained`` / ``lost``).
    partners : pandas.DataFrame
        Partners whose load changed, or that were added or removed: ``partner_id,
        used_before, used_after, change, status``.
    facts : dict
        How "before" relates to the base plan (see :func:`replan`): ``data_changed``,
        ``changed_inputs``, ``base_reproduced`` and a ``note``; empty when not known.
    """

    base: Plan
    plan: Plan
    change: ScenarioChange
    metrics: dict[str, Any]
    clusters: pd.DataFrame
    partners: pd.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        """Return the scenario's plan files and its diffs, by file name (sorted).

        The diffs are ``scenario.json`` (change, metrics, facts),
        ``scenario_clusters.csv`` and ``scenario_partners.csv``.
        """
        files = plan_files(self.plan)
        files["scenario_clusters.csv"] = csv_bytes(self.clusters)
        files["scenario_partners.csv"] = csv_bytes(self.partners)
        doc = {"format": "matcher.scenario/1", "change": self.change.describe(),
               "metrics": self.metrics, "facts": self.facts}  # fmt: skip
        files["scenario.json"] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        return dict(sorted(files.items()))

    def to_dir(self, path: str | Path) -> dict[str, Path]:
        """Write :meth:`files` into directory ``path``, all or nothing."""
        return write_files(self.files(), path)


def _headline(p: Plan) -> dict[str, Any]:
    figures = headline(p.metrics)
    del figures["clusters"]
    return figures | {"partners": int(len(p.partners))}


def compare(base: Plan, new: Plan, change: ScenarioChange) -> Scenario:
    """Compare two plans of the same needs (cluster ids match) into a :class:`Scenario`."""
    before, after = _headline(base), _headline(new)
    delta = {
        k: (None if before[k] is None or after[k] is None else round(after[k] - before[k], 6))
        for k in before
    }
    cl = served_changes(base.clusters, new.clusters)
    cl = cl[cl["change"] != "same"].drop(columns="demand")
    cl = cl.rename(columns={"served_a": "served_before", "served_b": "served_after",
                            "delta": "change", "change": "status"})  # fmt: skip
    pa = load_changes(
        base.partners.set_index("partner_id")["used"], new.partners.set_index("partner_id")["used"]
    )
    pa = pa[pa["status"] != "same"]
    pa = pa.rename(columns={"units_a": "used_before", "units_b": "used_after", "delta": "change"})
    return Scenario(
        base,
        new,
        change,
        {"before": before, "after": after, "delta": delta},
        cl.reset_index(drop=True),
        pa.reset_index(names="partner_id"),
    )


def config_from_parameters(
    parameters: dict[str, Any], taxonomy: Taxonomy | None = None
) -> MatchConfig:
    """Rebuild the :class:`MatchConfig` of a plan from its summary's ``parameters``.

    Raises
    ------
    InputValidationError
        When the plan used another taxonomy than the one given (or the default).
    """
    tax = taxonomy or default_taxonomy()
    if list(tax.codes) != list(parameters.get("taxonomy", tax.codes)):
        raise InputValidationError(
            [Problem(None, None, "taxonomy", None,
                     "the base plan used another taxonomy: pass the same --taxonomy file")]
        )  # fmt: skip
    names = {f.name for f in fields(MatchConfig)} - {"taxonomy", "on_invalid"}
    return MatchConfig(**{k: v for k, v in parameters.items() if k in names}, taxonomy=tax)


def run_scenario(
    base_dir: str | Path,
    change: ScenarioChange,
    *,
    needs: Source | None = None,
    partners: Source | None = None,
    neighborhoods: Source | None = None,
    taxonomy: Taxonomy | None = None,
    input_crs: str | None = None,
    network: str | Path | None = None,
) -> Scenario:
    """Re-plan a written plan with a change to its partners.

    When the base plan has recruit sites (``recruit_parameters`` in its summary), the
    scenario's plan gets them too, with the same parameters.

    The base plan is re-planned from its inputs (recorded in its ``summary.json``,
    or given here when the files moved) with its parameters; its input hashes and
    optimum must match the summary, so the comparison is against exactly that plan.

    Raises
    ------
    InputValidationError
        When the base directory, an input or the change is invalid, or an input
        changed since the base plan was made.
    MatcherError
        When the base plan cannot be reproduced.
    """
    path = Path(base_dir) / "summary.json"
    try:
        summary = json.loads(read_file(path).decode("utf-8"))
        parameters, hashes = summary["parameters"], summary["input_hashes"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputValidationError(
            [Problem(str(path), None, None, None, f"not a readable plan summary: {exc}")]
        ) from None
    config_from_parameters(parameters, taxonomy)  # a taxonomy mismatch is reported first
    sources = dict(summary.get("inputs", {}))
    for name, given in (
        ("needs", needs), ("partners", partners), ("neighborhoods", neighborhoods),
        ("network", network),
    ):  # fmt: skip
        if given is not None:
            sources[name] = given
    missing = [n for n in ("needs", "partners") if n not in sources]
    missing += [
        n
        for n in ("neighborhoods", "lock", "previous", "exclude", "network")
        if n in hashes and n not in sources
    ]
    if missing:
        raise InputValidationError(
            [Problem(str(path), None, "inputs", None,
                     f"the summary does not record these input files: {', '.join(missing)} "
                     "(pass --needs, --partners, --neighborhoods, --network; a lock or "
                     "previous plan must be at its recorded path)")]
        )  # fmt: skip
    recruit = summary.get("recruit_parameters")  # the base had recruit sites: so does this
    return replan(
        summary,
        sources["needs"],
        sources["partners"],
        change,
        neighborhoods=sources.get("neighborhoods"),
        lock=sources.get("lock"),
        previous=sources.get("previous"),
        exclude=sources.get("exclude"),
        taxonomy=taxonomy,
        input_crs=input_crs,
        recruit=(
            {k: recruit.get(k) for k in ("k", "radius_km", "capacity")}
            if isinstance(recruit, dict) else None
        ),
        labels={k: str(v) for k, v in sources.items()},
        network=sources.get("network"),
    )  # fmt: skip


def with_recruit_parameters(result: Plan, recruit: Mapping[str, Any] | None) -> Plan:
    """Return ``result`` with the recruit sites of a plan's ``recruit`` parameter, if any.

    Raises
    ------
    InputValidationError
        A recruit parameter is invalid (``k``, ``radius_km``, ``capacity``).
    """
    if not recruit:
        return result
    try:
        return result.with_recruit(recruit["k"], recruit["radius_km"], recruit.get("capacity"))
    except ValueError as exc:
        raise InputValidationError([Problem(None, None, "recruit", None, str(exc))]) from None


def _street_network(network: Any, summary: Mapping[str, Any], config: MatchConfig) -> Any:
    """Read a street plan's network with the road-class speeds it was given (its summary)."""
    if network is None or config.travel == "straight" or not isinstance(network, str | Path):
        return network
    from .network import read_network

    travel = (summary.get("metrics") or {}).get("travel") or {}
    speeds = travel.get("speed_overrides_kmh") if config.travel == "drive" else None
    return read_network(network, config.travel, speeds=speeds or None)


def replan(
    summary: Mapping[str, Any],
    needs: Source,
    partners: Source,
    change: ScenarioChange,
    *,
    neighborhoods: Source | None = None,
    lock: Source | None = None,
    previous: Source | None = None,
    exclude: Source | None = None,
    taxonomy: Taxonomy | None = None,
    input_crs: str | None = None,
    strict: bool = True,
    volunteer_points: Literal["exact", "grid"] | None = None,
    recruit: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    network: Any = None,
) -> Scenario:
    """Re-plan a base plan's inputs as they are ("before") and with a change ("after").

    The one scenario core of the CLI (files) and the service (a store).

    Parameters
    ----------
    summary : mapping
        The base plan's ``summary.json`` (its ``parameters``, ``input_hashes`` and
        ``solver`` are used).
    needs, partners, neighborhoods, lock, previous, exclude : Source
        The inputs to re-plan.
    change : ScenarioChange
        The change to the partners.
    taxonomy, input_crs
        As for :func:`matcher.plan`.
    strict : bool
        True: the inputs must be those the base plan was made from (same hashes) and
        its optimum must be reproduced, so "before" is exactly the base plan. False (a
        store whose data moved on): "before" is the current data with the base plan's
        parameters, and the facts say what changed.
    volunteer_points : {"exact", "grid"}, optional
        Overrides the base plan's parameter (the service plans at grid points).
    recruit : mapping, optional
        ``k``, ``radius_km``, ``capacity``: recruit sites for the "after" plan.
    labels : mapping, optional
        Names of the inputs for messages (file paths).

    Returns
    -------
    Scenario
        With ``facts``: ``data_changed``, ``changed_inputs``, ``base_reproduced``, ``note``.

    Raises
    ------
    InputValidationError
        A parameter, the change or (``strict``) an input that changed since the base plan.
    MatcherError
        ``strict`` and the base plan's optimum was not reproduced.
    """
    config = config_from_parameters(dict(summary["parameters"]), taxonomy)
    if volunteer_points is not None:
        config = dataclasses.replace(config, volunteer_points=volunteer_points)
    kwargs: dict[str, Any] = {
        "neighborhoods": neighborhoods,
        "config": config,
        "input_crs": input_crs,
        "lock": lock,
        "previous": previous,
        "exclude": exclude,
        "network": _street_network(network, summary, config),
    }
    base = plan(needs, partners, **kwargs)
    then, now = dict(summary.get("input_hashes") or {}), base.input_hashes
    changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
    reproduced = not changed and base.solver["objective_scaled"] == (
        summary.get("solver") or {}
    ).get("objective_scaled")
    if strict:
        names = labels or {}
        problems = [
            Problem(names.get(k, k), None, None, None,
                    f"the {k} input changed since the base plan (sha256 {then[k][:12]}... "
                    f"then, {now[k][:12]}... now)")
            for k in changed
            if k in then and k in now
        ]  # fmt: skip
        if problems:
            raise InputValidationError(problems)
        if base.solver["objective_scaled"] != (summary.get("solver") or {}).get(
            "objective_scaled"
        ):
            raise MatcherError("could not reproduce the base plan's optimum from its inputs")
    frame = pd.DataFrame(base.partners.drop(columns="used"))
    new_partners = apply_change(frame, change, taxonomy=config.taxonomy, input_crs=input_crs)
    geo = gpd.GeoDataFrame(new_partners, geometry="geometry", crs="EPSG:4326")
    table = LoadedTable(geo, pd.DataFrame(), hash_table(pd.DataFrame(new_partners)), "partners")
    new = with_recruit_parameters(plan(needs, table, **kwargs), recruit)
    logger.info(
        "scenario: served %g -> %g units",
        base.metrics["units"]["served"],
        new.metrics["units"]["served"],
    )
    result = compare(base, new, change)
    facts = {
        "data_changed": bool(changed),
        "changed_inputs": changed,
        "base_reproduced": bool(reproduced),
        "note": (
            f"the {', '.join(changed)} changed since the base plan: 'before' is a re-plan of "
            "the current data with the base plan's parameters, not the base plan"
            if changed
            else "'before' re-plans the same data with the base plan's parameters"
        ),
    }
    return dataclasses.replace(result, facts=facts)
