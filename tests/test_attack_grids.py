"""The published attack grids in specs/grids/: a top-level ``grid`` of one axis over ``attack``, every cell a
registered attack with parameters its factory accepts, written out in full, with the published values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.params import check_params
from harness.plugins import load_registry

GRIDS = Path(__file__).resolve().parent.parent / "specs" / "grids"
REGISTRY = load_registry()
COUNTS = {"ssl-watermarking": 66, "active-indexing-table1": 15, "active-indexing-extended": 104,
          "wbench-classic": 25, "waves-single": 80}


def cells(name: str) -> list[dict]:
    doc = yaml.safe_load((GRIDS / f"{name}.yaml").read_text())
    assert set(doc) == {"grid"}, f"{name}: only the grid, got keys {sorted(doc)}"
    (axis,) = doc["grid"]
    assert set(axis) == {"attack"}
    return axis["attack"]


def key(cell: dict) -> tuple:
    return (cell["name"], *sorted((k, v) for k, v in cell.items() if k != "name"))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_cell_is_a_valid_attack_written_in_full(name):
    import inspect

    values = cells(name)
    assert len(values) == COUNTS[name]
    assert len({key(c) for c in values}) == len(values), "a cell is listed twice"
    for cell in values:
        factory = REGISTRY.get("transform", cell["name"]).factory
        params = {k: v for k, v in cell.items() if k != "name"}
        _, problems = check_params(factory, params)
        assert not problems, (cell, problems)
        accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
        assert set(params) == set(accepted), f"{cell}: not written in full (parameters {accepted})"


def test_grid_files_are_exactly_the_published_ones():
    assert sorted(p.stem for p in GRIDS.glob("*.yaml")) == sorted(COUNTS)


def _by_name(name: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for cell in cells(name):
        out.setdefault(cell["name"], []).append(cell)
    return out


def test_ssl_watermarking_grid_has_the_papers_values():
    g = _by_name("ssl-watermarking")
    assert [c["degrees"] for c in g["attack.rotate"]] == list(range(0, 45, 5))
    assert all(c["interpolation"] == "nearest" and c["expand"] is False for c in g["attack.rotate"])
    assert [c["area"] for c in g["attack.center_crop"]] == pytest.approx([0.1 * j for j in range(1, 11)])
    assert [c["area"] for c in g["attack.resize"]] == pytest.approx([0.1 * j for j in range(1, 11)])
    assert [c["kernel"] for c in g["attack.blur"]] == list(range(3, 20, 2))
    assert [c["quality"] for c in g["attack.jpeg"]] == list(range(10, 101, 10))
    assert [c["factor"] for c in g["attack.contrast"]] == [0, 0.5, 1, 1.5, 2]
    assert [c["factor"] for c in g["attack.brightness"]] == [0.5, 1, 1.5, 2]
    assert [c["shift"] for c in g["attack.hue"]] == [-0.5, -0.25, 0, 0.25, 0.5, 0.2]
    assert g["attack.screenshot"] == [{"name": "attack.screenshot", "template": "web", "crop_src_to_fit": False}]


def test_active_indexing_table1_has_the_papers_list():
    g = _by_name("active-indexing-table1")
    assert [(c["degrees"], c["interpolation"], c["expand"]) for c in g["attack.rotate"]] == [
        (25, "bilinear", True), (90, "bilinear", True)]
    assert [c["area"] for c in g["attack.center_crop"]] == [0.5] and [c["area"] for c in g["attack.resize"]] == [0.5]
    assert [c["kernel"] for c in g["attack.blur"]] == [11] and [c["quality"] for c in g["attack.jpeg"]] == [50]
    assert [c["shift"] for c in g["attack.hue"]] == [0.2]
    assert [c["factor"] for c in g["attack.contrast"]] == [0.5, 2.0]
    assert [c["factor"] for c in g["attack.brightness"]] == [0.5, 2.0]
    assert {"attack.none", "attack.meme", "attack.screenshot", "augly.disc21_like"} <= set(g)


def test_wbench_and_waves_grids_have_the_documented_strengths():
    w = _by_name("wbench-classic")
    assert [c["radius"] for c in w["attack.blur_radius"]] == [1, 3, 5, 7, 9]
    assert [c["quality"] for c in w["attack.jpeg"]] == [10, 25, 40, 55, 70]
    assert [c["sigma"] for c in w["attack.noise"]] == [0.02, 0.04, 0.06, 0.08, 0.1]
    assert [c["factor"] for c in w["attack.brightness"]] == [c["factor"] for c in w["attack.contrast"]] == [
        1.2, 1.4, 1.6, 1.8, 2.0]
    v = _by_name("waves-single")
    assert [c["degrees"] for c in v["attack.rotate"]] == pytest.approx([4.5 * j for j in range(1, 11)])
    assert [c["area"] for c in v["attack.resized_crop"]] == pytest.approx([1 - 0.05 * j for j in range(1, 11)])
    assert [c["fraction"] for c in v["attack.erase"]] == pytest.approx([0.025 * j for j in range(1, 11)])
    assert [c["radius"] for c in v["attack.blur_radius"]] == list(range(2, 21, 2))
    assert [c["quality"] for c in v["attack.jpeg"]] == list(range(82, 9, -8))
    assert [c["sigma"] for c in v["attack.noise"]] == pytest.approx([0.01 * j for j in range(1, 11)])
