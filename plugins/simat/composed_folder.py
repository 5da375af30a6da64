"""``composed_folder``: a simple on-disk layout for composed image retrieval with target ids (CIRR,
FashionIQ, GeneCIS style; protocols.md §6)::

    <root>/images/<id>.jpg|.jpeg|.png   the database: every image, ordered by id
    <root>/queries.csv                  header: [query_id,]reference_id,modification,target_ids

``reference_id`` and every target are image ids (file names without extension); ``target_ids``
lists one or more ids separated by ``;``; ``query_id`` defaults to the line number. The reference is
removed from its own ranking (CIRR convention), so a target equal to the reference is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from harness.datasets import IMAGE_EXTENSIONS
from harness.errors import SubmissionError, UserError
from harness.parts import Item
from harness.submissions import read_text_file

from .types import ComposedGroundTruth, ComposedQueries

MAX_QUERIES_BYTES = 256 * 1024 * 1024


class ComposedFolderDataset:
    """Composed retrieval from images/ and queries.csv (reference_id, modification, target_ids with ';')."""

    version = "1"

    def __init__(self, root: str) -> None:
        self.root = Path(os.path.expanduser(root))

    @cached_property
    def _database(self) -> list[Item]:
        folder = self.root / "images"
        if not folder.is_dir():
            raise UserError(f"{folder}: image folder not found")
        found: dict[str, str] = {}
        with os.scandir(folder) as it:
            for e in it:
                stem, ext = os.path.splitext(e.name)
                if ext.lower() in IMAGE_EXTENSIONS and e.is_file():
                    if stem in found:
                        raise UserError(f"{folder}: two images with id {stem!r} ({found[stem]}, {e.name})")
                    found[stem] = e.name
        if not found:
            raise UserError(f"{folder}: no images (.jpg, .jpeg, .png)")
        return [Item(i, str(folder / found[i])) for i in sorted(found)]

    @cached_property
    def _table(self) -> tuple[ComposedQueries, ComposedGroundTruth]:
        path = self.root / "queries.csv"
        text = read_text_file(path, max_bytes=MAX_QUERIES_BYTES)
        reader = csv.reader(io.StringIO(text), strict=True)
        row_of = {it.id: r for r, it in enumerate(self._database)}
        header: list[str] | None = None
        ids, refs, mods, ptr, targets = [], [], [], [0], []
        line = 1
        try:
            for row in reader:
                where = f"line {line}"
                line = reader.line_num + 1
                if not any(f.strip() for f in row):
                    continue
                if header is None:
                    header = [f.strip() for f in row]
                    need = ["reference_id", "modification", "target_ids"]
                    if header not in (need, ["query_id", *need]):
                        raise SubmissionError(path, f"header {','.join(header)!r}, expected "
                                              "[query_id,]reference_id,modification,target_ids", where=where)
                    continue
                if len(row) != len(header):
                    raise SubmissionError(path, f"{len(row)} fields, the header has {len(header)}", where=where)
                rec = dict(zip(header, (f.strip() for f in row)))
                qid = rec.get("query_id", where.split()[1])
                ref = rec["reference_id"]
                if ref not in row_of:
                    raise SubmissionError(path, f"reference_id {ref!r} is not an image of images/", where=where)
                if not rec["modification"]:
                    raise SubmissionError(path, "empty modification text", where=where)
                tids = [t.strip() for t in rec["target_ids"].split(";") if t.strip()]
                if not tids:
                    raise SubmissionError(path, "no target_ids", where=where)
                for t in tids:
                    if t not in row_of:
                        raise SubmissionError(path, f"target id {t!r} is not an image of images/", where=where)
                if ref in tids:
                    raise SubmissionError(path, f"target {ref!r} is the reference image, which is removed from "
                                          "its own ranking", where=where)
                if len(set(tids)) != len(tids):
                    raise SubmissionError(path, "a target id is listed twice", where=where)
                ids.append(qid)
                refs.append(row_of[ref])
                mods.append(rec["modification"])
                targets += [row_of[t] for t in tids]
                ptr.append(len(targets))
        except csv.Error as exc:
            raise SubmissionError(path, f"malformed CSV: {exc}", where=f"line {reader.line_num}") from None
        if header is None:
            raise SubmissionError(path, "empty file, expected a header line")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise SubmissionError(path, f"query_id {dup!r} appears twice")
        texts = tuple(sorted(set(mods)))
        index = {t: i for i, t in enumerate(texts)}
        qids = np.array(ids, dtype=str)
        queries = ComposedQueries(
            ids=qids, source=np.array(refs, dtype=np.int64), texts=texts,
            text_index=np.array([index[m] for m in mods], dtype=np.int64).reshape(-1, 1),
            text_roles=("modification",),
        )
        gt = ComposedGroundTruth(qids, np.array(ptr, dtype=np.int64), np.array(targets, dtype=np.int64))
        return queries, gt

    def items(self, role: str) -> list[Item] | ComposedQueries:
        if role == "database":
            return self._database
        if role == "queries":
            return self._table[0]
        raise KeyError(role)

    def texts(self) -> tuple[str, ...]:
        return self._table[0].texts

    def ground_truth(self) -> ComposedGroundTruth:
        return self._table[1]

    def role_fingerprint(self, role: str) -> str:
        """The content key of one role (``database``, ``queries``, ``texts``), for the stage keys."""
        return self.fingerprint(role)

    def fingerprint(self, role: str | None = None) -> str:
        """sha256 of a role: ``database`` (ids and file sizes), ``queries``/``texts``/``ground_truth``
        (queries.csv's bytes and the image ids it refers to); ``None``: both."""
        h = hashlib.sha256(f"composed_folder/{self.version}/{role or 'all'}\n".encode())
        if role in (None, "database"):
            h.update("".join(f"{it.id}\t{os.stat(it.path).st_size}\n" for it in self._database).encode())
        if role in (None, "queries", "texts", "ground_truth"):
            h.update((self.root / "queries.csv").read_bytes())
            h.update("\n".join(it.id for it in self._database).encode())  # rows are positions in it
        elif role != "database":
            raise KeyError(role)
        return h.hexdigest()

    def prepare(self, progress: Callable[[int], object] | None = None) -> None:
        self.ground_truth()
        if progress is not None:
            progress(len(self._database))
