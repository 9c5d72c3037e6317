"""The ``matcher`` command line: plan, validate, generate."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from ._errors import InputValidationError, MatcherError
from .config import OBJECTIVES, MatchConfig
from .taxonomy import Taxonomy, default_taxonomy

__all__ = ["main"]

logger = logging.getLogger("matcher")

EXIT_INVALID = 2
EXIT_FAILURE = 1


class _ClickHandler(logging.Handler):
    """Write log records to the current click stderr (works under CliRunner too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _ClickHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    root = logging.getLogger("matcher")
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ClickHandler)] + [handler]
    root.setLevel(level)


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
    skip_invalid: bool,
    taxonomy_path: Path | None,
    input_crs: str | None,
    models_dir: Path,
    quiet: bool,
    verbose: bool,
) -> None:
    """Plan: cluster needs, match partners, write the plan to --out."""
    from .plan import plan

    _setup_logging(quiet, verbose)
    config = MatchConfig(
        objective=objective,  # type: ignore[arg-type]
        cluster_km=cluster_km,
        min_samples=min_samples,
        max_cluster_radius_km=max_cluster_radius_km,
        seed=seed,
        on_invalid="skip" if skip_invalid else "raise",
        taxonomy=_taxonomy(taxonomy_path),
    )
    result = plan(
        needs_path, partners_path, neighborhoods=hoods_path, config=config, input_crs=input_crs
    )
    written = result.to_dir(out_dir)
    manifest = result.save_model(models_dir)
    units = result.metrics["units"]
    if not quiet:
        click.echo(
            f"served {units['served']:g} of {units['demand']:g} units "
            f"({100 * units['coverage']:.1f}%), unmet {units['unmet']:g}; "
            f"{len(result.clusters)} clusters, {len(result.assignments)} assignments"
        )
        click.echo(f"wrote {', '.join(written)} to {out_dir}")
        click.echo(f"saved clustering model {manifest}")


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
    from .plan import _load_inputs

    _setup_logging(quiet, verbose)
    config = MatchConfig(taxonomy=_taxonomy(taxonomy_path))
    needs, partners = _load_inputs(needs_path, partners_path, config, input_crs)
    if not quiet:
        click.echo(f"ok: {len(needs.frame)} needs, {len(partners.frame)} partners")


@main.command("generate")
@click.option("--needs", "n_needs", required=True, type=click.IntRange(1), help="Number of needs.")
@click.option(
    "--partners", "n_partners", required=True, type=click.IntRange(1), help="Number of partners."
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@_with_common
@_guarded
def generate_cmd(
    n_needs: int, n_partners: int, seed: int, out_dir: Path, quiet: bool, verbose: bool
) -> None:
    """Generate a seeded synthetic city: needs.csv, partners.csv, neighborhoods.geojson."""
    from .synthetic import generate_city, write_city

    _setup_logging(quiet, verbose)
    city = generate_city(n_needs, n_partners, seed=seed)
    paths = write_city(city, out_dir)
    if not quiet:
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@main.group("keys")
def keys_group() -> None:
    """Manage API keys of a service store."""


@keys_group.command("create")
@click.option("--role", type=click.Choice(["planner", "outreach", "admin"]), required=True)
@click.option("--db", "db", required=True, help="Store path (SQLite file) or URL.")
@_guarded
def keys_create_cmd(role: str, db: str) -> None:
    """Create an API key; the key is printed alone on the last line (store it now)."""
    from .store import open_store

    key_id, key = open_store(db).create_api_key(role)
    click.echo(f"created {role} key {key_id}; only its hash is stored:", err=True)
    click.echo(key)


@main.command("serve")
@click.option("--db", "db", required=True, help="Store path (SQLite file) or URL.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--models-dir",
    default="models",
    show_default=True,
    help="Where plans save their clustering models.",
)
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
    models_dir: str,
    sample_dir: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run the HTTP API under the waitress WSGI server."""
    try:
        import waitress

        from api import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the service needs the 'api' extra ({exc.name} is missing): pip install 'matcher[api]'"
        ) from None

    _setup_logging(quiet, verbose)
    app = create_app({"DB": db, "MODELS_DIR": models_dir})
    store = app.extensions["matcher_store"]
    sample = sample_dir or Path(__file__).resolve().parents[1] / "data" / "sample"
    empty = store.count_partners() == 0 and store.count_needs() == 0
    if empty and (sample / "needs.csv").exists():
        from .io import read_needs, read_neighborhoods, read_partners

        store.replace_partners(read_partners(sample / "partners.csv").frame, actor="serve")
        store.replace_needs(read_needs(sample / "needs.csv").frame, actor="serve")
        store.replace_neighborhoods(
            read_neighborhoods(sample / "neighborhoods.geojson")[0], actor="serve"
        )
        logger.info("new store: loaded the sample city from %s", sample)
    logger.info("serving on http://%s:%d (store %s)", host, port, db)
    waitress.serve(app, host=host, port=port, threads=threads, ident="matcher")


if __name__ == "__main__":  # pragma: no cover - python -m matcher.cli
    main()
