"""The fast writers of matcher.output give the bytes of the straightforward ones.

Each reference below is the writer as it was before it was made faster (``to_csv`` of
formatted columns, ``json.dumps`` per feature, ``shapely.set_precision``): the
contract is byte-identical files.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.output import (
    _FULL_PRECISION,
    _feature_strings,
    _float_texts,
    _json_floats,
    _snapped_geojson,
    csv_bytes,
    csv_pieces,
    neutralise_cell,
    plan_files,
    plan_geojson_pieces,
    plan_geojson_text,
    write_plan,
)

SPECIAL_FLOATS = [0.0, -0.0, 1e-7, -1e-7, 1e16, -1e16, 1e15, 2.0, 123456789.0, 0.1, 5e-324,
                  1.7976931348623157e308, 0.000123, 1e-5, 41.8812, -87.6231]  # fmt: skip


def _reference_csv(frame: pd.DataFrame) -> bytes:
    """``csv_bytes`` as it was: formatted columns written by ``to_csv``."""

    def column(col: pd.Series, name: str) -> pd.Series:
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
            text = col.astype(str)
            risky = text.str.match(r"'*[=+\-@\t\r]").fillna(False).to_numpy(dtype=bool)
            if risky.any():  # cell by cell: a number among them stays as it is (-1, not -1.0)
                cells = [neutralise_cell(v) if r else v for v, r in zip(col, risky, strict=True)]
                col = pd.Series(cells, index=col.index, dtype=object)
            return col
        if pd.api.types.is_bool_dtype(col):
            return col.map({True: "true", False: "false"})
        if pd.api.types.is_float_dtype(col):
            values = col.to_numpy(dtype=np.float64)
            if name not in _FULL_PRECISION:
                values = np.round(values, 6)
            text = np.array([repr(v) for v in values.tolist()], dtype=object)
            text[np.isnan(values)] = ""
            return pd.Series(text, index=col.index)
        return col

    text = pd.DataFrame({c: column(frame[c], c) for c in frame.columns}, index=frame.index)
    return text.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _reference_features(
    feature_type: str, frame: pd.DataFrame, columns: tuple[str, ...], geometries: list[str]
) -> list[str]:
    """``_feature_strings`` as it was: ``json.dumps`` of each feature's properties."""
    keys = sorted((*columns, "feature_type"))
    values: dict[str, list[Any]] = {}
    for c in columns:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            values[c] = [bool(v) for v in col.tolist()]
        elif pd.api.types.is_float_dtype(col):
            v = np.round(col.to_numpy(dtype=np.float64), 6)
            vals = v.astype(object)
            vals[np.isnan(v)] = None
            values[c] = vals.tolist()
        elif pd.api.types.is_integer_dtype(col):
            values[c] = [int(v) for v in col.tolist()]
        else:
            values[c] = col.astype(object).tolist()
    values["feature_type"] = [feature_type] * len(frame)
    ordered = [values[k] for k in keys]
    return [
        f'{{"geometry":{geom},"properties":'
        f'{json.dumps(dict(zip(keys, row, strict=True)), separators=(",", ":"))},"type":"Feature"}}'
        for geom, row in zip(geometries, zip(*ordered, strict=True), strict=True)
    ]


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_FLOATS),
    st.integers(-(10**17), 10**17).map(float),
    st.floats(-200, 200).map(lambda v: round(v, 6)),
)
#: Floats a table may hold: rounding to 6 decimals overflows past 1e302 (in both writers).
cells_floats = floats.filter(lambda v: not abs(v) > 1e300)


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, max_size=40))
def test_float_texts_are_json_dumps_and_repr(values: list[float]) -> None:
    arr = np.array(values, dtype=np.float64)
    assert _json_floats(arr) == [json.dumps(v) for v in arr.tolist()]
    assert _float_texts(arr) == [repr(v) for v in arr.tolist()]


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "=SUM(1)",
            "'=x",
            "''-y",
            "-87.6",
            "+1",
            "@a",
            "\tx",
            "\rx",
            "a,b",
            'say "hi"',
            "two\nlines",
            "",
            "'",
            "é",
            "100%",
            "%s",
            "=",
            "-",
        ]
    ),  # fmt: skip
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 6))
    kinds = draw(st.lists(st.sampled_from(["text", "str", "float", "int", "bool", "mixed",
                                           "category"]), min_size=1, max_size=5))  # fmt: skip
    data: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        name = draw(st.sampled_from(["a", "b,c", "centroid_lat", 'q"', "x"])) + str(i)
        if kind in ("text", "str"):
            cells = draw(st.lists(st.one_of(texts, st.none()), min_size=n, max_size=n))
            data[name] = pd.Series(cells, dtype=object if kind == "text" else "str")
        elif kind == "float":
            data[name] = np.array(draw(st.lists(cells_floats, min_size=n, max_size=n)), dtype=float)
        elif kind == "int":
            data[name] = np.array(draw(st.lists(st.integers(-5, 10**12), min_size=n, max_size=n)))
        elif kind == "bool":
            data[name] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
        elif kind == "mixed":
            cells = draw(st.lists(st.one_of(texts, st.integers(-3, 3), cells_floats, st.none()),
                                  min_size=n, max_size=n))  # fmt: skip
            data[name] = pd.Series(cells, dtype=object)
        else:
            data[name] = pd.Categorical(draw(st.lists(texts, min_size=n, max_size=n)))
    return pd.DataFrame(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_csv_bytes_is_to_csv_of_formatted_columns(frame: pd.DataFrame) -> None:
    assert csv_bytes(frame) == _reference_csv(frame)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(1, 4))
