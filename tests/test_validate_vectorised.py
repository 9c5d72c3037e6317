"""The vectorised reading and validation give what the per-row rules give, cell by cell.

``matcher._validate`` checks whole columns at once and applies the exact per-value rules
(``id_problem``, ``text_problem``, ``_is_date``, ``_resolve_categories``) only to the
values a vector test cannot clear. The oracle here is the plain per-row reading of the
same rules: each row, each field, in the order the validators report them. Random and
adversarial cells (formula prefixes, control characters, Unicode whitespace and digits,
over-long text, blank and duplicate ids, numbers like ``nan``, ``1e400`` or ``0x10``,
impossible dates, bad language lists) must give the same problems, the same rejected
rows and the same validated table.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher import _validate as v
from matcher import io as mio
from matcher._errors import InputValidationError, Problem
from matcher.limits import MAX_CELL_CHARS, MAX_RADIUS_KM, MAX_UNITS, id_problem, text_problem
from matcher.taxonomy import default_taxonomy

TAXONOMY = default_taxonomy()
FILE = "t.csv"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- cells

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
SPACES = ["", " ", "  ", "\t", "\u00a0", "\u3000", "\x1c", "\u2028", "\x85"]
IDS = [
    "a", "b", "A", " a", "a ", "=x", "+1", "-1", "@h", "\tx", "x\ny", "a\x7f", "a\x00",
    "x" * 128, "x" * 129, "", "é", "\u00a0a", "١٢", "Ⅻ", "a b", "\u200bz",
]  # fmt: skip
NUMBERS = [
    "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "0x10", "1,5",
    "1_000", "١٢", "３", "+5", ".5", "5.", "0", "-0", "0.0", "", "2.5", "3", "3.0", "1",
    "5", "6", "1e6", "1000000", "1000000.01", "1000", "1000.5", "-3", "41.88", "-87.63",
    "90", "90.000001", "-180", "180.5", "9007199254740993", "18446744073709551616",
    "abc", "True", "None", "NA", "1 2", "  7 ",
]  # fmt: skip
CATEGORIES = [
    *list(TAXONOMY.codes)[:4], *list(TAXONOMY.aliases)[:4], "Food_Access", " food access ",
    "unknown", "food_access;mental_health", "food_access;;", ";", "food_access;nope", "",
]  # fmt: skip
LANGUAGES = [
    "en", "EN; es", "e n", "eng", "en;;es", "", ";", "zz", "en;1a", "es;en;es", "ÉN", "en,es",
]  # fmt: skip
DATES = [
    "2024-01-13", "2024-02-30", "2024-01-13T10:00Z", "2024-01-13 10:00:00+01:00",
    "13/01/2024", "2024-1-1", "２０２４-01-01", "2024-02-29", "2023-02-29", "",
    "2024-01-13T25:00", "2024-01-13Tnope",
]  # fmt: skip
KINDS = ["organization", "volunteer", "Organization", " VOLUNTEER ", "org", ""]
LONG = ["x" * 500, "x" * 501, " " + "y" * 500 + " ", "z" * 2000]


def cells(pool: list[str], extra: st.SearchStrategy[str] = ANY_TEXT) -> st.SearchStrategy[str]:
    """A cell from ``pool``, sometimes padded with whitespace, or any text."""
    padded = st.tuples(st.sampled_from(SPACES), st.sampled_from(pool), st.sampled_from(SPACES))
    return st.one_of(
        st.sampled_from(pool),
        padded.map("".join),
        extra,
        st.sampled_from(LONG),
    )


NEED_CELLS = {
    "need_id": cells(IDS),
    "category": cells(CATEGORIES),
    "lat": cells(NUMBERS),
    "lon": cells(NUMBERS),
    "demand": cells(NUMBERS),
    "severity": cells(NUMBERS),
    "neighborhood": cells(["H1", "", "Near North"]),
    "languages": cells(LANGUAGES),
    "reported_at": cells(DATES),
    "source": cells(["survey", "", "=cmd"]),
}
PARTNER_CELLS = {
    "partner_id": cells(IDS),
    "name": cells(["Food Bank", "", "=HYPERLINK()"]),
    "kind": cells(KINDS),
    "lat": cells(NUMBERS),
    "lon": cells(NUMBERS),
    "categories": cells(CATEGORIES),
    "capacity": cells(NUMBERS),
    "radius_km": cells(NUMBERS),
    "languages": cells(LANGUAGES),
    "contact": cells(["", "a@b.org", "+1 555"]),
}
# A valid row: most rows of a table are, so the vector paths see both kinds.
GOOD_NEED = {
    "category": "food_access", "lat": "41.88", "lon": "-87.63", "demand": "2",
    "severity": "3", "neighborhood": "H1", "languages": "en", "reported_at": "2024-01-13",
    "source": "survey",
}  # fmt: skip
GOOD_PARTNER = {
    "name": "Food Bank", "kind": "organization", "lat": "41.88", "lon": "-87.63",
    "categories": "food_access", "capacity": "10", "radius_km": "2", "languages": "en",
    "contact": "",
}  # fmt: skip
# non-string cells, as a GeoJSON's properties or a caller's DataFrame have them
OTHER_VALUES = [None, float("nan"), 0, 3, -1, 2.5, 1e400, True, 10**30]


@st.composite
def tables(draw: st.DrawFn, spec: dict[str, st.SearchStrategy[str]], good: dict[str, str],
           key: str) -> tuple[pd.DataFrame, list[int]]:  # fmt: skip
    """A raw table: some columns dropped, rows valid or random, str or object columns."""
    optional = [c for c in spec if c not in v.NEED_COLUMNS["required"]]
    optional = [c for c in optional if c not in v.PARTNER_COLUMNS["required"]]
    dropped = draw(st.sets(st.sampled_from(optional)))
    columns = [c for c in spec if c not in dropped]
    n = draw(st.integers(1, 12))
    rows = []
    for i in range(n):
        if draw(st.booleans()):
            rows.append({c: (f"id{i}" if c == key else good[c]) for c in columns})
        else:
            rows.append({c: draw(spec[c]) for c in columns})
    df = pd.DataFrame(rows, columns=columns, dtype=str)
    if draw(st.booleans()):  # an object table with some non-string values
        df = df.astype(object)
        for col in draw(st.lists(st.sampled_from(columns), max_size=3)):
            i = draw(st.integers(0, n - 1))
            df.loc[i, col] = draw(st.sampled_from(OTHER_VALUES))
    line_numbers = sorted(draw(st.sets(st.integers(2, 10 * n), min_size=n, max_size=n)))
    return df, line_numbers


# ------------------------------------------------------------------ the per-row oracle


def ref_text(value: Any) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (str(value).strip())
    )


def ref_numbers(df: pd.DataFrame, field: str) -> list[float]:
    """Numbers as the validators parse them: ``pd.to_numeric`` of the stripped column."""
    if df[field].dtype == bool:
        return [math.nan] * len(df)
    text = pd.Series([ref_text(x) for x in df[field]], index=df.index, dtype=str)
    parsed = pd.to_numeric(text.where(text != "", None), errors="coerce")
    return list(parsed.to_numpy(dtype=np.float64, na_value=np.nan))


def ref_languages(text: str) -> tuple[bool, str]:
    value = text.lower().replace(" ", "")
    codes = [c for c in value.split(";") if c]
    ok = all(v._LANG.match(c) for c in codes)  # the rule for one code
    return ok, ";".join(sorted(set(codes)))


def reference(
    df: pd.DataFrame, rows: list[int], needs: bool
) -> tuple[list[Problem], pd.DataFrame, np.ndarray]:
    """Validate ``df`` one row at a time: (problems, table of the valid rows, bad rows)."""
    key = "need_id" if needs else "partner_id"
    order = {c: i for i, c in enumerate(df.columns)}
    numbers = {c: ref_numbers(df, c) for c in ("lat", "lon", "demand", "severity",
                                                "capacity", "radius_km") if c in df}  # fmt: skip
    first: dict[str, int] = {}
    found: list[tuple[int, int, Problem]] = []
    out = []
    bad = np.zeros(len(df), dtype=bool)
    for i in range(len(df)):
        raw = {c: df[c].iloc[i] for c in df.columns}
        text = {c: ref_text(raw[c]) for c in df.columns}
        t = lambda c, text=text: text.get(c, "")  # noqa: E731
        probs: list[tuple[str, str]] = []

        def add(field: str, reason: str, probs: list[tuple[str, str]] = probs) -> None:
            probs.append((field, reason))

        ident = t(key)
        if not ident:
            add(key, "must be a non-empty identifier")
        elif id_problem(ident):
            add(key, str(id_problem(ident)))
        if ident and ident in first:
            add(key, f"duplicate {key}; first used on row {first[ident]}")
        first.setdefault(ident, rows[i])
        if not needs:
            if t("kind").lower() not in ("organization", "volunteer"):
                add("kind", "must be one of organization, volunteer")
        cat_field = "category" if needs else "categories"
        codes, reason = v._resolve_categories(t(cat_field), TAXONOMY, multi=not needs)
        if reason:
            add(cat_field, reason)
        coords = {}
        for name, lim in (("lat", 90.0), ("lon", 180.0)):
            x = numbers[name][i]
            coords[name] = x
            if math.isnan(x) and t(name) == "":
                add(name, f"is empty; a {name} in degrees WGS84 is required")
            elif not math.isfinite(x):
                add(name, f"must be a finite number in -{lim:g}..{lim:g}")
            elif abs(x) > lim:
                add(name, f"out of range; must be in -{lim:g}..{lim:g}")
        if coords["lat"] == 0 and coords["lon"] == 0:
            add("lat", "(lat, lon) is exactly (0, 0), most likely a missing value; "
                "give the real location")  # fmt: skip
        amounts = [("demand", True, MAX_UNITS)] if needs else [
            ("capacity", False, MAX_UNITS), ("radius_km", True, MAX_RADIUS_KM)]  # fmt: skip
        for name, strict, high in amounts:
            x = numbers[name][i]
            low = x <= 0 if strict else x < 0
            if not math.isfinite(x) or low or x > high:
                add(name, f"must be a number {'>' if strict else '>='} 0 and <= {high:,.0f}")
        texts = ("neighborhood", "languages", "reported_at", "source") if needs else (
            "name", "categories", "languages", "contact")  # fmt: skip
        for name in texts:
            if name in df and text_problem(t(name)):
                add(name, str(text_problem(t(name))))
        severity = 3.0
        if needs and "severity" in df:
            severity = 3.0 if t("severity") == "" else numbers["severity"][i]
            if not math.isfinite(severity) or not 1 <= severity <= 5 or severity % 1:
                add("severity", "must be an integer 1..5 (or empty for the default 3)")
        ok, languages = ref_languages(t("languages"))
        if not ok:
            add("languages", "must be ';'-separated two-letter ISO 639-1 codes, e.g. 'en;es'")
        if needs and t("reported_at") and not v._is_date(t("reported_at")):
            add("reported_at", "must be an ISO 8601 date (YYYY-MM-DD) or empty")
        for field, reason in probs:
            value = raw[field] if field in raw else None
            found.append((i, order.get(field, 0), Problem(FILE, rows[i], field, value, reason)))
        bad[i] = bool(probs)
        if needs:
            sev = int(severity) if 1 <= severity <= 5 else 3
            record = [ident, codes, coords["lat"], coords["lon"], numbers["demand"][i], sev,
                      t("neighborhood"), languages, t("reported_at"), t("source")]  # fmt: skip
        else:
            record = [ident, t("name") or ident, t("kind").lower(), coords["lat"],
                      coords["lon"], codes, numbers["capacity"][i], numbers["radius_km"][i],
                      languages, t("contact")]  # fmt: skip
        if not probs:
            out.append(record)
    fields = v.NEED_FIELDS if needs else v.PARTNER_FIELDS
    problems = [p for _, _, p in sorted(found, key=lambda f: (f[0], f[1]))]
    return problems, pd.DataFrame(out, columns=list(fields)), bad


def same_problems(got: tuple[Problem, ...], want: list[Problem]) -> None:
    def key(p: Problem) -> tuple[Any, ...]:
        value = "<nan>" if isinstance(p.value, float) and math.isnan(p.value) else p.value
        return (p.file, p.row, p.field, repr(value), p.reason)

    assert [key(p) for p in got] == [key(p) for p in want]


def check(df: pd.DataFrame, rows: list[int], needs: bool) -> None:
    validator = v.validate_needs if needs else v.validate_partners
    got = validator(df, rows, FILE, TAXONOMY)
    problems, table, bad = reference(df, rows, needs)
    same_problems(got.problems, problems)
    assert got.bad_rows.tolist() == bad.tolist()
    assert list(got.table.columns) == list(table.columns)
    assert isinstance(got.table.index, pd.RangeIndex) and len(got.table) == len(table)
    for col in table.columns:
        want = table[col].tolist()
        assert got.table[col].tolist() == want, col
    for col in ("lat", "lon"):
        assert got.table[col].dtype == np.float64
    if len(table):
        strings = [c for c in table.columns if c not in ("lat", "lon", "demand", "severity",
                                                         "capacity", "radius_km")]  # fmt: skip
        for col in strings:
            assert str(got.table[col].dtype) == "str", col
        if needs:
            assert got.table["severity"].dtype == np.int64


# ----------------------------------------------------------------------------- tests


@SETTINGS
@given(tables(NEED_CELLS, GOOD_NEED, "need_id"))
def test_validate_needs_matches_the_per_row_rules(table: tuple[pd.DataFrame, list[int]]) -> None:
    check(*table, needs=True)


@SETTINGS
@given(tables(PARTNER_CELLS, GOOD_PARTNER, "partner_id"))
def test_validate_partners_matches_the_per_row_rules(
    table: tuple[pd.DataFrame, list[int]],
) -> None:
    check(*table, needs=False)


@SETTINGS
@given(
    st.one_of(
        st.lists(st.one_of(ANY_TEXT, st.sampled_from(SPACES + IDS + LONG)), min_size=1),
        st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=4), min_size=1),
    )
)
def test_text_strips_like_str_strip(values: list[str]) -> None:
    for dtype in (str, object):
        got = v._text_values(pd.Series(values, dtype=dtype))[0]
        assert got.tolist() == [x.strip() for x in values]
        assert str(got.dtype) == "str"


def test_ascii_whitespace_is_the_set_str_strip_removes() -> None:
    assert set(v._ASCII_SPACE) == {chr(c) for c in range(128) if chr(c).isspace()}


def test_text_of_missing_and_other_values_is_str_of_them() -> None:
    series = pd.Series([None, float("nan"), 3, 2.5, True, " a "], dtype=object)
    assert v._text_values(series)[0].tolist() == ["", "", "3", "2.5", "True", "a"]
    with_missing = pd.Series(["a ", None], dtype=str)
    assert v._text_values(with_missing)[0].tolist() == ["a", ""]


def csv_text(rows: list[list[str]], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


@SETTINGS
@given(
    st.lists(
        st.lists(
            st.one_of(ANY_TEXT, st.sampled_from(LONG + ["x" * 2001, "a,b\n" * 600])),
            min_size=3,
            max_size=3,
        ),  # fmt: skip
        min_size=1,
        max_size=6,
    )
)
def test_check_cells_finds_every_long_cell(rows: list[list[str]]) -> None:
    """The CSV shortcut (no quote, short lines) never hides a cell over the limit."""
    rows = [[c.replace("\r", "") for c in row] for row in rows]
    rows = [row for row in rows if any(c.strip() for c in row)]  # blank lines are skipped
    if not rows:
        return
    text = csv_text(rows, ["a", "b", "c"])
    try:
        df, numbers = mio._read_csv_text(text, FILE, ())
    except InputValidationError:
        return
    want = [
        (numbers[i], col)
        for col in df.columns
        for i, value in enumerate(df[col].tolist())
        if isinstance(value, str) and len(value) > MAX_CELL_CHARS
    ]
    try:
        mio._check_cells(df, numbers, FILE, text)
        got: list[tuple[int | None, str | None]] = []
    except InputValidationError as exc:
        got = [(p.row, p.field) for p in exc.problems]
        assert all(
            p.reason.endswith(f"a cell has at most {MAX_CELL_CHARS:,}") for p in exc.problems
        )
    assert sorted(got, key=str) == sorted(want, key=str)


@SETTINGS
@given(
    st.lists(
        st.lists(
            st.one_of(ANY_TEXT, st.sampled_from(SPACES + NUMBERS[:10])), min_size=3, max_size=3
        ),  # fmt: skip
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_csv_reader_reads_as_pandas_with_missing_values(rows: list[list[str]], crlf: bool) -> None:
    """``na_filter=False`` reads what the empty NA set read: every cell a string."""
    text = csv_text(rows, ["a", "b", "c"])
    if crlf:
        text = text.replace("\n", "\r\n")
    try:
        df, _ = mio._read_csv_text(text, FILE, ())
    except InputValidationError:
        return
    want = pd.read_csv(
        io.StringIO(text),
        dtype=str,
        keep_default_na=False,
        na_values=[],
        skipinitialspace=True,
        skip_blank_lines=True,
    )
    want.columns = [str(c).strip() for c in want.columns]
    pd.testing.assert_frame_equal(df, want)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(NUMBERS), ANY_TEXT), min_size=1, max_size=20),
    st.randoms(use_true_random=False),
    st.sampled_from([str, object]),
)
def test_numbers_of_a_long_column_of_few_values(pool: list[str], rng: Any, dtype: type) -> None:
    """Parsing each distinct value once gives the numbers of the whole column."""
    column = pd.DataFrame({"x": pd.Series(rng.choices(pool, k=5000), dtype=dtype)})
    got = v._parse_numbers(*v._text_values(column["x"]))
    want = ref_numbers(column, "x")
    assert np.array_equal(got, np.asarray(want, dtype=np.float64), equal_nan=True)


@SETTINGS
@given(
    st.lists(
        st.lists(
            st.one_of(ANY_TEXT, st.sampled_from(SPACES + NUMBERS[:10] + ["a,b", 'q"x', "l\nm"])),
            min_size=3,
            max_size=3,
        ),  # fmt: skip
        min_size=1,
        max_size=9,
    ),
    st.booleans(),
    st.integers(1, 4),
)
def test_a_long_csv_read_in_pieces_reads_as_whole(
    rows: list[list[str]], crlf: bool, piece: int
) -> None:
    """A text past ``CSV_PIECE_CHARS``, parsed ``CSV_PIECE_ROWS`` rows at a time, reads the same.

    The same table (dtypes included), the same row numbers, or the same problems.
    """
    text = csv_text(rows, ["a", "b", "c"])
    if crlf:
        text = text.replace("\n", "\r\n")

    def read() -> Any:
        try:
            df, numbers = mio._read_csv_text(text, FILE, ())
        except InputValidationError as exc:
            return list(exc.problems)
        return df, list(numbers)

    whole = read()
    old = mio.CSV_PIECE_CHARS, mio.CSV_PIECE_ROWS
    mio.CSV_PIECE_CHARS, mio.CSV_PIECE_ROWS = 0, piece
    try:
        pieces = read()
    finally:
        mio.CSV_PIECE_CHARS, mio.CSV_PIECE_ROWS = old
    if isinstance(whole, list):
        assert pieces == whole
    else:
        pd.testing.assert_frame_equal(pieces[0], whole[0])
        assert pieces[1] == whole[1]
