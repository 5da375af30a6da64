"""The CSV table reader (harness/csvtable.py) against a deliberately simple reference, its exact
number parsing, and its bounds on hostile files (blank lines, enormous ids, control characters)."""

from __future__ import annotations

import csv
import io
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import csvtable
from harness.cli import main
from harness.csvtable import MAX_ID_CHARS, MAX_LINE_BYTES, _plain_decimals, _RowsTable, _windows, read_table
from harness.errors import SubmissionError, shown, shown_path
from harness_plugins.disc21.files import read_matching_csv, read_pairs_csv

HEADER = ("query_id", "reference_id", "score")


def reference_rows(text: str, ncols: int) -> tuple[list[int], list[list[str]], bool]:
    """The definition, line by line: blank lines (spaces/tabs only) skipped, fields split on commas
    and stripped, a first row equal to the header (any case) dropped."""
    lines, rows = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip(" \t"):
            continue
        fields = [f.strip() for f in line.split(",")]
        assert len(fields) == ncols
        lines.append(number)
        rows.append(fields)
    header = bool(rows) and [f.lower() for f in rows[0]] == list(HEADER[:ncols])
    return (lines[1:], rows[1:], True) if header else (lines, rows, False)


id_text = st.text(alphabet="QRT0123456789_-.x", min_size=1, max_size=12)
pad = st.sampled_from(["", "", "", " ", "  ", "\t", " \t"])
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.integers(-10**20, 10**20).map(str),
    st.builds(lambda s, a, b: f"{s}{a}.{b}", st.sampled_from(["", "-", "+"]), st.text("0123456789", max_size=12), st.text("0123456789", min_size=1, max_size=12)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.6e}"),
)


@st.composite
def csv_files(draw):
    n = draw(st.integers(0, 40))
    rows = [(draw(pad) + draw(id_text) + draw(pad), draw(pad) + draw(id_text) + draw(pad), draw(pad) + draw(numbers) + draw(pad)) for _ in range(n)]
    lines = [",".join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from(["query_id,reference_id,score", "Query_ID, reference_id ,SCORE"])))
    for _ in range(draw(st.integers(0, 4))):  # blank lines anywhere
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", "\t", "  \t "])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + (eol if draw(st.booleans()) else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files(), st.sampled_from([1, 7, 64]))
def test_table_matches_the_definition_on_both_paths(text, block):
    lines, rows, has_header = reference_rows(text, 3)
    data = text.encode()
    old = csvtable._BLOCK_BYTES
    csvtable._BLOCK_BYTES = block  # tiny blocks: rows cross block boundaries
    try:
        fast = read_table("t.csv", data, HEADER, max_rows=None, what="rows")
    finally:
        csvtable._BLOCK_BYTES = old
    slow = _RowsTable.parse("t.csv", data, HEADER, None, "rows", len(data))
    assert type(fast).__name__ == "_BytesTable"
    for table in (fast, slow):
        assert table.lines.tolist() == lines and table.has_header == has_header
        for j in (0, 1):
            assert table.ids(j).tolist() == [r[j] for r in rows]
        values, bad = table.numbers(2)
        assert bad is None
        expected = [float(r[2]) for r in rows]
        assert values.tolist() == expected
        assert np.signbit(values).tolist() == np.signbit(expected).tolist()


decimal_text = st.builds(
    lambda s, a, dot, b: s + a + dot + b,
    st.sampled_from(["", "-", "+", "--", "."]),
    st.text("0123456789", max_size=22),
    st.sampled_from(["", ".", "..", "e", "x"]),
    st.text("0123456789", max_size=22),
)


def _decimals(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = "\n".join(strings).encode()
    lens = np.array([len(s) for s in strings], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1])).astype(np.int64)
    return _plain_decimals(np.frombuffer(data, np.uint8), starts, lens)


def _is_plain(s: str) -> bool:
    m = re.fullmatch(r"[+-]?([0-9]*)(?:\.([0-9]*))?", s)
    return bool(m) and 1 <= len(m[1]) + len(m[2] or "") <= 19


