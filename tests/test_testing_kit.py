"""The plugin author kit, applied to every built-in part: the built-ins pass the same contract checks a
third-party author runs, and the checks themselves catch broken parts."""

from __future__ import annotations

import numpy as np
import pytest

import toy_plugins
from harness.parts import Neighbors, Retrieval
from harness.plugins import load_registry
from harness.testing import (
    check_attack,
    check_descriptor,
    check_index,
    check_metric,
    check_postprocessor,
    check_transform,
    run_spec_dict,
    sample_images,
)

REGISTRY = load_registry()


@pytest.mark.parametrize("name", [n for n in REGISTRY.names("descriptor") if n not in ("timm", "torchscript", "openclip")])
def test_builtin_descriptors_meet_the_contract(name):
    check_descriptor(REGISTRY.create("descriptor", name, {}), sample_images(3, 96))


def test_timm_descriptor_meets_the_contract():
    check_descriptor(REGISTRY.create("descriptor", "timm", {"model": "test_resnet", "size": 64}))


def test_openclip_descriptor_meets_the_contract(tmp_path):
    import json

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    check_descriptor(REGISTRY.create("descriptor", "openclip", {"model": "tiny", "config": str(tmp_path / "tiny.json")}))


def test_simat_metrics_meet_the_contract():
    from harness_plugins.simat.types import ComposedGroundTruth, ComposedRetrieval, SimatGroundTruth

    qids, dbids = np.array(["0", "1"]), np.array([str(i) for i in range(4)])
    retrieval = ComposedRetrieval(qids, dbids, np.array([[0, 1], [2, 3]]), np.array([[0.9, 0.5], [0.8, 0.2]]),
                                  np.array([0, 1]))
    gt = SimatGroundTruth(qids, np.array([0, 1]), np.array([0, 1]), np.array([1.0, 1.0]),
                          np.array([[0.0, 0.0], [0.9, 0.0], [0.0, 0.9], [0.0, 0.0]], np.float32))
    # q0: its source 0 is first, so row 1 counts (oracle 0.9); q1: row 2 for caption 1 (0.9)
    assert check_metric(REGISTRY.create("metric", "simat.score", {}), gt, retrieval)["score"] == 100.0
    assert check_metric(REGISTRY.create("metric", "simat.recall_at_5", {"k": 1}), gt, retrieval)["recall@1"] == 100.0
    cgt = ComposedGroundTruth(qids, np.array([0, 1, 2]), np.array([3, 2]))
    values = check_metric(REGISTRY.create("metric", "composed.recall", {"ks": [1]}), cgt, retrieval)
    assert values["recall@1"] == 0.5  # q0: row 1 is not its target 3; q1: row 2 is
    with pytest.raises(ValueError, match="search with k >= 3"):  # a top-2 that held the source is too short
        REGISTRY.create("metric", "composed.recall", {"ks": [2]})(cgt, retrieval)


@pytest.mark.parametrize("name", [n for n in REGISTRY.names("transform") if not n.startswith(("attack.", "watermark."))])
def test_builtin_transforms_meet_the_contract(name):
    check_transform(REGISTRY.create("transform", name, {}))


@pytest.mark.parametrize("name", [n for n in REGISTRY.names("transform") if n.startswith("attack.")])
def test_builtin_attacks_meet_the_contract(name):
    from harness_plugins.attacks.catalog import EXAMPLE_PARAMS

    attack = REGISTRY.create("transform", name, EXAMPLE_PARAMS.get(name, {}))
    check_attack(attack, uses_rng=name in ("attack.noise", "attack.erase", "attack.resized_crop"))


@pytest.mark.parametrize("name", REGISTRY.names("postprocessor"))
def test_builtin_postprocessors_meet_the_contract(name):
    params = {"dim": 8} if name in ("pca", "pca_whiten", "truncate") else {}
    check_postprocessor(REGISTRY.create("postprocessor", name, params))


