"""Scorer objects end to end on small generated files (CSV, HDF5, NPY, PKL, JSON)."""

from __future__ import annotations

import inspect
import json
import pickle

import numpy as np
import pytest

from harness.errors import SubmissionError, UserError
from harness_plugins.disc21.scorer import Disc21Scorer
from harness_plugins.revisitop.scorer import make_scorer

DISC21_KEYS = {"micro_ap", "recall_at_p90", "threshold_at_p90", "recall_at_rank1", "recall_at_rank10",
               "n_predictions", "n_gt_pairs", "scorer"}


@pytest.fixture
def gt_csv(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("query_id,reference_id\nQ00000,R000000\nQ00001,R000001\nQ00002,\nQ00003,R000003\n")
    return str(path)


def test_matching_csv(tmp_path, gt_csv):
    sub = tmp_path / "pred.csv"
    sub.write_text("query_id,reference_id,score\nQ00000,R000000,0.5\nQ00002,R000000,0.5\nQ00001,R000001,0.4\nQ00009,R000001,0.9\n")
    official = Disc21Scorer().score(str(sub), gt_csv)
    assert DISC21_KEYS <= set(official) and official["scorer"] == "official"
    assert official["micro_ap"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert official["n_predictions"] == 3 and official["n_gt_pairs"] == 3
    library = Disc21Scorer(scorer="isc2021").score(str(sub), gt_csv)
    assert library["n_predictions"] == 4 and library["recall_at_p90"] is None
    json.dumps(official), json.dumps(library)


def test_disc21_options_are_checked(tmp_path, gt_csv):
    with pytest.raises(UserError, match="exclusive"):
        Disc21Scorer(max_results=5, knn=2)
    with pytest.raises(UserError, match="unknown scorer"):
        Disc21Scorer(scorer="leaderboard")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="positive integer"):
        Disc21Scorer(knn=0)
    sub = tmp_path / "pred.csv"
    sub.write_text("Q00000,R000000,1\n")
    with pytest.raises(UserError, match="descriptor submissions"):
        Disc21Scorer(knn=3).score(str(sub), gt_csv)
    other = tmp_path / "pred.txt"
    other.write_text("x")
    with pytest.raises(SubmissionError, match="unknown submission type"):
        Disc21Scorer().score(str(other), gt_csv)
    # cheap checks come first: a wrong submission type is reported even when the GT is unreadable
    with pytest.raises(SubmissionError, match=r"pred\.txt: unknown submission type"):
        Disc21Scorer().score(str(other), str(tmp_path / "no_gt.csv"))
    with pytest.raises(UserError, match="descriptor submissions"):
        Disc21Scorer(knn=3).score(str(sub), str(tmp_path / "no_gt.csv"))


def test_bad_ground_truth_is_a_submission_error(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("Q1,R1\nQ1,R2\n")
    sub = tmp_path / "pred.csv"
    sub.write_text("Q1,R1,1\n")
    with pytest.raises(SubmissionError, match="more than one reference"):
        Disc21Scorer().score(str(sub), str(gt))


def write_descriptors(path, nq_extra=0):
    """Query i is a copy of reference i (i < 4) plus noise; Q00004.. are unlisted distractor queries."""
    import h5py

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 8)).astype(np.float32)
    nq = 4 + nq_extra
    query = np.concatenate([ref[:4] + 0.01 * rng.normal(size=(4, 8)), rng.normal(size=(nq_extra, 8))]).astype(np.float64)
    with h5py.File(path, "w") as f:
        f["query"] = query
        f["reference"] = ref
        f["query_ids"] = np.array([f"Q{i:05d}".encode() for i in range(nq)])
        f.create_dataset("reference_ids", data=np.array([f"R{i:06d}" for i in range(20)], dtype=object), dtype=h5py.string_dtype())
    return str(path)


