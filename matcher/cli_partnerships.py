"""``matcher publish``, ``partnerships`` and ``outcomes``: the plan-to-action commands.

The same core as the service (:mod:`matcher.partnerships`); the CLI acts as ``cli`` with
a planner's rights (whoever may open the store may change it).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

from ._errors import InputValidationError, Problem
from .cli import _DB_HELP, _guarded, _printable, main
from .limits import MAX_ID_CHARS
from .partnerships import MAX_REASON, STATES, TRANSITIONS, OfferPolicy

__all__ = ["impact_cmd", "outcomes_group", "partnerships_group", "publish_cmd"]

#: The columns ``matcher partnerships list`` prints, in order.
LIST_COLUMNS = (
    "partnership_id", "state", "partner_id", "cluster_id", "category", "neighborhood",
    "units", "plan_id", "offered_at", "expires_at", "answered_at", "reason", "version",
    "updated_at",
)  # fmt: skip


def _not_found(what: str, value: str, hint: str) -> InputValidationError:
    return InputValidationError([Problem(what, None, what.lower(), value[:40], hint)])


def _id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Return an id or filter value within the API's bound (``limits.MAX_ID_CHARS``).

    Else exit 2 naming the parameter and the value (click's usage error).
    """
    if value is not None and not 1 <= len(value) <= MAX_ID_CHARS:
        raise click.BadParameter(
            f"{value[:40]!r}... is {len(value)} characters long; at most {MAX_ID_CHARS}"
            if len(value) > 40 else f"{value!r} must be 1 to {MAX_ID_CHARS} characters"
        )  # fmt: skip
    return value


@main.command("publish")
@click.argument("plan_id", callback=_id)
@click.option("--db", "db", required=True, help=_DB_HELP)
@click.option(
    "--offer-days",
    type=click.FloatRange(0.001, OfferPolicy.max_days),
    default=OfferPolicy.days,
    show_default=True,
    help="Days an offer waits for its partner's answer before it lapses.",
)
@_guarded
def publish_cmd(plan_id: str, db: str, offer_days: float) -> None:
    """Publish a done plan of a store: it becomes the plan in force, its assignments offers.

    Unanswered offers of the plan in force before are withdrawn; accepted, active and
    declined partnerships are carried to this plan's clusters. Prints what changed (JSON).
    """
    from .partnerships import publish_plan
    from .store import NotFoundError, open_store

    with open_store(db) as store:
        try:
            result = publish_plan(store, plan_id, "cli", offer_days=offer_days)
        except NotFoundError:
            raise _not_found("PLAN_ID", plan_id, "no such plan in this store") from None
    click.echo(json.dumps(result, indent=2))


@main.group("partnerships")
def partnerships_group() -> None:
    """List partnerships of a store and take their steps."""


