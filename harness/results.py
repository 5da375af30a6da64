"""The result document: what a run computed, and everything needed to trace it to code and data."""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import harness
from harness.cache import publish_new_file
from harness.errors import UserError, environment_error, is_disk_full, is_environment_error
from harness.messages import short_path

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
REQUIRED_KEYS = ("schema_version", "harness_version", "task", "spec", "plugins", "environment", "data",
                 "stages")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def distribution_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """Versions of the given distributions and of everything they require, transitively (the code that
    could have shaped a result), sorted by name."""
    import re

    seen: dict[str, str | None] = {}
    todo = list(distributions)
    while todo:
        name = re.split(r"[\s;\[<>=!~(]", todo.pop().strip(), maxsplit=1)[0]
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not key or key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist.version
        todo += [r for r in (dist.requires or []) if "extra ==" not in r]
    return dict(sorted(seen.items()))


def environment(*, probe_gpu: bool = False, distributions: Iterable[str] = ("harness",)) -> dict[str, Any]:
    """Versions and hardware. ``packages``: the distributions that provided the parts used and what they
    require. Torch is asked about GPUs only if it is already loaded (or ``probe_gpu``), so that
    documenting the environment never costs a torch import."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": distribution_versions(distributions),
    }
    if "torch" in sys.modules or probe_gpu:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = bool(torch.cuda.is_available())
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        env["cuda_available"] = None  # unknown: torch was not needed by this run
    if "faiss" in sys.modules:
        import faiss

        env["faiss_threads"] = faiss.omp_get_max_threads()
    return env


def harness_source() -> dict[str, Any]:
    """The code that produced a result: version, and the git commit when running from a checkout
    (``dirty`` when the working tree differs from it)."""
    import subprocess

    info: dict[str, Any] = {"version": harness.__version__, "git_commit": None, "dirty": None}
    root = Path(harness.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return info
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return info
    if commit.returncode == 0:
        info["git_commit"] = commit.stdout.strip()
        info["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    return info


def build_document(*, spec: Any, overrides: list[str], parts: dict[str, Any], data: dict[str, Any],
                   stages: list[dict[str, Any]], cells: list[dict[str, Any]], started: float,
                   duration: float) -> dict[str, Any]:
    """The result document (schema 2): ``cells`` holds ``{overrides, metrics}`` per grid cell; a run
    without a grid also has its one cell's ``metrics`` at the top, as in schema 1."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "harness_version": harness.__version__,
        "harness_source": harness_source(),
        "task": spec.task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(duration, 3),
        "pipeline": spec.pipeline,
        "spec": {"source": spec.source, "hash": spec.hash, "overrides": list(overrides), "resolved": spec.data,
                 "grid": spec.grid},
        "plugins": [
            {"part": key, "plugin": p.plugin, "package": p.package, "package_version": p.package_version,
             "version": p.version}
            for key, p in sorted(parts.items())
        ],
        "environment": environment(distributions={"harness", *(p.package for p in parts.values())}),
        "data": data,
        "stages": stages,
        "cells": cells,
    }
    if spec.grid is None and len(cells) == 1:
        doc["metrics"] = cells[0]["metrics"]
    return doc


def result_filename(doc: dict[str, Any]) -> str:
    stamp = doc["created"].replace("-", "").replace(":", "")
    return f"{doc['task']}-{stamp}-{doc['spec']['hash'][:8]}.json"


def write_document(doc: dict[str, Any], output_dir: str | os.PathLike[str]) -> Path:
    """Write atomically under ``output_dir``; never overwrite an earlier result, even one written at the
    same second by a concurrent run (the name is claimed with an exclusive link, else a suffix)."""
    data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()
    base = result_filename(doc)
    names = (base if n == 0 else base.replace(".json", f"-{n}.json") for n in itertools.count())
    try:
        return publish_new_file(Path(output_dir), names, data)
    except OSError as exc:
        where = f"the output directory {short_path(output_dir)}"
        if is_disk_full(exc):
            raise UserError(f"no space left on the device holding {where}") from None
        if is_environment_error(exc):
            raise environment_error(exc, where) from None
        raise


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result document and check its shape."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable result document: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise UserError(f"{path}: result document lacks {', '.join(missing)}")
    if doc["schema_version"] not in READABLE_SCHEMAS:
        raise UserError(f"{path}: schema_version {doc['schema_version']} (this harness reads {READABLE_SCHEMAS})")
    if "metrics" not in doc and "cells" not in doc:
        raise UserError(f"{path}: result document lacks metrics and cells")
    if doc["schema_version"] == 1:  # one cell, metrics at the top
        doc = {**doc, "cells": [{"overrides": {}, "metrics": doc["metrics"]}]}
    return doc
