"""A self-contained HTML report of a plan: static maps, metrics tables and the largest gaps.

The report is one HTML file that reads offline and prints: the maps are PNG images
rendered with matplotlib's Agg canvas and embedded as ``data:`` URIs, the styles are
inline, and nothing refers to any external resource (no CDN, no web font, no link
out). Every piece of text that comes from the data (partner names, neighborhood
names, ids, categories) is HTML-escaped. A volunteer's point is drawn coarsened, as in
``plan.geojson`` (:func:`matcher.privacy.coarsen`).

The output is deterministic: the same plan renders to the same bytes (no timestamp,
no software version in the PNG metadata).

Use :func:`render_report` (``render_report(plan, "out")`` writes ``out/report.html``),
or :func:`report_html` for the text and :func:`write_report` to write it atomically;
``matcher plan --report`` does the latter after the other output files.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from .equity import natural_order
from .privacy import partners_view

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .impact import ImpactResult
    from .pipeline import Plan

__all__ = ["impact_html", "report_html", "render_report", "write_report", "IMPACT_TITLE",
           "REPORT_NAME", "REPORT_TITLE", "WHAT_IF_TITLE"]  # fmt: skip

logger = logging.getLogger(__name__)

#: File name of the report in a plan's output directory.
REPORT_NAME = "report.html"
#: Title of a plan's report, and of a what-if scenario's (``matcher scenario``, the service).
REPORT_TITLE = "matcher plan report"
WHAT_IF_TITLE = "matcher what-if plan report"

#: Rows shown in the "largest gaps" tables.
TOP_GAPS = 20
#: Rows shown in the partners table.
TOP_PARTNERS = 25
#: Rows shown of any extra table the plan carries (``plan.gap_table``, ``plan.recruit``).
TOP_EXTRA = 50

_DPI = 100
_MAP_SIZE = (7.5, 7.0)
_REASON_COLORS = {
    "no_partner_in_range": "#c0392b",
    "partners_in_range_full": "#e67e22",
}
_KIND_STYLE = {
    "organization": {"marker": "s", "color": "#1f5f99"},
    "volunteer": {"marker": "o", "color": "#7d3c98"},
}

_CSS = """
:root { --ink: #1b1f24; --muted: #5b6470; --rule: #d5d9de; --band: #f4f6f8;
        --good: #2e7d32; --bad: #c0392b; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: var(--ink); margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; border-bottom: 2px solid var(--ink); padding-bottom: 4px;
     margin: 32px 0 12px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
p.lead, .muted { color: var(--muted); }
nav ol { columns: 3; padding-left: 20px; margin: 8px 0 0; }
nav a { color: var(--ink); }
.scroll { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
caption { text-align: left; color: var(--muted); padding: 0 0 4px; caption-side: top; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--rule); text-align: left;
         vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { white-space: nowrap; }
tfoot td { font-weight: 600; border-top: 2px solid var(--ink); }
table.kv { width: auto; min-width: 50%; }
table.kv th { width: 16em; }
code { font-size: 12px; word-break: break-all; }
.bar { display: inline-block; width: 80px; height: 10px; background: #f3d6d2;
       vertical-align: middle; margin-right: 6px; }
.bar > span { display: block; height: 100%; background: var(--good); }
.maps { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(480px, 100%), 1fr));
        gap: 16px; }
figure { margin: 0 0 16px; }
figure img { width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--rule); padding: 8px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media (max-width: 640px) {
  body { padding: 12px; }
  nav ol { columns: 1; }
  table.kv { min-width: 0; }
  table.kv th { width: auto; }
  .bar { width: 40px; }
}
@page { margin: 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9pt; }
  nav { display: none; }
  h2 { break-after: avoid; }
  h2.new-page { break-before: page; }
  figure, tr, .card { break-inside: avoid; }
  thead { display: table-header-group; }
  .scroll { overflow: visible; }
  table, table.kv { width: 100%; min-width: 0; table-layout: auto; font-size: 7.5pt; }
  th, td { padding: 1.5pt 3pt; }
  th.num { white-space: normal; }
  td.id { white-space: normal; overflow-wrap: anywhere; }
  code { font-size: 7pt; }
  .bar { width: 32px; height: 7px; margin-right: 3px; }
  .maps { display: block; }
  figure img { max-width: 100%; max-height: 235mm; width: auto; }
  .bar, .bar > span, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""


# ---------------------------------------------------------------------------------------
# HTML helpers
# ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escape any value's text (quotes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, digits: int = 1) -> str:
    """Format a number for people: thousands separators, at most ``digits`` decimals.

    No trailing zeros, so a whole number is shown whole; a dash when missing.

    Examples
    --------
    >>> _num(19736.0), _num(1234.56), _num(0.5, 2), _num(-0.01), _num(None)
    ('19,736', '1,234.6', '0.5', '0', '–')
    """
    if _is_missing(value):
        return "–"
    x = round(float(value), digits) + 0.0  # + 0.0: no "-0"
    text = f"{x:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _num2(value: Any) -> str:
    return _num(value, 2)


def _num0(value: Any) -> str:
    """Format a whole count, or a dash for none (0 or missing)."""
    return "–" if _is_missing(value) or not value else _num(value, 0)


def _count(value: Any) -> str:
    """Format a whole count ("1,234"; a dash when missing)."""
    return _num(value, 0)


def _km(value: Any) -> str:
    """Format a distance in km with 2 decimals (a dash when missing)."""
    return "–" if _is_missing(value) else f"{float(value) + 0.0:,.2f}"


def _pct(value: Any) -> str:
    """Format a share 0..1 as a percentage with at most one decimal ("60.8%", "100%")."""
    if _is_missing(value):
        return "–"
    return f"{_num(100 * float(value), 1)}%"


def _cell(value: Any) -> str:
    """Format a number for people, escaped (see :func:`_value`)."""
    return _e(_value(value))


def _value(value: Any) -> str:
    """Format any value of a plan's record: numbers for people, anything else as text."""
    if isinstance(value, bool | np.bool_) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"  # exact, however large
    if isinstance(value, float | np.floating):
        return _num(value, 6)
    return str(value)


def _bar(value: Any) -> str:
    """Return a small inline coverage bar (pure CSS, prints in colour) and the percentage."""
    if _is_missing(value):
        return "–"
    width = max(0.0, min(1.0, float(value))) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%"></span></span>{_pct(value)}'


_NUM = ' class="num"'
_ID = ' class="id"'
_NEW_PAGE = ' class="new-page"'


class _Col:
    """A table column: header, how to format a cell, and whether it is numeric or an id.

    An id's cell is not broken on screen (a wide table scrolls), and broken anywhere in
    print, so that long ids fit the page.
    """

    def __init__(
        self,
        key: str,
        title: str,
        fmt: Callable[[Any], str] | None = None,
        num: bool = False,
        *,
        ident: bool = False,
    ) -> None:
        self.key, self.title, self.num = key, title, num
        self.fmt = fmt or (_cell if num else _e)
        self.cls = _NUM if num else _ID if ident else ""

    def th(self) -> str:
        return f'<th scope="col"{_NUM if self.num else ""}>{_e(self.title)}</th>'

    def td(self, row: dict[str, Any]) -> str:
        return f"<td{self.cls}>{self.fmt(row.get(self.key))}</td>"


def _table(
    table_id: str,
    columns: Sequence[_Col],
    rows: Iterable[dict[str, Any]],
    caption: str | None = None,
    footer: dict[str, Any] | None = None,
    empty: str = "None.",
) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="muted" id="{_e(table_id)}-empty">{_e(empty)}</p>'
    parts = [f'<div class="scroll"><table id="{_e(table_id)}">']
    if caption:
        parts.append(f"<caption>{_e(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(c.th() for c in columns) + "</tr></thead>")
    parts.append("<tbody>")
    parts.extend("<tr>" + "".join(c.td(r) for c in columns) + "</tr>" for r in rows)
    parts.append("</tbody>")
    if footer is not None:
        parts.append("<tfoot><tr>" + "".join(c.td(footer) for c in columns) + "</tr></tfoot>")
    parts.append("</table></div>")
    return "\n".join(parts)


def _kv_table(table_id: str, items: Iterable[tuple[str, Any]], caption: str | None = None) -> str:
    """Render a table of names and values (numbers formatted for people, text escaped)."""
    rows = "".join(
        f'<tr><th scope="row">{_e(k)}</th>'
        f"<td>{v if isinstance(v, _Raw) else _e(_value(v))}</td></tr>"
        for k, v in items
    )
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table class="kv" id="{_e(table_id)}">{cap}<tbody>{rows}</tbody>'
        "</table></div>"
    )


