"""One timed ``harness ... --json --quiet`` subprocess, as a user runs it: shared by the benchmarks that
measure end-to-end runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def harness(args: list[str], cache: str) -> tuple[float, dict]:
    """Wall seconds and the JSON document of ``harness *args --json --quiet`` with cache ``cache``."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "harness", *args, "--json", "--quiet"], capture_output=True, text=True,
                         env=dict(os.environ, HARNESS_CACHE_DIR=cache))
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"harness {' '.join(args)} failed: {res.stderr.strip()[-2000:]}")
    return elapsed, json.loads(res.stdout)
