"""The ``matcher`` command line: plan, scenario, compare, validate, generate, hsds, keys, serve.

``publish`` and ``partnerships`` (a store's plans put in force, and their partnerships)
are in :mod:`matcher.cli_partnerships`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import click

from ._errors import InputValidationError, MatcherError, Problem
from ._logging import SafeFormatter
from .access import ROLES
from .config import DEFAULT_RECRUIT_RADIUS_KM, OBJECTIVES, TRAVEL, VOLUNTEER_POINTS, MatchConfig
from .progress import (
    DASK_PLAN_STAGES,
    PLAN_STAGES,
    StageProgress,
    console_write_mode,
    progress_enabled,
)
from .taxonomy import Taxonomy, default_taxonomy

__all__ = ["main"]

logger = logging.getLogger("matcher")

EXIT_INVALID = 2
EXIT_FAILURE = 1


class _ClickHandler(logging.Handler):
    """Write log records to the current click stderr (works under CliRunner too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with console_write_mode():  # clear the progress bar, if any, around the line
                click.echo(self.format(record), err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _ClickHandler()
    handler.setFormatter(
        SafeFormatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    root = logging.getLogger("matcher")
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ClickHandler)] + [handler]
    root.setLevel(level)


def _usage(option: str, value: str, reason: str) -> InputValidationError:
    return InputValidationError([Problem(None, None, option, value, reason)])


def _speeds(given: tuple[str, ...]) -> dict[str, float]:
    """Parse ``--speed CLASS=KMH`` options, refusing each one not written so, as typed.

    The classes and the speeds' range are checked by :func:`matcher.network.build_network`.
    """
    out: dict[str, float] = {}
    problems = []
    for item in given:
        name, sep, value = item.partition("=")
        try:
            kmh = float(value) if sep else None
        except ValueError:
            kmh = None
        if kmh is not None:
            out[name.strip()] = kmh
        else:
            problems.append(
                Problem(None, None, "--speed", item,
                        "written CLASS=KMH with a number of km/h, e.g. residential=25")
            )  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    return out


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into a report on stderr and the documented exit codes."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputValidationError as exc:
            click.echo(f"error: invalid input\n{exc.report()}", err=True)
            sys.exit(EXIT_INVALID)
        except MatcherError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)
        except (OSError, MemoryError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def _printable(text: str) -> str:
    """Return ``text`` (from a file or the store) safe to echo: unprintable characters as ``?``.

    Control characters (terminal escapes), line breaks and bidi overrides are unprintable.
    """
    return "".join(c if c.isprintable() else "?" for c in text)


def _taxonomy(path: Path | None) -> Taxonomy:
    return Taxonomy.from_file(path) if path else default_taxonomy()


_common = [
    click.option("--quiet", "-q", is_flag=True, help="Only print warnings and errors."),
    click.option("--verbose", "-v", is_flag=True, help="Print debug logs."),
]


def _with_common(func: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_common):
        func = opt(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="matcher")
def main() -> None:
    """Cluster assessed community needs and recommend partners, exactly optimally.

    Exit codes: 0 success, 2 invalid input (a report on stderr, nothing written),
    1 any other failure.
    """


@main.command("plan")
@click.option(
    "--needs",
    "needs_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Needs file: CSV, GeoJSON or GeoPackage.",
)
@click.option(
    "--partners",
    "partners_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Partners file (organizations and volunteers).",
)
@click.option(
    "--neighborhoods",
    "hoods_path",
    type=click.Path(path_type=Path),
    help="Neighborhood polygons (GeoJSON or GeoPackage).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Output directory (created if missing).",
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="default",
    show_default=True,
    help="'distance': minimise units x km. "
    "'default': severity first, then km plus language penalty.",
)
@click.option(
    "--cluster-km",
    type=float,
    default=MatchConfig.cluster_km,
    show_default=True,
    help="Density scale of the clustering, in km.",
)
@click.option(
    "--min-samples",
    type=int,
    default=MatchConfig.min_samples,
    show_default=True,
    help="Needs within --cluster-km that make a dense core.",
)
@click.option(
    "--max-cluster-radius-km",
    type=float,
    default=MatchConfig.max_cluster_radius_km,
    show_default=True,
    help="Split clusters wider than this.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for cluster splitting.")
@click.option(
    "--solver",
    type=click.Choice(["lemon", "ortools", "networkx"]),
    default="lemon",
    show_default=True,
    help="Exact min-cost-flow backend (all give the same optimum).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Load the valid rows and write the invalid ones to rejects_*.csv in --out.",
)
@click.option(
    "--taxonomy",
    "taxonomy_path",
    type=click.Path(path_type=Path),
    help="Category taxonomy file (JSON or CSV); the default taxonomy otherwise.",
)
@click.option("--input-crs", help="Declare the CRS of inputs not in WGS84, e.g. EPSG:3435.")
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("models"),
    show_default=True,
    help="Where to save the fitted clustering model.",
)
@click.option(
    "--report",
    is_flag=True,
    help="Also write report.html: a self-contained, printable report (maps, tables, gaps).",
)
@click.option(
    "--assessment",
    "assessment_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --report: the assessment report CSV the needs came from (matcher assess "
    "--report), shown as the report's Assessment section.",
)
@click.option(
    "--min-coverage",
    type=float,
    default=0.0,
    show_default=True,
    help="Equity floor 0..1: fill every neighborhood to this share of its demand first.",
)
@click.option(
    "--vulnerability-column",
    help="Numeric column of --neighborhoods (e.g. hardship_index) that raises priority there.",
)
@click.option(
    "--vulnerability-weight",
    type=float,
    default=MatchConfig.vulnerability_weight,
    show_default=True,
    help="Priority x (1 + weight x normalised vulnerability).",
)
@click.option(
    "--max-partner-share",
    type=float,
    default=1.0,
    show_default=True,
    help="At most this share of a partner's capacity goes to one neighborhood.",
)
@click.option(
    "--volunteer-points",
    type=click.Choice(VOLUNTEER_POINTS),
    default="exact",
    show_default=True,
    help="'grid': plan volunteers at their ~500 m grid points, so the plan files may be "
    "shared with anyone (as the service does).",
)
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(path_type=Path),
    help="CSV of accepted pairs (cluster_id, partner_id, units) kept exactly as they are.",
)
@click.option(
    "--exclude",
    "exclude_path",
    type=click.Path(path_type=Path),
    help="CSV of pairs (cluster_id, partner_id) never to propose, e.g. declined partnerships.",
)
@click.option(
    "--previous",
    "previous_path",
    type=click.Path(path_type=Path),
    help="The last plan's directory: report churn against it (prefer it with --churn-penalty).",
)
@click.option(
    "--churn-penalty",
    type=float,
    default=0.0,
    show_default=True,
    help="Cost in km per unit not kept on a pair of --previous.",
)
@click.option(
    "--recruit",
    "recruit_k",
    type=click.IntRange(1),
    help="Suggest this many sites per category where a new partner would serve the most "
    "unmet demand (recruit.csv, recruit.geojson).",
)
@click.option(
    "--recruit-radius-km",
    type=float,
    default=DEFAULT_RECRUIT_RADIUS_KM,
    show_default=True,
    help="Travel radius of a suggested new partner.",
)
@click.option(
    "--recruit-capacity",
    type=float,
    help="Capacity of a suggested new partner (default: unlimited).",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS|local[:N]",
    help="Split the plan into independent regions and run them on Dask: a scheduler "
    "address (tcp://host:8786) or local:N worker processes on this machine. The plan is "
    "the same, byte for byte. Needs the 'dask' extra.",
)
@click.option(
    "--travel",
    type=click.Choice(TRAVEL),
    default="straight",
    show_default=True,
    help="How travel is measured: the straight (great-circle) line, or walking or driving "
    "on the street network of --network (radius_km is then a street distance).",
)
@click.option(
    "--network",
    "network_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --travel walk|drive: the street network (.gpkg as in data/southside, an "
    "OSMnx .graphml, or an .osm.pbf with the 'streets' extra).",
)
@click.option(
    "--radius-min",
    type=float,
    help="With a street network: a travel time limit in minutes for partners without a "
    "radius_min column value of their own.",
)
@click.option(
    "--max-snap-m",
    type=float,
    default=MatchConfig.max_snap_m,
    show_default=True,
    help="With a street network: the farthest (m) a need or partner may lie from the "
    "nearest network node; farther rows are invalid.",
)
@click.option(
    "--speed",
    "speeds",
    multiple=True,
    metavar="CLASS=KMH",
    help="With --travel drive: the speed of a road class, e.g. residential=25 (repeat; "
    "the defaults are in matcher.network.DRIVE_SPEEDS_KMH).",
)
@_with_common
@_guarded
def plan_cmd(
    needs_path: Path,
    partners_path: Path,
    hoods_path: Path | None,
    out_dir: Path,
    objective: str,
    cluster_km: float,
    min_samples: int,
    max_cluster_radius_km: float,
    seed: int,
    solver: str,
    skip_invalid: bool,
    taxonomy_path: Path | None,
    input_crs: str | None,
    models_dir: Path,
    report: bool,
    assessment_path: Path | None,
    min_coverage: float,
    vulnerability_column: str | None,
    vulnerability_weight: float,
    max_partner_share: float,
    volunteer_points: str,
    lock_path: Path | None,
    exclude_path: Path | None,
    previous_path: Path | None,
    churn_penalty: float,
    recruit_k: int | None,
    recruit_radius_km: float,
    recruit_capacity: float | None,
    dask_address: str | None,
    travel: str,
    network_path: Path | None,
    radius_min: float | None,
    max_snap_m: float,
    speeds: tuple[str, ...],
    quiet: bool,
    verbose: bool,
) -> None:
    """Plan: cluster needs, match partners, write the plan to --out.

    A progress bar is shown on a terminal (not with --quiet, nor when stderr is
    redirected).
    """
    from .output import writing_plan
    from .pipeline import plan

    _setup_logging(quiet, verbose)
    config = MatchConfig(
        objective=objective,  # type: ignore[arg-type]
        cluster_km=cluster_km,
        min_samples=min_samples,
        max_cluster_radius_km=max_cluster_radius_km,
        seed=seed,
        solver=solver,  # type: ignore[arg-type]
        on_invalid="skip" if skip_invalid else "raise",
        taxonomy=_taxonomy(taxonomy_path),
        min_coverage=min_coverage,
        vulnerability_column=vulnerability_column,
        vulnerability_weight=vulnerability_weight,
        max_partner_share=max_partner_share,
        churn_penalty_km=churn_penalty,
        volunteer_points=volunteer_points,  # type: ignore[arg-type]
        travel=travel,  # type: ignore[arg-type]
        radius_min=radius_min,
        max_snap_m=max_snap_m,
    )
    if dask_address is not None:
        _check_dask(dask_address)
    network: Any = network_path
    if speeds and travel != "drive":
        raise _usage("--speed", " ".join(speeds), "sets driving speeds: add --travel drive")
    if network_path is not None and travel != "straight":
        from .network import read_network

        network = read_network(network_path, travel, speeds=_speeds(speeds))
    assessment = None
    if assessment_path is not None:
        if not report:
            raise click.UsageError("--assessment is shown in report.html: add --report")
        from .assessments import read_assessment_report

        assessment = read_assessment_report(assessment_path)
    stages = [
        *(DASK_PLAN_STAGES if dask_address else PLAN_STAGES),
        *(["recruit"] if recruit_k else []),
        *(["report"] if report else []),
        "write",
    ]
    with (
        StageProgress(stages, enabled=progress_enabled(quiet), desc="plan") as progress,
        _client(dask_address) as client,
    ):
        result = plan(
            needs_path,
            partners_path,
            neighborhoods=hoods_path,
            config=config,
            input_crs=input_crs,
            lock=lock_path,
            previous=previous_path,
            exclude=exclude_path,
            network=network,
            client=client,
        )
        if recruit_k:
            with progress.stage("recruit", logger):
                result = _with_recruit(result, recruit_k, recruit_radius_km, recruit_capacity)
        html = None
        if report:  # rendered before anything is written: a failure leaves no partial output
            from .report import REPORT_NAME, report_html, write_report

            with progress.stage("report", logger):
                html = report_html(result, assessment=assessment)
        with progress.stage("write", logger):
            # the model is compressed while the plan files are written (a large plan's
            # plan.geojson by another process) and saved once they are published: a
            # failed plan leaves no new model
            with writing_plan(result, out_dir) as written:
                model = result.model_files()
            if html is not None:
                written[REPORT_NAME] = write_report(html, out_dir / REPORT_NAME)
            manifest = result.save_model(models_dir, model)
    units = result.metrics["units"]
    if not quiet:
        click.echo(
            f"served {units['served']:g} of {units['demand']:g} units "
            f"({100 * units['coverage']:.1f}%), unmet {units['unmet']:g}; "
            f"{len(result.clusters)} clusters, {len(result.assignment_table)} assignments"
        )
        floors = result.metrics.get("floors")
        if floors and result.floors is not None:
            names = dict(zip(result.floors["neighborhood_id"].astype(str),
                             result.floors["name"].astype(str), strict=True))  # fmt: skip
            missed = [
                f"{names[h]} ({h})" if names.get(h, h) != h else h for h in floors["not_met"]
            ]
            click.echo(
                f"coverage floors met in {floors['met']} of {floors['neighborhoods']} "
                f"neighborhoods" + (f"; not met: {_printable(', '.join(missed))} "
                                    "(reasons in floors.csv)" if missed else "")
            )  # fmt: skip
        street = result.metrics.get("travel")
        if street and street.get("detour_factor") is not None:
            click.echo(
                f"by street ({street['mode']}): {street['street_km_per_unit']:.2f} km and "
                f"{street['minutes_per_unit']:.1f} min per unit served, "
                f"{street['detour_factor']:.2f}x the straight line "
                f"({street['straight_km_per_unit']:.2f} km)"
            )
        if result.churn:
            click.echo(
                f"churn: {result.churn['units_kept']:g} units kept on previous pairs, "
                f"{result.churn['units_moved']:g} moved"
            )
        click.echo(f"wrote {', '.join(written)} to {out_dir}")
        click.echo(f"saved clustering model {manifest}")


