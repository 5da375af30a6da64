"""Active indexing: rank metrics against a slow implementation, the JND heatmap against a per-pixel
re-derivation, the perturbation bound, the activation on a random network, the parts it needs
(faiss quantize, the timm descriptors' differentiable form), spec validation of its options."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.errors import UserError
from harness.parts import Neighbors, Retrieval
from harness.testing import sample_images
from harness_plugins.active_indexing import activation as act
from harness_plugins.active_indexing import jnd
from harness_plugins.active_indexing.metrics import OwnRank, own_ranks, summarize
from harness_plugins.disc21.groundtruth import Disc21GroundTruth

# ---------------------------------------------------------------------------------------------- metrics


def _slow_metrics(query_ids, db_ids, rows, ref_of, depth, ks):
    """Per query with a reference: walk its ranking; the reference's first position, else depth."""
    ranks = []
    for j, q in enumerate(query_ids):
        if q not in ref_of:
            continue
        rank = depth
        for pos in range(min(depth, len(rows[j]))):
            r = rows[j][pos]
            if r >= 0 and db_ids[r] == ref_of[q]:
                rank = pos
                break
        ranks.append(rank)
    if not ranks:
        return None
    out = {f"recall_at_{k}": sum(r < k for r in ranks) / len(ranks) for k in ks}
    out["mrr"] = sum(1.0 / (r + 1) for r in ranks) / len(ranks)
    out["n_queries"] = len(ranks)
    return out


@st.composite
def _retrievals(draw):
    nb = draw(st.integers(1, 12))
    nq = draw(st.integers(0, 8))
    k = draw(st.integers(1, nb))
    db_ids = [f"R{i:03d}" for i in range(nb)]
    rows = []
    for _ in range(nq):
        perm = draw(st.permutations(list(range(nb))))[:k]
        pad = draw(st.integers(0, k))  # fewer results than k: -1 padding
        rows.append(list(perm[: k - pad]) + [-1] * pad)
    query_ids = [f"Q{i:02d}" for i in range(nq)]
    ref_of = {}
    for q in query_ids:
        kind = draw(st.sampled_from(["db", "absent", "none"]))
        if kind == "db":
            ref_of[q] = db_ids[draw(st.integers(0, nb - 1))]
        elif kind == "absent":
            ref_of[q] = "R999"  # a reference the database does not hold
    depth = draw(st.integers(1, 15))
    ks = sorted(set(draw(st.lists(st.integers(1, depth), min_size=1, max_size=3))))
    return query_ids, db_ids, rows, ref_of, depth, ks, k


def _gt(query_ids, ref_of):
    pairs = [(q, r) for q, r in ref_of.items()]
    return Disc21GroundTruth(np.asarray(query_ids, dtype=str), np.asarray([p[0] for p in pairs], dtype=str),
                             np.asarray([p[1] for p in pairs], dtype=str))


@settings(max_examples=200, deadline=None)
@given(_retrievals())
def test_rank_metrics_match_a_slow_implementation(case):
    query_ids, db_ids, rows, ref_of, depth, ks, k = case
    nq = len(query_ids)
    indices = np.asarray(rows, dtype=np.int64).reshape(nq, k)
    scores = -np.tile(np.arange(k, dtype=np.float32), (nq, 1))
    retrieval = Retrieval(np.asarray(query_ids, dtype=str), np.asarray(db_ids), Neighbors.knn(indices, scores))
    got = OwnRank(ks=ks, depth=max(depth, max(ks)))(_gt(query_ids, ref_of), retrieval)
    want = _slow_metrics(query_ids, db_ids, rows, ref_of, max(depth, max(ks)), ks)
    if want is None:
        assert got["n_queries"] == 0 and got["mrr"] is None and all(got[f"recall_at_{k}"] is None for k in ks)
        return
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_rank_edge_cases_absent_original_counts_depth_and_pairs_form():
    db = np.array(["R0", "R1", "R2"])
    gt = Disc21GroundTruth(np.array(["A", "B", "C"]), np.array(["A", "B", "C"]), np.array(["R2", "R0", "R1"]))
    # A finds R2 at rank 1; B never finds R0 (absent from its top-2); C finds R1 first
    knn = Neighbors.knn(np.array([[1, 2], [2, 1], [1, 0]]), np.array([[0.0, -1.0]] * 3, dtype=np.float32))
    r = Retrieval(np.array(["A", "B", "C"]), db, knn)
    assert own_ranks(r.query_ids, db, r.rankings(), gt, 100).tolist() == [1, 100, 0]
    m = OwnRank(ks=[1, 2], depth=100)(gt, r)
    assert m["recall_at_1"] == pytest.approx(1 / 3) and m["recall_at_2"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 101 + 1) / 3)  # absent: 1 / (100 + 1), as the reference
    # the same result as pairs: identical ranks
    q, rr, s = knn.as_pairs()
    pairs = Retrieval(r.query_ids, db, Neighbors.pairs(q, rr, s))
    assert OwnRank(ks=[1, 2], depth=100)(gt, pairs) == m
    # micro-AP through the DISC21 scorer: 2 true positives among 6 predictions
    assert 0.0 < m["micro_ap"] < 1.0


