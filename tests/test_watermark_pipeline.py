"""The watermark pipeline end to end: marked images shared by every attack cell, marked and unmarked
images attacked alike, a detections table per cell beside the result, bit-for-bit reproducible."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.runner import run_spec
from harness.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset.n_references=4", "dataset.image_size=320",
         "grid=[{watermarker: [{name: dwt_dct}, {name: dwt_dct_svd, bits: 16}]}, "
         "{attack: [[{name: attack.none}], [{name: attack.jpeg, quality: 50}], [{name: attack.jpeg, quality: 50}, {name: attack.hflip}]]}]"]


def _run(tmp_path, extra=(), cache="cache", out="results"):
    return run_spec(str(REPO / "specs" / "watermark-demo.yaml"), [*SMALL, *extra], cache_dir=str(tmp_path / cache),
                    output_dir=str(tmp_path / out))


def test_every_spec_of_the_watermark_pipeline_validates():
    for name in ("watermark-demo", "watermark-ssl", "watermark-wbench", "watermark-multibit", "watermark-disc21-ops"):
        path = REPO / "specs" / f"{name}.yaml"
        if path.exists():
            load_spec(path)


@pytest.mark.slow
def test_grid_shares_marked_images_and_writes_a_table_per_cell(tmp_path):
    doc, path = _run(tmp_path)
    assert doc["pipeline"] == "watermark" and len(doc["cells"]) == 6
    embeds = [s for s in doc["stages"] if s["stage"].startswith("embed")]
    assert [e["cells"] for e in embeds] == [[0, 1, 2], [3, 4, 5]]  # one embedding per method, every attack shares it
    # the JPEG prefix of the JPEG > hflip chain is the JPEG cell's stage
    jpeg = [s for s in doc["stages"] if s["stage"].startswith("attack:marked")]
    assert any(s["cells"] == [1, 2] for s in jpeg) and any(s["cells"] == [4, 5] for s in jpeg)
    for cell in doc["cells"]:
        m = cell["metrics"]
        assert m["watermark.psnr"]["values"]["psnr"] > 30  # image quality of the marked images
        assert 0.0 <= m["watermark.auroc"]["values"]["auroc"] <= 1.0
    clean = doc["cells"][0]["metrics"]
    assert clean["watermark.bit_accuracy"]["values"]["bit_accuracy"] > 0.6  # dwt_dct, no attack
    assert clean["watermark.tpr"]["values"]["n_marked"] == clean["watermark.tpr"]["values"]["n_unmarked"] == 4
    tables = {t["cell"]: Path(t["path"]) for t in doc["tables"]}
    assert sorted(tables) == list(range(6))
    with open(tables[0], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["marked"] for r in rows} == {"0", "1"}
    assert {"image_id", "cell", "score", "p_value", "bits", "message"} <= set(rows[0])
    # a cached re-run reads every score back; a cold run in another cache reproduces them bit for bit
    again, _ = _run(tmp_path, out="again")
    assert not [s for s in again["stages"] if s["status"] == "computed"]
    cold, _ = _run(tmp_path, cache="cold", out="cold")
    for a, b in zip(doc["tables"], cold["tables"]):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert [c["metrics"] for c in cold["cells"]] == [c["metrics"] for c in doc["cells"]]


@pytest.mark.slow
def test_a_random_disc21_like_attack_is_broken_down_by_operation(tmp_path):
    doc, _ = _run(tmp_path, extra=["grid=[{attack: [[{name: augly.disc21_like, strength: 0.5}]]}]",
                                   "watermarker={name: dwt_dct}", "dataset.n_references=6"])
    (cell,) = doc["cells"]
    breakdown = cell["metrics"]["watermark.auroc"]["breakdown"]
    assert breakdown and all("auroc" in v for v in breakdown.values())
    from harness_plugins.augly.transforms import _graded_ops

    assert set(breakdown) <= set(_graded_ops(0.5)) | {"none"}  # operation families of the random chain
    assert sum(v["n_marked"] for v in breakdown.values()) >= 6  # every image is in a family (some in several)


@pytest.mark.slow
def test_copy_detection_of_watermarked_then_attacked_queries(tmp_path):
    small = ["dataset.n_references=12", "dataset.n_distractors=12", "dataset.n_queries=12", "dataset.n_matched=8",
             "dataset.n_train=24", "postprocess=[{name: pca_whiten, dim: 16}, {name: l2_normalize}]"]
    doc, _ = run_spec(str(REPO / "specs" / "demo-watermarked-copies.yaml"), small, cache_dir=str(tmp_path / "c"),
                      output_dir=str(tmp_path / "r"))
    assert len(doc["cells"]) == 4
    plain, marked = doc["cells"][0], doc["cells"][1]
    assert marked["overrides"]["transform"][0]["name"] == "watermark.embed"
    for cell in (plain, marked):
        assert 0.0 <= cell["metrics"]["disc21"]["values"]["micro_ap"] <= 1.0
    by_op = marked["metrics"]["disc21"]["breakdown"]
    assert "watermark.embed" in by_op and "jpeg" in by_op  # the chain's records: embed, then the attack
    (database,) = [s for s in doc["stages"] if s["stage"] == "describe:database"]
    assert database["cells"] == [0, 1, 2, 3]