def _check_dask(address: str) -> None:
    """Refuse a ``--dask`` value that names no local cluster or scheduler, or no Dask."""
    from .runners.on_dask import MAX_LOCAL_WORKERS, valid_address

    problem = valid_address(address)
    if problem is None:
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            problem = "Dask is not installed: pip install 'matcher[dask]'"
    if problem is not None:
        raise InputValidationError(
            [
                Problem(
                    None,
                    None,
                    "--dask",
                    address,
                    f"{problem}; expected local, local:N (N from 1 to {MAX_LOCAL_WORKERS}) "
                    "or a scheduler address such as tcp://host:8786",
                )
            ]
        )


@contextlib.contextmanager
def _client(address: str | None) -> Iterator[Any]:
    """Yield a Dask client for ``--dask`` (None without)."""
    if address is None:
        yield None
        return
    from .runners.on_dask import dask_client

    with dask_client(address) as client:
        yield client


def _with_recruit(result: Any, k: int, radius_km: float, capacity: float | None) -> Any:
    """Attach recruit suggestions, turning bad parameters into an input error."""
    try:
        return result.with_recruit(k, radius_km, capacity)
    except ValueError as exc:
        raise InputValidationError([Problem(None, None, "recruit", None, str(exc))]) from None


@main.command("scenario")
@click.option(
    "--base",
    "base_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The base plan's directory (written by matcher plan).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Output directory: the scenario's plan files plus scenario.json and the diffs.",
)
@click.option(
    "--add-partners",
    type=click.Path(path_type=Path),
    help="Partners file of new partners.",
)
@click.option(
    "--remove-partners",
    help="Comma-separated ids of partners that leave.",
)
@click.option("--scale-capacity", type=float, help="Multiply every partner's capacity.")
@click.option("--radius-km", type=float, help="Every partner's travel radius becomes this.")
@click.option("--needs", "needs_path", type=click.Path(path_type=Path),
              help="The base plan's needs file, if it moved.")  # fmt: skip