def test_rank_metric_parameters_are_checked():
    with pytest.raises(UserError, match="ks must be integers"):
        OwnRank(ks=[0, 10], depth=100)
    with pytest.raises(UserError, match="ks must be integers"):
        OwnRank(ks=[101], depth=100)
    with pytest.raises(UserError, match="depth"):
        OwnRank(depth=0)


def test_summary_means_the_first_record_holding_each_value():
    cells = [{"a": {"values": {"recall_at_1": 1.0, "micro_ap": 0.5}}, "b": {"values": {"recall_at_1": 0.0}}},
             {"a": {"values": {"recall_at_1": 0.5, "micro_ap": None}}}]
    out = summarize(cells, ["recall_at_1", "micro_ap", "missing"])
    assert out == {"recall_at_1": 0.75, "micro_ap": 0.5, "missing": None, "n_cells": 2}


# -------------------------------------------------------------------------------------------------- JND


def _slow_heatmap(rgb01: np.ndarray) -> np.ndarray:
    """The JND model written pixel by pixel from its definition (zero padding, cross-correlation)."""
    y = 255.0 * (0.299 * rgb01[0] + 0.587 * rgb01[1] + 0.114 * rgb01[2])
    h, w = y.shape
    lum = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]
    sx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    sy = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]

    def at(i, j):
        return y[i, j] if 0 <= i < h and 0 <= j < w else 0.0

    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            bg = sum(lum[a][b] * at(i + a - 2, j + b - 2) for a in range(5) for b in range(5)) / 32
            la = 17 * (1 - math.sqrt(bg / 127 + 1e-3)) + 3 if bg <= 127 else 3 / 128 * (bg - 127) + 3
            gx = sum(sx[a][b] * at(i + a - 1, j + b - 1) for a in range(3) for b in range(3))
            gy = sum(sy[a][b] * at(i + a - 1, j + b - 1) for a in range(3) for b in range(3))
            c = math.sqrt(gx * gx + gy * gy)
            cm = 0.117 * 16 * c**2.4 / (c**2 + 26**2)
            out[i, j] = max(la + cm - 0.3 * min(la, cm), 5) / 255
    return out