def test_csv_pieces_join_to_csv_bytes(frame: pd.DataFrame, rows: int) -> None:
    pieces = list(csv_pieces(frame, rows))
    assert "".join(pieces).encode("utf-8") == csv_bytes(frame)
    per_cell = all(k != "category" for k in map(str, frame.dtypes))
    assert len(pieces) == (max(1, -(-len(frame) // rows)) if per_cell else 1)


def test_csv_bytes_edge_tables() -> None:
    cases = [
        pd.DataFrame({"only": ["", "a", None]}),
        pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype=float)}),
        pd.DataFrame({"a": [1, 2], "b": [True, False], "c": [0.1, np.nan]}),
        pd.DataFrame({"a": pd.array([1, None], dtype="Int64"), "b": ["x", "y"]}),
        pd.DataFrame({"a": pd.array([True, None], dtype="boolean"), "b": ["x", "=y"]}),
        pd.DataFrame({"d": pd.to_datetime(["2024-01-01", None]), "b": ["x", "y"]}),
        pd.DataFrame({"a": ["x", "y"], "b": ["1", "2"]}, index=[5, 3]),
        pd.DataFrame({"a": pd.Series([-1, -0.0], dtype=object)}),
        pd.DataFrame({"a": pd.Series([-1, "=x", 2.5], dtype=object), "b": [1, 2, 3]}),
    ]
    for frame in cases:
        assert csv_bytes(frame) == _reference_csv(frame), frame
        assert "".join(csv_pieces(frame, 1)).encode("utf-8") == csv_bytes(frame), frame


def test_a_number_in_a_text_column_is_written_as_it_is() -> None:
    # Found by the property test in CI: neutralising set the column's cells through a
    # Series, which turned [-1, -0.0] into floats, so the whole table said -1.0 and a
    # piece of it -1.
    frame = pd.DataFrame({"a0": pd.Series([-1, -0.0], dtype=object)})
    assert csv_bytes(frame) == b"a0\n-1\n-0.0\n"
    assert list(csv_pieces(frame, 1)) == ["a0\n-1\n", "-0.0\n"]


@st.composite
def property_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, tuple[str, ...]]:
    n = draw(st.integers(0, 5))
    data: dict[str, Any] = {
        "name": pd.Series(
            draw(st.lists(st.one_of(texts, st.none()), min_size=n, max_size=n)),
            dtype=draw(st.sampled_from([object, "str"])),
        ),  # fmt: skip
        "units": np.array(draw(st.lists(cells_floats, min_size=n, max_size=n)), dtype=float),
        "n_needs": np.array(draw(st.lists(st.integers(-3, 10**15), min_size=n, max_size=n))),
        "coarsened": np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool),
        "%odd key": pd.Series(
            draw(
                st.lists(
                    st.one_of(texts, st.integers(-3, 3), cells_floats, st.none(), st.booleans()),
                    min_size=n,
                    max_size=n,
                )
            ),
            dtype=object,
        ),  # fmt: skip
    }
    columns = tuple(draw(st.permutations(list(data))))
    return pd.DataFrame(data), columns


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(property_frames())
def test_feature_strings_are_json_dumps(case: tuple[pd.DataFrame, tuple[str, ...]]) -> None:
    frame, columns = case
    geoms = [f'{{"type":"Point","coordinates":[{i},0]}}' for i in range(len(frame))]
    assert _feature_strings("partner", frame, columns, geoms) == _reference_features(
        "partner", frame, columns, geoms
    )


