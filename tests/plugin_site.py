"""Plugins visible to a ``harness`` subprocess through real entry points, without pip: a folder on
PYTHONPATH holding modules and ``*.dist-info`` folders (what importlib.metadata reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).parent


def fake_distribution(site: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A distribution ``name`` with ``modules`` (name -> source) and ``harness`` entry points."""
    site.mkdir(parents=True, exist_ok=True)
    for mod, source in modules.items():
        (site / f"{mod}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"  # the folder's stem before '-' is the name
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[harness]\n{eps}")


def toy_site(site: Path) -> Path:
    """``site`` with the tests' toy plugins (toy dataset, mean_color_toy, center, brute, recall_at)."""
    if not any(site.glob("harness_toys-*.dist-info")):
        fake_distribution(site, "harness-toys", {}, {"toys": "toy_plugins"})
    return site


def site_distributions(site: Path) -> list[str]:
    """The names of the distributions in ``site`` (what HARNESS_LOAD_PLUGINS must list to load them)."""
    names = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        names += [line.split(":", 1)[1].strip() for line in meta.read_text().splitlines() if line.startswith("Name:")]
    return names


def harness_process(site: Path, *args: str, cwd: Path, cache: Path | None = None, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(TESTS), os.environ.get("PYTHONPATH", "")]),
               HARNESS_CACHE_DIR=str(cache or cwd / "cache"), HARNESS_LOAD_PLUGINS=",".join(site_distributions(site)))
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_harness(site: Path, *args: str, cwd: Path, cache: Path | None = None, timeout: float = 300,
                **popen) -> subprocess.CompletedProcess:
    proc = harness_process(site, *args, cwd=cwd, cache=cache, **popen)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