def _rgb01(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


@pytest.mark.parametrize("kind", ["natural", "flat_black", "flat_white", "noise"])
def test_jnd_heatmap_matches_the_definition(kind):
    import torch

    rng = np.random.default_rng(1)
    if kind == "natural":
        x = _rgb01(sample_images(1)[0].resize((13, 11)))
    elif kind == "noise":
        x = rng.integers(0, 256, (3, 9, 12)).astype(np.float32) / 255
    else:
        x = np.full((3, 8, 10), 0.0 if kind == "flat_black" else 1.0, dtype=np.float32)
    got = jnd.heatmap(torch.from_numpy(x)).numpy()
    assert got.shape == (1, *x.shape[1:])
    np.testing.assert_allclose(got[0], _slow_heatmap(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    assert (got >= 5 / 255 - 1e-7).all()  # the floor


def test_perturbation_stays_within_its_bound_and_reaches_it():
    import torch

    x = torch.from_numpy(_rgb01(sample_images(1)[0].resize((20, 16))))
    heat = jnd.heatmap(x)
    std = (0.229, 0.224, 0.225)
    delta = torch.from_numpy(np.random.default_rng(0).normal(0, 5, (3, 16, 20)).astype(np.float32))
    pert = jnd.perturbation(delta, heat, 3.0).numpy() * np.asarray(std, dtype=np.float32)[:, None, None]  # pixel units
    bound = jnd.pixel_bound(heat.numpy(), 3.0, std)
    assert (np.abs(pert) <= bound * (1 + 1e-6)).all()
    assert np.max(np.abs(pert) / bound) > 0.999  # tanh saturates: the bound is attained, not loose
    assert jnd.ALPHA == pytest.approx((0.072 / 0.299, 0.072 / 0.587, 0.072 / 0.114))


# ------------------------------------------------------------------------------------------- activation


@pytest.fixture(scope="module")
def net():
    from harness_plugins.timm.descriptors import TimmDescriptor

    return TimmDescriptor(model="test_resnet", size=32, order="normalize_first", normalize=True, device="cpu", seed=0)


def _targets(net, images, seed=0):
    """Targets near the images' own descriptors but not equal (cosine well below 1)."""
    feats = net.describe(images).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 1, feats.shape)
    t = feats / np.linalg.norm(feats, axis=1, keepdims=True) + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return t.astype(np.float32)


def _rngs(n, seed=0):
    return [np.random.default_rng([seed, i]) for i in range(n)]


def test_activation_moves_descriptors_towards_their_targets_within_the_bound(net):
    images = [im.resize((48, 40)) for im in sample_images(3)]
    targets = _targets(net, images)
    out = act.activate(images, targets, net, [], act.Activation(steps=10), _rngs(3))
    for before, after in zip(images, out.images):
        assert after.size == before.size and after.mode == "RGB"
    stats = out.stats
    assert all(s["cos_after"] > s["cos_before"] for s in stats), stats
    # the final 8-bit image described through the extraction path agrees with the reported cosine
    again = net.describe(out.images)
    cos = (again * targets).sum(1) / np.linalg.norm(targets, axis=1) / np.linalg.norm(again, axis=1)
    np.testing.assert_allclose(cos, [s["cos_after"] for s in stats], atol=1e-4)
    # per pixel: |change| <= the JND bound (pixel units) + half a grey level of rounding
    import torch

    for before, after in zip(images, out.images):
        x = _rgb01(before)
        bound = jnd.pixel_bound(jnd.heatmap(torch.from_numpy(x)).numpy(), 3.0, net.preprocess.std)
        change = np.abs(_rgb01(after).astype(np.float64) - x)
        assert (change <= bound + 0.5 / 255 + 1e-6).all()
        assert change.max() > 0  # it did change the image


def test_activation_loss_decreases_with_steps(net):
    images = [im.resize((40, 40)) for im in sample_images(2)]
    targets = _targets(net, images, seed=3)
    cos = [np.mean([s["cos_after"] for s in act.activate(images, targets, net, [], act.Activation(steps=n), _rngs(2)).stats])
           for n in (0, 3, 10)]
    assert cos[0] < cos[1] < cos[2], cos


def test_zero_steps_returns_the_original_pixels_and_runs_are_reproducible(net):
    images = [im.resize((30, 26)) for im in sample_images(2)]
    targets = _targets(net, images)
    same = act.activate(images, targets, net, [], act.Activation(steps=0), _rngs(2))
    for a, b in zip(images, same.images):
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b))
    one = act.activate(images, targets, net, [], act.Activation(steps=4), _rngs(2))
    two = act.activate(images, targets, net, [], act.Activation(steps=4), _rngs(2))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one.images, two.images))
    # an image's result does not depend on the batch it is in (losses are summed, not averaged)
    alone = act.activate(images[:1], targets[:1], net, [], act.Activation(steps=4), _rngs(1))
    diff = np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(one.images[0], dtype=int))
    assert diff.max() <= 1  # float summation order in a batched convolution may move a rounding