def test_descriptor_track_global_top_k(tmp_path, gt_csv):
    pytest.importorskip("faiss")
    sub = write_descriptors(tmp_path / "sub.h5", nq_extra=3)
    res = Disc21Scorer().score(sub, gt_csv)
    assert res["search"] == "global_top_k" and res["k"] == 40  # 10 x 4 GT-listed queries
    assert res["n_queries_searched"] == 4  # unlisted Q00004.. dropped before the search
    assert res["n_predictions"] == 40
    assert res["micro_ap"] == 1.0 and res["recall_at_rank1"] == 1.0  # 3 GT pairs, each the nearest
    small = Disc21Scorer(max_results=2).score(sub, gt_csv)
    assert small["k"] == 2 and small["n_predictions"] == 2 and small["micro_ap"] == pytest.approx(2 / 3)
    knn = Disc21Scorer(knn=1).score(sub, gt_csv)
    assert knn["search"] == "knn" and knn["k"] == 1 and knn["n_predictions"] == 4
    library = Disc21Scorer(scorer="isc2021").score(sub, gt_csv)
    assert library["n_queries_searched"] == 7 and library["n_predictions"] == 7 * 20  # K = 500k > all pairs


def test_descriptor_track_rejects_bad_file(tmp_path, gt_csv):
    import h5py

    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["query"] = np.ones((2, 300), np.float32)
    with pytest.raises(SubmissionError, match="bad.h5: query: dimension 300"):
        Disc21Scorer().score(str(path), gt_csv)


# ------------------------------------------------------------------------------------ revisitop


def gnd_dict():
    return {
        "imlist": [f"im{i}" for i in range(6)],
        "qimlist": ["qa", "qb"],
        "gnd": [
            {"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [0.0, 0.0, 10.0, 10.0]},
            {"easy": [4], "hard": [], "junk": [], "bbx": [1, 1, 5, 5]},
        ],
    }


@pytest.mark.parametrize("form", ["pkl", "json"])
def test_revisitop_scorer(tmp_path, form):
    gt = tmp_path / f"gnd_roxford5k.{form}"
    if form == "pkl":
        gt.write_bytes(pickle.dumps(gnd_dict()))
    else:
        gt.write_text(json.dumps(gnd_dict()))
    ranks = np.array([[0, 4], [3, 1], [1, 0], [2, 100]], dtype=np.int32)  # column q = ranking of query q
    sub = tmp_path / "ranks.npy"
    np.save(sub, ranks)
    res = make_scorer("roxford5k")().score(str(sub), str(gt))
    assert set(res) == {"easy", "medium", "hard", "n_queries"} and res["n_queries"] == 2
    assert set(res["medium"]) == {"map", "mp@1", "mp@5", "mp@10", "mr@1", "mr@5", "mr@10"}
    # easy, q0: junk 3 and hard 2 removed -> [0, 1]: AP 1; q1: 4 first: AP 1
    assert res["easy"]["map"] == 1.0
    # hard, only q0 has a positive: ranking without junk/easy = [2] -> AP 1
    assert res["hard"]["map"] == 1.0
    # medium q0: [0, 1, 2] after removing junk 3 -> AP 1; q1 -> 1
    assert res["medium"]["map"] == 1.0
    json.dumps(res)


def test_revisitop_scorer_rejects(tmp_path):
    gt = tmp_path / "gnd.pkl"
    gt.write_bytes(pickle.dumps(gnd_dict()))
    sub = tmp_path / "ranks.npy"
    np.save(sub, np.zeros((2, 6), dtype=np.int64))
    with pytest.raises(SubmissionError, match="looks transposed"):
        make_scorer("rparis6k")().score(str(sub), str(gt))


def test_revisitop_factory_takes_no_disc21_options():
    factory = make_scorer("roxford5k")
    assert list(inspect.signature(factory).parameters) == []
    assert factory.__doc__.startswith("Score roxford5k")
    with pytest.raises(TypeError):
        factory(scorer="official")  # type: ignore[call-arg]