@click.option("--partners", "partners_path", type=click.Path(path_type=Path),
              help="The base plan's partners file, if it moved.")  # fmt: skip
@click.option("--neighborhoods", "hoods_path", type=click.Path(path_type=Path),
              help="The base plan's neighborhoods file, if it moved.")  # fmt: skip
@click.option("--network", "network_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The base street plan's network file, if it moved.")  # fmt: skip
@click.option("--taxonomy", "taxonomy_path", type=click.Path(path_type=Path))
@click.option("--input-crs", help="Declare the CRS of inputs not in WGS84.")
@_with_common
@_guarded
def scenario_cmd(
    base_dir: Path,
    out_dir: Path,
    add_partners: Path | None,
    remove_partners: str | None,
    scale_capacity: float | None,
    radius_km: float | None,
    needs_path: Path | None,
    partners_path: Path | None,
    hoods_path: Path | None,
    network_path: Path | None,
    taxonomy_path: Path | None,
    input_crs: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Re-plan a plan with partners added, removed or changed (what if), and diff it.

    Writes the scenario's plan files, scenario.json (metrics before, after and delta),
    scenario_clusters.csv (clusters that gained or lost service) and
    scenario_partners.csv (partners whose load changed); recruit.csv and report.html
    when the base plan has them.
    """
    from .output import write_files
    from .report import REPORT_NAME, WHAT_IF_TITLE, report_html
    from .scenario import ScenarioChange, run_scenario

    _setup_logging(quiet, verbose)
    change = ScenarioChange(
        add_partners=add_partners,
        remove_partners=tuple(p.strip() for p in (remove_partners or "").split(",") if p.strip()),
        scale_capacity=scale_capacity,
        radius_km=radius_km,
    )
    result = run_scenario(
        base_dir,
        change,
        needs=needs_path,
        partners=partners_path,
        neighborhoods=hoods_path,
        network=network_path,
        taxonomy=_taxonomy(taxonomy_path) if taxonomy_path else None,
        input_crs=input_crs,
    )
    files = result.files()
    if (base_dir / REPORT_NAME).is_file():  # the base has a report: so does the what-if
        html = report_html(result.plan, title=WHAT_IF_TITLE)
        files[REPORT_NAME] = html.encode("utf-8")
    written = write_files(dict(sorted(files.items())), out_dir)
    if not quiet:
        b, a = result.metrics["before"], result.metrics["after"]
        click.echo(
            f"served {b['units_served']:g} -> {a['units_served']:g} units "
            f"({100 * b['coverage']:.1f}% -> {100 * a['coverage']:.1f}%); "
            f"{len(result.clusters)} clusters changed, {len(result.partners)} partners changed"
        )
        click.echo(f"wrote {', '.join(written)} to {out_dir}")


@main.command("compare")
@click.argument("a_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("b_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write compare.json and compare_{clusters,partners,neighborhoods}.csv here.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="'json': the whole comparison on stdout (as the API's compare route).",
)
@_with_common
@_guarded
def compare_cmd(
    a_dir: Path, b_dir: Path, out_dir: Path | None, fmt: str, quiet: bool, verbose: bool
) -> None:
    """Compare two plan directories written by matcher plan (or scenario): B against A.

    Per cluster (when both have the same clusters), per partner whose load differs and
    per neighborhood; every delta is B minus A.
    """
    import json

    from .compare import OPTIONAL_PLAN_FILES, REQUIRED_PLAN_FILES, compare_plans
    from .limits import read_file
    from .output import write_files

    _setup_logging(quiet, verbose)
    plans = [
        {n: read_file(d / n) for n in (*REQUIRED_PLAN_FILES, *OPTIONAL_PLAN_FILES)
         if (d / n).exists()}
        for d in (a_dir, b_dir)
    ]  # fmt: skip
    result = compare_plans(plans[0], plans[1], labels=(str(a_dir), str(b_dir)))
    # every output is built before anything is written: a failure writes nothing
    files = result.files() if out_dir is not None else {}
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) if fmt == "json" else None
    written = write_files(files, out_dir, drop_stale=False) if out_dir is not None else {}
    if text is not None:
        click.echo(text)
    elif not quiet:
        t = result.totals
        click.echo(
            f"served {_units(t['units_served_a'])} -> {_units(t['units_served_b'])} units "
            f"({_units(t['units_served_delta'], '+')}); coverage "
            f"{100 * t['coverage_a']:.1f}% -> {100 * t['coverage_b']:.1f}%"
        )
        if result.clusters_comparable:
            click.echo(f"clusters: {t['clusters_gained']} gained, {t['clusters_lost']} lost, "
                       f"{t['clusters_same']} the same")  # fmt: skip
        else:
            click.echo(f"clusters not compared: {_printable(result.reason or '')}")
        click.echo(f"partners whose load changed: {t['partners_changed']}")
        for r in result.neighborhoods.itertuples(index=False):
            click.echo(
                f"  {_printable(str(r.neighborhood_id))} {_printable(str(r.name or ''))}: "
                f"served {_units(r.served_a)} -> {_units(r.served_b)} "
                f"({_units(r.delta_served, '+')})"
            )
    if written and not quiet:
        click.echo(f"wrote {', '.join(written)} to {out_dir}", err=fmt == "json")


def _units(value: float, sign: str = "") -> str:
    """Return units as the plan files write them (at most 6 decimals, no float noise)."""
    text = f"{value:{sign}.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("+0", "-0") else text


@main.group("hsds")
def hsds_group() -> None:
    """Open Referral HSDS 3.x interchange of partners (see docs/hsds.md)."""


@hsds_group.command("import")
@click.option("--source", required=True, type=click.Path(path_type=Path, exists=True),
              help="A directory of HSDS CSV tables or an HSDS JSON file.")  # fmt: skip
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="The partners CSV to write.")  # fmt: skip
@click.option("--mapping", type=click.Path(path_type=Path),
              help="Taxonomy mapping CSV (HSDS term -> matcher category).")  # fmt: skip
@click.option("--default-radius-km", type=float, default=5.0, show_default=True)
@click.option("--default-capacity", type=float, help="Capacity of services without one.")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid rows (reported).")
@click.option("--unmapped", default="error", show_default=True, metavar="POLICY",
              help="A taxonomy term the mapping does not know: error, skip (services with "
              "no mapped term are left out, reported) or default:CATEGORY.")  # fmt: skip
@_with_common
@_guarded
def hsds_import_cmd(
    source: Path,
    out_path: Path,
    mapping: Path | None,
    default_radius_km: float,
    default_capacity: float | None,
    skip_invalid: bool,
    unmapped: str,
    quiet: bool,
    verbose: bool,
) -> None:
    """Import partners from HSDS (1.1, 2.0 with 1.1's tables, 3.0, 3.1) into a partners CSV.

    Writes the partners, PARTNERS_mapping.csv (each taxonomy term met, the category it
    mapped to or none, and how many services carry it) and, when rows are skipped,
    PARTNERS_rejects.csv; prints the mapping report's summary.
    """
    from .hsds import read_hsds
    from .output import _write_csv

    _setup_logging(quiet, verbose)
    table = read_hsds(
        source,
        mapping=mapping,
        on_invalid="skip" if skip_invalid else "raise",
        unmapped=unmapped,
        default_radius_km=default_radius_km,
        default_capacity=default_capacity,
    )
    import pandas as pd

    frame = pd.DataFrame(table.frame.drop(columns="geometry"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rejects_path = out_path.with_name(f"{out_path.stem}_rejects.csv")
    report_path = out_path.with_name(f"{out_path.stem}_mapping.csv")
    report = table.report if table.report is not None else pd.DataFrame()
    for path, content in ((out_path, frame), (rejects_path, table.rejects),
                          (report_path, report)):  # fmt: skip
        if path is rejects_path and content.empty:
            path.unlink(missing_ok=True)  # no stale rejects of an earlier import
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        _write_csv(content, tmp)
        tmp.replace(path)
    if len(table.rejects):
        click.echo(f"skipped {len(table.rejects)} invalid partner(s) of "
                   f"{len(table.rejects) + len(frame)}; {len(frame)} remain. Their problems "
                   f"(also in {rejects_path}):", err=True)  # fmt: skip
        for text in table.rejects["problems"].head(20):
            click.echo(f"  - {_printable(str(text))}", err=True)
    if len(report):
        by = report.groupby("how")["services"].agg(["size", "sum"])
        said = "; ".join(f"{int(r['size'])} {how} ({int(r['sum'])} service links)"
                         for how, r in by.iterrows())  # fmt: skip
        click.echo(f"taxonomy terms: {said}; each in {report_path}", err=True)
        for r in report[report["how"] == "unmapped"].head(10).itertuples():
            click.echo(f"  - unmapped: {_printable(r.taxonomy or '-')} / "
                       f"{_printable(r.code or '-')} / {_printable(r.name or '-')} "
                       f"({r.services} service(s))", err=True)  # fmt: skip
    if not quiet:
        click.echo(f"wrote {len(frame)} partners to {out_path}")


@hsds_group.command("export")
@click.option("--partners", "partners_path", required=True, type=click.Path(path_type=Path),
              help="The partners file to export.")  # fmt: skip
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Directory (csv) or .json file to write.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]),
              help="csv (a directory of tables) or json; default: json when --out ends in "
              ".json, else csv.")  # fmt: skip
@click.option("--mapping", type=click.Path(path_type=Path))
@click.option("--include-volunteers", is_flag=True,
              help="Export volunteers too (their points coarsened to ~500 m).")  # fmt: skip
@_with_common
@_guarded
def hsds_export_cmd(
    partners_path: Path,
    out_path: Path,
    fmt: str | None,
    mapping: Path | None,
    include_volunteers: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Export partners as HSDS 3.x (CSV tables or JSON)."""
    if fmt is None:
        fmt = "json" if out_path.suffix.lower() == ".json" else "csv"
    import pandas as pd

    from .hsds import write_hsds
    from .io import read_partners

    _setup_logging(quiet, verbose)
    frame = read_partners(partners_path).frame
    paths = write_hsds(
        pd.DataFrame(frame.drop(columns="geometry")),
        out_path,
        format=fmt,  # type: ignore[arg-type]
        mapping=mapping,
        include_volunteers=include_volunteers,
    )
    if not quiet:
        click.echo(f"wrote {len(paths)} file(s) to {out_path}")


@main.command("validate")
@click.option("--needs", "needs_path", required=True, type=click.Path(path_type=Path))
@click.option("--partners", "partners_path", required=True, type=click.Path(path_type=Path))
@click.option("--taxonomy", "taxonomy_path", type=click.Path(path_type=Path))
@click.option("--input-crs", help="Declare the CRS of inputs not in WGS84.")
@_with_common
@_guarded
def validate_cmd(
    needs_path: Path,
    partners_path: Path,
    taxonomy_path: Path | None,
    input_crs: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Validate needs and partners files; report every problem at once."""
    from .pipeline import _load_inputs

    _setup_logging(quiet, verbose)
    config = MatchConfig(taxonomy=_taxonomy(taxonomy_path))
    needs, partners = _load_inputs(needs_path, partners_path, config, input_crs)
    if not quiet:
        click.echo(f"ok: {len(needs.frame)} needs, {len(partners.frame)} partners")


@main.command("assess")
@click.argument("mapping_path", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The needs CSV to write (a needs file `matcher plan` reads).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the assessment report CSV: per source, indicator and area, the figures "
    "and the demand model; every column, type or choice the mapping does not use.",
)
@click.option("--taxonomy", "taxonomy_path", type=click.Path(path_type=Path))
@_with_common
@_guarded
def assess_cmd(
    mapping_path: Path,
    out_path: Path,
    report_path: Path | None,
    taxonomy_path: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Turn assessments into needs, as the TOML mapping file MAPPING_PATH says.

    Sources: rates per area, ranked priorities, point reports (311) and survey
    responses (ODK, KoboToolbox, Google Forms; counts below k suppressed).
    """
    from .assessments import assess

    _setup_logging(quiet, verbose)
    result = assess(mapping_path, taxonomy=_taxonomy(taxonomy_path))
    result.write(out_path, report_path)
    if not quiet:
        n = result.needs
        click.echo(
            f"wrote {len(n)} needs ({n['demand'].sum():,.1f} units, "
            f"{n['category'].nunique()} categories, {n['neighborhood'].nunique()} areas) "
            f"from {len(result.mapping.sources)} source(s) to {out_path}"
            + (f"; report: {report_path}" if report_path else "")
        )


@main.command("generate")
@click.option("--needs", "n_needs", required=True, type=click.IntRange(1), help="Number of needs.")
@click.option(
    "--partners", "n_partners", required=True, type=click.IntRange(1), help="Number of partners."
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--cities",
    "n_cities",
    type=click.IntRange(1),
    default=None,
    help="A region of this many metro areas instead of one city (Zipf sizes, far enough "
    "apart that no partner reaches another metro; also writes metros.csv).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@_with_common
@_guarded
def generate_cmd(
    n_needs: int,
    n_partners: int,
    seed: int,
    n_cities: int | None,
    out_dir: Path,
    quiet: bool,
    verbose: bool,
) -> None:
    """Generate a seeded synthetic city or region: needs, partners and neighborhoods files."""
    _setup_logging(quiet, verbose)
    if n_cities is not None:
        from .synthetic_region import metros, write_region

        paths = write_region(metros(n_needs, n_partners, n_cities, seed=seed), out_dir)
    else:
        from .synthetic import generate_city, write_city

        paths = write_city(generate_city(n_needs, n_partners, seed=seed), out_dir)
    if not quiet:
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@main.group("keys")
def keys_group() -> None:
    """Manage API keys of a service store."""


_DB_HELP = "Store: a SQLite file path, sqlite:///path or postgresql://user@host/dbname."


@keys_group.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--db", "db", required=True, help=_DB_HELP)
@click.option("--label", default="", help="A note for admins: whose key it is.")
@click.option(
    "--partner-id",
    default=None,
    help="With --role partner: the partner the key acts for (it sees only its own offers).",
)
@_guarded
def keys_create_cmd(role: str, db: str, label: str, partner_id: str | None) -> None:
    """Create an API key; the key is printed alone on the last line (store it now)."""
    from .limits import text_problem
    from .store import NotFoundError, open_store

    reason = text_problem(label)
    if reason is not None:
        raise InputValidationError([Problem("--label", None, "label", label[:40], reason)])
    if (role == "partner") != (partner_id is not None):
        why = ("a partner key needs the partner it acts for" if role == "partner"
               else "only a partner key (--role partner) is bound to a partner")  # fmt: skip
        raise InputValidationError([Problem("--partner-id", None, "partner_id", partner_id, why)])
    with open_store(db) as store:
        try:
            key_id, key = store.create_api_key(role, label=label, actor="cli",
                                               partner_id=partner_id)  # fmt: skip
        except NotFoundError:
            raise InputValidationError(
                [Problem("--partner-id", None, "partner_id", str(partner_id)[:40],
                         "no such partner in this store")]
            ) from None  # fmt: skip
    click.echo(f"created {role} key {key_id}; only its hash is stored:", err=True)
    click.echo(key)


@keys_group.command("list")
@click.option("--db", "db", required=True, help=_DB_HELP)
@_guarded
def keys_list_cmd(db: str) -> None:
    """List the API keys: id, role, label, created, revoked (never a key itself)."""
    from .output import neutralise_cell
    from .store import open_store

    with open_store(db) as store:
        keys = store.list_api_keys()
    click.echo("key_id\trole\tprefix\tcreated_at\trevoked_at\tlabel\tpartner_id")
    for k in keys:
        label = str(neutralise_cell(k.label)).replace("\t", " ")
        label = _printable(label)
        partner = _printable(str(neutralise_cell(k.partner_id or "")).replace("\t", " "))
        click.echo(
            f"{k.key_id}\t{k.role}\t{k.prefix}\t{k.created_at}\t{k.revoked_at or ''}\t{label}"
            f"\t{partner}"
        )


@keys_group.command("revoke")
@click.argument("key_id")
@click.option("--db", "db", required=True, help=_DB_HELP)
@_guarded
def keys_revoke_cmd(key_id: str, db: str) -> None:
    """Revoke an API key: every server process refuses it within seconds."""
    from .store import NotFoundError, open_store

    with open_store(db) as store:
        try:
            store.revoke_api_key(key_id, actor="cli")
        except NotFoundError:
            raise InputValidationError(
                [Problem("KEY_ID", None, "key_id", key_id[:40],
                         "no such key; `matcher keys list` shows the keys")]
            ) from None  # fmt: skip
    click.echo(f"revoked {key_id}", err=True)


@main.command("serve")
@click.option("--db", "db", required=True, help=_DB_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--threads", default=8, show_default=True, type=click.IntRange(1, 64),
    help="Request threads per worker process.",
)  # fmt: skip
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Server processes sharing the port (each with its own plan worker).",
)  # fmt: skip
@click.option(
    "--sample",
    "sample_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Load this sample city into a new, empty store (default: data/sample "
    "of the source tree, when present).",
)
@_with_common
@_guarded
def serve_cmd(
    db: str,
    host: str,
    port: int,
    threads: int,
    workers: int,
    sample_dir: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run the HTTP API under the waitress WSGI server, in one process or several.

    The store (``--db``) may be a SQLite file or a PostgreSQL/PostGIS database; several
    processes, or several machines on one PostgreSQL database, share its plan queue.
    A new, empty store is loaded with the sample city first.
    """
    try:
        import waitress  # noqa: F401

        from api import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the service needs the 'api' extra ({exc.name} is missing): pip install 'matcher[api]'"
        ) from None
    from api import TEXT_SETTINGS
    from matcher_api.webmap import check_page_config

    from ._server import serve
    from .store import open_store

    _setup_logging(quiet, verbose)
    # the pages' settings from MATCHER_* variables: a bad one is exit 2 before anything starts
    check_page_config({name: os.environ[f"MATCHER_{name}"] for name in TEXT_SETTINGS
                       if f"MATCHER_{name}" in os.environ})  # fmt: skip
    store = open_store(db)  # a database that cannot be reached: one line, exit 1
    sample = sample_dir or Path(__file__).resolve().parents[1] / "data" / "sample"
    if (sample / "needs.csv").exists() and not store.count_partners() + store.count_needs():
        from .io import read_needs, read_neighborhoods, read_partners

        # one transaction: a start killed while loading leaves an empty store, never half
        if store.load_if_empty(
            read_partners(sample / "partners.csv"),
            read_needs(sample / "needs.csv"),
            read_neighborhoods(sample / "neighborhoods.geojson")[0],
            actor="serve",
        ):
            logger.info("new store: loaded the sample city from %s", sample)
    recovered = store.recover_plans(actor="serve")
    if recovered:
        logger.warning("recovered %d plan(s) whose worker stopped", len(recovered))
    where = store.where if hasattr(store, "where") else type(store).__name__
    store.close()  # each server process opens its own (no connection crosses a fork)
    logger.info("serving on http://%s:%d (store %s)", host, port, where)
    serve(lambda: create_app({"DB": db}), host=host, port=port, threads=threads, workers=workers)


if __name__ == "__main__":  # pragma: no cover - python -m matcher.cli
    main()


# the commands of a store's plans and partnerships live beside (they register on ``main``)
from . import cli_partnerships  # noqa: E402, F401
