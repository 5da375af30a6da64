"""Per-operation records (transform stages, datasets) and per-operation breakdowns of metrics."""

from __future__ import annotations

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import toy_plugins
from harness.parts import ItemList, Neighbors, Retrieval, apply_recorded
from harness.runner import run_spec
from harness_plugins.disc21.groundtruth import Disc21GroundTruth
from harness_plugins.disc21.metrics import Disc21Metrics


def _retrieval(nq, nb, q, r, s, ops):
    return Retrieval(np.array([f"Q{i}" for i in range(nq)]), np.array([f"R{i}" for i in range(nb)]),
                     Neighbors.pairs(np.array(q, int), np.array(r, int), np.array(s, float)), ops)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_breakdown_equals_scoring_the_subset_by_hand(data):
    nq, nb = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    n = data.draw(st.integers(0, 20))
    q = data.draw(st.lists(st.integers(0, nq - 1), min_size=n, max_size=n))
    r = data.draw(st.lists(st.integers(0, nb - 1), min_size=n, max_size=n))
    pairs = sorted(set(zip(q, r)))
    s = data.draw(st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=len(pairs), max_size=len(pairs)))
    ops = [[{"op": o} for o in data.draw(st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True))] for _ in range(nq)]
    ret = _retrieval(nq, nb, [p[0] for p in pairs], [p[1] for p in pairs], s, ops)
    matches = data.draw(st.lists(st.one_of(st.none(), st.integers(0, nb - 1)), min_size=nq, max_size=nq))
    gt = Disc21GroundTruth.from_arrays(ret.query_ids, np.array(["" if m is None else f"R{m}" for m in matches]))
    metric = Disc21Metrics("official")
    for group, mask in ret.groups().items():
        members = [i for i in range(nq) if (group in {o["op"] for o in ops[i]}) or (group == "none" and not ops[i])]
        assert np.flatnonzero(mask).tolist() == members
        # by hand: a retrieval and a ground truth built from the member queries only
        keep = [k for k, p in enumerate(pairs) if p[0] in members]
        renumber = {m: j for j, m in enumerate(members)}
        alone = Retrieval(ret.query_ids[members], ret.db_ids, Neighbors.pairs(
            np.array([renumber[pairs[k][0]] for k in keep], int), np.array([pairs[k][1] for k in keep], int),
            np.array([s[k] for k in keep], float)))
        gt_alone = Disc21GroundTruth.from_arrays(ret.query_ids[members],
                                                 np.array(["" if matches[i] is None else f"R{matches[i]}" for i in members]))
        sub = ret.subset(mask)
        assert metric(gt.restrict(sub.query_ids), sub) == metric(gt_alone, alone)


def test_knn_subset_keeps_rows():
    ret = Retrieval(np.array(["a", "b", "c"]), np.array(["x", "y"]),
                    Neighbors.knn(np.array([[0, 1], [1, -1], [1, 0]]), np.array([[3.0, 2.0], [1.0, 0.0], [5.0, 4.0]])),
                    [[{"op": "j"}], [], [{"op": "j"}]])
    sub = ret.subset(ret.groups()["j"])
    assert sub.query_ids.tolist() == ["a", "c"] and sub.neighbors.indices.tolist() == [[0, 1], [1, 0]]
    assert ret.groups()["none"].tolist() == [False, True, False]


def test_apply_recorded_prefers_per_image_records_then_static_ones_then_the_name():
    class Static:
        def __call__(self, image, rng):
            return image

        def operations(self):
            return [{"op": "jpeg", "quality": 50}]

    class Recorded(Static):
        def apply_recorded(self, image, rng):
            return image, [{"op": "drawn", "value": int(rng.integers(10))}]

    rng = np.random.default_rng(0)
    assert apply_recorded(Static(), "img", rng, "x") == ("img", [{"op": "jpeg", "quality": 50}])
    assert apply_recorded(Recorded(), "img", np.random.default_rng(0), "x")[1] == [{"op": "drawn", "value": int(np.random.default_rng(0).integers(10))}]
    assert apply_recorded(lambda im, rng: im, "img", rng, "plain")[1] == [{"op": "plain"}]


def test_chains_accumulate_records_in_the_query_stage(tmp_path, toy_registry):
    from harness.cache import Cache

    spec = toy_plugins.spec(str(tmp_path / "data"), transform=[{"name": "mirror", "p": 1.0}, {"name": "mirror", "p": 0.0}])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    doc, _ = run_spec(str(path), [], cache_dir=str(tmp_path / "c"), output_dir=str(tmp_path / "r"), registry=toy_registry)
    last = [s for s in doc["stages"] if s["stage"].startswith("queries")][-1]
    import json

    records = json.loads((Cache(tmp_path / "c").lookup(last["key"]) / "operations.json").read_text())
    assert records == [[{"op": "mirror"}, {"op": "mirror"}]] * 6


def test_augly_random_chain_records_what_it_applied_and_draws_as_before():
    from harness.plugins import get_registry
    from harness.testing import sample_images

    chain = get_registry().create("transform", "augly.disc21_like", {"strength": 0.5})
    image = sample_images(1, 96)[0]
    plain = chain(image, np.random.default_rng(7))
    recorded, ops = chain.apply_recorded(image, np.random.default_rng(7))
    assert np.array_equal(np.asarray(plain), np.asarray(recorded)) and 1 <= len(ops) <= 3
    assert all(set(op) == {"op"} and op["op"] in chain.ops for op in ops)
    assert isinstance(ItemList.of([], []), list)