@partnerships_group.command("list")
@click.option("--db", "db", required=True, help=_DB_HELP)
@click.option("--state", type=click.Choice(STATES), help="Only partnerships in this state.")
@click.option("--partner", "partner_id", callback=_id, help="Only this partner's.")
@click.option("--neighborhood", callback=_id, help="Only this neighborhood's.")
@click.option("--category", callback=_id, help="Only this category's.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="At most this many (a warning says when more match).")  # fmt: skip
@click.option("--all", "every", is_flag=True,
              help="All that match, whatever --limit says (an export, e.g. for matcher impact).")
@_guarded
def partnerships_list_cmd(
    db: str,
    state: str | None,
    partner_id: str | None,
    neighborhood: str | None,
    category: str | None,
    limit: int,
    every: bool,
) -> None:
    """Print partnerships as CSV (newest offer first); cells are neutralised."""
    from .output import neutralise_cell
    from .store import open_store

    where: dict[str, Any] = dict(states=(state,) if state else None, partner_id=partner_id,
                                 neighborhood=neighborhood, category=category)  # fmt: skip
    with open_store(db) as store:
        rows = store.list_partnerships(**where, limit=None if every else limit)
        if not every and len(rows) == limit:
            total = store.count_partnerships(**where)
            if total > limit:
                click.echo(f"warning: {total} partnerships match; the {limit} newest are "
                           "printed (--all prints every one)", err=True)  # fmt: skip
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(LIST_COLUMNS)
    for row in rows:
        out.writerow([_printable(str(neutralise_cell(row[c] if row[c] is not None else "")))
                      for c in LIST_COLUMNS])  # fmt: skip
    click.echo(text.getvalue(), nl=False)


@partnerships_group.command("reliability")
@click.option("--db", "db", help=_DB_HELP)
@click.option("--partnerships", type=click.Path(path_type=Path),
              help="Without --db: a partnerships CSV (as `matcher partnerships list --all` "
              "writes it).")  # fmt: skip
@click.option("--deliveries", type=click.Path(path_type=Path),
              help="Without --db: a deliveries CSV (partnership_id, period_start, period_end, "
              "units).")  # fmt: skip
@_guarded
def partnerships_reliability_cmd(
    db: str | None, partnerships: Path | None, deliveries: Path | None
) -> None:
    """Print each partner's acceptance and delivery reliability as CSV (see the README)."""
    from .output import csv_bytes

    if (db is None) == (partnerships is None or deliveries is None):
        raise click.UsageError("give --db, or --partnerships and --deliveries (files), "
                               "not both")  # fmt: skip
    if db is not None:
        from .reliability import partner_reliability
        from .store import open_store

        with open_store(db) as store:
            frame = partner_reliability(store)
    else:
        from .impact import read_partnerships
        from .limits import read_file
        from .outcomes import read_deliveries
        from .reliability import reliability_table

        assert partnerships is not None and deliveries is not None
        frame = reliability_table(
            read_partnerships(read_file(partnerships), str(partnerships)),
            read_deliveries(read_file(deliveries), str(deliveries)),
        )
    click.echo(csv_bytes(frame).decode("utf-8"), nl=False)


@partnerships_group.command("step")
@click.argument("partnership_id", callback=_id)
@click.option("--db", "db", required=True, help=_DB_HELP)
@click.option("--to", "to", type=click.Choice(sorted({b for (_, b) in TRANSITIONS})),
              required=True, help="The state to move it to.")  # fmt: skip
@click.option("--reason", default="", help=f"Why (to decline or cancel; <= {MAX_REASON} chars).")
@click.option(
    "--version",
    "expected",
    type=click.IntRange(1),
    help="The version read (its ETag): refused if it changed since. Default: the current one.",
)
@_guarded
def partnerships_step_cmd(
    partnership_id: str, db: str, to: str, reason: str, expected: int | None
) -> None:
    """Move a partnership to its next state, as a planner (e.g. an answer given by phone)."""
    from .partnerships import transition
    from .store import NotFoundError, open_store

    with open_store(db) as store:
        current = store.get_partnership(partnership_id)
        if current is None:
            raise _not_found("PARTNERSHIP_ID", partnership_id,
                             "no such partnership; `matcher partnerships list` shows them")
        version = int(current["version"]) if expected is None else expected
        try:
            rec: dict[str, Any] = transition(store, partnership_id, to, version, "cli",
                                             role="planner", reason=reason)  # fmt: skip
        except NotFoundError:  # pragma: no cover - deleted meanwhile
            raise _not_found("PARTNERSHIP_ID", partnership_id, "no such partnership") from None
    click.echo(f"{partnership_id}: {rec['state']} (version {rec['version']})", err=True)


@partnerships_group.command("clear")
@click.argument("partnership_id", callback=_id)
@click.option("--db", "db", required=True, help=_DB_HELP)
@_guarded
def partnerships_clear_cmd(partnership_id: str, db: str) -> None:
    """Clear a decline, so that the next re-plan may propose the pair again."""
    from .partnerships import clear_decline
    from .store import open_store

    with open_store(db) as store:
        current = store.get_partnership(partnership_id)
        if current is None:
            raise _not_found("PARTNERSHIP_ID", partnership_id,
                             "no such partnership; `matcher partnerships list` shows them")
        rec = clear_decline(store, partnership_id, int(current["version"]), "cli")
    click.echo(f"{partnership_id}: decline cleared (version {rec['version']})", err=True)


@main.group("outcomes")
def outcomes_group() -> None:
    """Import what became of the needs of a store (outcomes), in batch."""


@outcomes_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--db", "db", required=True, help=_DB_HELP)
@_guarded
def outcomes_import_cmd(path: Path, db: str) -> None:
    """Set needs' outcomes from a CSV (need_id, status, date[, rating, comment]), all or nothing.

    status: open, in_progress, resolved or not_resolved; date: YYYY-MM-DD, the day the
    status holds from; rating (1-5) and comment (<= 500 characters): a resident's feedback
    on a resolved need. Every problem is reported with its row; nothing is changed then.
    """
    from .limits import read_file
    from .outcomes import import_outcomes, read_outcomes
    from .store import open_store

    rows = read_outcomes(read_file(path), str(path))
    with open_store(db) as store:
        n = import_outcomes(store, rows, str(path), "cli")
    click.echo(f"set the outcomes of {n} need(s) from {path}", err=True)


_WINDOW_HELP = "FIRST..LAST, two ISO dates, both days included (e.g. 2014-01-01..2014-06-30)."


@main.command("impact")
@click.option("--before", required=True, help=f"The before window: {_WINDOW_HELP}")
@click.option("--after", required=True, help=f"The after window: {_WINDOW_HELP}")
@click.option("--db", "db", help=f"{_DB_HELP} Its needs, neighborhoods and partnerships.")
@click.option("--needs", type=click.Path(path_type=Path),
              help="Without --db: a needs file (as matcher plan reads it).")  # fmt: skip
@click.option("--partnerships", type=click.Path(path_type=Path),
              help="Without --db: a partnerships CSV, as `matcher partnerships list` writes "
              "it.")  # fmt: skip
@click.option("--neighborhoods", type=click.Path(path_type=Path),
              help="Without --db: polygons that place needs and events (GeoJSON).")  # fmt: skip
@click.option("--events", type=click.Path(path_type=Path),
              help="Optional events CSV (311 or incident records): id, category, lat, lon, "
              "date.")  # fmt: skip
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="Also write impact_cells.csv, impact.json and impact.html here.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="What to print.")  # fmt: skip
@_guarded
def impact_cmd(
    before: str,
    after: str,
    db: str | None,
    needs: Path | None,
    partnerships: Path | None,
    neighborhoods: Path | None,
    events: Path | None,
    out: Path | None,
    fmt: str,
) -> None:
    """Compare new needs (and events) where partnerships served with where none did.

    Per neighborhood x category, over the before and the after window: a difference in
    differences on the counts (Poisson, a fixed effect per area, cluster-robust errors),
    with the rate ratio, its 95% interval and a plain caution when the counts are too
    small. The method is in the README ("Measuring impact").
    """
    from .impact import file_impact, impact_files, parse_windows, store_impact

    b, a = parse_windows(before, after)
    files_given = [n for n, v in (("--needs", needs), ("--partnerships", partnerships),
                                  ("--neighborhoods", neighborhoods)) if v is not None]  # fmt: skip
    if db is not None and files_given:
        raise click.UsageError(f"give --db or files, not both ({', '.join(files_given)})")
    if db is None and (needs is None or partnerships is None):
        raise click.UsageError("give --db, or --needs and --partnerships (files)")
    if db is not None:
        from .limits import read_file
        from .store import open_store

        content = None if events is None else read_file(events)
        with open_store(db) as store:
            result = store_impact(store, b, a, events=content, events_label=str(events))
    else:
        assert needs is not None and partnerships is not None
        result = file_impact(needs, partnerships, b, a, neighborhoods=neighborhoods,
                             events=events)  # fmt: skip
    if out is not None:
        from .output import write_files

        written = write_files(impact_files(result), out, drop_stale=False)
        click.echo(f"wrote {', '.join(sorted(written))} to {out}", err=True)
    click.echo(result.to_json() if fmt == "json" else result.table(), nl=False)