def test_activation_through_post_processing(net):
    from harness_plugins.postprocess.steps import L2Normalize, PCAWhiten

    images = [im.resize((36, 36)) for im in sample_images(4)]
    train = net.describe([im.resize((36, 36)).rotate(a) for im in sample_images(6) for a in (0, 90, 180, 270)])
    pca, l2 = PCAWhiten(dim=16), L2Normalize()
    pca.fit(train)
    import torch

    x = net.describe(images)
    np.testing.assert_allclose(l2.apply_torch(pca.apply_torch(torch.from_numpy(x))).numpy(),
                               l2.apply(pca.apply(x, "database"), "database"), atol=1e-5)
    targets = l2.apply(pca.apply(x, "database"), "database") + 0.3
    out = act.activate(images, targets, net, [pca, l2], act.Activation(steps=5), _rngs(4))
    assert np.mean([s["cos_after"] - s["cos_before"] for s in out.stats]) > 0


def test_activation_options_are_checked():
    assert list(act.check({"name": "jnd", "steps": 10, "lr": 1})) == []
    assert list(act.check({"name": "none"})) == []
    problems = {p[0]: p for p in act.check({"name": "jnd", "stepz": 3, "lr": 0, "batch_size": 1.5})}
    assert problems[("stepz",)][2] == "steps"
    assert "> 0" in problems[("lr",)][1] and "integer" in problems[("batch_size",)][1]
    assert list(act.check({"name": "jdn"}))[0][2] == "jnd"
    assert "missing 'name'" in list(act.check({"steps": 3}))[0][1]
    assert "no options" in list(act.check({"name": "none", "steps": 3}))[0][1]
    assert list(act.check({"name": "jnd", "steps": True}))  # a bool is not a step count
    assert act.parse(None) == act.Activation(name="none") and not act.parse({"name": "none"}).active
    assert act.parse({"name": "jnd", "lr": 2}).lr == 2.0


def test_non_differentiable_descriptor_is_refused():
    with pytest.raises(UserError, match="differentiable descriptor"):
        act.require_differentiable(SimpleNamespace(describe=lambda ims: None), "gist")
    with pytest.raises(UserError, match="shuffle_database"):
        act.differentiable_steps([SimpleNamespace()], ["shuffle_database"])


# -------------------------------------------------------------------------------------- parts it needs


@pytest.mark.parametrize("factory", ["IVF8,PQ4x4", "OPQ4,IVF8,PQ4x4", "PCA8,LSH", "PQ4x4", "Flat"])
def test_faiss_quantize_is_what_the_index_stores(factory):
    import faiss

    from harness_plugins.faiss.index import FaissIndex

    x = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    index = FaissIndex(factory=factory)
    index.train(x)
    index.add(x)
    q = index.quantize(x[:20])
    if factory == "Flat":
        np.testing.assert_array_equal(q, x[:20])
        return
    raw = index._index
    try:
        faiss.extract_index_ivf(raw).make_direct_map()
    except RuntimeError:
        pass
    np.testing.assert_allclose(q, raw.reconstruct_n(0, 20), atol=1e-5)
    assert not np.allclose(q, x[:20])  # a lossy code


def test_faiss_quantize_refuses_an_index_without_codec():
    from harness_plugins.faiss.index import FaissIndex

    index = FaissIndex(factory="HNSW8")
    index.add(np.zeros((4, 8), np.float32))
    with pytest.raises(UserError, match="cannot decode"):
        index.quantize(np.zeros((1, 8), np.float32))


def test_normalize_first_is_normalise_then_tensor_resize_without_antialias():
    import torch
    from torchvision.transforms import functional as TF

    from harness_plugins.timm.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

    image = sample_images(1)[0].resize((70, 50))
    got = Preprocess(size=32, order="normalize_first")(image)
    x = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
    want = TF.resize(x, [32, 32], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    plain = Preprocess(size=32)(image)  # the usual order: PIL resize first (antialiased), so different pixels
    assert plain.shape == got.shape and not torch.allclose(plain, got, atol=1e-3)


def test_differentiable_form_equals_the_extraction_path(net):
    import torch

    images = [im.resize((45, 37)) for im in sample_images(3)]
    want = net.describe(images)
    x = [net.normalized(im).requires_grad_(True) for im in images]
    got = net.embed_normalized(x)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    got.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in x)
