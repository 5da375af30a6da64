"""Safe readers: a corpus of malformed files, each rejected with a one-line reason naming the file."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness_plugins.revisitop.files as revisitop_files
from harness.errors import SubmissionError
from harness.submissions import check_file, read_text_file
from harness_plugins.disc21.files import read_descriptor_h5, read_matching_csv, read_pairs_csv
from harness_plugins.revisitop.files import first_duplicate_column, read_rankings_npy, read_revisitop_gnd, write_revisitop_gnd_json

h5py = pytest.importorskip("h5py")


def rejected(fn, path, reason, where=None, **kw):
    with pytest.raises(SubmissionError) as info:
        fn(path, **kw)
    err = info.value
    msg = str(err)
    assert "\n" not in msg
    assert str(path) in msg, msg
    assert reason in err.reason, msg
    if where is not None:
        assert err.where == where, msg
    return err


# ------------------------------------------------------------------------------------ matching CSV


def test_matching_csv_good_with_and_without_header(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("query_id,reference_id,score\n Q00001 , R000002 ,0.5\nQ00002,R000003,-1e3\n\n")
    q, r, s = read_matching_csv(a)
    assert q.tolist() == ["Q00001", "Q00002"] and r.tolist() == ["R000002", "R000003"]
    assert s.tolist() == [0.5, -1000.0] and s.dtype == np.float64
    b = tmp_path / "b.csv"
    b.write_text("Q00001,R000002,1\r\n")
    assert read_matching_csv(b)[0].tolist() == ["Q00001"]
    c = tmp_path / "c.csv"
    c.write_text("query_id,reference_id,score\n")
    assert len(read_matching_csv(c)[2]) == 0


MATCHING_CORPUS = [
    ("wrong_header.csv", "query,reference,similarity\nQ1,R1,0.5\n", "neither the header", "line 1"),
    ("columns.csv", "query_id,reference_id,score\nQ1,R1,0.5\nQ2,R2\n", "2 columns, expected 3", "line 3"),
    ("extra_col.csv", "Q1,R1,0.5,7\n", "4 columns", "line 1"),
    ("non_numeric.csv", "query_id,reference_id,score\nQ1,R1,0.5\nQ2,R2,high\n", "score 'high' is not a number", "line 3"),
    ("nan.csv", "Q1,R1,0.5\nQ2,R2,nan\n", "is not finite", "line 2"),
    ("inf.csv", "Q1,R1,-inf\n", "is not finite", "line 1"),
    ("dup.csv", "query_id,reference_id,score\nQ1,R1,0.5\nQ2,R1,0.4\nQ1 , R1,0.1\n", "duplicate prediction (Q1, R1), also on line 2", "line 4"),
    ("empty_ref.csv", "Q1,,0.5\n", "empty reference_id", "line 1"),
    ("quote.csv", 'Q1,"R1,0.5\n', "malformed CSV", None),
]


@pytest.mark.parametrize("name,content,reason,where", MATCHING_CORPUS)
def test_matching_csv_corpus(tmp_path, name, content, reason, where):
    path = tmp_path / name
    path.write_text(content)
    rejected(read_matching_csv, path, reason, where)


def test_matching_csv_blank_line_numbers_are_file_lines(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("query_id,reference_id,score\n\nQ1,R1,0.5\n\nQ2,R2,x\n")
    rejected(read_matching_csv, path, "not a number", "line 5")


def test_matching_csv_limits_and_encoding(tmp_path):
    many = tmp_path / "many.csv"
    many.write_text("".join(f"Q{i},R{i},0.5\n" for i in range(11)))
    rejected(read_matching_csv, many, "11 prediction rows, over the limit of 10", max_rows=10)
    rejected(read_matching_csv, many, "over the 20-byte limit", max_bytes=20)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"Q1,R1,0.5\nQ\xe9,R2,0.5\n")
    rejected(read_matching_csv, latin, "not valid UTF-8", "line 2")
    rejected(read_matching_csv, tmp_path / "missing.csv", "file not found")
    rejected(read_matching_csv, tmp_path, "not a regular file")


# ------------------------------------------------------------------------------ ground-truth CSV


def test_pairs_csv_good(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("query_id,reference_id\nQ00000,\nQ00001,R000007\n")
    q, r = read_pairs_csv(path)
    assert q.tolist() == ["Q00000", "Q00001"] and r.tolist() == ["", "R000007"]
    headerless = tmp_path / "gt2.csv"
    headerless.write_text("Q00000,\nQ00001,R000007\n")
    assert read_pairs_csv(headerless)[1].tolist() == ["", "R000007"]


PAIRS_CORPUS = [
    ("twice.csv", "query_id,reference_id\nQ1,R1\nQ1,R1\n", "query Q1 is listed twice, also on line 2", "line 3"),
    ("two_refs.csv", "Q1,R1\nQ2,\nQ1,R5\n", "more than one reference for query Q1", "line 3"),
    ("header.csv", "query,reference\nQ1,R1\n", "wrong header", "line 1"),
    ("cols.csv", "Q1,R1,0.5\n", "3 columns, expected 2", "line 1"),
    ("noquery.csv", "Q1,R1\n,R2\n", "empty query_id", "line 2"),
]


@pytest.mark.parametrize("name,content,reason,where", PAIRS_CORPUS)
def test_pairs_csv_corpus(tmp_path, name, content, reason, where):
    path = tmp_path / name
    path.write_text(content)
    rejected(read_pairs_csv, path, reason, where)


# ------------------------------------------------------------------------------------ HDF5


def write_h5(path, **overrides):
    data = {
        "query": np.random.default_rng(0).random((3, 4), dtype=np.float32),
        "reference": np.random.default_rng(1).random((5, 4)),
        "query_ids": np.array([b"Q0", b"Q1", b"Q2"]),
        "reference_ids": np.array(["R0", "R1", "R2", "R3", "R4"], dtype=object),
    }
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is None:
                continue
            if isinstance(v, np.ndarray) and v.dtype == object:
                f.create_dataset(k, data=v, dtype=h5py.string_dtype())
            else:
                f.create_dataset(k, data=v)
    return path


def test_h5_good(tmp_path):
    out = read_descriptor_h5(write_h5(tmp_path / "ok.h5"))
    assert out["query"].dtype == np.float32 and out["reference"].dtype == np.float32
    assert out["query_ids"].tolist() == ["Q0", "Q1", "Q2"]
    assert out["reference_ids"].tolist() == ["R0", "R1", "R2", "R3", "R4"]


H5_CORPUS = [
    ("missing.h5", {"reference_ids": None}, "missing dataset 'reference_ids'", None),
    ("int.h5", {"query": np.ones((3, 4), dtype=np.int32)}, "dtype int32, expected float32 or float64", "query"),
    ("half.h5", {"query": np.ones((3, 4), dtype=np.float16)}, "dtype float16", "query"),
    ("1d.h5", {"query": np.ones(3, dtype=np.float32)}, "expected 2-D", "query"),
    ("dim.h5", {"query": np.ones((3, 300), np.float32), "reference": np.ones((5, 300), np.float32)}, "dimension 300 is over the limit of 256", "query"),
    ("dmismatch.h5", {"reference": np.ones((5, 3), np.float32)}, "query dimension 4 differs from reference dimension 3", None),
    ("nan.h5", {"reference": np.array([[0, 0, 0, 0]] * 4 + [[0, np.nan, 0, 0]], np.float32)}, "NaN or inf", "reference[4]"),
    ("big64.h5", {"reference": np.full((5, 4), 1e300)}, "out of float32 range", "reference[0]"),
    ("len.h5", {"query_ids": np.array([b"Q0", b"Q1"])}, "2 ids for 3 query vectors", "query_ids"),
    ("dupid.h5", {"query_ids": np.array([b"Q0", b"Q1", b"Q0"])}, "duplicate id 'Q0', also at index 0", "query_ids[2]"),
    ("numid.h5", {"query_ids": np.arange(3)}, "ids must be strings", "query_ids"),
    ("ascii.h5", {"reference_ids": np.array(["R0", "R1", "Ré", "R3", "R4"], dtype=object)}, "is not printable ASCII", "reference_ids[2]"),
    ("ctrl.h5", {"query_ids": np.array([b"Q0", b"Q\x01", b"Q2"])}, "not printable ASCII", "query_ids[1]"),
    ("emptyid.h5", {"query_ids": np.array([b"Q0", b"  ", b"Q2"])}, "empty id", "query_ids[1]"),
]


@pytest.mark.parametrize("name,overrides,reason,where", H5_CORPUS)
def test_h5_corpus(tmp_path, name, overrides, reason, where):
    rejected(read_descriptor_h5, write_h5(tmp_path / name, **overrides), reason, where)


def test_h5_not_hdf5_group_and_links(tmp_path):
    txt = tmp_path / "fake.h5"
    txt.write_text("hello")
    rejected(read_descriptor_h5, txt, "not an HDF5 file")
    grp = tmp_path / "group.h5"
    with h5py.File(grp, "w") as f:
        f.create_group("query")
    rejected(read_descriptor_h5, grp, "is a group", "query")
    other = write_h5(tmp_path / "other.h5")
    ext = tmp_path / "ext.h5"
    with h5py.File(ext, "w") as f:
        f["query"] = h5py.ExternalLink(str(other), "query")
    rejected(read_descriptor_h5, ext, "links to other objects or files", "query")
    rejected(read_descriptor_h5, write_h5(tmp_path / "rows.h5"), "5 vectors, over the limit of 4", "reference", max_vectors=4)


# ------------------------------------------------------------------------------------ NPY


def test_npy_good(tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, np.array([[0, 1], [2, 0]], dtype=np.uint16))
    out = read_rankings_npy(path, n_queries=2)
    assert out.dtype == np.int64 and out.tolist() == [[0, 1], [2, 0]]


NPY_CORPUS = [
    ("transposed.npy", np.zeros((3, 10), np.int64) + np.arange(10), "looks transposed", None),
    ("shape.npy", np.arange(10).reshape(5, 2), "does not match 3 queries", None),
    ("float.npy", np.zeros((4, 3), np.float32), "dtype float32, expected an integer dtype", None),
    ("bool.npy", np.zeros((4, 3), bool), "dtype bool", None),
    ("3d.npy", np.zeros((4, 3, 1), np.int64), "expected 2-D", None),
    ("neg.npy", np.array([[0, 1, 2], [1, -2, 3]]), "negative id -2", "column 1, row 1"),  # -1 (no result) is allowed
    ("dup.npy", np.array([[0, 1, 2], [3, 4, 5], [6, 7, 2]]), "id 2 appears more than once", "column 2, row 2"),
    ("huge.npy", np.array([[0, 2**40, 1], [5, 2**40, 2]]), f"id {2**40} appears more than once", "column 1, row 1"),
]


@pytest.mark.parametrize("name,array,reason,where", NPY_CORPUS)
def test_npy_corpus(tmp_path, name, array, reason, where):
    path = tmp_path / name
    np.save(path, array)
    rejected(read_rankings_npy, path, reason, where, n_queries=3)


def test_npy_object_npz_and_garbage(tmp_path):
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([[1, None, 2]], dtype=object), allow_pickle=True)
    rejected(read_rankings_npy, obj, "object arrays are not accepted", n_queries=3)
    npz = tmp_path / "r.npy"
    np.savez(npz, a=np.zeros((2, 3)))
    rejected(read_rankings_npy, tmp_path / "r.npy.npz", "is an .npz archive", n_queries=3)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    rejected(read_rankings_npy, junk, "not a valid .npy file", n_queries=3)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((100, 3), np.int64))
    short.write_bytes(short.read_bytes()[:-80])
    rejected(read_rankings_npy, short, "header declares shape (100, 3) (2,400 bytes of int64) but the file holds 2,320", n_queries=3)


def slow_first_duplicate_column(ranks):
    for q in range(ranks.shape[1]):
        seen = set()
        for k, v in enumerate(ranks[:, q].tolist()):
            if v in seen:
                return q, k, v
            seen.add(v)
    return None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1), st.integers(0, 40), st.integers(1, 7), st.sampled_from([3, 60, 10**6, 2**40]),
    st.sampled_from([0, 1000]), st.booleans(), st.integers(1, 3),
)
def test_first_duplicate_column_matches_slow(seed, k, nq, high, offset, fortran, group):
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, high, (k, nq)) + offset
    if k > 5 and rng.random() < 0.5:  # columns of distinct ids, with a repeat planted here and there
        ranks = np.stack([rng.permutation(max(k, 60))[:k] for _ in range(nq)], axis=1) + offset
        for _ in range(int(rng.integers(0, 3))):
            q = int(rng.integers(0, nq))
            ranks[rng.integers(0, k), q] = ranks[rng.integers(0, k), q]
    if fortran:
        ranks = np.asfortranarray(ranks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(revisitop_files, "_COLUMN_BLOCK_BYTES", group * max(k, 1) * 8)  # several column groups
        assert first_duplicate_column(ranks) == slow_first_duplicate_column(ranks)


def test_columns_copies_in_row_blocks():
    a = np.arange(7 * 50).reshape(50, 7)
    for start, stop in ((0, 7), (2, 5), (6, 7)):
        assert (revisitop_files._columns(a, start, stop, block_rows=8) == a[:, start:stop].T).all()
    scratch = np.empty((3, 50), dtype=a.dtype)
    assert (revisitop_files._columns(a, 4, 7, scratch, block_rows=16) == a[:, 4:7].T).all()


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_duplicate_found_deep_in_a_large_ranking(tmp_path, order):
    rng = np.random.default_rng(3)
    ranks = np.stack([rng.permutation(60_000) for _ in range(5)], axis=1)  # rows span several blocks
    ranks[45_000, 3] = ranks[44_999, 3]
    ranks[50_000, 4] = ranks[7, 4]
    path = tmp_path / "big.npy"
    np.save(path, np.asarray(ranks, order=order))
    reason = f"id {ranks[44_999, 3]} appears more than once"
    rejected(read_rankings_npy, path, reason, "column 3, row 45000", n_queries=5)
    ranks[45_000, 3] = ranks[44_999, 3] + 60_000
    np.save(path, np.asarray(ranks, order=order))
    rejected(read_rankings_npy, path, f"id {ranks[7, 4]} appears more than once", "column 4, row 50000", n_queries=5)


# ------------------------------------------------------------------------------------ revisitop gnd


def good_gnd():
    return {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["qa", "qb"],
        "gnd": [
            {"easy": [0], "hard": [1], "junk": [2], "bbx": [1.5, 2, 30.0, 40]},
            {"easy": [], "hard": [3], "junk": [], "bbx": (0, 0, 5, 5)},
        ],
    }


def test_gnd_pickle_and_json_round_trip(tmp_path):
    pkl = tmp_path / "gnd_test.pkl"
    pkl.write_bytes(pickle.dumps(good_gnd(), protocol=2))
    data = read_revisitop_gnd(pkl)
    assert data["gnd"][1]["bbx"] == [0.0, 0.0, 5.0, 5.0]
    js = tmp_path / "gnd_test.json"
    write_revisitop_gnd_json(data, js)
    assert read_revisitop_gnd(js) == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic: no temp left


def test_load_plain_shares_the_size_guard(tmp_path):
    from harness.safe_pickle import load_plain

    pkl = tmp_path / "gnd_test.pkl"
    pkl.write_bytes(pickle.dumps(good_gnd(), protocol=2))
    assert load_plain(pkl)["imlist"] == good_gnd()["imlist"]
    rejected(lambda path: load_plain(path, max_bytes=10), pkl, "over the 10-byte limit")
    rejected(load_plain, tmp_path / "absent.pkl", "file not found")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARKER', '/nonexistent/x')}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    evil = tmp_path / "gnd_evil.pkl"
    evil.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [_Evil()]}))
    rejected(read_revisitop_gnd, evil, "refusing to build")
    assert not marker.exists()


def _mutate(fn):
    g = good_gnd()
    fn(g)
    return g


GND_CORPUS = [
    ("list.json", [1, 2], "expected a dict", None),
    ("nokey.json", _mutate(lambda g: g.pop("qimlist")), "missing key 'qimlist'", None),
    ("count.json", _mutate(lambda g: g["qimlist"].append("qc")), "2 gnd entries for 3 queries", "gnd"),
    ("range.json", _mutate(lambda g: g["gnd"][0]["easy"].append(4)), "4 is not an index into imlist (0..3)", "gnd[0].easy[1]"),
    ("negative.json", _mutate(lambda g: g["gnd"][1]["junk"].append(-1)), "not an index", "gnd[1].junk[0]"),
    ("float.json", _mutate(lambda g: g["gnd"][0]["hard"].append(2.0)), "not an index", "gnd[0].hard[1]"),
    ("bool.json", _mutate(lambda g: g["gnd"][0]["hard"].append(True)), "not an index", "gnd[0].hard[1]"),
    ("twice.json", _mutate(lambda g: g["gnd"][0]["junk"].append(2)), "listed twice", "gnd[0].junk"),
    ("nohard.json", _mutate(lambda g: g["gnd"][0].pop("hard")), "missing or not a list", "gnd[0].hard"),
    ("bbx.json", _mutate(lambda g: g["gnd"][1].update(bbx=[0, 0, 5])), "4 finite numbers", "gnd[1].bbx"),
    ("name.json", _mutate(lambda g: g["imlist"].__setitem__(2, 7)), "expected an image name", "imlist[2]"),
]


@pytest.mark.parametrize("name,data,reason,where", GND_CORPUS)
def test_gnd_corpus(tmp_path, name, data, reason, where):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    rejected(read_revisitop_gnd, path, reason, where)


def test_gnd_json_nan_and_syntax(tmp_path):
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(good_gnd()).replace("1.5", "NaN"))
    rejected(read_revisitop_gnd, nan, "invalid JSON")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    rejected(read_revisitop_gnd, bad, "invalid JSON")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pickle.dumps(good_gnd())[:20])
    rejected(read_revisitop_gnd, corrupt, "pickle")


def test_check_file_size(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"12345")
    assert check_file(p, 5) == 5
    rejected(lambda path: check_file(path, 4), p, "5 bytes, over the 4-byte limit")


def test_read_text_file(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_bytes(b"\xef\xbb\xbfQ00001\nQ00002\n")
    assert read_text_file(p).splitlines() == ["Q00001", "Q00002"]  # a BOM is dropped
    p.write_bytes(b"Q00001\nQ0\xff002\n")
    rejected(read_text_file, p, "not valid UTF-8 text", where="line 2")
    rejected(lambda path: read_text_file(path, max_bytes=3), p, "over the 3-byte limit")
    rejected(read_text_file, tmp_path, "not a regular file")
