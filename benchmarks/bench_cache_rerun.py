"""Wall time of the demo spec run twice with a fresh cache: the second, identical run must report every
stage cached and be at least 20x faster (issue: core runner). Prints both times and the ratio.

    python benchmarks/bench_cache_rerun.py [--spec specs/demo.yaml] [--set PATH=YAML ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timed_harness import harness

ROOT = Path(__file__).resolve().parents[1]


def run(spec: str, overrides: list[str], cache: str, out: str) -> tuple[float, dict]:
    return harness(["run", spec, "--output", out, *[a for o in overrides for a in ("--set", o)]], cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold, doc = run(args.spec, args.overrides, f"{tmp}/cache", f"{tmp}/out")
        warm, doc2 = run(args.spec, args.overrides, f"{tmp}/cache", f"{tmp}/out")
    cached = not any(s["status"] == "computed" for s in doc2["stages"])  # in-memory stages: "not needed"
    same = doc["metrics"] == doc2["metrics"]
    print(f"{'run':<8}{'wall s':>10}")
    print(f"{'cold':<8}{cold:>10.2f}")
    print(f"{'cached':<8}{warm:>10.2f}")
    print(f"speed-up: {cold / warm:.1f}x (goal >= 20x); every stage cached: {cached}; identical metrics: {same}")
    print("micro_ap:", doc["metrics"].get("disc21", {}).get("values", {}).get("micro_ap"))


if __name__ == "__main__":
    main()