@settings(max_examples=400, deadline=None)
@given(st.lists(decimal_text, min_size=1, max_size=30))
def test_fast_decimals_are_float_exactly_or_declined(strings):
    values, ok = _decimals(strings)
    for s, v, good in zip(strings, values.tolist(), ok.tolist()):
        if good:
            assert _is_plain(s) and v == float(s) and np.signbit(v) == np.signbit(float(s)), s
        else:
            assert not _is_plain(s) or _is_tie_in_extended(s), s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(lambda s, a, b: f"{s}{a}.{b}", st.sampled_from(["", "-", "+"]), st.text("0123456789", min_size=1, max_size=4), st.text("0123456789", max_size=15)), min_size=1, max_size=30))
def test_fast_decimals_take_every_plain_number_of_up_to_19_digits(strings):
    values, ok = _decimals(strings)
    halfway = [s for s, good in zip(strings, ok.tolist()) if not good]
    assert all(_is_tie_in_extended(s) for s in halfway), halfway
    assert values[ok].tolist() == [float(s) for s, good in zip(strings, ok.tolist()) if good]


def _is_tie_in_extended(s: str) -> bool:
    """Whether the 64-bit-mantissa rounding of the decimal lies halfway between two doubles (the
    only plain decimals the extended-precision path hands to the parser)."""
    from fractions import Fraction

    x = Fraction(s)
    if x == 0:
        return False
    sign = -1 if x < 0 else 1
    x = abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    ulp64 = Fraction(2) ** (e - 63)
    r = round(x / ulp64) * ulp64  # round half even, like the FPU
    ulp53 = Fraction(2) ** (e - 52)
    del sign
    return (r / ulp53).denominator == 2


def test_fast_decimals_on_many_random_reprs():
    rng = np.random.default_rng(0)
    v = rng.random(20_000) * 10.0 ** rng.integers(-6, 8, 20_000) * rng.choice([-1, 1], 20_000)
    strings = [repr(float(x)) for x in v] + [f"{x:.{k}f}" for x, k in zip(v, rng.integers(0, 12, 20_000))]
    values, ok = _decimals(strings)
    ref = np.array([float(s) for s in strings])
    assert (values[ok] == ref[ok]).all()
    declined = [s for s, good in zip(strings, ok.tolist()) if not good]
    assert all(not _is_plain(s) or _is_tie_in_extended(s) for s in declined)
    assert ok.mean() > 0.8  # the rest are exponent forms and 20+ digits


# ----------------------------------------------------------------------------------------- bounds