class _Raw(str):
    """Already-escaped HTML (for a cell of :func:`_kv_table`)."""


#: Human labels of columns that tables show by name (:func:`_label` makes the others).
_LABELS = {
    "covered_units": "unmet units served",
    "clusters_covered": "clusters served",
    "cluster_ids": "clusters",
    "units_in_range": "unmet units in range",
    "site_cluster_id": "site cluster",
    "n_needs": "needs",
    "churn": "share of units moved",
}


def _label(name: Any) -> str:
    """Return a column's label for people: ``site_cluster_id`` is "site cluster".

    Known columns have their own (:data:`_LABELS`); otherwise underscores become spaces,
    a trailing ``_id`` goes, and ``_km`` becomes "(km)".
    """
    name = str(name)
    if name in _LABELS:
        return _LABELS[name]
    unit = ""
    if name.endswith("_km"):
        name, unit = name[:-3], " (km)"
    elif name.endswith("_id") and len(name) > 3:
        name = name[:-3]
    return name.replace("_", " ").strip() + unit


def _is_id(name: Any) -> bool:
    return str(name).endswith(("_id", "_ids"))


def _frame_table(table_id: str, frame: Any, limit: int = TOP_EXTRA) -> str:
    """Render any table-like value (DataFrame, list of dicts, dict) generically, escaped.

    Columns get human labels (:func:`_label`) and numbers are formatted for people.
    """
    if frame is None:
        return ""
    if isinstance(frame, dict):
        if not frame:
            return ""
        if not all(_listlike(v) for v in frame.values()):
            return _kv_table(table_id, [(_label(k), v) for k, v in frame.items()])
    elif not isinstance(frame, pd.DataFrame | list | tuple):
        sites = getattr(frame, "sites", None)  # e.g. matcher.recruit.RecruitSuggestions
        if not isinstance(sites, pd.DataFrame):
            return ""
        frame = sites
    df = pd.DataFrame(frame)
    if "geometry" in df.columns:
        df = df.drop(columns="geometry")
    shown = df.head(limit)
    cols = []
    for c in shown.columns:
        ident = _is_id(c)  # numeric ids are not numbers: no thousands separator
        num = pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
        num = num and not ident
        cols.append(_Col(str(c), _label(c), _num2 if num else None, num, ident=ident))
    records = [{str(k): v for k, v in r.items()} for r in shown.to_dict("records")]
    caption = f"First {len(shown)} of {len(df)} rows." if len(df) > limit else None
    return _table(table_id, cols, records, caption=caption)


def _listlike(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray | pd.Series)


def _id_rank(ids: Iterable[Any]) -> dict[str, int]:
    """Each id's place as people sort ids (2 before 10: :func:`~matcher.equity.natural_order`).

    Keyed by the id's text; sort rows by it where they tie on their figures.
    """
    unique = sorted({str(i) for i in ids})
    return {unique[i]: rank for rank, i in enumerate(natural_order(unique))}


def _by_ids(frame: pd.DataFrame, by: list[str], ascending: list[bool], ids: str) -> pd.DataFrame:
    """Sort ``frame`` by columns ``by``, the column ``ids`` among them in natural order."""
    rank = _id_rank(frame[ids])
    keyed = frame.assign(_rank=frame[ids].astype(str).map(rank).to_numpy())
    order = ["_rank" if c == ids else c for c in by]
    return keyed.sort_values(order, ascending=ascending, kind="stable").drop(columns="_rank")


# ---------------------------------------------------------------------------------------
# figures (matplotlib Figure + Agg canvas: no pyplot, no global state)
# ---------------------------------------------------------------------------------------


