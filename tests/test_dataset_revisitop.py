"""The revisitop dataset plugin on miniatures in the layout of revisitop's download scripts."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from miniatures import make_revisitop
from PIL import Image

from harness.errors import UserError
from harness.parts import Dataset
from harness_plugins.revisitop.dataset import RevisitopDataset


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_revisitop(tmp_path_factory.mktemp("roxford5k"), "roxford5k", n_db=15, n_queries=3, with_distractors=6)


def test_queries_database_and_ground_truth(mini):
    ds = RevisitopDataset(str(mini.root), benchmark="roxford5k")
    assert isinstance(ds, Dataset)
    queries, db = ds.items("queries"), ds.items("database")
    assert [q.id for q in queries] == mini.gnd["qimlist"]
    assert [d.id for d in db] == mini.gnd["imlist"]  # imlist order: the GT indexes it
    assert all(Path(it.path) == mini.root / "jpg" / f"{it.id}.jpg" for it in queries + db)
    assert all(d.bbox is None for d in db)
    with pytest.raises(KeyError):
        ds.items("train")
    gt = ds.ground_truth()
    assert gt.name == "roxford5k" and gt.imlist == tuple(mini.gnd["imlist"]) and gt.n_queries == 3
    for g, raw in zip(gt.gnd, mini.gnd["gnd"]):
        assert g.easy.dtype == np.int64
        assert (g.easy.tolist(), g.hard.tolist(), g.junk.tolist()) == (raw["easy"], raw["hard"], raw["junk"])
        assert g.bbx == tuple(raw["bbx"])


def test_queries_are_cropped_to_bbx(mini):
    ds = RevisitopDataset(str(mini.root), benchmark="roxford5k")
    for item, raw in zip(ds.items("queries"), mini.gnd["gnd"]):
        x1, y1, x2, y2 = (int(v) for v in raw["bbx"])
        assert item.bbox == tuple(raw["bbx"])
        cropped = np.asarray(item.load(), dtype=np.int16)
        full = np.asarray(Image.open(item.path).convert("RGB"), dtype=np.int16)
        assert cropped.shape == (y2 - y1, x2 - x1, 3) != full.shape
        assert np.array_equal(cropped, full[y1:y2, x1:x2])


def test_r1m_distractors_are_appended_after_the_database(mini):
    base = RevisitopDataset(str(mini.root), benchmark="roxford5k").items("database")
    ds = RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(mini.distractors))
    db = ds.items("database")
    n_db = len(mini.gnd["imlist"])
    assert db[:n_db] == base
    # ids n_db .. n_db + n_distractors, in the order of revisitop1m.txt
    assert [d.id for d in db[n_db:]] == mini.distractor_names
    assert all(Path(d.path) == mini.distractors / "jpg" / f"{d.id}.jpg" for d in db[n_db:])
    assert ds.ground_truth().imlist == tuple(mini.gnd["imlist"])  # the GT never names distractors
    assert ds.fingerprint() != RevisitopDataset(str(mini.root), benchmark="roxford5k").fingerprint()


def test_distractor_folder_without_list_is_sorted(tmp_path, mini):
    folder = tmp_path / "r1m"
    shutil.copytree(mini.distractors / "jpg", folder / "jpg")
    db = RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(folder)).items("database")
    assert [d.id for d in db[len(mini.gnd["imlist"]):]] == sorted(mini.distractor_names)
    assert sorted(mini.distractor_names) != mini.distractor_names  # the list order really differs
    # an explicit list file: its order, paths relative to the jpg/ folder beside it
    listed = list(reversed(mini.distractor_names))[:3]
    (folder / "mine.txt").write_text("\n".join(listed))
    db = RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(folder / "mine.txt")).items("database")
    assert [d.id for d in db[len(mini.gnd["imlist"]):]] == listed


def test_json_ground_truth(tmp_path, mini):
    path = tmp_path / "gnd.json"
    path.write_text(json.dumps(mini.gnd))
    gt = RevisitopDataset(str(mini.root), benchmark="roxford5k", ground_truth=str(path)).ground_truth()
    ref = RevisitopDataset(str(mini.root), benchmark="roxford5k").ground_truth()
    assert (gt.imlist, gt.qimlist) == (ref.imlist, ref.qimlist)
    for a, b in zip(gt.gnd, ref.gnd, strict=True):
        assert a.bbx == b.bbx
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("easy", "hard", "junk"))


def test_fingerprint_stable_and_sensitive(tmp_path, mini):
    root = tmp_path / "copy"
    shutil.copytree(mini.root, root, ignore=shutil.ignore_patterns("revisitop1m"))
    fp = RevisitopDataset(str(root), benchmark="roxford5k").fingerprint()
    assert fp == RevisitopDataset(str(mini.root), benchmark="roxford5k").fingerprint()
    image = root / "jpg" / f"{mini.gnd['imlist'][0]}.jpg"
    image.write_bytes(image.read_bytes() + b"\0")
    assert RevisitopDataset(str(root), benchmark="roxford5k").fingerprint() != fp


# --- errors ---------------------------------------------------------------------------------------


def test_missing_gnd_file(tmp_path):
    with pytest.raises(UserError, match=rf"{tmp_path / 'gnd_rparis6k.pkl'}: revisitop ground truth not found"):
        RevisitopDataset(str(tmp_path), benchmark="rparis6k").items("queries")


def test_missing_images_are_counted_and_named(tmp_path):
    m = make_revisitop(tmp_path, "rparis6k", n_db=12, n_queries=2)
    for name in m.gnd["imlist"][:2]:
        (tmp_path / "jpg" / f"{name}.jpg").unlink()
    ds = RevisitopDataset(str(tmp_path), benchmark="rparis6k")
    assert len(ds.items("queries")) == 2
    with pytest.raises(UserError, match=rf"{tmp_path / 'jpg'}: 2 of 12 images .* missing \(first: paris_000000\.jpg\)"):
        ds.items("database")
    shutil.rmtree(tmp_path / "jpg")
    with pytest.raises(UserError, match="image folder not found"):
        RevisitopDataset(str(tmp_path), benchmark="rparis6k").items("queries")


def test_missing_distractors(tmp_path, mini):
    folder = tmp_path / "r1m"
    shutil.copytree(mini.distractors, folder)
    (folder / "jpg" / f"{mini.distractor_names[2]}.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of 6 distractors listed in revisitop1m\.txt are missing"):
        RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(folder)).items("database")
    with pytest.raises(UserError, match="distractor folder or list not found"):
        RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(tmp_path / "nope")).items("database")


def test_distractor_list_with_bad_bytes_names_the_file(tmp_path, mini):
    folder = tmp_path / "r1m"
    shutil.copytree(mini.distractors, folder)
    listing = folder / "revisitop1m.txt"
    listing.write_bytes(listing.read_bytes() + b"caf\xe9.jpg\n")
    with pytest.raises(UserError) as info:
        RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(folder)).items("database")
    msg = str(info.value)
    assert msg == f"{listing}: line {len(mini.distractor_names) + 1}: not valid UTF-8 text" and "\n" not in msg


def test_symlink_loop_among_distractors_is_a_user_error(tmp_path, mini):
    folder = tmp_path / "r1m"
    shutil.copytree(mini.distractors / "jpg", folder / "jpg")
    loop = folder / "jpg" / "loop"
    loop.symlink_to(loop)  # points at itself: stat fails with ELOOP
    with pytest.raises(UserError) as info:
        RevisitopDataset(str(mini.root), benchmark="roxford5k", distractors=str(folder)).items("database")
    assert str(loop) in str(info.value) and "\n" not in str(info.value)


def test_unsafe_or_malformed_gnd_is_refused(tmp_path, mini):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    root = tmp_path / "evil"
    shutil.copytree(mini.root, root, ignore=shutil.ignore_patterns("revisitop1m"))
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": Evil()}))
    with pytest.raises(UserError, match="gnd_roxford5k.pkl"):
        RevisitopDataset(str(root), benchmark="roxford5k").ground_truth()

    bad = json.loads(json.dumps(mini.gnd))
    bad["gnd"][1]["easy"] = [len(bad["imlist"])]
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(UserError, match="gnd_roxford5k.pkl"):
        RevisitopDataset(str(root), benchmark="roxford5k").ground_truth()
