"""The detections table: validation, CSV / npz round trips, and one-line errors on bad files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import SubmissionError
from harness_plugins.watermark.detections import Detection, Detections

ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=8)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 12))
    k = draw(st.sampled_from([None, 0, 1, 7]))
    keys = draw(st.lists(st.tuples(ids, ids, st.booleans()), min_size=n, max_size=n, unique=True))
    score = draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))
    p = draw(st.lists(st.one_of(st.just(math.nan), st.floats(0, 1)), min_size=n, max_size=n))
    bits = None if k is None else np.array(draw(st.lists(st.lists(st.integers(0, 1), min_size=k, max_size=k), min_size=n, max_size=n)), dtype=np.uint8).reshape(n, k)
    msg = None if k is None else bits[::-1].copy()
    return Detections([c for c, _, _ in keys], [i for _, i, _ in keys], [m for _, _, m in keys], score, p, bits, msg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables())
def test_csv_and_npz_round_trip_bit_for_bit(tmp_path, t):
    t.save_csv(tmp_path / "d.csv")
    t.save_npz(tmp_path / "d.npz")
    for loaded in (Detections.load_csv(tmp_path / "d.csv"), Detections.load_npz(tmp_path / "d.npz")):
        if len(t) == 0:
            assert len(loaded) == 0
            continue
        assert loaded.equals(t)


def test_csv_is_readable(tmp_path):
    t = Detections.build(["a", "b,c"], "jpeg(quality=50)", True,
                         [Detection(3.0, bits=np.array([1, 0, 1]), p_value=0.125), Detection(1.0, bits=np.array([0, 0, 0]), p_value=0.875)],
                         messages=[np.array([1, 0, 1]), np.array([1, 1, 1])])
    t.save_csv(tmp_path / "d.csv")
    text = (tmp_path / "d.csv").read_text()
    assert text.splitlines() == [
        "image_id,cell,marked,score,p_value,bits,message",
        "a,jpeg(quality=50),1,3.0,0.125,101,101",
        '"b,c",jpeg(quality=50),1,1.0,0.875,000,111',
    ]
    zero_bit = Detections.build(["a"], "none", False, [Detection(0.5)])
    zero_bit.save_csv(tmp_path / "z.csv")
    assert (tmp_path / "z.csv").read_bytes() == b"image_id,cell,marked,score,p_value\r\na,none,0,0.5,\r\n"
    assert math.isnan(Detections.load_csv(tmp_path / "z.csv").p_value[0])


def test_validation():
    ok = dict(image_id=["a", "b"], cell=["c", "c"], marked=[True, False], score=[1.0, 2.0], p_value=[0.5, math.nan])
    Detections(**ok)
    with pytest.raises(ValueError, match="score is NaN"):
        Detections(**{**ok, "score": [1.0, math.nan]})
    with pytest.raises(ValueError, match="p_value outside"):
        Detections(**{**ok, "p_value": [1.5, 0.0]})
    with pytest.raises(ValueError, match="shape"):
        Detections(**{**ok, "score": [1.0]})
    with pytest.raises(ValueError, match="duplicate row: image 'a', cell 'c', marked True"):
        Detections(**{**ok, "image_id": ["a", "a"], "marked": [True, True]})
    with pytest.raises(ValueError, match="0/1"):
        Detections(**ok, bits=np.array([[2], [0]]))
    with pytest.raises(ValueError, match="differ in shape"):
        Detections(**ok, bits=np.zeros((2, 3)), message=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="some detections have bits"):
        Detections.build(["a", "b"], "c", True, [Detection(1.0, bits=np.ones(2)), Detection(1.0)])


def test_select_and_cells():
    t = Detections.concat([
        Detections.build(["a", "b"], "none", True, [Detection(1.0), Detection(2.0)]),
        Detections.build(["a", "b"], "none", False, [Detection(0.0), Detection(0.1)]),
        Detections.build(["a"], "blur(kernel=3)", True, [Detection(0.9)]),
    ])
    assert t.cells() == ["none", "blur(kernel=3)"]
    assert len(t.select("none")) == 4 and t.select("blur(kernel=3)").score.tolist() == [0.9]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("id,cell,marked,score,p_value\n", "line 1: header is"),
        ("image_id,cell,marked,score,p_value\na,c,yes,1.0,\n", "line 2: marked 'yes' is not 1/0/true/false"),
        ("image_id,cell,marked,score,p_value\na,c,1,1.0,\nb,c,1,nan,\n", "line 3: score 'nan' is not a number"),
        ("image_id,cell,marked,score,p_value\na,c,1,,\n", "line 2: score empty"),
        ("image_id,cell,marked,score,p_value\na,c,1,1.0,2\n", "line 2: p_value '2' is outside"),
        ("image_id,cell,marked,score,p_value\na,c,1,1.0\n", "line 2: 4 fields, expected 5"),
        ("image_id,cell,marked,score,p_value,bits\na,c,1,1.0,,0101\nb,c,1,1.0,,012\n", "line 3: bits '012' is not a string of 4"),
        ("image_id,cell,marked,score,p_value\na,c,1,1.0,\na,c,1,2.0,\n", "duplicate row"),
    ],
)
def test_bad_csv_files(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(SubmissionError, match=message):
        Detections.load_csv(path)


def test_bad_npz_files(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(SubmissionError, match="not a readable .npz"):
        Detections.load_npz(path)
    np.savez(path, image_id=np.array(["a"]), cell=np.array(["c"]), marked=np.array([True]), score=np.array([1.0]))
    with pytest.raises(SubmissionError, match="missing \\['p_value'\\]"):
        Detections.load_npz(path)
    np.savez(path, image_id=np.array([object()], dtype=object), cell=np.array(["c"]), marked=np.array([True]),
             score=np.array([1.0]), p_value=np.array([0.5]))
    with pytest.raises(SubmissionError, match="not a readable .npz|expected str"):
        Detections.load_npz(path)  # object arrays would need pickle: refused
    with pytest.raises(SubmissionError, match="file not found"):
        Detections.load_npz(tmp_path / "missing.npz")