def _new_figure(size: tuple[float, float] = _MAP_SIZE, *, constrained: bool = False) -> Figure:
    """Return a figure on its own Agg canvas (no pyplot: nothing global is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


#: Fixed map layout (figure fractions): the map and its colour bar. A fixed layout is
#: several times faster than a constrained one on maps with thousands of artists.
_MAP_RECT = (0.09, 0.06, 0.76, 0.88)
_CBAR_RECT = (0.88, 0.3, 0.022, 0.4)


def _colorbar(fig: Figure, mappable: Any, label: str) -> None:
    cbar = fig.colorbar(mappable, cax=fig.add_axes(_CBAR_RECT))
    cbar.set_label(label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # no "Software" (matplotlib version) in the PNG: the same plan gives the same bytes
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _plain(text: str) -> str:
    """Text for a matplotlib label: no mathtext interpretation of data."""
    return str(text).replace("$", r"\$")


class _Frame:
    """The map frame: longitude unwrapping (antimeridian), extent and aspect."""

    def __init__(self, plan: Plan) -> None:
        lon = np.concatenate(
            [
                plan.need_table["lon"].to_numpy(dtype=np.float64),
                plan.clusters["centroid_lon"].to_numpy(dtype=np.float64),
            ]
        )
        lat = np.concatenate(
            [
                plan.need_table["lat"].to_numpy(dtype=np.float64),
                plan.clusters["centroid_lat"].to_numpy(dtype=np.float64),
            ]
        )
        if plan.neighborhoods is not None and len(plan.neighborhoods):
            b = plan.neighborhoods.total_bounds
            if np.all(np.isfinite(b)):
                lon = np.concatenate([lon, b[[0, 2]]])
                lat = np.concatenate([lat, b[[1, 3]]])
        if lon.size == 0:
            lon = plan.partners["lon"].to_numpy(dtype=np.float64)
            lat = plan.partners["lat"].to_numpy(dtype=np.float64)
        self.wrap = bool(lon.size) and np.ptp(lon) > 180 and np.ptp(lon % 360) < np.ptp(lon)
        x = self.x(lon)
        if x.size == 0:
            x, lat = np.array([-1.0, 1.0]), np.array([-1.0, 1.0])
        x0, x1, y0, y1 = x.min(), x.max(), lat.min(), lat.max()
        mx, my = max((x1 - x0) * 0.03, 0.005), max((y1 - y0) * 0.03, 0.005)
        self.xlim, self.ylim = (x0 - mx, x1 + mx), (max(y0 - my, -90), min(y1 + my, 90))
        mid = float(np.clip((y0 + y1) / 2, -85, 85))
        self.aspect = 1.0 / math.cos(math.radians(mid))

    def x(self, lon: Any) -> np.ndarray:
        lon = np.asarray(lon, dtype=np.float64)
        return lon % 360 if self.wrap else lon

    def axes(self, fig: Figure, title: str) -> Axes:
        ax = fig.add_axes(_MAP_RECT)
        ax.set_xlim(*self.xlim)
        ax.set_ylim(*self.ylim)
        ax.set_aspect(self.aspect)
        ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
        ax.tick_params(labelsize=7, colors="#5b6470")
        ax.set_xlabel("longitude", fontsize=7, color="#5b6470")
        ax.set_ylabel("latitude", fontsize=7, color="#5b6470")
        for spine in ax.spines.values():
            spine.set_color("#d5d9de")
        return ax

    def paths(self, geoms: np.ndarray) -> tuple[list[Any], np.ndarray]:
        """Compound matplotlib paths (holes kept) of polygonal geometries, and their indices."""
        from matplotlib.path import Path as MPath

        geoms = np.asarray(geoms, dtype=object)
        parts, owner = shapely.get_parts(geoms, return_index=True)
        poly = shapely.get_type_id(parts) == 3
        parts, owner = parts[poly], owner[poly]
        rings, ring_owner = shapely.get_rings(parts, return_index=True)
        n_coords = shapely.get_num_coordinates(rings)
        keep = n_coords >= 4  # a closed ring of at least three points
        rings, ring_owner, n_coords = rings[keep], ring_owner[keep], n_coords[keep]
        if not len(rings):
            return [], np.zeros(0, dtype=int)
        coords = shapely.get_coordinates(rings)
        verts = np.column_stack([self.x(coords[:, 0]), coords[:, 1]])
        ends = np.cumsum(n_coords)
        starts = ends - n_coords
        codes = np.full(len(verts), MPath.LINETO, dtype=MPath.code_type)
        codes[starts] = MPath.MOVETO
        codes[ends - 1] = MPath.CLOSEPOLY
        geom_of_ring = owner[ring_owner]
        # rings come grouped by geometry, in order: split the arrays at each new geometry
        first = np.flatnonzero(np.r_[True, geom_of_ring[1:] != geom_of_ring[:-1]])
        cuts = starts[first[1:]]
        paths = [
            MPath(v, c) for v, c in zip(np.split(verts, cuts), np.split(codes, cuts), strict=True)
        ]
        return paths, geom_of_ring[first].astype(int)


def _basemap(ax: Axes, frame: _Frame, plan: Plan) -> None:
    from matplotlib.collections import PathCollection

    hoods = plan.neighborhoods
    if hoods is None or not len(hoods):
        ax.set_facecolor("#fafbfc")
        return
    paths, _ = frame.paths(hoods.geometry.to_numpy())
    ax.add_collection(
        PathCollection(paths, facecolors="#eef1f4", edgecolors="#ffffff", linewidths=0.6, zorder=0)
    )


def _sizes(values: np.ndarray, lo: float = 4.0, hi: float = 160.0) -> np.ndarray:
    v = np.sqrt(np.maximum(np.asarray(values, dtype=np.float64), 0))
    top = v.max() if v.size else 0
    return lo + (hi - lo) * (v / top if top > 0 else v)


def _size_legend(ax: Axes, values: np.ndarray, label: str, **kw: Any) -> None:
    """Add a legend of three marker sizes: about the largest value, a quarter, a 20th."""
    values = np.asarray(values, dtype=np.float64)
    if not values.size or values.max() <= 0:
        return
    top = float(values.max())
    marks = sorted({_nice(top), _nice(top / 4), _nice(top / 20)} - {0.0}, reverse=True)
    scale = np.sqrt(np.array(marks) / top)
    handles = [
        ax.scatter([], [], s=4 + 156 * s, label=f"{m:g} {label}", **kw)
        for m, s in zip(marks, scale, strict=True)
    ]
    leg = ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True, framealpha=0.85)
    ax.add_artist(leg)


def _nice(x: float) -> float:
    if x <= 0:
        return 0.0
    p = 10 ** math.floor(math.log10(x))
    return float(max(m for m in (1, 2, 5) if m * p <= x * (1 + 1e-9)) * p)


def _cluster_map(plan: Plan, frame: _Frame) -> bytes:
    from matplotlib import colormaps
    from matplotlib.collections import PathCollection
    from matplotlib.colors import Normalize

    fig = _new_figure()
    ax = frame.axes(fig, "Need clusters: demand and coverage")
    _basemap(ax, frame, plan)
    cl = plan.clusters
    cov = (cl["served"] / cl["demand"].where(cl["demand"] > 0)).fillna(1.0).to_numpy()
    cmap, norm = colormaps["RdYlGn"], Normalize(0.0, 1.0)
    paths, idx = frame.paths(cl.geometry.to_numpy())
    if paths:
        ax.add_collection(
            PathCollection(
                paths,
                facecolors=cmap(norm(cov[idx]), alpha=0.25),
                edgecolors=cmap(norm(cov[idx]), alpha=0.8),
                linewidths=0.4,
                zorder=1,
            )
        )
    order = np.argsort(-cl["demand"].to_numpy(), kind="stable")
    sc = ax.scatter(
        frame.x(cl["centroid_lon"].to_numpy()[order]),
        cl["centroid_lat"].to_numpy()[order],
        s=_sizes(cl["demand"].to_numpy()[order]),
        c=cov[order],
        cmap=cmap,
        norm=norm,
        edgecolors="#333333",
        linewidths=0.3,
        alpha=0.85,
        zorder=2,
    )
    _colorbar(fig, sc, "share of demand served")
    _size_legend(ax, cl["demand"].to_numpy(), "units", color="#999999", edgecolors="#333333")
    return _png(fig)


def _partner_map(plan: Plan, frame: _Frame) -> bytes:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    fig = _new_figure()
    ax = frame.axes(fig, "Partners: capacity and use (volunteers coarsened)")
    _basemap(ax, frame, plan)
    pub = partners_view(plan.partners, exact_volunteers=False)
    cap = pub["capacity"].to_numpy(dtype=np.float64)
    used = pub["used"].to_numpy(dtype=np.float64) if "used" in pub else np.zeros_like(cap)
    util = np.where(cap > 0, used / np.where(cap > 0, cap, 1), 0.0)
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)
    sizes = _sizes(cap, 6, 120)
    sc = None
    handles = []
    for kind, style in _KIND_STYLE.items():
        m = (pub["kind"] == kind).to_numpy()
        if not m.any():
            continue
        sc = ax.scatter(
            frame.x(pub["lon"].to_numpy()[m]),
            pub["lat"].to_numpy()[m],
            s=sizes[m],
            c=util[m],
            cmap=cmap,
            norm=norm,
            marker=style["marker"],
            edgecolors="#222222",
            linewidths=0.3,
            alpha=0.85,
            zorder=2,
        )
        handles.append(
            ax.scatter(
                [],
                [],
                marker=style["marker"],
                s=30,
                color="#cccccc",
                edgecolors="#222222",
                label=f"{kind} ({int(m.sum())})",
            )
        )
    if sc is not None:
        _colorbar(fig, sc, "share of capacity used")
        ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.85)
    return _png(fig)


def _assignment_map(plan: Plan, frame: _Frame) -> bytes:
    from matplotlib.collections import LineCollection

    fig = _new_figure()
    ax = frame.axes(fig, "Assignments: partner to cluster")
    _basemap(ax, frame, plan)
    a = plan.assignment_table
    pub = partners_view(plan.partners, exact_volunteers=False)
    cl = plan.clusters
    if len(a):
        pi = pd.Index(pub["partner_id"]).get_indexer(a["partner_id"])
        ci = pd.Index(cl["cluster_id"]).get_indexer(a["cluster_id"])
        x0 = frame.x(pub["lon"].to_numpy()[pi])
        y0 = pub["lat"].to_numpy()[pi]
        x1 = frame.x(cl["centroid_lon"].to_numpy()[ci])
        y1 = cl["centroid_lat"].to_numpy()[ci]
        units = a["units"].to_numpy(dtype=np.float64)
        top = units.max() if units.size and units.max() > 0 else 1.0
        segs = np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y1])], axis=1)
        ax.add_collection(
            LineCollection(
                list(segs),
                linewidths=0.3 + 2.2 * np.sqrt(units / top),
                colors="#1f5f99",
                alpha=0.55,
                zorder=2,
            )
        )
        used = np.unique(pi)
        ax.scatter(
            frame.x(pub["lon"].to_numpy()[used]),
            pub["lat"].to_numpy()[used],
            s=6,
            marker="s",
            color="#1f5f99",
            zorder=3,
            label=f"assigned partners ({used.size})",
        )
    served = (cl["served"] > 0).to_numpy()
    ax.scatter(
        frame.x(cl["centroid_lon"].to_numpy()[served]),
        cl["centroid_lat"].to_numpy()[served],
        s=5,
        color="#2e7d32",
        zorder=3,
        label=f"served clusters ({int(served.sum())})",
    )
    ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    if not len(a):
        ax.text(0.5, 0.5, "no assignments", transform=ax.transAxes, ha="center", fontsize=12)
    return _png(fig)


def _unmet_map(plan: Plan, frame: _Frame) -> bytes:
    fig = _new_figure()
    ax = frame.axes(fig, "Unmet demand by reason")
    _basemap(ax, frame, plan)
    u = plan.unmet_table
    if len(u):
        order = np.argsort(-u["units"].to_numpy(), kind="stable")
        u = u.iloc[order]
        sizes = _sizes(u["units"].to_numpy())
        handles = []
        for reason, color in _REASON_COLORS.items():
            m = (u["reason"] == reason).to_numpy()
            if not m.any():
                continue
            ax.scatter(
                frame.x(u["centroid_lon"].to_numpy()[m]),
                u["centroid_lat"].to_numpy()[m],
                s=sizes[m],
                color=color,
                edgecolors="#222222",
                linewidths=0.3,
                alpha=0.75,
                zorder=2,
            )
            handles.append(
                ax.scatter(
                    [],
                    [],
                    s=30,
                    color=color,
                    edgecolors="#222222",
                    label=f"{reason.replace('_', ' ')} ({float(u['units'][m].sum()):,.0f} units)",
                )
            )
        leg = ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.85)
        ax.add_artist(leg)
        _size_legend(ax, u["units"].to_numpy(), "units", color="#999999", edgecolors="#222222")
    else:
        ax.text(0.5, 0.5, "all demand served", transform=ax.transAxes, ha="center", fontsize=12)
    return _png(fig)


def _choropleth(
    plan: Plan, frame: _Frame, title: str, values: np.ndarray, cmap_name: str, vmax: float,
    label: str,
) -> bytes:  # fmt: skip
    """Colour the neighborhood polygons by one value each (NaN: grey) with a colour bar."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PathCollection
    from matplotlib.colors import Normalize

    fig = _new_figure()
    ax = frame.axes(fig, title)
    assert plan.neighborhoods is not None
    cmap, norm = colormaps[cmap_name], Normalize(0.0, vmax)
    paths, idx = frame.paths(plan.neighborhoods.geometry.to_numpy())
    colors = cmap(norm(np.nan_to_num(values[idx], nan=0.0)))
    colors[np.isnan(values[idx])] = (0.85, 0.85, 0.85, 1.0)
    pc = PathCollection(paths, facecolors=colors, edgecolors="#ffffff", linewidths=0.6)
    ax.add_collection(pc)
    _colorbar(fig, ScalarMappable(norm=norm, cmap=cmap), label)
    return _png(fig)