def test_a_file_of_blank_lines_is_read_in_memory_bounded_by_its_size(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_bytes(b"query_id,reference_id,score\n" + b"\n" * 20_000_000 + b" \t \r\nQ1,R1,0.5\n")
    tracemalloc.start()
    try:
        q, r, s = read_matching_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert q.tolist() == ["Q1"] and s.tolist() == [0.5]
    assert peak < path.stat().st_size + 80 * 2**20, peak  # the bytes once, plus a block's worth


def test_blank_lines_do_not_count_against_the_row_limit_and_the_count_is_exact(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("\n\n".join(f"Q{i},R{i},0.5" for i in range(12)) + "\n")
    with pytest.raises(SubmissionError, match="12 prediction rows, over the limit of 10"):
        read_matching_csv(path, max_rows=10)
    assert len(read_matching_csv(path, max_rows=12)[0]) == 12


@pytest.mark.parametrize("quoted", [False, True])
def test_one_enormous_id_is_refused_with_its_line(tmp_path, quoted):
    path = tmp_path / "big.csv"
    big = "R" * 100_000  # under the csv module's field limit: once padded every id to this width
    path.write_text("Q1,R1,0.5\n" + (f'Q2,"{big}",0.5\n' if quoted else f"Q2,{big},0.5\n"))
    with pytest.raises(SubmissionError, match="over the limit") as info:
        read_matching_csv(path)
    assert info.value.where == "line 2" and len(info.value.reason) < 100


@pytest.mark.parametrize("quoted", [False, True])
def test_ids_longer_than_the_cap_are_refused(tmp_path, quoted):
    path = tmp_path / "long.csv"
    long_id = "R" * (MAX_ID_CHARS + 1)
    path.write_text("Q1,R1,0.5\n" + (f'Q2,"{long_id}",0.5\n' if quoted else f"Q2,{long_id},0.5\n"))
    with pytest.raises(SubmissionError, match=f"reference_id is {MAX_ID_CHARS + 1} characters long, over the limit") as info:
        read_matching_csv(path)
    assert info.value.where == "line 2"


def test_a_long_line_is_refused_before_any_column_is_built(tmp_path):
    path = tmp_path / "line.csv"
    path.write_text("Q1,R1,0.5\nQ2,R2," + "5" * (MAX_LINE_BYTES + 1) + "\n")
    with pytest.raises(SubmissionError, match="over the limit of 65,536") as info:
        read_matching_csv(path)
    assert info.value.where == "line 2"


def test_one_long_id_among_many_short_ones_is_refused_not_padded(tmp_path):
    path = tmp_path / "skew.csv"
    rows = [f"Q{i},R{i},1" for i in range(300_000)]
    rows[123_456] = "Q123456," + "R" * MAX_ID_CHARS + ",1"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(SubmissionError, match="more than this file's size justifies") as info:
        read_matching_csv(path)
    assert info.value.where == "line 123457"


# ------------------------------------------------------------------------------- control characters


CONTROL_CASES = [
    ("nul_query.csv", b"Q1,R1,0.5\nQ2\x00,R2,0.5\n", "line 2"),
    ("nul_end.csv", b"Q1,R1,0.5\nQ2,R2\x00,0.5\n", "line 2"),
    ("bell.csv", b"query_id,reference_id,score\nQ1,R\x071,0.5\n", "line 2"),
    ("del.csv", b"Q1,R1,0.5\n\nQ3,R\x7f,0.5\n", "line 3"),
    ("quoted_nul.csv", b'Q1,"R1\x00",0.5\n', "line 1"),
    ("utf8_nul.csv", "Q1,Ré,0.5\nQ2,R\x00é,0.5\n".encode(), "line 2"),
    ("c1.csv", "Q1,R\u0085,0.5\n".encode(), "line 1"),
]


@pytest.mark.parametrize("name,content,where", CONTROL_CASES)
def test_control_characters_in_a_submission_are_errors_naming_the_line(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match="control character") as info:
        read_matching_csv(path)
    assert info.value.where == where
    assert "\n" not in str(info.value) and "\x00" not in str(info.value)


@pytest.mark.parametrize(
    "content,where",
    [(b"query_id,reference_id\nQ1,R\x00\n", "line 2"), (b"Q1,\nQ\x002,R2\n", "line 2"), (b'Q1,"R\x01"\n', "line 1")],
)
def test_control_characters_in_a_ground_truth_are_errors(tmp_path, content, where):
    path = tmp_path / "gt.csv"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match="control character") as info:
        read_pairs_csv(path)
    assert info.value.where == where


def test_tabs_around_fields_are_whitespace_but_not_inside_ids(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text("Q1\t,\tR1,\t0.5\n")
    assert read_matching_csv(ok)[1].tolist() == ["R1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Q1,R\t1,0.5\n")
    with pytest.raises(SubmissionError, match=r"reference_id 'R\\t1' contains a control character") as info:
        read_matching_csv(bad)
    assert info.value.where == "line 1"


def test_a_quoted_line_break_inside_an_id_is_an_error(tmp_path):
    path = tmp_path / "nl.csv"
    path.write_text('Q1,R1,0.5\nQ2,"R2\nerror: forged",0.5\n')
    with pytest.raises(SubmissionError, match="contains a control character") as info:
        read_matching_csv(path)
    assert info.value.where == "line 2"


# ------------------------------------------------------------------------------------ empty GT


@pytest.mark.parametrize("content,reason", [("", "no rows"), ("\n \n", "no rows"), ("query_id,reference_id\n", "only a header")])
def test_an_empty_or_header_only_ground_truth_is_an_error(tmp_path, content, reason):
    path = tmp_path / "gt.csv"
    path.write_text(content)
    with pytest.raises(SubmissionError, match=f"{reason}: a ground truth must list at least one query"):
        read_pairs_csv(path)


def test_score_refuses_an_empty_ground_truth_on_the_command_line(tmp_path, capsys):
    gt, sub = tmp_path / "gt.csv", tmp_path / "pred.csv"
    gt.write_text("query_id,reference_id\n")
    sub.write_text("Q1,R1,0.5\n")
    with pytest.raises(SystemExit) as info:
        main(["score", "disc21", str(sub), "--ground-truth", str(gt)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {gt}: only a header: a ground truth must list at least one query\n"


# ---------------------------------------------------------------------------- messages are one line


def test_shown_escapes_and_truncates():
    assert shown("Q1") == "'Q1'"
    assert shown("a\nerror: b") == "'a\\nerror: b'"
    long = shown("x" * 10_000)
    assert long.startswith("'" + "x" * 40 + "'") and "10,000 characters" in long and len(long) < 80
    assert shown(b"\x00" * 1000).endswith("(1,000 bytes)")
    assert shown([1] * 10) == "<list>"
    assert shown_path("a\nb.csv") == "a\\nb.csv" and shown_path("/tmp/ok.csv") == "/tmp/ok.csv"


@pytest.mark.parametrize(
    "name,content",
    [
        ("pred.csv", 'Q1,R1,0.5\nQ2,R2,1e5\u2028error: forged\n'),
        ("pred.csv", 'Q1,"R1\nerror: forged",0.5\nQ1,"R1\nerror: forged",0.7\n'),
        ("pred.csv", 'Q1,"R1\rerror: forged",0.5\n'),
        ("pred\nerror: forged.csv", "Q1,R1,high\n"),
        ("pred\u2028error: forged.csv", "Q1,R1,high\n"),
        ("pred.csv", "Q1,R1,0.5\nQ1,R1,0.7\n".replace("R1", "R1\u2028error: x")),
    ],
)
def test_untrusted_text_cannot_forge_a_second_error_line(tmp_path, capsys, name, content):
    gt, sub = tmp_path / "gt.csv", tmp_path / name
    gt.write_text("Q1,R1\nQ2,\n")
    sub.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["score", "disc21", str(sub), "--ground-truth", str(gt)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err.splitlines()) == 1 and err.startswith("error: "), repr(err)


def test_error_messages_show_at_most_a_prefix_of_a_huge_value(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("Q1,R1," + "9" * 60_000 + "x\n")
    with pytest.raises(SubmissionError) as info:
        read_matching_csv(path)
    assert "60,001 characters" in info.value.reason and len(info.value.reason) < 200


def test_quoted_and_plain_files_read_the_same(tmp_path):
    plain, quoted = tmp_path / "a.csv", tmp_path / "b.csv"
    plain.write_text("query_id,reference_id,score\nQ1,R1,0.5\nQ2,R2,-1e3\n")
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerows([["query_id", "reference_id", "score"], ["Q1", "R1", "0.5"], ["Q2", "R2", "-1e3"]])
    quoted.write_text(out.getvalue())
    a, b = read_matching_csv(plain), read_matching_csv(quoted)
    for x, y in zip(a, b):
        assert x.tolist() == y.tolist()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 19), st.lists(st.integers(0, 10**19 - 1), min_size=1, max_size=20))
def test_horner_reads_digit_columns(width, values):
    from harness.csvtable import _horner

    texts = [str(v % 10**width).zfill(width) if width else "" for v in values]
    digits = np.array([[ord(c) for c in t] for t in texts], dtype=np.uint8).reshape(len(texts), width).T
    assert _horner(np.ascontiguousarray(digits))[0].tolist() == [int(t or "0") for t in texts]


def test_the_scorer_names_the_lines_of_a_duplicate_pair(tmp_path):
    from harness_plugins.disc21.scorer import Disc21Scorer

    gt, sub = tmp_path / "gt.csv", tmp_path / "p.csv"
    gt.write_text("Q00000,R000001\n")
    sub.write_text("query_id,reference_id,score\nQ00000,R000001,0.5\n\nQ00001,R000001,0.5\nQ00000 , R000001,0.7\n")
    with pytest.raises(SubmissionError, match=r"duplicate prediction \(Q00000, R000001\), also on line 2") as info:
        Disc21Scorer().score(str(sub), str(gt))
    assert info.value.where == "line 5"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 12), st.lists(st.integers(0, 45), max_size=10))
def test_windows_copy_the_bytes_and_zero_past_the_end(data, width, offsets):
    buf = np.frombuffer(data, np.uint8)
    offsets = np.array([o for o in offsets if o <= len(data)], dtype=np.int64)
    out = _windows(buf, offsets, width)
    assert out.shape == (len(offsets), width)
    for row, o in zip(out.tolist(), offsets.tolist()):
        assert bytes(row) == (data[o : o + width] + bytes(width))[:width]
