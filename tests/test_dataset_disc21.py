"""The DISC21 dataset plugin on miniatures written in the official and flat layouts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from miniatures import make_disc21

from harness.errors import UserError
from harness.parts import Dataset, Item
from harness_plugins.disc21.dataset import Disc21Dataset


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return make_disc21(tmp_path_factory.mktemp("official"), layout="official", shards=3)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return make_disc21(tmp_path_factory.mktemp("flat"), layout="flat")


def ids(items: list[Item]) -> list[str]:
    return [it.id for it in items]


def gt_pairs(gt) -> dict[str, str]:
    return dict(zip(gt.pair_query_ids.tolist(), gt.pair_reference_ids.tolist()))


@pytest.mark.parametrize("layout", ["official", "flat"])
def test_both_layouts_serve_every_role_sorted_by_id(layout, official, flat):
    mini = official if layout == "official" else flat
    ds = Disc21Dataset(str(mini.root))
    assert isinstance(ds, Dataset)
    assert ids(ds.items("queries")) == mini.query_ids
    assert ids(ds.items("database")) == mini.reference_ids
    assert ids(ds.items("train")) == mini.train_ids
    for role in ("queries", "database", "train"):
        for it in ds.items(role):
            assert Path(it.path).name == f"{it.id}.jpg" and Path(it.path).is_file()
    assert ds.items("database")[0].load().mode == "RGB"
    gt = ds.ground_truth()
    assert gt.query_ids.tolist() == mini.query_ids  # unmatched queries are listed too
    assert gt_pairs(gt) == mini.pairs and gt.n_pairs == len(mini.pairs)


def test_official_shards_are_all_read(official):
    shards = sorted(p.name for p in official.root.glob("references_*"))
    assert shards == ["references_0", "references_1", "references_2"]
    folders = {Path(it.path).parent.name for it in Disc21Dataset(str(official.root)).items("database")}
    assert folders == set(shards)


def test_images_directly_in_root_and_other_files_ignored(tmp_path, flat):
    root = tmp_path / "mixed"
    root.mkdir()
    for sub in ("queries", "references"):
        for f in (flat.root / sub).iterdir():
            shutil.copy(f, root / f.name)
    shutil.copy(flat.ground_truth, root)
    for junk in ("README.txt", "Q1.jpg", "._Q00000.jpg", "R0000001.jpg", "q00000.jpg", "T000000.txt"):
        (root / junk).write_bytes(b"x")
    (root / "Q99999.jpg").write_bytes(b"x")  # a final-split id: not a dev query
    ds = Disc21Dataset(str(root))
    assert ids(ds.items("queries")) == flat.query_ids
    assert ids(ds.items("database")) == flat.reference_ids
    with pytest.raises(KeyError):
        ds.items("train")
    assert gt_pairs(ds.ground_truth()) == flat.pairs


def test_final_queries_in_a_shared_folder_keep_their_id_range(tmp_path):
    mini = make_disc21(tmp_path, n_queries=4, n_matched=2, n_references=6, n_train=0, layout="flat", split="final")
    (tmp_path / "queries" / "Q00001.jpg").write_bytes((tmp_path / "queries" / "Q50000.jpg").read_bytes())
    ds = Disc21Dataset(str(tmp_path), queries="final")
    assert ids(ds.items("queries")) == mini.query_ids == ["Q50000", "Q50001", "Q50002", "Q50003"]
    assert gt_pairs(ds.ground_truth()) == mini.pairs
    with pytest.raises(KeyError):
        ds.items("train")
    with pytest.raises(UserError, match="query id"):  # the dev split has only Q00001, the GT is final's
        Disc21Dataset(str(tmp_path), queries="dev", ground_truth=str(mini.ground_truth)).ground_truth()


def test_count_subsets_restrict_items_and_ground_truth(official):
    ds = Disc21Dataset(str(official.root), n_queries=8, n_references=10, n_train=3)
    assert ids(ds.items("queries")) == official.query_ids[:8]
    assert ids(ds.items("database")) == official.reference_ids[:10]
    assert ids(ds.items("train")) == official.train_ids[:3]
    gt = ds.ground_truth()
    assert gt.query_ids.tolist() == official.query_ids[:8]
    # a served query whose reference is outside the subset has no match in this database
    expected = {q: r for q, r in official.pairs.items() if q in official.query_ids[:8] and r in official.reference_ids[:10]}
    assert gt_pairs(gt) == expected
    assert len(expected) < len(official.pairs)  # the fixture really exercises the restriction


def test_list_subsets(tmp_path, official):
    queries = sorted(official.pairs)[:3]
    refs = [official.pairs[q] for q in queries] + [official.reference_ids[-1]]
    (tmp_path / "q.txt").write_text("\n".join(reversed(queries)) + "\n\n")
    (tmp_path / "r.txt").write_text("".join(f"{r}.jpg\n" for r in refs))
    ds = Disc21Dataset(str(official.root), query_list=str(tmp_path / "q.txt"), reference_list=str(tmp_path / "r.txt"),
                       n_references=3)
    assert ids(ds.items("queries")) == sorted(queries)
    assert ids(ds.items("database")) == sorted(refs)[:3]
    gt = ds.ground_truth()
    assert gt.query_ids.tolist() == sorted(queries)
    assert gt_pairs(gt) == {q: official.pairs[q] for q in queries if official.pairs[q] in sorted(refs)[:3]}


def test_headerless_and_matched_only_ground_truth(tmp_path, official):
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("".join(f"{q},{official.pairs.get(q, '')}\n" for q in official.query_ids))
    gt = Disc21Dataset(str(official.root), ground_truth=str(headerless)).ground_truth()
    assert gt.query_ids.tolist() == official.query_ids and gt_pairs(gt) == official.pairs

    matched_only = tmp_path / "matched.csv"
    matched_only.write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in official.pairs.items()))
    gt = Disc21Dataset(str(official.root), ground_truth=str(matched_only)).ground_truth()
    assert sorted(gt.query_ids.tolist()) == sorted(official.pairs) and gt_pairs(gt) == official.pairs


def test_fingerprint_tracks_ids_sizes_and_gt_but_not_location(tmp_path, official):
    root = tmp_path / "copy"
    shutil.copytree(official.root, root)
    fp = Disc21Dataset(str(root)).fingerprint()
    assert fp == Disc21Dataset(str(official.root)).fingerprint()  # moving the data keeps the cache
    assert len(fp) == 64
    assert Disc21Dataset(str(root), n_references=5).fingerprint() != fp

    ref = next(root.glob("references_*/R000000.jpg"))
    ref.write_bytes(ref.read_bytes() + b"\0")  # an edited image (size changes)
    fp2 = Disc21Dataset(str(root)).fingerprint()
    assert fp2 != fp

    gt = root / "dev_ground_truth.csv"
    gt.write_text(gt.read_text().replace(",R", ",R", 1).rstrip("\n") + "\n\n")
    assert Disc21Dataset(str(root)).fingerprint() != fp2


def test_prepare_reports_counts(official):
    seen = []
    Disc21Dataset(str(official.root)).prepare(progress=seen.append)
    assert seen == [len(official.query_ids), len(official.reference_ids), len(official.train_ids)]


# --- errors: one clear line naming the path ---------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'}: DISC21 root folder not found"):
        Disc21Dataset(str(tmp_path / "nope")).items("queries")


def test_empty_reference_folder(tmp_path):
    make_disc21(tmp_path, n_queries=2, n_matched=1, n_references=2, n_train=0, layout="flat")
    for f in (tmp_path / "references").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=rf"{tmp_path / 'references'}: no database images named like R000000\.jpg"):
        Disc21Dataset(str(tmp_path)).items("database")
    (tmp_path / "train").mkdir()  # a train folder that exists but is empty is an error, not "no train"
    with pytest.raises(UserError, match=rf"{tmp_path / 'train'}: no train images"):
        Disc21Dataset(str(tmp_path)).items("train")


def test_gt_naming_a_reference_not_on_disk(tmp_path):
    mini = make_disc21(tmp_path, layout="official")
    q, r = sorted(mini.pairs.items())[0]
    next(tmp_path.glob(f"references_*/{r}.jpg")).unlink()
    with pytest.raises(UserError, match=rf"dev_ground_truth\.csv: 1 reference id\(s\) have no image .*first: {r}"):
        Disc21Dataset(str(tmp_path)).ground_truth()


def test_gt_naming_a_query_not_on_disk(tmp_path):
    mini = make_disc21(tmp_path, layout="flat")
    (tmp_path / "queries" / f"{mini.query_ids[-1]}.jpg").unlink()
    with pytest.raises(UserError, match=rf"1 query id\(s\) have no image under {tmp_path / 'queries'}"):
        Disc21Dataset(str(tmp_path)).ground_truth()
    # with an explicit query subset, unserved GT queries are simply dropped
    gt = Disc21Dataset(str(tmp_path), n_queries=len(mini.query_ids) - 1).ground_truth()
    assert mini.query_ids[-1] not in gt.query_ids


def test_missing_gt_file_and_bad_list(tmp_path, official):
    with pytest.raises(UserError, match=r"nope\.csv: DISC21 ground truth file not found"):
        Disc21Dataset(str(official.root), ground_truth=str(tmp_path / "nope.csv")).ground_truth()
    bad = tmp_path / "bad.txt"
    bad.write_text("R000001\nhello\n")
    with pytest.raises(UserError, match=r"bad\.txt: line 2: 'hello' is not an id like R000000"):
        Disc21Dataset(str(official.root), reference_list=str(bad)).items("database")
    absent = tmp_path / "absent.txt"
    absent.write_text("R000001\nR999999\n")
    with pytest.raises(UserError, match=r"absent\.txt: 1 listed id\(s\) have no image .*first: R999999"):
        Disc21Dataset(str(official.root), reference_list=str(absent)).items("database")
    with pytest.raises(UserError, match="n_references must be at least 1"):
        Disc21Dataset(str(official.root), n_references=0)


def test_id_list_with_bad_bytes_names_the_file(tmp_path, official):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"R000001\nR00000\xe9\n")
    with pytest.raises(UserError) as info:
        Disc21Dataset(str(official.root), reference_list=str(bad)).items("database")
    msg = str(info.value)
    assert msg == f"{bad}: line 2: not valid UTF-8 text" and "\n" not in msg
    with pytest.raises(UserError, match=r"folder\.txt.*not a regular file"):
        (tmp_path / "folder.txt").mkdir()
        Disc21Dataset(str(official.root), query_list=str(tmp_path / "folder.txt")).items("queries")


def test_duplicate_id_across_shards(tmp_path):
    make_disc21(tmp_path, n_queries=2, n_matched=1, n_references=4, n_train=0, shards=2)
    shutil.copy(tmp_path / "references_0" / "R000000.jpg", tmp_path / "references_1" / "R000000.jpg")
    with pytest.raises(UserError, match="image id R000000 is also at"):
        Disc21Dataset(str(tmp_path)).items("database")


def test_no_stat_while_listing(tmp_path, monkeypatch, flat):
    """Listing must not stat every file (a million files): only fingerprinting does."""
    calls = []
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = Disc21Dataset(str(flat.root))
    n = sum(len(ds.items(r)) for r in ("queries", "database", "train"))
    assert len(calls) < 10
    ds.fingerprint()
    assert len(calls) >= n
    assert np.all([Path(it.path).is_file() for it in ds.items("train")])


def test_malformed_gt_is_refused_by_the_shared_reader(tmp_path, official):
    dup = tmp_path / "dup.csv"
    q, r = sorted(official.pairs.items())[0]
    dup.write_text(f"query_id,reference_id\n{q},{r}\n{q},\n")
    with pytest.raises(UserError, match=rf"dup\.csv: line 3: more than one reference for query {q}"):
        Disc21Dataset(str(official.root), ground_truth=str(dup)).ground_truth()


def test_counts_are_checked_when_the_spec_is_validated(tmp_path):
    from harness.errors import SpecError
    from harness.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("task: t\ndataset: {name: disc21, root: /nowhere, n_queries: 0}\ndescriptor: {name: gist}\n"
                    "index: {name: faiss}\nmetrics: [{name: disc21}]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert str(info.value).startswith(f"{spec}:2: dataset.n_queries: dataset 'disc21': parameter 'n_queries'")