def _polygons(seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out: list[Any] = [None, shapely.Polygon(), shapely.Point(1, 2), shapely.box(0, 0, 1, 1)]
    out.append(shapely.box(0, 0, 1, 1, ccw=False))
    out.append(shapely.Polygon([(0, 0), (0, 1e-7), (1e-7, 0)]))
    out.append(shapely.Polygon([(0, 0), (0, 1), (1, 1), (1, 1 + 3e-8), (1, 0)]))
    out.append(shapely.box(0, 0, 1, 1).difference(shapely.box(0.2, 0.2, 0.4, 0.4)))
    out.append(shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]))
    out.append(shapely.Polygon([(0, 0, 1), (0, 1, 2), (1, 1, 3), (1, 0, 4)]))  # clockwise, Z
    for _ in range(300):
        centre = rng.uniform([-88.0, 41.6], [-87.5, 42.1])
        pts = shapely.points(centre + rng.normal(0, rng.choice([1e-6, 1e-4, 1e-2]), (6, 2)))
        hull = shapely.convex_hull(shapely.multipoints(pts))
        radius = rng.choice([0.0, 1e-7, 1e-6, 1e-4, 3e-3])
        geom = hull.buffer(radius, quad_segs=int(rng.integers(1, 9))) if radius else hull
        if rng.random() < 0.2:
            geom = shapely.set_precision(geom, rng.choice([1e-7, 1e-6, 1e-5]))  # on a grid
        elif rng.random() < 0.2:  # on a grid, precision floating
            geom = shapely.polygons(shapely.get_coordinates(shapely.set_precision(geom, 1e-6)))
        if rng.random() < 0.2:
            geom = geom.reverse()
        out.append(geom)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("grid", [1e-7, 1e-6])
def test_snapped_geojson_are_set_precision(seed: int, grid: float) -> None:
    geoms = np.array(_polygons(seed), dtype=object)
    fast = _snapped_geojson(geoms, grid)
    slow = shapely.to_geojson(shapely.set_precision(geoms, grid))
    assert fast.tolist() == slow.tolist()


def test_plan_files_written_in_pieces_are_the_whole_files(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan written piece by piece (pieces of 7 rows here) has the bytes of the whole files."""
    from matcher import MatchConfig, output, plan
    from matcher.synthetic import generate_city, write_city

    paths = write_city(generate_city(800, 90, seed=3), tmp_path / "city")
    p = plan(paths["needs"], paths["partners"], neighborhoods=paths["neighborhoods"],
             config=MatchConfig(min_coverage=0.3))  # fmt: skip
    whole = plan_files(p)  # every table is smaller than a piece: each written at once
    assert {"gaps.geojson", "floors.csv", "plan.geojson", "need_clusters.csv"} <= set(whole)
    assert len(p.need_clusters) > 7 * 50 and len(p.assignments) > 7 * 5
    monkeypatch.setattr(output, "PIECE_ROWS", 7)
    pieces = list(plan_geojson_pieces(p))
    assert len(pieces) > 10 and "".join(pieces) == plan_geojson_text(p)
    assert "".join(pieces) + "\n" == whole["plan.geojson"].decode("utf-8")
    assert len(list(csv_pieces(p.need_clusters))) == -(-len(p.need_clusters) // 7)
    written = write_plan(p, tmp_path / "out")
    assert sorted(written) == sorted(whole)
    for name, path in written.items():
        assert path.read_bytes() == whole[name], name


def test_a_polygon_with_a_repeated_vertex_among_plain_ones() -> None:
    # Found by the API's fuzz test: a ring with a repeated vertex (valid, with a large
    # clearance) before a plain polygon left a gap in the ring numbering, and shapely
    # refused to build the rings ("Index 0 is missing from the input indices").
    repeated = shapely.Polygon([(0, 0), (0, 1), (1, 1), (1, 1), (1, 0)])
    plain = shapely.Polygon([(0, 0), (0, 2), (2, 2), (2, 0)])
    geoms = np.array([repeated, plain, repeated, plain], dtype=object)
    expected = shapely.to_geojson(shapely.set_precision(geoms, 1e-7)).tolist()
    assert _snapped_geojson(geoms, 1e-7).tolist() == expected