def _hood_ids(plan: Plan) -> np.ndarray:
    assert plan.neighborhoods is not None
    return plan.neighborhoods["neighborhood_id"].astype(str).to_numpy()


def _hood_map(plan: Plan, frame: _Frame) -> bytes:
    cov_by = plan.metrics.get("coverage_by_neighborhood", {})
    cov = np.array(
        [cov_by.get(i, {}).get("coverage", np.nan) for i in _hood_ids(plan)], dtype=np.float64
    )
    return _choropleth(
        plan, frame, "Coverage by neighborhood", cov, "RdYlGn", 1.0, "share of demand served"
    )


def _gap_map(plan: Plan, frame: _Frame) -> bytes:
    """Draw the gap layer: unmet units per neighborhood, darker where more stays unmet."""
    assert plan.gap_table is not None
    unmet_by = plan.gap_table.groupby("neighborhood")["unmet"].sum()
    unmet = unmet_by.reindex(_hood_ids(plan)).fillna(0.0).to_numpy(dtype=np.float64)
    return _choropleth(
        plan,
        frame,
        "Gaps: unmet units per neighborhood",
        unmet,
        "OrRd",
        max(float(unmet.max(initial=0.0)), 1.0),
        "units per week left unmet",
    )


def _recruit_map(plan: Plan, frame: _Frame) -> bytes:
    """Draw the suggested recruit sites (numbered by rank) over the unmet clusters."""
    fig = _new_figure()
    ax = frame.axes(fig, "Where to recruit: suggested sites for new partners")
    _basemap(ax, frame, plan)
    u = plan.unmet_table
    if len(u):
        ax.scatter(
            frame.x(u["centroid_lon"].to_numpy()),
            u["centroid_lat"].to_numpy(),
            s=_sizes(u["units"].to_numpy()),
            color="#c0392b",
            alpha=0.35,
            linewidths=0,
            zorder=2,
        )
    sites = plan.recruit.sites
    if len(sites):
        x, y = frame.x(sites["lon"].to_numpy()), sites["lat"].to_numpy()
        ax.scatter(x, y, s=140, marker="*", color="#1f4e9c", edgecolors="#ffffff",
                   linewidths=0.6, zorder=3, label="suggested site")  # fmt: skip
        for xi, yi, rank in zip(x, y, sites["rank"].tolist(), strict=True):
            ax.annotate(str(rank), (xi, yi), xytext=(4, 4), textcoords="offset points",
                        fontsize=6, color="#1f4e9c", zorder=4)  # fmt: skip
        ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no site would serve unmet demand", transform=ax.transAxes,
                ha="center", fontsize=12)  # fmt: skip
    return _png(fig)


