"""A grid of query transformations against the same cells run as separate specs, both with no cache,
end to end as a user runs them (``harness run ... --no-cache`` in a subprocess). The grid describes the
database and train splits (and fits the post-processing, builds the index) once; separate runs do it
once each. Checks that every cell's metrics are identical both ways and prints the ratio (goal >= 2x
for 4 cells).

    python benchmarks/bench_grid.py [--spec specs/demo-grid.yaml] [--cells N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from timed_harness import harness

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "demo-grid.yaml"))
    parser.add_argument("--cells", type=int, default=None, help="use the first N values of the grid's axis")
    args = parser.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    (axis,) = spec["grid"]
    (path, values), = axis.items()
    values = values[: args.cells] if args.cells else values
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = f"{tmp}/cache", f"{tmp}/out"
        grid_spec = dict(spec, grid=[{path: values}])
        Path(f"{tmp}/grid.yaml").write_text(yaml.safe_dump(grid_spec, sort_keys=False))
        # build the generated dataset first, so neither side pays for it (datasets live outside --no-cache)
        single = {k: v for k, v in spec.items() if k != "grid"}
        Path(f"{tmp}/one.yaml").write_text(yaml.safe_dump(single, sort_keys=False))
        harness(["run", f"{tmp}/one.yaml", "--output", out, "--set", "metrics=[{name: disc21}]"], cache)
        grid_s, grid_doc = harness(["run", f"{tmp}/grid.yaml", "--no-cache", "--output", out], cache)
        separate_s, separate = 0.0, []
        for value in values:
            s, doc = harness(["run", f"{tmp}/one.yaml", "--no-cache", "--output", out, "--set", f"{path}={json.dumps(value)}"],
                             cache)
            separate_s += s
            separate.append(doc["metrics"])
    same = [c["metrics"] for c in grid_doc["cells"]] == separate
    once = [s["stage"] for s in grid_doc["stages"] if s["stage"] in ("describe:database", "describe:train")
            and s.get("cells") == list(range(len(values)))]
    print(f"{len(values)} cells of {path}")
    print(f"{'mode':<24}{'wall s':>10}")
    print(f"{'grid (one run)':<24}{grid_s:>10.1f}")
    print(f"{'separate runs':<24}{separate_s:>10.1f}")
    print(f"speed-up: {separate_s / grid_s:.2f}x (goal >= 2x for 4 cells); identical metrics per cell: {same}; "
          f"described once for all cells: {', '.join(once)}")


if __name__ == "__main__":
    main()
