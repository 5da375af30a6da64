"""The SIMAT benchmark read from its official files (protocols.md §3).

Layout (the repository's ``simat_db/`` after ``prepare_dataset.py``)::

    <root>/triplets.csv  transfos.csv  captions.txt
    <root>/oscar_similarity_matrix.npy   (or .safetensors; the released .pt is a pickle: convert it)
    <root>/images/images/<region_id>.png (prepare_dataset.py's crops; <root>/images/<region_id>.png also works)

Roles: ``database`` = every image, in dataset_id order, with id = dataset_id (the row of the OSCAR
matrix); ``queries`` = the transformation queries of the split (``dev``: is_test False, ``test``:
True) as :class:`ComposedQueries` with texts (value, target). The source of a query comes from
triplets.csv's region_id -> dataset_id mapping, never from transfos.csv's stale dataset_id column.
Texts are the unique words of the *whole* file, so dev and test share one text-encoding stage.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from harness.errors import SubmissionError, UserError
from harness.parts import Item

from .files import Transfos, Triplets, file_digest, read_captions, read_oracle, read_transfos, read_triplets
from .types import ComposedQueries, SimatGroundTruth

ORACLE_NAMES = ("oscar_similarity_matrix.npy", "oscar_similarity_matrix.safetensors")
ROLES = ("database", "queries", "texts", "ground_truth")


class SimatDataset:
    """SIMAT (text-driven image transformation retrieval) from triplets.csv, transfos.csv, captions.txt,
    the OSCAR matrix and the image crops."""

    version = "1"

    def __init__(
        self,
        root: str,
        split: Literal["dev", "test"] = "dev",
        oracle: str | None = None,
        images: str | None = None,
    ) -> None:
        """``oracle``: the OSCAR matrix file (default: ``oscar_similarity_matrix.npy`` or ``.safetensors``
        in root). ``images``: the folder holding ``<region_id>.png`` (default ``<root>/images/images``,
        else ``<root>/images``)."""
        self.root = Path(os.path.expanduser(root))
        self.split = split
        self._oracle_arg = Path(os.path.expanduser(oracle)) if oracle else None
        self._images_arg = Path(os.path.expanduser(images)) if images else None
        self._fingerprints: dict[str, str] = {}

    # --- files ---------------------------------------------------------------------------------------
    def _ensure(self) -> None:
        """Called before any file is read; generated datasets build their files here."""

    def _file(self, name: str) -> Path:
        self._ensure()
        path = self.root / name
        if not path.is_file():
            raise UserError(f"{path}: SIMAT file not found (dataset.root must hold triplets.csv, transfos.csv, "
                            "captions.txt and the OSCAR matrix)")
        return path

    @cached_property
    def oracle_path(self) -> Path:
        self._ensure()
        if self._oracle_arg is not None:
            if not self._oracle_arg.is_file():
                raise UserError(f"{self._oracle_arg}: OSCAR matrix file not found")
            return self._oracle_arg
        for name in ORACLE_NAMES:
            if (self.root / name).is_file():
                return self.root / name
        pt = self.root / "oscar_similarity_matrix.pt"
        if pt.is_file():
            raise UserError(f"{pt}: the released OSCAR matrix is a pickle, which we do not load; convert it once with "
                            f"python -m harness_plugins.simat.convert_heads {pt} {self.root / ORACLE_NAMES[1]}")
        raise UserError(f"{self.root}: no OSCAR matrix ({' or '.join(ORACLE_NAMES)})")

    @cached_property
    def triplets(self) -> Triplets:
        return read_triplets(self._file("triplets.csv"))

    @cached_property
    def transfos(self) -> Transfos:
        return read_transfos(self._file("transfos.csv"))

    @cached_property
    def captions(self) -> tuple[str, ...]:
        return read_captions(self._file("captions.txt"))

    @cached_property
    def oracle(self) -> np.ndarray:
        x = read_oracle(self.oracle_path)
        n = len(self.triplets.dataset_id)
        if x.shape[0] != n:
            raise SubmissionError(self.oracle_path, f"{x.shape[0]} rows for the {n} images of triplets.csv")
        if x.shape[1] != len(self.captions):
            raise SubmissionError(self.oracle_path, f"{x.shape[1]} columns for the {len(self.captions)} captions "
                                  "of captions.txt")
        return x

    # --- roles ---------------------------------------------------------------------------------------
    def items(self, role: str) -> list[Item] | ComposedQueries:
        """``database``: image items in dataset_id order; ``queries``: the split's ComposedQueries."""
        if role == "database":
            return self._database
        if role == "queries":
            return self._queries
        raise KeyError(role)

    def texts(self) -> tuple[str, ...]:
        """The unique words of the whole transfos file (values and targets), sorted."""
        return self._texts

    def ground_truth(self) -> SimatGroundTruth:
        return self._ground_truth

    @cached_property
    def _texts(self) -> tuple[str, ...]:
        t = self.transfos
        return tuple(sorted(set(t.value) | set(t.target)))

    @cached_property
    def _split_rows(self) -> np.ndarray:
        return np.flatnonzero(self.transfos.is_test == (self.split == "test"))

    @cached_property
    def _source(self) -> np.ndarray:
        """Database row (dataset_id) of every transfos row, from triplets.csv."""
        r2d = self.triplets.region_to_row()
        t = self.transfos
        out = np.empty(len(t.ids), dtype=np.int64)
        for i, rid in enumerate(t.region_id.tolist()):
            row = r2d.get(rid)
            if row is None:
                raise SubmissionError(self.root / "transfos.csv", f"region_id {rid} is not in triplets.csv",
                                      where=f"line {t.lines[i]}")
            out[i] = row
        return out

    @cached_property
    def _queries(self) -> ComposedQueries:
        t, rows = self.transfos, self._split_rows
        index = {w: i for i, w in enumerate(self._texts)}
        text_index = np.array([[index[t.value[i]], index[t.target[i]]] for i in rows.tolist()],
                              dtype=np.int64).reshape(len(rows), 2)
        return ComposedQueries(
            ids=np.array([t.ids[i] for i in rows.tolist()], dtype=str),
            source=self._source[rows],
            texts=self._texts,
            text_index=text_index,
            text_roles=("value", "target"),
        )

    @cached_property
    def _ground_truth(self) -> SimatGroundTruth:
        t, rows = self.transfos, self._split_rows
        oracle = self.oracle
        cap = t.target_caption[rows]
        bad = np.flatnonzero(cap >= oracle.shape[1])
        if len(bad):
            i = int(rows[bad[0]])
            raise SubmissionError(self.root / "transfos.csv", f"target_ids {t.target_caption[i]} is not a caption "
                                  f"id (captions.txt has {len(self.captions)})", where=f"line {t.lines[i]}")
        return SimatGroundTruth(
            query_ids=self._queries.ids, source=self._queries.source, target_caption=cap,
            norm2=t.norm2[rows], oracle=oracle, split=self.split,
        )

    @cached_property
    def image_folder(self) -> Path:
        self._ensure()
        if self._images_arg is not None:
            if not self._images_arg.is_dir():
                raise UserError(f"{self._images_arg}: image folder not found")
            return self._images_arg
        for folder in (self.root / "images" / "images", self.root / "images"):
            if folder.is_dir():
                return folder
        raise UserError(f"{self.root / 'images' / 'images'}: image folder not found (run SIMAT's prepare_dataset.py, "
                        "which crops Visual Genome into <root>/images/images/<region_id>.png)")

    @cached_property
    def _database(self) -> list[Item]:
        tr = self.triplets
        folder = self.image_folder
        with os.scandir(folder) as it:
            present = {e.name for e in it}
        order = np.argsort(tr.dataset_id)
        names = [f"{int(tr.region_id[i])}.png" for i in order.tolist()]
        missing = [n for n in names if n not in present]
        if missing:
            raise UserError(f"{folder}: {len(missing)} of {len(names)} images of triplets.csv are missing "
                            f"(first: {missing[0]})")
        return [Item(str(int(tr.dataset_id[i])), str(folder / n)) for i, n in zip(order.tolist(), names)]

    # --- fingerprints --------------------------------------------------------------------------------
    def role_fingerprint(self, role: str) -> str:
        """The content key of one role (``database``, ``queries``, ``texts``), for the stage keys."""
        return self.fingerprint(role)

    def fingerprint(self, role: str | None = None) -> str:
        """sha256 of what a role serves: ``database`` (ids, region ids, image file sizes), ``queries``
        (the split's ids, sources and words), ``texts`` (the word list), ``ground_truth`` (OSCAR matrix
        file, captions, targets and norm2 of the split); ``None``: all of them."""
        key = role or "all"
        if key not in self._fingerprints:
            self._fingerprints[key] = self._compute_fingerprint(role)
        return self._fingerprints[key]

    def _compute_fingerprint(self, role: str | None) -> str:
        h = hashlib.sha256(f"simat/{self.version}/{role or 'all'}\n".encode())
        if role is None:
            for r in ROLES:
                h.update(f"{r}={self.fingerprint(r)}\n".encode())
        elif role == "database":
            tr = self.triplets
            r2d = sorted(zip(tr.dataset_id.tolist(), tr.region_id.tolist()))
            h.update("".join(f"{it.id}\t{rid}\t{os.stat(it.path).st_size}\n"
                             for it, (_, rid) in zip(self._database, r2d)).encode())
        elif role == "queries":
            q = self._queries
            h.update(f"split={self.split}\n".encode())
            for qid, src, (v, t) in zip(q.ids.tolist(), q.source.tolist(), q.text_index.tolist()):
                h.update(f"{qid}\t{src}\t{q.texts[v]}\t{q.texts[t]}\n".encode())
        elif role == "texts":
            h.update("\n".join(self._texts).encode())
        elif role == "ground_truth":
            gt = self._ground_truth
            h.update(f"split={self.split}\noracle={file_digest(self.oracle_path)}\n".encode())
            h.update("\n".join(self.captions).encode())
            h.update(gt.target_caption.tobytes() + gt.norm2.tobytes())
        else:
            raise KeyError(role)
        return h.hexdigest()

    def prepare(self, progress: Callable[[int], object] | None = None) -> None:
        """Read and check every file and that every image is on disk."""
        self.ground_truth()
        n = len(self.items("database"))
        if progress is not None:
            progress(n)
