"""Scoring fidelity against the upstream rules (issue 14, points 1-4) and bounded search options:

- revisitop rankings: -1 is "no result", a negative at its rank, as revisitop's ``compute_map``;
- DISC21 descriptor track: K = 10 x the GT-listed queries *present in the submission*; the cut keeps
  the pairs strictly closer than the (K+1)-th smallest distance; no metric depends on row order;
- ``--knn`` / ``--max-results`` asking for absurd memory are refused with one line.

The oracles are brute force on small integer descriptors (exact distances, so ties are common and
exact in float32 too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import SubmissionError, UserError
from harness_plugins.revisitop.files import read_rankings_npy
from harness_plugins.disc21 import scorer as disc21_scorer
from harness_plugins.disc21.groundtruth import Disc21GroundTruth
from harness_plugins.disc21.metrics import score_predictions
from harness_plugins.disc21.scorer import Disc21Scorer
from harness_plugins.revisitop.scorer import make_scorer

h5py = pytest.importorskip("h5py")
pytest.importorskip("faiss")

METRICS = ("micro_ap", "recall_at_p90", "threshold_at_p90", "recall_at_rank1", "recall_at_rank10", "n_predictions", "n_gt_pairs")


# ------------------------------------------------------------------------------ revisitop: -1


def slow_revisitop(ranks: np.ndarray, gnd: list[dict], ks=(1, 5, 10)) -> dict[str, dict]:
    """revisitop's compute_map, per query and per protocol, written from its definition: positions of
    positives after deleting junk; everything else (-1 included) occupies its rank as a negative."""
    out = {}
    for name, pos_keys, ign_keys in (("easy", ("easy",), ("junk", "hard")), ("medium", ("easy", "hard"), ("junk",)), ("hard", ("hard",), ("junk", "easy"))):
        aps, precs = [], []
        for q, g in enumerate(gnd):
            ok = {i for key in pos_keys for i in g[key]}
            if not ok:
                continue
            junk = {i for key in ign_keys for i in g[key]} - ok
            kept = [int(v) for v in ranks[:, q] if int(v) not in junk]
            pos = [r for r, v in enumerate(kept) if v in ok]
            ap = sum(((j / r if r else 1.0) + (j + 1) / (r + 1)) / 2 for j, r in enumerate(pos)) / len(ok)
            aps.append(ap)
            row = []
            for k in ks:
                kq = min(k, max(pos) + 1) if pos else 0
                row.append(sum(1 for r in pos if r < kq) / kq if kq else 0.0)
            precs.append(row)
        out[name] = {"map": float(np.mean(aps)) if aps else None, **{f"mp@{k}": (float(np.mean([p[i] for p in precs])) if precs else None) for i, k in enumerate(ks)}}
    return out


@st.composite
def revisitop_cases(draw):
    n_db = draw(st.integers(3, 12))
    nq = draw(st.integers(1, 4))
    gnd = []
    for _ in range(nq):
        labels = draw(st.lists(st.sampled_from(["easy", "hard", "junk", None]), min_size=n_db, max_size=n_db))
        g = {key: [i for i, lab in enumerate(labels) if lab == key] for key in ("easy", "hard", "junk")}
        g["bbx"] = [0.0, 0.0, 1.0, 1.0]
        gnd.append(g)
    depth = draw(st.integers(1, n_db + 4))
    cols = []
    for _ in range(nq):
        ids = draw(st.permutations(list(range(n_db)) + [n_db + 5, n_db + 6]))[: depth]
        pads = draw(st.lists(st.integers(0, len(ids)), max_size=5))
        for p in sorted(pads, reverse=True):  # -1 anywhere: at the end (faiss padding) or inside
            ids.insert(p, -1)
        ids = (ids + [-1] * (depth + 5))[: depth + 5]
        cols.append(ids)
    return n_db, gnd, np.array(cols, dtype=np.int64).T


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(revisitop_cases())
def test_minus_one_scores_as_a_negative_at_its_rank(tmp_path_factory, case):
    n_db, gnd, ranks = case
    tmp = tmp_path_factory.mktemp("rv")
    gt = tmp / "gnd.json"
    gt.write_text(json.dumps({"imlist": [f"im{i}" for i in range(n_db)], "qimlist": [f"q{i}" for i in range(len(gnd))], "gnd": gnd}))
    sub = tmp / "ranks.npy"
    np.save(sub, ranks)
    got = make_scorer("roxford5k")().score(str(sub), str(gt))
    want = slow_revisitop(ranks, gnd)
    for protocol, values in want.items():
        for metric, value in values.items():
            if value is None:
                assert got[protocol][metric] is None
            else:
                assert got[protocol][metric] == pytest.approx(value, abs=1e-12), (protocol, metric)


def test_minus_one_padding_is_read_and_other_negatives_are_not(tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, np.array([[0, 5], [-1, 3], [-1, -1], [2, -1]]))
    assert read_rankings_npy(path, n_queries=2)[:, 0].tolist() == [0, -1, -1, 2]
    np.save(path, np.array([[0, 5], [-1, 3], [-2, 1]]))
    with pytest.raises(SubmissionError, match="negative id -2") as info:
        read_rankings_npy(path, n_queries=2)
    assert info.value.where == "column 0, row 2"
    np.save(path, np.array([[0, 5], [-1, 3], [-1, 5]]))  # pads repeat freely; a real id may not
    with pytest.raises(SubmissionError, match="id 5 appears more than once") as info:
        read_rankings_npy(path, n_queries=2)
    assert info.value.where == "column 1, row 2"
    big = np.full((5, 3), -1, dtype=np.int64)
    big[0] = [2**40, 7, 2**40 + 1]  # ids spanning far more than K: the sort-based duplicate check
    big[3, 1] = 7
    np.save(path, big)
    with pytest.raises(SubmissionError, match="id 7 appears more than once"):
        read_rankings_npy(path, n_queries=3)
    big[3, 1] = 8
    np.save(path, big)
    assert read_rankings_npy(path, n_queries=3).shape == (5, 3)


def test_a_revisitop_ground_truth_without_queries_is_refused(tmp_path):
    gt = tmp_path / "gnd.json"
    gt.write_text(json.dumps({"imlist": ["a", "b"], "qimlist": [], "gnd": []}))
    sub = tmp_path / "r.npy"
    np.save(sub, np.zeros((2, 0), dtype=np.int64))
    with pytest.raises(SubmissionError, match="lists no query"):
        make_scorer("rparis6k")().score(str(sub), str(gt))


# ------------------------------------------------------------------------- DISC21 descriptors


def write_h5(path, xq, qids, xb, rids) -> str:
    with h5py.File(path, "w") as f:
        f["query"] = np.asarray(xq, np.float32)
        f["reference"] = np.asarray(xb, np.float32)
        f["query_ids"] = np.array([s.encode() for s in qids])
        f["reference_ids"] = np.array([s.encode() for s in rids])
    return str(path)


def write_gt(path, listed: dict[str, str]) -> str:
    path.write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in listed.items()))
    return str(path)


def oracle(xq, qids, xb, rids, listed: dict[str, str], scorer: str, k: int | None, knn: int | None) -> dict:
    """The upstream rules by brute force: query selection, K, strict cut, then the DISC21 metrics."""
    xq, xb = np.asarray(xq, np.float64), np.asarray(xb, np.float64)
    qids, rids = np.asarray(qids), np.asarray(rids)
    if scorer == "official":
        keep = np.isin(qids, list(listed))
        xq, qids = xq[keep], qids[keep]
    d = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)  # exact: small integers
    if knn is not None:
        keep = np.zeros(d.shape, bool)
        for i, row in enumerate(d):
            keep[i] = row < np.sort(row)[knn] if len(row) > knn else True
    else:
        kk = k if k is not None else (10 * len(qids) if scorer == "official" else 500_000)
        flat = np.sort(d.ravel())
        keep = d < flat[kk] if d.size > kk else np.ones(d.shape, bool)
    qi, ri = np.nonzero(keep)
    gt = Disc21GroundTruth.from_arrays(np.array(list(listed)), np.array(list(listed.values())))
    return score_predictions(qids[qi], rids[ri], -d[qi, ri], gt, scorer=scorer)


@st.composite
def descriptor_cases(draw):
    nq, nb, dim = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 3))
    xq = np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=dim, max_size=dim), min_size=nq, max_size=nq)))
    xb = np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=dim, max_size=dim), min_size=nb, max_size=nb)))
    qids = [f"Q{i:05d}" for i in range(nq)]
    rids = [f"R{i:06d}" for i in range(nb)]
    listed = {}
    for q in draw(st.lists(st.sampled_from(qids + ["Q09998", "Q09999"]), unique=True, min_size=1)):
        listed[q] = draw(st.sampled_from(rids + [""]))
    if all(r == "" for r in listed.values()):
        listed[next(iter(listed))] = rids[0]
    mode = draw(st.sampled_from(["official", "official-k", "isc2021-k", "knn"]))
    k = draw(st.integers(1, nq * nb + 2)) if mode.endswith("-k") else None
    knn = draw(st.integers(1, nb + 1)) if mode == "knn" else None
    perm_q, perm_b = draw(st.permutations(range(nq))), draw(st.permutations(range(nb)))
    return xq, qids, xb, rids, listed, mode.split("-")[0] if mode != "knn" else "official", k, knn, perm_q, perm_b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(descriptor_cases())
def test_descriptor_track_follows_the_upstream_rules_and_ignores_row_order(tmp_path_factory, case):
    xq, qids, xb, rids, listed, scorer, k, knn, perm_q, perm_b = case
    tmp = tmp_path_factory.mktemp("d")
    gt = write_gt(tmp / "gt.csv", listed)
    part = Disc21Scorer(scorer=scorer, max_results=k, knn=knn)
    got = part.score(write_h5(tmp / "a.h5", xq, qids, xb, rids), gt)
    pq, pb = list(perm_q), list(perm_b)
    shuffled = part.score(write_h5(tmp / "b.h5", xq[pq], [qids[i] for i in pq], xb[pb], [rids[i] for i in pb]), gt)
    want = oracle(xq, qids, xb, rids, listed, scorer, k, knn)
    for key in METRICS:
        assert got[key] == shuffled[key], key  # permuting the rows never changes a metric
        assert got[key] == want[key], key
    if knn is None and k is None:
        assert got["k"] == 10 * len(set(qids) & set(listed)) if scorer == "official" else 500_000


def test_official_k_counts_only_gt_listed_queries_present_in_the_submission(tmp_path):
    rng = np.random.default_rng(1)
    xb = rng.normal(size=(30, 4))
    xq = np.concatenate([xb[:2] + 0.01, rng.normal(size=(2, 4))])  # Q00000, Q00001 listed; Q00100, Q00101 not
    qids = ["Q00000", "Q00001", "Q00100", "Q00101"]
    rids = [f"R{i:06d}" for i in range(30)]
    listed = {"Q00000": "R000000", "Q00001": "R000001", "Q00002": "R000002", "Q00003": ""}  # 4 listed, 2 present
    gt = write_gt(tmp_path / "gt.csv", listed)
    res = Disc21Scorer().score(write_h5(tmp_path / "s.h5", xq, qids, xb, rids), gt)
    assert res["k"] == 20 and res["n_queries_searched"] == 2  # not 10 x 4 listed queries
    assert res["n_predictions"] == 20
    assert res["micro_ap"] == oracle(xq, qids, xb, rids, listed, "official", None, None)["micro_ap"]


def test_a_tie_across_the_cut_keeps_none_of_the_tied_pairs(tmp_path):
    # one query, 5 references: distances 0, 1, 1, 1, 4 -> K = 2: the (K+1)-th distance is 1, only d < 1 kept
    xq, xb = [[0.0]], [[0.0], [1.0], [-1.0], [1.0], [2.0]]
    rids = [f"R{i:06d}" for i in range(5)]
    gt = write_gt(tmp_path / "gt.csv", {"Q00000": "R000003"})
    sub = write_h5(tmp_path / "s.h5", xq, ["Q00000"], xb, rids)
    res = Disc21Scorer(max_results=2).score(sub, gt)
    assert res["n_predictions"] == 1 and res["micro_ap"] == 0.0
    assert Disc21Scorer(max_results=4).score(sub, gt)["n_predictions"] == 4  # no tie at the cut: exactly K
    assert Disc21Scorer(knn=2).score(sub, gt)["n_predictions"] == 1  # the same rule per query
    # every pair tied at the smallest distance, more than K of them: nothing is kept
    flat = write_h5(tmp_path / "f.h5", [[0.0], [0.0]], ["Q00000", "Q00001"], [[0.0]] * 5, rids)
    none = Disc21Scorer(max_results=3).score(flat, gt)
    assert none["n_predictions"] == 0 and none["micro_ap"] == 0.0


# ------------------------------------------------------------------------------ bounded options


@pytest.mark.parametrize("flag", ["--knn", "--max-results"])
def test_absurd_search_sizes_are_refused_with_one_line(tmp_path, capsys, flag):
    gt = write_gt(tmp_path / "gt.csv", {"Q00000": "R000000"})
    sub = write_h5(tmp_path / "s.h5", [[0.0]], ["Q00000"], [[0.0]], ["R000000"])
    with pytest.raises(SystemExit) as info:
        main(["score", "disc21", sub, "--ground-truth", gt, flag, str(10**15)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {flag} 1000000000000000 is over the limit of 10,000,000 results\n"


def test_knn_is_bounded_by_the_submission_s_actual_size(tmp_path, monkeypatch):
    monkeypatch.setattr(disc21_scorer, "MAX_PAIRS", 10)
    rids = [f"R{i:06d}" for i in range(20)]
    gt = write_gt(tmp_path / "gt.csv", {f"Q{i:05d}": "R000000" for i in range(4)})
    sub = write_h5(tmp_path / "s.h5", np.zeros((4, 2)), [f"Q{i:05d}" for i in range(4)], np.arange(40).reshape(20, 2), rids)
    with pytest.raises(UserError, match="--knn 3 for 4 queries asks for 12 results, over the limit of 10"):
        Disc21Scorer(knn=3).score(sub, gt)
    assert Disc21Scorer(knn=2).score(sub, gt)["search"] == "knn"  # 4 x 2 = 8 results: fine
    with pytest.raises(UserError, match="over the limit of 10"):
        Disc21Scorer(max_results=11)
    small = write_h5(tmp_path / "t.h5", np.zeros((4, 2)), [f"Q{i:05d}" for i in range(4)], np.arange(4).reshape(2, 2), rids[:2])
    assert Disc21Scorer(knn=5).score(small, gt)["n_predictions"] == 8  # k > nb: bounded by nb, every pair


def test_a_ground_truth_without_a_matched_pair_is_refused(tmp_path):
    gt = write_gt(tmp_path / "gt.csv", {"Q00000": "", "Q00001": ""})
    sub = tmp_path / "p.csv"
    sub.write_text("Q00000,R000000,0.5\n")
    with pytest.raises(SubmissionError, match="lists 2 queries but no matched pair"):
        Disc21Scorer().score(str(sub), gt)


def test_scoring_a_csv_imports_no_heavy_library(tmp_path):
    gt = write_gt(tmp_path / "gt.csv", {"Q00000": "R000000"})
    sub = tmp_path / "p.csv"
    sub.write_text("Q00000,R000000,0.5\n")
    code = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        try:
            main(["score", "disc21", {str(sub)!r}, "--ground-truth", {gt!r}, "--json"])
        except SystemExit:
            pass
        print("HEAVY=" + ",".join(m for m in ("torch", "faiss", "timm", "augly", "h5py", "cv2", "pydantic", "rich") if m in sys.modules), file=sys.stderr)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert '"micro_ap": 1.0' in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "HEAVY="