@pytest.mark.parametrize("params", [
    {}, {"search": {"global_top_k": 20}}, {"metric": "ip", "search": {"k": 5}},
    {"factory": "IVF4,Flat", "nprobe": 4}, {"factory": "HNSW8"},
])
def test_faiss_index_meets_the_contract(params):
    check_index(REGISTRY.create("index", "faiss", params))


def test_builtin_metrics_meet_the_contract():
    from harness_plugins.disc21.groundtruth import Disc21GroundTruth
    from harness_plugins.revisitop.groundtruth import QueryGnd, RevisitopGroundTruth

    qids, dbids = np.array(["Q00000", "Q00001"]), np.array([f"R{i:06d}" for i in range(5)])
    retrieval = Retrieval(qids, dbids, Neighbors.knn(np.array([[0, 1, 2], [3, 4, 0]]),
                                                     np.array([[0.9, 0.5, 0.1], [0.8, 0.2, 0.1]])))
    gt = Disc21GroundTruth.from_arrays(qids, np.array(["R000000", ""]))
    for scorer in ("official", "isc2021"):
        values = check_metric(REGISTRY.create("metric", "disc21", {"scorer": scorer}), gt, retrieval)
        assert values["micro_ap"] == 1.0
    gnd = RevisitopGroundTruth("roxford5k", tuple(dbids), tuple(qids), tuple(
        QueryGnd(np.array([0]), np.array([2]), np.array([1]), (0.0, 0.0, 1.0, 1.0)) for _ in qids))
    values = check_metric(REGISTRY.create("metric", "revisitop", {}), gnd, retrieval)
    # q0: id 0 first (AP 1); q1: id 0 at 0-based position 2, trapezoid (0/2 + 1/3) / 2 = 1/6
    assert values["easy.map"] == pytest.approx((1 + 1 / 6) / 2, abs=1e-12)


def test_checks_catch_broken_parts():
    class Float64(toy_plugins.MeanColor):
        def describe(self, images):
            return super().describe(images).astype(np.float64)

    class InPlace:
        def __call__(self, image, rng):
            image.putpixel((0, 0), (1, 2, 3))
            return image

    class Unsorted(toy_plugins.BruteForce):
        def search(self, queries):
            nb = super().search(queries)
            return Neighbors.knn(nb.indices[:, ::-1], nb.scores[:, ::-1])

    with pytest.raises(AssertionError, match="float32"):
        check_descriptor(Float64())
    with pytest.raises(AssertionError, match="in place"):
        check_transform(InPlace())
    with pytest.raises(AssertionError, match="best first"):
        check_index(Unsorted())


def test_check_attack_catches_hidden_or_missing_randomness():
    from harness_plugins.attacks.geometry import HFlip
    from harness_plugins.attacks.pixel import Noise

    class Peeks(HFlip):  # output ignores the rng, but it draws from it (a chain's next part would change)
        def apply(self, image, rng):
            rng.random()
            return super().apply(image, rng)

    class Unrecorded:
        def __call__(self, image, rng):
            return image.copy()

    check_attack(HFlip())
    check_attack(Noise(0.1), uses_rng=True)
    with pytest.raises(AssertionError, match="changed the output"):
        check_attack(Noise(0.1))
    with pytest.raises(AssertionError, match="not use"):
        check_attack(HFlip(), uses_rng=True)
    with pytest.raises(AssertionError, match="drew from its rng"):
        check_attack(Peeks())
    with pytest.raises(AssertionError, match="operations"):
        check_attack(Unrecorded())


def test_run_spec_dict_runs_a_spec(tmp_path, toy_registry):
    doc = run_spec_dict(toy_plugins.spec(str(tmp_path / "data")), tmp_path, registry=toy_registry)
    assert doc["metrics"]["recall_at[k=1]"]["values"]["recall@1"] == 1.0
    assert (tmp_path / "results").is_dir() and (tmp_path / "cache").is_dir()
