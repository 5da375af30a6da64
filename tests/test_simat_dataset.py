"""SIMAT dataset on the generated miniature (official layout), known answers, bad files, the demo
dataset and the composed_folder layout."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from harness.errors import UserError
from harness.testing import check_dataset
from harness_plugins.simat.composed_folder import ComposedFolderDataset
from harness_plugins.simat.composer import SimatArithmetic, SumComposer
from harness_plugins.simat.dataset import SimatDataset
from harness_plugins.simat.demo import SimatDemoDataset
from harness_plugins.simat.metrics import ComposedRecall, SimatScore
from harness_plugins.simat.miniature import LAMBDA_THRESHOLD, ideal_embeddings, write_simat_miniature
from harness_plugins.simat.search import composed_search
from simat_reference import slow_simat_score

LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return write_simat_miniature(tmp_path_factory.mktemp("simat"))


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _score(ds, lam, images=None, words=None):
    images_, words_ = ideal_embeddings(ds.root)
    images = images_ if images is None else images
    words = words_ if words is None else words
    q = ds.items("queries")
    t = np.stack([words[w] for w in q.texts])
    db_ids = np.array([it.id for it in ds.items("database")])
    r = composed_search(SimatArithmetic(lambda_=lam), images, t, q, db_ids, k=5)
    return SimatScore()(ds.ground_truth(), r)["score"], r


def test_reads_official_layout(mini):
    ds = SimatDataset(str(mini), split="dev")
    check_dataset(ds, roles=("database",))
    db = ds.items("database")
    trip = _rows(mini / "triplets.csv")
    assert [it.id for it in db] == [str(i) for i in range(len(trip))]
    by_did = {int(r["dataset_id"]): r["region_id"] for r in trip}
    assert all(it.path.endswith(f"images/images/{by_did[int(it.id)]}.png") for it in db)
    transfos = _rows(mini / "transfos.csv")
    dev = [r for r in transfos if r["is_test"] == "False"]
    test = [r for r in transfos if r["is_test"] == "True"]
    q = ds.items("queries")
    assert len(q) == len(dev) and len(SimatDataset(str(mini), split="test").items("queries")) == len(test)
    # sources come from triplets.csv; the miniature's stale dataset_id column disagrees on most rows
    region_to_did = {r["region_id"]: int(r["dataset_id"]) for r in trip}
    assert q.source.tolist() == [region_to_did[r["region_id"]] for r in dev]
    stale = sum(int(r["dataset_id"]) == region_to_did[r["region_id"]] for r in transfos)
    assert stale < len(transfos) / 2
    assert [q.texts[i] for i in q.role("value")] == [r["value"] for r in dev]
    assert [q.texts[i] for i in q.role("target")] == [r["target"] for r in dev]
    gt = ds.ground_truth()
    assert gt.target_caption.tolist() == [int(r["target_ids"]) for r in dev]
    w = np.array([float(r["norm2"]) ** -0.5 for r in dev])
    assert np.allclose(gt.weights, w / w.sum())
    assert set(ds.texts()) == {r["value"] for r in transfos} | {r["target"] for r in transfos}


def test_known_answers_and_slow_equality_for_every_lambda(mini):
    ds = SimatDataset(str(mini), split="dev")
    images, words = ideal_embeddings(mini)
    gt = ds.ground_truth()
    q = ds.items("queries")
    slow_q = [{"source": int(s), "texts": (q.texts[v], q.texts[t]), "caption": int(c), "norm2": float(n)}
              for s, (v, t), c, n in zip(q.source, q.text_index, gt.target_caption, gt.norm2)]
    for lam in LAMBDAS:
        score, _ = _score(ds, lam)
        assert abs(score - slow_simat_score(images, words, slow_q, gt.oracle, lam)) < 1e-9
        assert score == (100.0 if lam > LAMBDA_THRESHOLD else 0.0) or lam == LAMBDA_THRESHOLD


def test_stale_dataset_id_would_change_the_answer(mini, tmp_path):
    # A reader that took sources from transfos.dataset_id would compose from the wrong images.
    root = tmp_path / "swapped"
    shutil.copytree(mini, root)
    trip = _rows(root / "triplets.csv")
    ds = SimatDataset(str(root))
    assert _score(ds, 1.0)[0] == 100.0
    images, words = ideal_embeddings(root)
    transfos = {r["transfo_id"]: int(r["dataset_id"]) for r in _rows(root / "transfos.csv")}
    q = ds.items("queries")
    wrong = type(q)(q.ids, np.array([transfos[i] for i in q.ids]), q.texts, q.text_index, q.text_roles)
    t = np.stack([words[w] for w in q.texts])
    r = composed_search(SimatArithmetic(lambda_=1.0), images, t, wrong, np.arange(len(trip)).astype(str), k=2)
    gt = ds.ground_truth()
    gt_wrong = type(gt)(gt.query_ids, wrong.source, gt.target_caption, gt.norm2, gt.oracle)
    assert SimatScore()(gt_wrong, r)["score"] < 50.0


def test_fingerprints_per_role(mini, tmp_path):
    dev, test = SimatDataset(str(mini), split="dev"), SimatDataset(str(mini), split="test")
    assert dev.fingerprint("database") == test.fingerprint("database")
    assert dev.fingerprint("texts") == test.fingerprint("texts")
    assert dev.fingerprint("queries") != test.fingerprint("queries")
    assert dev.fingerprint("ground_truth") != test.fingerprint("ground_truth")
    assert dev.fingerprint() != test.fingerprint()
    root = tmp_path / "changed"
    shutil.copytree(mini, root)
    oracle = np.load(root / "oscar_similarity_matrix.npy")
    oracle[0, 0] += 0.25
    np.save(root / "oscar_similarity_matrix.npy", oracle)
    changed = SimatDataset(str(root), split="dev")
    assert changed.fingerprint("ground_truth") != dev.fingerprint("ground_truth")
    assert changed.fingerprint("database") == dev.fingerprint("database")
    assert changed.fingerprint("queries") == dev.fingerprint("queries")


def test_oracle_as_safetensors_and_pt_refused(mini, tmp_path):
    from safetensors.numpy import save_file

    root = tmp_path / "st"
    shutil.copytree(mini, root)
    oracle = np.load(root / "oscar_similarity_matrix.npy")
    (root / "oscar_similarity_matrix.npy").unlink()
    (root / "oscar_similarity_matrix.pt").write_bytes(b"PK\x03\x04 pickle inside")
    with pytest.raises(UserError, match="convert_heads"):
        SimatDataset(str(root)).ground_truth()
    save_file({"oscar": oracle}, str(root / "oscar_similarity_matrix.safetensors"))
    assert np.array_equal(SimatDataset(str(root)).ground_truth().oracle, oracle)
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="expected a numeric array"):
        SimatDataset(str(root), oracle=str(root / "obj.npy")).ground_truth()
    np.save(root / "short.npy", oracle[:-1])
    with pytest.raises(UserError, match="rows for the"):
        SimatDataset(str(root), oracle=str(root / "short.npy")).ground_truth()
    bad = oracle.copy()
    bad[3, 2] = np.nan
    np.save(root / "nan.npy", bad)
    with pytest.raises(UserError, match=r"\[3, 2\]: NaN"):
        SimatDataset(str(root), oracle=str(root / "nan.npy")).ground_truth()


def _edit(mini, tmp_path, name, old, new):
    root = tmp_path / "edited"
    shutil.copytree(mini, root)
    path = root / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize(
    "name, old, new, message",
    [
        ("transfos.csv", ",False\n", ",maybe\n", r"transfos.csv: line \d+: is_test 'maybe'"),
        ("transfos.csv", ",subj,", ",color,", r"transfos.csv: line \d+: field 'color'"),
        ("transfos.csv", "is_test", "is_tset", r"transfos.csv: line 1: missing column\(s\) is_test"),
        ("triplets.csv", "dataset_id\n", "dataset_id\n1,cat,on,sofa,999\n", r"triplets.csv: line 2: dataset_id 999"),
        ("triplets.csv", "region_id,", "region,", r"triplets.csv: line 1: missing column"),
    ],
)
def test_bad_files_name_file_and_line(mini, tmp_path, name, old, new, message):
    root = _edit(mini, tmp_path, name, old, new)
    ds = SimatDataset(str(root))
    with pytest.raises(UserError, match=message):
        ds.ground_truth()


def test_bad_values_name_the_line(mini, tmp_path):
    rows = (mini / "transfos.csv").read_text().splitlines()
    fields = rows[3].split(",")
    fields[10] = "-2"  # norm2
    root = _edit(mini, tmp_path, "transfos.csv", rows[3], ",".join(fields))
    with pytest.raises(UserError, match=r"transfos.csv: line 4: norm2 '-2' is not a positive number"):
        SimatDataset(str(root)).ground_truth()
    fields = rows[5].split(",")
    fields[2] = "424242"  # region_id not in triplets.csv
    root2 = tmp_path / "r2"
    shutil.copytree(mini, root2)
    (root2 / "transfos.csv").write_text((mini / "transfos.csv").read_text().replace(rows[5], ",".join(fields)))
    with pytest.raises(UserError, match=r"line 6: region_id 424242 is not in triplets.csv"):
        SimatDataset(str(root2)).items("queries")
    (root2 / "transfos.csv").write_bytes(b"\xff\xfe bad")
    with pytest.raises(UserError, match="not valid UTF-8"):
        SimatDataset(str(root2)).items("queries")


def test_missing_files_and_images(mini, tmp_path):
    with pytest.raises(UserError, match="triplets.csv: SIMAT file not found"):
        SimatDataset(str(tmp_path)).items("database")
    root = tmp_path / "noimg"
    shutil.copytree(mini, root)
    first = sorted((root / "images" / "images").iterdir())[0]
    first.unlink()
    with pytest.raises(UserError, match=r"1 of 24 images of triplets.csv are missing"):
        SimatDataset(str(root)).items("database")


def test_demo_dataset_builds_once_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    ds = SimatDemoDataset()
    check_dataset(ds, roles=("database",))
    assert str(ds.root).startswith(str(tmp_path / "cache" / "demo-simat"))
    assert (ds.root / "build.json").is_file()
    again = SimatDemoDataset()
    assert again.fingerprint() == ds.fingerprint()
    assert _score(again, 1.0)[0] == 100.0
    assert len(SimatDemoDataset(split="test").items("queries")) + len(ds.items("queries")) == 24 * 4
    with pytest.raises(UserError, match="copies"):
        SimatDemoDataset(copies=0)


# -- composed_folder --------------------------------------------------------------------------------
def _composed_folder(tmp_path, rows, header="reference_id,modification,target_ids"):
    from harness.testing import sample_images, write_images

    write_images(sample_images(6, 32), tmp_path / "images", [f"im{i}" for i in range(6)])
    (tmp_path / "queries.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return ComposedFolderDataset(str(tmp_path))


def test_composed_folder_known_answers(tmp_path):
    ds = _composed_folder(tmp_path, ["im0,to grey,im1;im2", "im3,to red,im4", "im5,to grey,im0"])
    check_dataset(ds, roles=("database",))
    q, gt = ds.items("queries"), ds.ground_truth()
    assert q.ids.tolist() == ["2", "3", "4"]  # line numbers
    assert q.texts == ("to grey", "to red")
    assert [gt.targets(i).tolist() for i in range(3)] == [[1, 2], [4], [0]]
    # embeddings that put each query's wanted target right after its reference: im(i+1) = im(i) + text
    images = np.eye(6, dtype=np.float32)
    texts = np.zeros((2, 6), np.float32)
    texts[0, 1], texts[1, 4] = 1.0, 1.0  # "to grey" points at im1, "to red" at im4
    r = composed_search(SumComposer(lambda_=2.0), images, texts, q, np.array([it.id for it in ds.items("database")]), k=10)
    got = ComposedRecall((1, 5))(gt, r)
    # q2: im0 + 2 e1 -> im1 first (hit); q3: im3 + 2 e4 -> im4 (hit); q4: im5 + 2 e1 -> im1, then im0 ... (rank 1)
    assert got == {"recall@1": pytest.approx(2 / 3), "recall@5": 1.0, "queries": 3}
    assert ComposedRecall((1, 5)).table(gt, r)["first_target_rank"].tolist() == [0, 0, 1]
    assert ComposedRecall((1,)).table(gt, r)["first_target_rank"].tolist() == [0, 0, -1]  # beyond max(ks)


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["im0,x,im9"], None, r"line 2: target id 'im9' is not an image"),
        (["im0,x,im0"], None, r"line 2: target 'im0' is the reference image"),
        (["imX,x,im1"], None, r"line 2: reference_id 'imX'"),
        (["im0,,im1"], None, r"line 2: empty modification"),
        (["im0,x,"], None, r"line 2: no target_ids"),
        (["im0,x,im1;im1"], None, r"line 2: a target id is listed twice"),
        (["a,im0,x,im1", "a,im1,y,im2"], "query_id,reference_id,modification,target_ids", "query_id 'a' appears twice"),
        (["im0,x"], None, r"line 2: 2 fields"),
        (["im0,x,im1"], "ref,mod,targets", r"line 1: header"),
    ],
)
def test_composed_folder_bad_rows(tmp_path, rows, header, message):
    ds = _composed_folder(tmp_path, rows, header or "reference_id,modification,target_ids")
    with pytest.raises(UserError, match=message):
        ds.ground_truth()


def test_openclip_on_the_demo_matches_slow_for_a_lambda_grid(tmp_path, monkeypatch):
    """The parts chained as the pipeline will: images and texts encoded once, six lambdas composed."""
    import json

    from harness_plugins.openclip.descriptor import OpenClipDescriptor

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    enc = OpenClipDescriptor(model="tiny", config=str(tmp_path / "tiny.json"), device="cpu", normalize=False)
    ds = SimatDemoDataset()
    db = ds.items("database")
    images = enc.describe([it.load() for it in db])
    q, gt = ds.items("queries"), ds.ground_truth()
    texts = enc.describe_texts(list(q.texts))
    words = dict(zip(q.texts, texts))
    slow_q = [{"source": int(s), "texts": (q.texts[v], q.texts[t]), "caption": int(c), "norm2": float(n)}
              for s, (v, t), c, n in zip(q.source, q.text_index, gt.target_caption, gt.norm2)]
    scores = []
    for lam in LAMBDAS:
        r = composed_search(SimatArithmetic(lambda_=lam), images, texts, q, np.array([it.id for it in db]), k=1)
        scores.append(SimatScore()(gt, r)["score"])
        assert abs(scores[-1] - slow_simat_score(images, words, slow_q, gt.oracle, lam)) < 1e-9
    assert len(set(scores)) > 1  # lambda matters even for a random network
