"""The offline demo benchmark: DISC21 layout, ground truth, byte-for-byte determinism, atomic builds."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.errors import UserError
from harness_plugins.demo import dataset as demo
from harness_plugins.demo.dataset import DemoCopyDetection

SMALL = dict(n_references=6, n_distractors=8, n_queries=10, n_matched=7, n_train=5, image_size=64, seed=3)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_gt(folder: Path) -> list[list[str]]:
    with open(folder / "dev_ground_truth.csv", newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> DemoCopyDetection:
    ds = DemoCopyDetection(root=str(tmp_path_factory.mktemp("demo")), **SMALL)
    ds.prepare()
    return ds


def test_layout_is_disc21(built):
    folder = built.path
    assert sorted(p.name for p in folder.iterdir()) == ["build.json", "dev_ground_truth.csv", "dev_queries", "dev_query_operations.json",
                                                         "references", "train"]
    assert sorted(os.listdir(folder / "references")) == [f"R{i:06d}.jpg" for i in range(14)]
    assert sorted(os.listdir(folder / "dev_queries")) == [f"Q{i:05d}.jpg" for i in range(10)]
    assert sorted(os.listdir(folder / "train")) == [f"T{i:06d}.jpg" for i in range(5)]
    for path in (folder / "references" / "R000000.jpg", folder / "train" / "T000004.jpg"):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) == 64
    assert json.loads((folder / "build.json").read_text()) == built.params


def test_ground_truth_file(built):
    rows = read_gt(built.path)
    assert rows[0] == ["query_id", "reference_id"]
    body = rows[1:]
    assert [r[0] for r in body] == [f"Q{i:05d}" for i in range(10)]
    assert all(len(r) == 2 for r in body)
    matched = [r for r in body if r[1]]
    assert len(matched) == 7 and len(body) - len(matched) == 3  # unmatched rows have an empty reference
    refs = {r[1] for r in matched}
    assert len(refs) == 6, "every original is copied (7 matched queries over 6 originals)"
    assert all((built.path / "references" / f"{r}.jpg").is_file() for r in refs)
    assert (built.path / "dev_ground_truth.csv").read_text().splitlines()[1:] == [",".join(r) for r in body]


def test_served_through_the_disc21_reader(built):
    from harness.testing import check_dataset
    from harness_plugins.disc21.groundtruth import Disc21GroundTruth

    check_dataset(built, roles=("queries", "database", "train"))

    assert [it.id for it in built.items("queries")] == [f"Q{i:05d}" for i in range(10)]
    assert len(built.items("database")) == 14 and len(built.items("train")) == 5
    assert built.items("database")[3].load().mode == "RGB"
    gt = built.ground_truth()
    assert isinstance(gt, Disc21GroundTruth)
    rows = read_gt(built.path)[1:]
    assert list(gt.query_ids) == [r[0] for r in rows]
    assert sorted(zip(gt.pair_query_ids, gt.pair_reference_ids)) == sorted((q, r) for q, r in rows if r)
    assert isinstance(built.fingerprint(), str) and len(built.fingerprint()) >= 16


def test_matched_queries_resemble_their_reference_more_than_others(built):
    """A sanity check that queries really are copies: on average, a matched query's small grey
    thumbnail is closer to its own reference than to the other references."""

    def thumb(path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("L").resize((8, 8)), dtype=float).ravel()

    refs = {p.stem: thumb(p) for p in (built.path / "references").iterdir()}
    wins = []
    for q, r in read_gt(built.path)[1:]:
        if r:
            d = {k: np.abs(thumb(built.path / "dev_queries" / f"{q}.jpg") - v).mean() for k, v in refs.items()}
            wins.append(min(d, key=d.get) == r)
    assert np.mean(wins) >= 0.5


def test_images_are_distinct(built):
    paths = sorted((built.path / "references").iterdir()) + sorted((built.path / "train").iterdir())
    thumbs = []
    for p in paths:
        with Image.open(p) as im:
            thumbs.append(np.asarray(im.convert("RGB").resize((16, 16)), dtype=float).ravel())
    x = np.stack(thumbs)
    dist = np.abs(x[:, None] - x[None]).mean(axis=2)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 8.0, "no two references / training images are near duplicates"
    grey = x.reshape(len(x), -1, 3).std(axis=0).mean()
    assert grey > 10, "real picture content, not flat colour"


def test_same_parameters_give_identical_bytes(built, tmp_path):
    again = DemoCopyDetection(root=str(tmp_path), **SMALL)
    again.prepare()
    assert again.path.name == built.path.name
    assert digests(again.path) == digests(built.path)


def test_different_parameters_give_a_different_folder(built, tmp_path):
    other = DemoCopyDetection(root=str(built.base), **{**SMALL, "seed": 4})
    assert other.path != built.path and other.path.parent == built.path.parent
    stronger = DemoCopyDetection(root=str(built.base), **SMALL, transform={"name": "augly.disc21_like", "strength": 0.9})
    assert stronger.path != built.path


def test_second_prepare_skips_the_build(built, monkeypatch):
    before = digests(built.path)
    mtime = (built.path / "build.json").stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("rebuilt although complete")

    monkeypatch.setattr(demo, "build", forbidden)
    calls = []
    fresh = DemoCopyDetection(root=str(built.base), **SMALL)  # a new object, as in a new run
    fresh.prepare(progress=calls.append)
    assert calls == [] and digests(built.path) == before
    assert (built.path / "build.json").stat().st_mtime_ns == mtime


def test_progress_counts_every_image(tmp_path):
    calls = []
    DemoCopyDetection(root=str(tmp_path), **SMALL).prepare(progress=calls.append)
    assert sum(calls) == 14 + 10 + 5


def test_interrupted_build_leaves_nothing_and_resumes(tmp_path):
    ds = DemoCopyDetection(root=str(tmp_path), **SMALL)
    seen = []

    def crash(n):
        seen.append(n)
        if len(seen) == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ds.prepare(progress=crash)
    assert not ds.path.exists() and list(tmp_path.iterdir()) == []  # no half-written folder, no temp left
    assert not ds.is_built()
    ds.prepare()
    assert ds.is_built() and len(os.listdir(ds.path / "references")) == 14


def test_killed_build_temp_is_ignored_and_stale_folder_rebuilt(tmp_path):
    ds = DemoCopyDetection(root=str(tmp_path), **SMALL)
    # what kill -9 leaves behind: a temp folder; and a final folder without a valid marker
    (tmp_path / f".tmp-{ds.path.name}-x").mkdir()
    ds.path.mkdir()
    (ds.path / "junk.txt").write_text("stale")
    old = tmp_path / f".tmp-{ds.path.name}-old"
    old.mkdir()
    os.utime(old, (0, 0))
    ds.prepare()
    assert ds.is_built() and not (ds.path / "junk.txt").exists()
    assert (tmp_path / f".tmp-{ds.path.name}-x").exists(), "a recent temp may be a running build: kept"
    assert not old.exists(), "an old temp is a dead build: removed"


def test_concurrent_builds_agree(tmp_path):
    first, second = (DemoCopyDetection(root=str(tmp_path), **SMALL) for _ in range(2))
    done = []

    def meanwhile(n):  # while `first` is still writing, another process completes the same build
        if not done:
            done.append(1)
            second.prepare()

    first.prepare(progress=meanwhile)
    assert first.is_built() and second.is_built()
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # one folder, temps cleaned


def test_default_root_follows_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    ds = DemoCopyDetection(**SMALL)
    assert ds.path.parent == tmp_path / "cache" / "demo-disc21"


@pytest.mark.parametrize(
    "params",
    [
        {"n_matched": 11},
        {"n_references": 0},
        {"image_size": 8},
        {"transform": {"name": "augly.nope"}},
        {"transform": {"name": "augly.crop", "min_area": 0.9, "max_area": 0.1}},
        {"transform": {"name": "augly.crop", "bogus": 1}},
    ],
)
def test_invalid_parameters(params, tmp_path):
    with pytest.raises(UserError):
        DemoCopyDetection(root=str(tmp_path), **{**SMALL, **params})


def test_transform_errors_are_one_line_with_a_suggestion(tmp_path):
    with pytest.raises(UserError) as info:
        DemoCopyDetection(root=str(tmp_path), **SMALL, transform={"name": "augly.hfilp"})
    msg = str(info.value)
    assert msg.startswith("demo dataset: transform.name: unknown transform 'augly.hfilp'") and "\n" not in msg
    assert "did you mean 'augly.hflip'?" in msg
    with pytest.raises(UserError, match=r"^demo dataset: transform augly\.crop: bogus: "):
        DemoCopyDetection(root=str(tmp_path), **SMALL, transform={"name": "augly.crop", "bogus": 1})


def test_other_transform_is_used(tmp_path):
    ds = DemoCopyDetection(root=str(tmp_path), **{**SMALL, "n_distractors": 0, "n_queries": 6, "n_matched": 6},
                           transform={"name": "augly.hflip"})
    ds.prepare()
    for q, r in read_gt(ds.path)[1:]:
        with Image.open(ds.path / "dev_queries" / f"{q}.jpg") as qi, Image.open(ds.path / "references" / f"{r}.jpg") as ri:
            flipped = np.asarray(ri.transpose(Image.Transpose.FLIP_LEFT_RIGHT), dtype=float)
            assert np.abs(np.asarray(qi, dtype=float) - flipped).mean() < 6  # equal up to JPEG noise
