"""Active indexing: (a) an N-cell attack grid in one run against the same N cells as separate runs, all
with no cache, end to end as a user runs them (``harness run ... --no-cache`` in a subprocess); (b) the
activation's time per image against describing an image (the extraction's forward pass), both from
the stage records of the grid run.

The grid describes the database and train splits, trains and fills the index and activates the
originals once for every cell; separate runs do it once each. Checks that every cell's metrics are
identical both ways and that the stage records show the shared stages once, used by every cell.

    python benchmarks/bench_active_indexing.py [--cells N] [--originals M] [--activation-steps S] [--resnet50]

``--resnet50`` adds (c): the activation at the paper's scale (a random-initialised ResNet-50, SSCD's
architecture, at 288 x 288, on sample photographs at their own size, 10 steps) against describing the
same images, measured in-process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from timed_harness import harness

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "active-indexing-demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4, help="the first N attacks of the Table-1 grid (default 4)")
    parser.add_argument("--originals", type=int, default=32, help="originals (= matched queries) of the demo dataset")
    parser.add_argument("--activation-steps", type=int, default=10)
    parser.add_argument("--resnet50", action="store_true", help="also time the activation at the paper's scale")
    args = parser.parse_args()
    if args.resnet50:
        paper_scale(args.activation_steps)

    spec = yaml.safe_load(SPEC.read_text())
    attacks = yaml.safe_load((SPEC.parent / "grids" / "active-indexing-table1.yaml").read_text())["grid"][0]["attack"]
    attacks = attacks[: args.cells]
    n = args.originals
    spec["dataset"].update(n_references=n, n_distractors=4 * n, n_queries=n, n_matched=n)
    active = {"name": "jnd", "steps": args.activation_steps, "lr": 1.0, "image_weight": 0.01, "scaling": 3.0}
    spec["activation"] = active
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = f"{tmp}/cache", f"{tmp}/out"
        single = {k: v for k, v in spec.items() if k != "grid"}
        Path(f"{tmp}/one.yaml").write_text(yaml.safe_dump(single, sort_keys=False))
        Path(f"{tmp}/grid.yaml").write_text(yaml.safe_dump({**single, "grid": [{"transform": attacks}]}, sort_keys=False))
        # build the generated dataset first, so neither side pays for it (datasets live outside --no-cache)
        harness(["run", f"{tmp}/one.yaml", "--output", out, "--set", "activation={name: none}",
                 "--set", "transform={name: attack.none}"], cache)
        grid_s, grid_doc = harness(["run", f"{tmp}/grid.yaml", "--no-cache", "--output", out], cache)
        separate_s, separate = 0.0, []
        for attack in attacks:
            s, doc = harness(["run", f"{tmp}/one.yaml", "--no-cache", "--output", out, "--set",
                              f"transform={json.dumps(attack)}"], cache)
            separate_s += s
            separate.append(doc["metrics"])

    # summaries differ by construction (a lone cell is its own group): compare the cells' own metrics
    same = [{k: v for k, v in c["metrics"].items() if k != "summary"} for c in grid_doc["cells"]] == \
        [{k: v for k, v in m.items() if k != "summary"} for m in separate]
    stages = grid_doc["stages"]
    everyone = list(range(len(attacks)))
    shared = [s["stage"] for s in stages if s["stage"] in ("describe:database", "describe:train", "index", "activate")
              and s.get("cells") == everyone and s["status"] == "computed"]
    counts = {name: sum(s["stage"].split("#")[0] == name for s in stages) for name in ("describe:database", "activate", "search")}
    print(f"{len(attacks)} cells of transform (Table-1 attacks), activation {args.activation_steps} steps, "
          f"{n} originals + {4 * n} distractors, demo descriptor (random-initialised test_resnet)")
    print(f"{'mode':<24}{'wall s':>10}")
    print(f"{'grid (one run)':<24}{grid_s:>10.1f}")
    print(f"{'separate runs':<24}{separate_s:>10.1f}")
    print(f"(a) speed-up: {separate_s / grid_s:.2f}x; identical metrics per cell: {same}; computed once for all "
          f"{len(attacks)} cells: {', '.join(shared)}; stages in the grid run: {counts}")

    record = {s["stage"]: s for s in stages}
    act, db = record["activate"], record["describe:database"]
    per_image = act["details"]["seconds_per_image"]
    describe_per_image = db["seconds"] / db["details"]["items"]
    print(f"(b) activation: {per_image:.3f} s per image ({args.activation_steps} Adam steps, forward + backward); "
          f"describing: {describe_per_image:.4f} s per image (forward, loader included); ratio {per_image / describe_per_image:.1f}x; "
          f"cosine to target {act['details']['mean_cos_before']:.4f} -> {act['details']['mean_cos_after']:.4f}, "
          f"PSNR {act['details']['mean_psnr']:.1f} dB, L-inf {act['details']['mean_linf']:.1f} grey levels")


def paper_scale(steps: int, n: int = 4) -> None:
    import numpy as np

    from harness.testing import sample_images
    from harness_plugins.active_indexing import activation as act
    from harness_plugins.timm.descriptors import TimmDescriptor

    net = TimmDescriptor(model="resnet50", size=288, order="normalize_first", normalize=True, device="cpu")
    images = [im.resize((512, 384)) for im in sample_images(n, size=512)]  # about a DISC21 reference's size
    net.describe(images[:1])  # build the network outside the timings
    start = time.perf_counter()
    feats = net.describe(images)
    describe_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    out = act.activate(images, feats + 0.01, net, [], act.Activation(steps=steps), [np.random.default_rng(i) for i in range(n)])
    activate_s = (time.perf_counter() - start) / n
    sizes = sorted({im.size for im in images})
    print(f"(c) random-initialised resnet50 at 288 x 288, {n} photographs {sizes}: activation {activate_s:.2f} s per image "
          f"({steps} steps), describing {describe_s:.3f} s per image: ratio {activate_s / describe_s:.1f}x; at this rate "
          f"DISC21's 10k originals take {10000 * activate_s / 3600:.1f} h on this machine "
          f"(PSNR {np.mean([s['psnr'] for s in out.stats]):.1f} dB)", flush=True)


if __name__ == "__main__":
    main()
