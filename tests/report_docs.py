"""Result documents for the board, report and compare tests: small, in the real schema-2 shape."""

from __future__ import annotations

import copy
from typing import Any

HOSTILE = "<script>alert(1)</script>\"'&$x$</svg><img src=x onerror=alert(2)>"


def metric_record(value: float | None, curve: bool = True, breakdown: dict[str, float] | None = None,
                  version: str = "2") -> dict[str, Any]:
    values: dict[str, Any] = {"micro_ap": value, "recall_at_p90": None if value is None else value / 2,
                              "recall_at_rank1": value, "n_gt_pairs": 3}
    if curve and value is not None:
        values["pr_curve"] = [[round(r, 6), round(max(0.0, 1 - r * (1 - value)), 6)] for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    rec = {"protocol": "disc21-official", "version": version, "params": {"scorer": "official"}, "main": "micro_ap",
           "display": {"threshold*": "number", "n_*": "integer"}, "values": values}
    if breakdown:
        rec["breakdown"] = {g: {"micro_ap": v, "recall_at_rank1": v, "n_gt_pairs": 1} for g, v in breakdown.items()}
    return rec


def run_doc(cells: list[dict[str, Any]], fingerprint: str = "fp", task: str = "demo") -> dict[str, Any]:
    doc = {"schema_version": 2, "harness_version": "0.1.0", "task": task, "created": "2026-01-01T00:00:00Z",
           "duration_s": 1.0, "pipeline": "retrieval", "harness_source": {"git_commit": "c" * 40, "dirty": False},
           "spec": {"source": "s.yaml", "hash": "h" * 64, "overrides": [], "resolved": {"task": task}, "grid": None},
           "plugins": [{"part": "metric:disc21", "plugin": "disc21", "package": "harness", "package_version": "0.1.0",
                        "version": "2"}],
           "environment": {"python": "3.11", "platform": "linux", "cpu_count": 2},
           "stages": [{"stage": "search", "status": "computed", "seconds": 0.5, "key": "k", "cells": [0]}],
           "data": {"dataset": "demo", "fingerprint": fingerprint, "counts": {"queries": 4}}, "cells": cells}
    if len(cells) == 1:
        doc["metrics"] = cells[0]["metrics"]
    return copy.deepcopy(doc)


def single(value: float = 0.6, **kw: Any) -> dict[str, Any]:
    return run_doc([{"overrides": {}, "metrics": {"disc21": metric_record(value, breakdown={"jpeg": 0.8, "crop": 0.3})}}], **kw)


ATTACKS = [("attack.none", {}, 0.62), ("attack.jpeg", {"quality": 80}, 0.61), ("attack.jpeg", {"quality": 50}, 0.58),
           ("attack.jpeg", {"quality": 10}, 0.4), ("attack.rotate", {"degrees": 5}, 0.5),
           ("attack.rotate", {"degrees": 20}, 0.05), ("attack.meme", {"text": "LOL"}, 0.3)]


def attack_grid(task: str = "demo-attacks", **kw: Any) -> dict[str, Any]:
    cells = [{"overrides": {"transform": {"name": n, **p}}, "metrics": {"disc21": metric_record(v)}} for n, p, v in ATTACKS]
    return run_doc(cells, task=task, **kw)


def numeric_grid(task: str = "demo-pca", **kw: Any) -> dict[str, Any]:
    cells = [{"overrides": {"postprocess[0].dim": d}, "metrics": {"disc21": metric_record(v, curve=False)}}
             for d, v in ((8, 0.3), (32, 0.5), (128, 0.62))]
    return run_doc(cells, task=task, **kw)