def _category_chart(plan: Plan) -> bytes:
    by = plan.metrics.get("units_by_category", {})
    cats = sorted(by)
    fig = _new_figure((7.5, 0.9 + 0.32 * max(len(cats), 1)), constrained=True)
    ax = fig.add_subplot()
    ax.set_title("Units by category: served and unmet", loc="left", fontsize=12, fontweight="bold")
    y = np.arange(len(cats))[::-1]
    served = np.array([by[c]["served"] for c in cats], dtype=np.float64)
    unmet = np.array([by[c]["unmet"] for c in cats], dtype=np.float64)
    ax.barh(y, served, color="#2e7d32", label="served")
    ax.barh(y, unmet, left=served, color="#c0392b", label="unmet")
    ax.set_yticks(y, [_plain(c) for c in cats], fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("units per week", fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return _png(fig)


def report_figures(plan: Plan) -> list[tuple[str, str, bytes]]:
    """Render the report's images: ``(id, caption, png_bytes)`` each, in report order.

    Four maps (clusters, partners, assignments, unmet), the neighborhood coverage and
    gap maps when the plan has neighborhood polygons, the recruit map when it has
    recruit suggestions, and the chart of units by category.
    """
    frame = _Frame(plan)
    figs = [
        (
            "map-clusters",
            "Need clusters: hull and centroid, sized by demand, coloured by the share served.",
            _cluster_map,
        ),
        (
            "map-partners",
            "Partners sized by capacity, coloured by the share of capacity used. "
            "Volunteers' points are coarsened to a ~500 m grid.",
            _partner_map,
        ),
        (
            "map-assignments",
            "Each line joins a partner to the centroid of a cluster it serves; "
            "width grows with the units assigned.",
            _assignment_map,
        ),
        (
            "map-unmet",
            "Clusters with unmet demand, sized by unmet units, coloured by reason.",
            _unmet_map,
        ),
    ]
    if plan.neighborhoods is not None and len(plan.neighborhoods):
        figs.append(
            (
                "map-neighborhoods",
                "Share of demand served per neighborhood (grey: no needs).",
                _hood_map,
            )
        )
    if plan.neighborhoods is not None and len(plan.neighborhoods) and plan.gap_table is not None:
        figs.append(
            (
                "map-gaps",
                "The gap layer: units left unmet per neighborhood (gaps.csv has them by "
                "category and reason).",
                _gap_map,
            )
        )
    if getattr(getattr(plan, "recruit", None), "sites", None) is not None:
        figs.append(
            (
                "map-recruit",
                "Where to recruit: suggested sites for new partners (numbers: rank in the "
                "category) over "
                "the clusters with unmet demand.",
                _recruit_map,
            )
        )
    out = [(fid, cap, draw(plan, frame)) for fid, cap, draw in figs]
    out.append(
        (
            "chart-categories",
            "Units demanded per category, split served / unmet.",
            _category_chart(plan),
        )
    )
    return out


def _img(fid: str, caption: str, png: bytes) -> str:
    from struct import unpack

    width, height = unpack(">II", png[16:24])  # the IHDR chunk
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(fid)}"><img src="data:image/png;base64,{data}" '
        f'width="{width}" height="{height}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------


def _hood_names(plan: Plan) -> dict[str, str]:
    hoods = plan.neighborhoods
    if hoods is None or "name" not in hoods.columns:
        return {}
    ids = hoods["neighborhood_id"].astype(str).tolist()
    return dict(zip(ids, hoods["name"].fillna("").astype(str).tolist(), strict=True))


def _cluster_hoods(plan: Plan) -> dict[str, str]:
    """Return the neighborhood holding most of each cluster's demand, by cluster id."""
    needs = plan.need_table
    if "neighborhood" not in needs.columns or "cluster_id" not in needs.columns:
        return {}
    df = pd.DataFrame(
        {
            "cluster_id": needs["cluster_id"].astype(str).to_numpy(),
            "neighborhood": needs["neighborhood"].fillna("").astype(str).to_numpy(),
            "demand": needs["demand"].to_numpy(dtype=np.float64),
        }
    )
    g = df.groupby(["cluster_id", "neighborhood"], sort=True)["demand"].sum().reset_index()
    g = g.sort_values(["cluster_id", "demand", "neighborhood"], ascending=[True, False, True])
    first = g.drop_duplicates("cluster_id")
    return dict(zip(first["cluster_id"], first["neighborhood"], strict=True))


def _summary_section(plan: Plan) -> str:
    m = plan.metrics
    units = m.get("units", {})
    dist = m.get("distance_per_unit_km", {})
    eq = m.get("equity", {})
    counts = m.get("counts", {})
    cards = [
        ("units demanded", _num(units.get("demand"))),
        ("units served", _num(units.get("served"))),
        ("units unmet", _num(units.get("unmet"))),
        ("coverage", _pct(units.get("coverage"))),
        ("clusters", f"{counts.get('clusters', len(plan.clusters)):,}"),
        ("assignments", f"{counts.get('assignments', len(plan.assignment_table)):,}"),
    ]
    card_html = "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>' for k, v in cards)
    cost = m.get("cost", {})
    items: list[tuple[str, Any]] = [
        ("status", plan.solver.get("status")),
        ("objective", plan.parameters.get("objective")),
        ("needs", f"{counts.get('needs', len(plan.need_table)):,}"),
        ("partners", f"{len(plan.partners):,}"),
        ("clusters fully served", f"{counts.get('clusters_fully_served', 0):,}"),
        ("distance per unit served, mean", f"{_km(dist.get('mean'))} km"),
        ("distance per unit served, p90", f"{_km(dist.get('p90'))} km"),
        ("total cost", f"{_num(cost.get('total'), 1)} {cost.get('unit', '')}".strip()),
    ]
    if eq.get("neighborhoods"):
        items += [
            ("neighborhoods", eq.get("neighborhoods")),
            ("neighborhood coverage, min", _pct(eq.get("coverage_min"))),
            ("neighborhood coverage, max", _pct(eq.get("coverage_max"))),
            ("neighborhood coverage, Gini", _num(eq.get("coverage_gini"), 3)),
        ]
    floors = m.get("floors")
    if isinstance(floors, dict) and floors.get("neighborhoods"):
        items += [
            ("coverage floors met", f"{floors.get('met', 0)} of {floors['neighborhoods']}"),
            ("coverage floors, shortfall", _num(floors.get("shortfall_units"))),
        ]
    if m.get("locked_units") is not None:
        items.append(("locked units", _num(m["locked_units"])))
    travel = m.get("travel")
    if isinstance(travel, dict) and travel.get("detour_factor") is not None:
        items += [
            ("travel", f"{travel.get('mode')} on the street network "
                       f"({_num(travel.get('nodes'))} nodes)"),
            ("street distance per unit served", f"{_km(travel.get('street_km_per_unit'))} km"),
            ("straight-line distance per unit served",
             f"{_km(travel.get('straight_km_per_unit'))} km"),
            ("detour factor (street / straight line)", f"{travel['detour_factor']:.2f}×"),
            ("travel time per unit served", f"{_num(travel.get('minutes_per_unit'), 1)} min"),
        ]  # fmt: skip
    return f'<div class="cards">{card_html}</div>' + _kv_table("table-summary", items)


_UNIT_COLS = [
    _Col("demand", "demand", _num, True),
    _Col("served", "served", _num, True),
    _Col("unmet", "unmet", _num, True),
    _Col("coverage", "coverage", _bar, True),
]


def _category_section(plan: Plan) -> str:
    by = plan.metrics.get("units_by_category", {})
    rows = [{"category": c, **by[c]} for c in sorted(by)]
    total = {"category": "all categories", **plan.metrics.get("units", {})}
    return _table(
        "table-categories",
        [_Col("category", "category"), *_UNIT_COLS],
        rows,
        footer=total,
        empty="No needs.",
    )


def _neighborhood_section(plan: Plan) -> str:
    cov = plan.metrics.get("coverage_by_neighborhood", {})
    names = _hood_names(plan)
    rows = [{"neighborhood": k, "name": names.get(k, ""), **v} for k, v in cov.items()]
    rank = _id_rank(cov)
    rows.sort(key=lambda r: (r["coverage"], -r["unmet"], rank[str(r["neighborhood"])]))
    cols = [_Col("neighborhood", "neighborhood")]
    if names:
        cols.append(_Col("name", "name"))
    return _table(
        "table-neighborhoods",
        cols + _UNIT_COLS,
        rows,
        caption="Lowest coverage first.",
        empty="The needs carry no neighborhood.",
    )


def _gaps_section(plan: Plan) -> str:
    parts = []
    u = plan.unmet_table
    if len(u):
        in_hood = _cluster_hoods(plan)
        names = _hood_names(plan)
        cl = plan.clusters.set_index("cluster_id")
        top = _by_ids(u, ["units", "cluster_id"], [False, True], "cluster_id").head(TOP_GAPS)
        rows = []
        for r in top.to_dict("records"):
            cid = str(r["cluster_id"])
            hood = in_hood.get(cid, "")
            rows.append(
                {
                    **r,
                    "demand": cl.at[cid, "demand"] if cid in cl.index else None,
                    "n_needs": cl.at[cid, "n_needs"] if "n_needs" in cl.columns else None,
                    "neighborhood": f"{names[hood]} ({hood})" if names.get(hood) else hood,
                    "where": f"{r['centroid_lat']:.4f}, {r['centroid_lon']:.4f}",
                }
            )
        cols = [
            _Col("cluster_id", "cluster", ident=True),
            _Col("category", "category"),
            _Col("neighborhood", "neighborhood"),
            _Col("n_needs", "needs", _count, True),
            _Col("demand", "demand", _num, True),
            _Col("units", "unmet", _num, True),
            _Col("reason", "reason", lambda v: _e(str(v).replace("_", " "))),
            _Col("where", "centroid (lat, lon)"),
        ]
        parts.append("<h3>Clusters with the most unmet units</h3>")
        parts.append(
            _table(
                "table-gap-clusters",
                cols,
                rows,
                caption=f"The {len(rows)} largest of {len(u):,} clusters with unmet demand.",
            )
        )
    else:
        parts.append('<p id="table-gap-clusters-empty">Every cluster is fully served.</p>')
    cov = plan.metrics.get("coverage_by_neighborhood", {})
    gaps = [
        {"neighborhood": k, "name": _hood_names(plan).get(k, ""), **v}
        for k, v in cov.items()
        if v.get("unmet", 0) > 0
    ]
    rank = _id_rank(cov)
    gaps.sort(key=lambda r: (-r["unmet"], rank[str(r["neighborhood"])]))
    if gaps:
        parts.append("<h3>Neighborhoods with the most unmet units</h3>")
        cols = [_Col("neighborhood", "neighborhood")]
        if _hood_names(plan):
            cols.append(_Col("name", "name"))
        parts.append(
            _table(
                "table-gap-neighborhoods",
                cols + _UNIT_COLS,
                gaps[:TOP_GAPS],
                caption=f"The {min(len(gaps), TOP_GAPS)} largest of {len(gaps)} "
                "neighborhoods with unmet demand.",
            )
        )
    parts.append(_hood_category_gaps(plan))
    reasons = plan.metrics.get("unmet_by_reason", {})
    if reasons:
        parts.append("<h3>Unmet units by reason</h3>")
        parts.append(
            _table(
                "table-unmet-reasons",
                [
                    _Col("reason", "reason", lambda v: _e(str(v).replace("_", " "))),
                    _Col("units", "unmet units", _num, True),
                ],
                [{"reason": k, "units": v} for k, v in sorted(reasons.items())],
            )
        )
    return "\n".join(parts)


def _partner_section(plan: Plan) -> str:
    p = pd.DataFrame(plan.partners.drop(columns="geometry", errors="ignore"))
    if not len(p):
        return '<p class="muted">No partners.</p>'
    used = p["used"] if "used" in p.columns else pd.Series(0.0, index=p.index)
    p = p.assign(used=used.astype(float), free=(p["capacity"] - used).clip(lower=0))
    n_assign = plan.assignment_table.groupby("partner_id").size()
    p["assignments"] = n_assign.reindex(p["partner_id"]).fillna(0).astype(int).to_numpy()
    p["utilization"] = (p["used"] / p["capacity"].where(p["capacity"] > 0)).to_numpy()
    kinds = []
    for kind, g in p.groupby("kind", sort=True):
        kinds.append(
            {
                "kind": kind,
                "partners": len(g),
                "active": int((g["used"] > 0).sum()),
                "capacity": g["capacity"].sum(),
                "used": g["used"].sum(),
                "free": g["free"].sum(),
                "utilization": g["used"].sum() / g["capacity"].sum()
                if g["capacity"].sum() > 0
                else None,
            }
        )
    kind_cols = [
        _Col("kind", "kind"),
        _Col("partners", "partners", _count, True),
        _Col("active", "with assignments", _count, True),
        _Col("capacity", "capacity", _num, True),
        _Col("used", "used", _num, True),
        _Col("free", "free", _num, True),
        _Col("utilization", "utilization", _bar, True),
    ]
    top = _by_ids(p[p["used"] > 0], ["used", "partner_id"], [False, True], "partner_id")
    top = top.head(TOP_PARTNERS)
    cols = [
        _Col("partner_id", "partner", ident=True),
        _Col("name", "name"),
        _Col("kind", "kind"),
        _Col("categories", "categories", lambda v: _e(str(v).replace(";", ", "))),
        _Col("assignments", "clusters", _count, True),
        _Col("capacity", "capacity", _num, True),
        _Col("used", "used", _num, True),
        _Col("utilization", "utilization", _bar, True),
    ]
    records = top[[c.key for c in cols]].to_dict("records") if len(top) else []
    active = int((p["used"] > 0).sum())
    return (
        _table("table-partner-kinds", kind_cols, kinds)
        + "<h3>Partners with the most units assigned</h3>"
        + _table(
            "table-partners",
            cols,
            records,
            caption=f"The {len(records)} busiest of {active:,} partners with assignments.",
            empty="No partner has an assignment.",
        )
    )


def _run_section(plan: Plan) -> str:
    params = [
        (k, ", ".join(map(str, v)) if isinstance(v, list | tuple) else v)
        for k, v in sorted(plan.parameters.items())
    ]
    solver = [(_label(k), v) for k, v in sorted(plan.solver.items())]
    hashes = [(k, _Raw(f"<code>{_e(v)}</code>")) for k, v in sorted(plan.input_hashes.items())]
    parts = [
        "<h3>Solver</h3>",
        _kv_table("table-solver", solver),
        "<h3>Parameters</h3>",
        _kv_table(
            "table-parameters", params, caption="Named as in summary.json and the plan request."
        ),
        "<h3>Inputs (SHA-256)</h3>",
        _kv_table("table-inputs", hashes),
    ]
    if plan.rejects:
        parts += [
            "<h3>Rejected rows</h3>",
            _kv_table("table-rejects", [(k, len(v)) for k, v in sorted(plan.rejects.items())]),
        ]
    return "\n".join(parts)


def _hood_category_gaps(plan: Plan) -> str:
    """Render the largest neighborhood x category gaps (``plan.gap_table``, when present)."""
    g = getattr(plan, "gap_table", None)
    if not isinstance(g, pd.DataFrame) or not {"neighborhood", "category", "unmet"} <= set(g):
        return ""
    short = _by_ids(
        g[g["unmet"] > 0],
        ["unmet", "neighborhood", "category"],
        [False, True, True],
        "neighborhood",
    )
    names = _hood_names(plan)
    rows = [
        {**r, "name": names.get(str(r["neighborhood"]), "")}
        for r in short.head(TOP_GAPS).to_dict("records")
    ]
    cols = [_Col("neighborhood", "neighborhood")]
    if names:
        cols.append(_Col("name", "name"))
    cols += [_Col("category", "category"), *_UNIT_COLS[:3]]
    for reason in _REASON_COLORS:
        if f"unmet_{reason}" in g.columns:
            cols.append(_Col(f"unmet_{reason}", reason.replace("_", " "), _num, True))
    if "coverage" in g.columns:
        cols.append(_UNIT_COLS[3])
    return "<h3>Neighborhood and category pairs with the most unmet units</h3>" + _table(
        "table-gap-hood-categories",
        cols,
        rows,
        caption=f"The {len(rows)} largest of {len(short):,} neighborhood x category gaps.",
    )


def _floors_section(plan: Plan) -> str:
    """Render the coverage floors per neighborhood (``plan.floors``, with ``min_coverage``)."""
    f = getattr(plan, "floors", None)
    if not isinstance(f, pd.DataFrame) or not len(f):
        return ""
    if not {"neighborhood_id", "floor_met"} <= set(f.columns):
        return _frame_table("table-floors", f)
    order = f.assign(_met=f["floor_met"].astype(bool))
    sort_by, asc = ["_met", "neighborhood_id"], [True, True]
    if "shortfall" in f.columns:
        sort_by, asc = ["_met", "shortfall", "neighborhood_id"], [True, False, True]
    order = _by_ids(order, sort_by, asc, "neighborhood_id")
    candidates = [
        _Col("neighborhood_id", "neighborhood"),
        _Col("name", "name"),
        _Col("min_coverage", "floor", _pct, True),
        _Col("demand", "demand", _num, True),
        _Col("floor", "floor units", _num, True),
        _Col("served", "served", _num, True),
        _Col("coverage", "coverage", _bar, True),
        _Col("shortfall", "shortfall", _num, True),
        _Col("floor_met", "met", lambda v: "yes" if bool(v) else "<b>no</b>"),
        _Col("reason", "why not"),
    ]
    cols = [c for c in candidates if c.key in f.columns]
    met = int(f["floor_met"].astype(bool).sum())
    return _table(
        "table-floors",
        cols,
        order.to_dict("records"),
        caption=f"{met} of {len(f)} neighborhood floors met; unmet floors first.",
    )


def _recruit_section(plan: Plan) -> str:
    """Render the suggested recruit sites (``plan.recruit``), by category and rank."""
    value = plan.recruit
    sites = getattr(value, "sites", None)
    if not isinstance(sites, pd.DataFrame) or not {"lat", "lon"} <= set(sites.columns):
        return _frame_table("table-recruit", value)
    shown = sites.head(TOP_EXTRA)
    rows = [{**r, "where": f"{r['lat']:.4f}, {r['lon']:.4f}"} for r in shown.to_dict("records")]
    candidates = [
        _Col("category", "category"),
        _Col("rank", "rank", num=True),
        _Col("where", "site (lat, lon)"),
        _Col("site_cluster_id", _label("site_cluster_id"), ident=True),
        _Col("covered_units", _label("covered_units"), _num, True),
        _Col("clusters_covered", _label("clusters_covered"), _count, True),
        _Col("units_in_range", _label("units_in_range"), _num, True),
        _Col("radius_km", _label("radius_km"), _num2, True),
        _Col("capacity", "capacity", _capacity, True),
    ]
    # the new partner's radius and capacity are the request's: said once, not on every row
    same = {
        c: sites[c].iloc[0]
        for c in ("radius_km", "capacity")
        if c in sites.columns and len(sites) and sites[c].nunique(dropna=False) == 1
    }
    cols = [c for c in candidates if c.key in set(sites.columns) - set(same) | {"where"}]
    partner = ""
    if same:
        radius = f" within {_num2(same['radius_km'])} km" if "radius_km" in same else ""
        cap = f", capacity {_capacity(same['capacity'])}" if "capacity" in same else ""
        partner = f" Each site is a new partner{radius}{cap}."
    first = f"The first {len(shown)} of {len(sites)}" if len(sites) > len(shown) else "The"
    return _table(
        "table-recruit",
        cols,
        rows,
        caption=f"{first} suggested sites, by category; rank 1 serves the most unmet units "
        f"alone, each later rank adds the most to those before it.{partner} recruit.csv "
        "lists the clusters each site would serve.",
        empty="No site would serve unmet demand.",
    )


def _capacity(value: Any) -> str:
    """Format a suggested partner's capacity (missing: unlimited)."""
    return "unlimited" if _is_missing(value) else _num(value)


def _churn_section(plan: Plan) -> str:
    """Render the churn against the previous plan (``plan.churn``), its share in percent."""
    churn = plan.churn
    if isinstance(churn, dict) and isinstance(churn.get("churn"), int | float):
        churn = {**churn, "churn": _Raw(_e(_pct(churn["churn"])))}
    return _frame_table("table-churn", churn)


#: Optional plan attributes rendered as extra sections when present: attribute, section
#: id, title and renderer (the generic table renderer when None).
_EXTRA_SECTIONS: tuple[tuple[str, str, str, Callable[[Plan], str] | None], ...] = (
    ("floors", "floors", "Coverage floors", _floors_section),
    ("churn", "churn", "Changes from the previous plan", _churn_section),
    ("recruit", "recruit", "Partners to recruit", _recruit_section),
)


def _model_text(rows: pd.DataFrame) -> str:
    """Describe the model of one source x indicator from its report rows."""
    first = rows.iloc[0]
    hidden = rows["note"].fillna("").str.startswith("suppressed").any()
    if rows["respondents"].notna().any() or hidden:
        return f"{_num2(first['units_per_affected'])} units per respondent who reported it"
    if rows["rate"].notna().any():
        return (
            f"population × max(affected rate − {_num(first['baseline'])}, 0) / 100 × "
            f"{first['units_per_affected']:g} units per affected adult × weight "
            f"{first['weight']:g}"
        )
    return "units per report" if rows["needs"].fillna(0).gt(0).any() else ""


#: Notes of an assessment report that name what the mapping left out or hid.
_LEFT_OUT = ("not in the mapping", "maps to no category", "no choice", "suppressed",
             "not counted", "outside")  # fmt: skip


def _assessment_section(report: pd.DataFrame) -> str:
    """Render the needs' assessment (``matcher assess --report``).

    Demand by source and category with its model, the areas with most demand by source,
    the overlaps, what priorities did, and what the mapping left out or suppressed. A
    report edited by hand renders what it holds; rows it cannot place are left out.
    """
    report = report.assign(
        note=report["note"].fillna("").astype(str),
        area_name=report["area_name"].fillna("").astype(str),
    )
    priority = report["rank"].notna()
    created = priority & report["note"].str.startswith("created")
    plain = report[(report["indicator"] != "(overlap)") & report["category"].notna()]
    made = plain[~plain["rank"].notna() | plain["note"].str.startswith("created")]
    rows = []
    for (source, indicator, category), g in made.groupby(
        ["source", "indicator", "category"], sort=True, dropna=False
    ):
        rows.append(
            {
                "source": source,
                "indicator": indicator,
                "category": category,
                "model": "ranked priority: created where the area had no such need"
                if g["rank"].notna().all()
                else _model_text(g),
                "areas": int((g["placed"].fillna(0) > 0).sum()),
                "demand": g["demand"].fillna(g["placed"]).sum(),
                "placed": g["placed"].sum(),
                "needs": int(g["needs"].fillna(0).sum()),
            }
        )
    by_source = _table(
        "table-assessment-sources",
        [
            _Col("source", "Source"), _Col("indicator", "Indicator or question"),
            _Col("category", "Category"), _Col("model", "Model (units per week)"),
            _Col("areas", "Areas", num=True), _Col("demand", "Demand", _num, True),
            _Col("placed", "Placed", _num, True), _Col("needs", "Needs", num=True),
        ],  # fmt: skip
        rows,
        empty="The report holds no source's demand.",
    )
    raised = report[priority & report["note"].str.startswith("severity +")]
    lifted = (
        f"<p>Ranked priorities raised the severity of {int(raised['needs'].fillna(0).sum())} "
        f"need(s) in {raised['area'].nunique()} area(s) and created {int(created.sum())} "
        "area need(s).</p>"
        if priority.any()
        else ""
    )
    # after overlaps: where sources overlapped, what each kept (its overlap row's placed)
    overlap = report[(report["indicator"] == "(overlap)") & report["category"].notna()]
    key = ["source", "category", "area"]
    placed = made.groupby(key, sort=True)["placed"].sum()
    if len(overlap):
        placed.update(overlap.groupby(key, sort=True)["placed"].sum())
    names = report.drop_duplicates("area").set_index("area")["area_name"]
    kept = placed[placed > 0].reset_index()
    sources = sorted(kept["source"].astype(str).unique())
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in kept.itertuples(index=False):
        cell = cells.setdefault(
            (str(r.area), str(r.category)),
            {"area": r.area, "area_name": names.get(r.area, ""), "category": r.category,
             "total": 0.0},  # fmt: skip
        )
        cell[f"source:{r.source}"] = cell.get(f"source:{r.source}", 0.0) + float(r.placed)
        cell["total"] += float(r.placed)
    rank = _id_rank(c["area"] for c in cells.values())
    ranked = sorted(
        cells.values(), key=lambda c: (-c["total"], rank[str(c["area"])], str(c["category"]))
    )
    top = ranked[:TOP_EXTRA]
    areas = _table(
        "table-assessment-areas",
        [_Col("area_name", "Area"), _Col("area", "Id"), _Col("category", "Category")]
        + [_Col(f"source:{src}", src, _num, True) for src in sources]
        + [_Col("total", "Total", _num, True)],
        top,
        caption=(
            f"The {len(top)} areas and categories with most placed demand, of {len(ranked)}; "
            "units per week from each source, after overlaps."
        ),
        empty="No area has placed demand.",
    )
    overlaps = _table(
        "table-assessment-overlaps",
        [_Col("source", "Source"), _Col("category", "Category"),
         _Col("kept", "Areas kept", num=True), _Col("dropped", "Areas dropped", num=True),
         _Col("units", "Units dropped", _num, True), _Col("rule", "Rule")],  # fmt: skip
        [
            {
                "source": src,
                "category": cat,
                "kept": int(g["note"].str.startswith("kept").sum()),
                "dropped": int(g["note"].str.startswith("dropped").sum()),
                "units": (g["demand"] - g["placed"]).clip(lower=0).sum(),
                "rule": next(iter(g["note"].str.extract(r"\(rule (\w+)\)")[0].dropna()), ""),
            }
            for (src, cat), g in overlap.groupby(["source", "category"], sort=True)
        ],
        empty="No sources overlapped.",
    )
    left = report[report["note"].str.contains("|".join(_LEFT_OUT), regex=True)]
    number = left["note"].str.extract(r"^(\d+) ")[0]
    counted = (
        left.assign(
            what=left["note"].str.replace(r"^\d+ ", "", regex=True),
            indicator=left["indicator"].fillna("(empty)"),
            count=pd.to_numeric(number, errors="coerce"),
        )
        .groupby(["source", "indicator", "what"], sort=True, dropna=False)
        .agg(rows=("note", "size"), count=("count", "sum"))
        .reset_index()
    )
    left_table = _table(
        "table-assessment-left-out",
        [_Col("source", "Source"), _Col("indicator", "Column, question or type"),
         _Col("what", "Note"), _Col("count", "Reports or respondents", _num0, True),
         _Col("rows", "Areas or rows", num=True)],  # fmt: skip
        counted.head(TOP_EXTRA).to_dict("records"),
        caption=(
            f"First {TOP_EXTRA} of {len(counted)} kinds; the assessment report lists each row."
            if len(counted) > TOP_EXTRA
            else None
        ),
        empty="Nothing was left out.",
    )
    return (
        "<p>The needs were made by <code>matcher assess</code> from these sources; the full "
        "figures are in the assessment report CSV.</p>"
        f"<h3>Demand by source and category</h3>{by_source}{lifted}"
        f"<h3>Areas with most demand</h3>{areas}"
        f"<h3>Sources that measure the same thing</h3>{overlaps}"
        f"<h3>Left out by the mapping, or suppressed</h3>{left_table}"
    )


# ---------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------


def report_html(
    plan: Plan, *, title: str = REPORT_TITLE, assessment: pd.DataFrame | None = None
) -> str:
    """Return the plan's report as one self-contained HTML document (a string).

    Sections: summary, the assessment the needs came from (with ``assessment``, a report
    of :func:`matcher.assessments.read_assessment_report`), maps, units by category,
    coverage by neighborhood, the largest gaps, partners, extra tables the plan carries
    (``plan.gap_table``, ``plan.recruit``), and the run (solver, parameters, input hashes).
    The same plan gives the same text.
    """
    started = time.perf_counter()
    figures = report_figures(plan)
    logger.debug("report: %d images in %.2f s", len(figures), time.perf_counter() - started)
    by_id = {fid: (fid, cap, png) for fid, cap, png in figures}
    maps = "".join(_img(*f) for fid, f in by_id.items() if fid.startswith("map-"))
    sections: list[tuple[str, str, str]] = [
        ("summary", "Summary", _summary_section(plan)),
        *([("assessment", "Assessment", _assessment_section(assessment))]
          if assessment is not None else []),  # fmt: skip
        ("maps", "Maps", f'<div class="maps">{maps}</div>'),
        (
            "categories",
            "Units by category",
            _img(*by_id["chart-categories"]) + _category_section(plan),
        ),
        ("neighborhoods", "Coverage by neighborhood", _neighborhood_section(plan)),
        ("gaps", "Largest gaps", _gaps_section(plan)),
        ("partners", "Partners", _partner_section(plan)),
    ]
    for attr, sid, heading, render in _EXTRA_SECTIONS:
        value = getattr(plan, attr, None)
        if value is None:
            continue
        body = render(plan) if render is not None else _frame_table(f"table-{sid}", value)
        if body:
            sections.append((sid, heading, body))
    sections.append(("run", "Run", _run_section(plan)))
    units = plan.metrics.get("units", {})
    lead = (
        f"Served {_num(units.get('served'))} of {_num(units.get('demand'))} units "
        f"({_pct(units.get('coverage'))}); status {plan.solver.get('status', '')}, "
        f"objective {plan.parameters.get('objective', '')}; needs input "
        f"{str(plan.input_hashes.get('needs', ''))[:12]}."
    )
    doc = _document(
        title, lead, sections,
        "Generated by matcher. Volunteers' locations are coarsened to a ~500 m grid; all "
        "figures are units per week.",
        new_page=("maps", "run"),
    )  # fmt: skip
    logger.debug("report: rendered in %.2f s", time.perf_counter() - started)
    return doc


def _document(
    title: str,
    lead: str,
    sections: Sequence[tuple[str, str, str]],
    footer: str,
    *,
    new_page: Sequence[str] = (),
    css: str = "",
) -> str:
    """Return one self-contained HTML document: a header, contents, the sections, a footer.

    ``sections`` are (id, heading, HTML body) and ``footer`` is HTML; the headings of
    ``new_page`` ids start a new printed page; ``css`` is added to the report's style
    sheet.
    """
    nav = "".join(f'<li><a href="#{sid}">{_e(h)}</a></li>' for sid, h, _ in sections)
    body = "\n".join(
        f'<section id="{sid}"><h2{_NEW_PAGE if sid in new_page else ""}>'
        f"{_e(h)}</h2>\n{content}</section>"
        for sid, h, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}{css}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><p class="lead">{_e(lead)}</p></header>\n'
        f'<nav aria-label="Contents"><ol>{nav}</ol></nav>\n'
        f"{body}\n"
        f"<footer>{footer}</footer>\n</body>\n</html>\n"
    )


