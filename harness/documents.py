"""Reading the two kinds of document the board, the report and ``compare`` take: run result documents
(``harness run``) and score documents (``harness score ... --board``), both untrusted JSON."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from harness.errors import UserError

SCORE_KIND = "harness-score"
SCORE_SCHEMA = 1
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # a 66-cell grid with breakdowns is a few MB


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_document(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """A JSON object from ``path`` (size-capped), with its bytes (for the file's sha256)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_DOCUMENT_BYTES:
            raise UserError(f"{path}: {size} bytes, more than the {MAX_DOCUMENT_BYTES} a document may have")
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a JSON document: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc, raw


def load_document(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any], str]:
    """``(kind, document, sha256 of the file)``: kind ``"run"`` (schema 1 documents get their one cell)
    or ``"score"``. Shapes are checked so that later code can index without surprises."""
    doc, raw = read_json_document(path)
    kind, doc = checked_document(doc, str(path))
    return kind, doc, hashlib.sha256(raw).hexdigest()


def load_documents(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """The documents of a file: one, or a JSON list of them (``harness run SPEC... --json``)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_DOCUMENT_BYTES:
            raise UserError(f"{path}: {size} bytes, more than the {MAX_DOCUMENT_BYTES} a document may have")
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a JSON document: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise UserError(f"{path}: an empty list of documents")
    return [checked_document(d, f"{path}[{i}]" if isinstance(data, list) else str(path)) for i, d in enumerate(items)]


def checked_document(doc: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(doc, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("kind") == SCORE_KIND:
        check_score_document(doc, where)
        return "score", doc
    from harness.results import READABLE_SCHEMAS, REQUIRED_KEYS

    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise UserError(f"{where}: not a result document: it lacks {', '.join(missing)}")
    if doc["schema_version"] not in READABLE_SCHEMAS:
        raise UserError(f"{where}: schema_version {doc['schema_version']!r} (this harness reads {READABLE_SCHEMAS})")
    if doc["schema_version"] == 1 and isinstance(doc.get("metrics"), dict):  # one cell, metrics at the top
        doc = {**doc, "cells": [{"overrides": {}, "metrics": doc["metrics"]}]}
    check_run_document(doc, where)
    return "run", doc


def check_run_document(doc: dict[str, Any], where: str) -> None:
    cells = doc.get("cells")
    if not isinstance(cells, list) or not cells:
        raise UserError(f"{where}: cells: expected a non-empty list")
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("metrics"), dict):
            raise UserError(f"{where}: cells[{i}]: expected {{overrides, metrics}}")
        if not isinstance(cell.get("overrides", {}), dict):
            raise UserError(f"{where}: cells[{i}].overrides: expected a mapping")
        for label, m in cell["metrics"].items():
            if not isinstance(m, dict) or not isinstance(m.get("values"), dict):
                raise UserError(f"{where}: cells[{i}].metrics.{label}: expected a record with values")
    for key in ("task",):
        if not isinstance(doc.get(key), str):
            raise UserError(f"{where}: {key}: expected a string")


def check_score_document(doc: dict[str, Any], where: str) -> None:
    if doc.get("schema_version") != SCORE_SCHEMA:
        raise UserError(f"{where}: score document schema_version {doc.get('schema_version')!r} (this harness reads {SCORE_SCHEMA})")
    for key, tp in (("track", str), ("mode", str), ("result", dict), ("submission", dict), ("ground_truth", dict)):
        if not isinstance(doc.get(key), tp):
            raise UserError(f"{where}: {key}: expected a {tp.__name__}")
    if not isinstance(doc["submission"].get("sha256"), str):
        raise UserError(f"{where}: submission.sha256: expected a string")


def score_document(*, track: str, options: dict[str, Any], factory: Any, part: Any, result: dict[str, Any],
                   submission: str, ground_truth: str) -> dict[str, Any]:
    """What ``harness score --board`` stores: the scorer's result with what produced it (track, resolved
    options as the mode, files' sha256, scorer plugin and version, harness commit)."""
    import harness
    from harness.results import harness_source

    resolved = resolved_options(factory, options)
    return {
        "kind": SCORE_KIND,
        "schema_version": SCORE_SCHEMA,
        "harness_version": harness.__version__,
        "harness_source": harness_source(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "track": track,
        "options": resolved,
        "mode": mode_of(resolved),
        "submission": {"path": str(submission), "sha256": file_sha256(submission),
                       "bytes": os.path.getsize(submission)},
        "ground_truth": {"path": str(ground_truth), "sha256": file_sha256(ground_truth),
                         "bytes": os.path.getsize(ground_truth)},
        "scorer": {"plugin": part.plugin, "package": part.package, "package_version": part.package_version,
                   "version": str(getattr(factory, "version", part.version) or "")},
        "display": dict(getattr(factory, "display", None) or {}),
        "main_metric": getattr(factory, "main_metric", None),
        "board_values": list(getattr(factory, "board_values", None) or []),
        "result": json.loads(json.dumps(result, default=_plain)),
    }


def _plain(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def resolved_options(factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options given, completed with the factory's defaults, so that ``--scorer official`` and no
    option at all are the same mode."""
    from harness.params import _signature

    sig, _ = _signature(factory)
    out = {}
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in options:
            out[name] = options[name]
        elif p.default is not p.empty:
            out[name] = p.default
    return dict(sorted(out.items()))


def mode_of(options: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in options.items() if v is not None]
    return ", ".join(shown) if shown else "default"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, float | int | None]:
    """Numbers (and None) of a values mapping; nested mappings become ``group.name``; lists, strings
    and booleans are left out."""
    out: dict[str, float | int | None] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[name] = v
    return out


def main_value_name(record: dict[str, Any], values: dict[str, Any]) -> str | None:
    """The value a record is ranked and plotted by: its declared ``main``, else its first float."""
    main = record.get("main") or record.get("main_metric")
    if isinstance(main, str) and main in values:
        return main
    for k, v in values.items():
        if isinstance(v, float):
            return k
    return None