def write_report(text: str, path: str | Path) -> Path:
    """Write report text to ``path`` atomically (a temporary file, then a rename).

    The file gets the usual permissions (those of a new file under the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def render_report(plan: Plan, path: str | Path, *, title: str = REPORT_TITLE) -> Path:
    """Render the plan's HTML report (see :func:`report_html`) to ``path``; return the path.

    ``path`` may be a directory, in which case the report is ``path / "report.html"``.
    The file appears whole or not at all.
    """
    target = Path(path)
    if target.is_dir():
        target = target / REPORT_NAME
    return write_report(report_html(plan, title=title), target)


# ---------------------------------------------------------------------------------------
# the impact report (matcher impact --out)
# ---------------------------------------------------------------------------------------

IMPACT_TITLE = "matcher impact report"


def _impact_map(result: ImpactResult, hoods: gpd.GeoDataFrame) -> bytes:
    """Neighborhoods by how many of their categories partnerships served (grey: none)."""
    from types import SimpleNamespace

    empty = pd.DataFrame({"lon": [], "lat": [], "centroid_lon": [], "centroid_lat": []})
    shim = SimpleNamespace(need_table=empty, clusters=empty, neighborhoods=hoods, partners=empty)
    frame = _Frame(shim)  # type: ignore[arg-type]
    cells = result.cells
    served = cells[cells["group"] == "served"].groupby("neighborhood").size()
    ids = hoods["neighborhood_id"].astype(str)
    values = ids.map(served).to_numpy(dtype=np.float64)
    vmax = float(max(np.nanmax(values) if np.isfinite(values).any() else 1.0, 1.0))
    return _choropleth(
        shim, frame, "Served areas", values, "Greens", vmax,  # type: ignore[arg-type]
        "categories served by partnerships at the start of the after window",
    )


def impact_html(result: ImpactResult, neighborhoods: gpd.GeoDataFrame | None = None) -> str:
    """Return an impact analysis (:func:`matcher.impact.impact`) as one HTML document.

    Sections: the tests (the before/after counts, rate ratio, interval, conclusion and
    caution of each), a map of the served neighborhoods (with ``neighborhoods``), the
    served and left-out areas, and the method with its caveats. The same result gives
    the same text.
    """
    tests = [t.to_dict() for t in result.tests]
    cols = [
        _Col("measure", "measure"), _Col("category", "category"),
        _Col("served_cells", "served areas", _count, True),
        _Col("comparison_cells", "comparison areas", _count, True),
        _Col("served_before", "served: before", _count, True),
        _Col("served_after", "served: after", _count, True),
        _Col("comparison_before", "comparison: before", _count, True),
        _Col("comparison_after", "comparison: after", _count, True),
        _Col("rate_ratio", "rate ratio", _num2, True),
        _Col("ci_low", "95% CI low", _num2, True), _Col("ci_high", "95% CI high", _num2, True),
        _Col("p_value", "p", lambda v: "" if _is_missing(v) else f"{v:.3f}", True),
    ]  # fmt: skip
    said = "".join(
        f"<li><strong>{_e(t['measure'])}, {_e(t['category'])}:</strong> {_e(t['conclusion'])}"
        + (f' <span class="caution">Caution: {_e(t["caution"])}</span>' if t["caution"] else "")
        + "</li>"
        for t in tests
    )
    sections = [("tests", "Before and after", _table("table-impact", cols, tests)
                 + f'<ul class="conclusions">{said}</ul>')]  # fmt: skip
    if neighborhoods is not None and len(neighborhoods):
        png = _impact_map(result, neighborhoods)
        sections.append(("map", "Map", _img(
            "map-impact", "Neighborhoods by the number of categories partnerships served "
            "(grey: none; comparison and left-out areas are in impact_cells.csv).", png)))
    shown = result.cells[result.cells["group"] != "comparison"].to_dict("records")
    cell_cols = [
        _Col("neighborhood", "neighborhood", ident=True), _Col("category", "category"),
        _Col("group", "group"), _Col("reason", "why left out"),
        _Col("partnerships", "partnerships", _count, True), _Col("units", "units", _num, True),
        _Col("needs_before", "needs before", _count, True),
        _Col("needs_after", "needs after", _count, True),
        _Col("events_before", "events before", _count, True),
        _Col("events_after", "events after", _count, True),
    ]  # fmt: skip
    listed = "Comparison areas are listed in impact_cells.csv."
    sections.append(("areas", "Served and left-out areas",
                     _table("table-impact-cells", cell_cols, shown, caption=listed)))  # fmt: skip
    method = f"<p>{_e(result.method)}</p><ul>" + "".join(
        f"<li>{_e(c)}</li>" for c in (*result.caveats, *result.notes)) + "</ul>"  # fmt: skip
    sections.append(("method", "Method and caveats", method))
    lead = (f"Before {result.before} ({result.before.days} days), after {result.after} "
            f"({result.after.days} days).")  # fmt: skip
    return _document(IMPACT_TITLE, lead, sections, "Generated by matcher.",
                     css=".caution { color: var(--bad); font-weight: 600; }")  # fmt: skip
