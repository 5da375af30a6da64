"""The DISC21 dataset read from disk, in the official layout or in flat folders (protocols.md §1).

Images are found by id: a file counts when its name is ``<id>.jpg`` (or ``.jpeg`` / ``.png``) and the id
has the split's form (``Q12345``, ``R123456``, ``T123456``); anything else in the folders is ignored.
Where each role's images are looked for, first match wins:

================  ==========================================  ================  ===============
role              official layout                             flat layout       fallback
================  ==========================================  ================  ===============
queries           ``dev_queries/`` or ``final_queries/``      ``queries/``      ``root`` itself
database          ``references_0/`` .. ``references_19/``     ``references/``   ``root`` itself
train (optional)  ``train_0/`` .. ``train_19/``               ``train/``        ``root`` itself
================  ==========================================  ================  ===============

A shared ``queries/`` folder (or the root) may hold both query splits, so there the split's id range
is kept (dev ``Q00000``..``Q49999``, final ``Q50000``..``Q99999``).

Listing uses ``os.scandir`` only (no per-file stat), so a million files take about a second. Items
are served sorted by id. Subsets: first N by id (``n_*``) and/or a list file of ids (``*_list``).
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from harness.datasets import IMAGE_EXTENSIONS, fingerprint_items, paused_gc
from harness.errors import UserError
from harness.params import PositiveInt
from harness.parts import Item

from .groundtruth import Disc21GroundTruth

#: Id forms per role (protocols.md §1).
ID_PATTERNS = {"queries": r"Q\d{5}", "database": r"R\d{6}", "train": r"T\d{6}"}
#: ``(?i:.jpg|.jpeg|.png)``: an image extension in any case, for the id regexes.
_EXTENSION_RE = f"(?i:{'|'.join(re.escape(e) for e in IMAGE_EXTENSIONS)})"
#: Query id range of each split, applied where a folder may hold both splits.
SPLIT_RANGES = {"dev": ("Q00000", "Q49999"), "final": ("Q50000", "Q99999")}
#: Folder name of each non-query role: ``<name>_<k>/`` shards (official) or one ``<name>/`` (flat).
_ROLE_FOLDERS = {"database": "references", "train": "train"}


class Disc21Dataset:
    """DISC21 from disk: dev or final queries, 1M references, 1M training images, GT CSV."""

    version = "1"

    def __init__(
        self,
        root: str,
        queries: Literal["dev", "final"] = "dev",
        ground_truth: str | None = None,
        n_queries: PositiveInt | None = None,
        n_references: PositiveInt | None = None,
        n_train: PositiveInt | None = None,
        query_list: str | None = None,
        reference_list: str | None = None,
        train_list: str | None = None,
    ) -> None:
        """``root``: the DISC21 folder. ``queries``: which query split. ``ground_truth``: GT CSV (default
        ``root/<split>_ground_truth.csv``). ``n_*``: keep the first N ids of a role; ``*_list``: keep the
        ids listed in a text file (one per line; applied before ``n_*``)."""
        for name, value in (("n_queries", n_queries), ("n_references", n_references), ("n_train", n_train)):
            if value is not None and value < 1:
                raise UserError(f"disc21 dataset: {name} must be at least 1, got {value}")
        self.root = Path(os.path.expanduser(root))
        self.split = queries
        self._gt_path = Path(os.path.expanduser(ground_truth)) if ground_truth else None
        self._counts = {"queries": n_queries, "database": n_references, "train": n_train}
        self._lists = {
            role: Path(os.path.expanduser(p)) if p else None
            for role, p in (("queries", query_list), ("database", reference_list), ("train", train_list))
        }
        self._on_disk: dict[str, dict[str, str] | None] = {}
        self._items: dict[str, list[Item]] = {}
        self._fingerprint: str | None = None

    # --- roles ---------------------------------------------------------------------------------------

    def items(self, role: str) -> list[Item]:
        """Items of ``role`` sorted by id; ``KeyError`` for ``train`` when there is no training set."""
        if role not in ID_PATTERNS:
            raise KeyError(role)
        if role not in self._items:
            with paused_gc():
                found = self._scan(role)
                if found is None:
                    raise KeyError(role)
                ids = self._select(role, found)
                self._items[role] = [Item(i, found[i]) for i in ids]
        return self._items[role]

    def _select(self, role: str, found: dict[str, str]) -> list[str]:
        ids = sorted(found)
        list_path = self._lists[role]
        if list_path is not None:
            wanted = read_id_list(list_path, ID_PATTERNS[role])
            missing = [i for i in wanted if i not in found]
            if missing:
                raise UserError(
                    f"{list_path}: {len(missing)} listed id(s) have no image under {self._where(role)} "
                    f"(first: {missing[0]})"
                )
            ids = sorted(set(wanted))
        count = self._counts[role]
        return ids[:count] if count is not None else ids

    def _scan(self, role: str) -> dict[str, str] | None:
        """Every image of ``role`` on disk (before subsetting): id -> path; ``None`` if the role is absent."""
        if role in self._on_disk:
            return self._on_disk[role]
        if not self.root.is_dir():
            raise UserError(f"{self.root}: DISC21 root folder not found")
        folders, shared = self._folders(role)
        pattern = ID_PATTERNS[role]
        found = scan_ids(folders, pattern)
        if role == "queries" and shared:
            lo, hi = SPLIT_RANGES[self.split]
            found = {i: p for i, p in found.items() if lo <= i <= hi}
        if not found:
            if role == "train" and folders == [self.root]:  # no train folder at all: the role is absent
                self._on_disk[role] = None
                return None
            what = f"{self.split} query" if role == "queries" else role
            raise UserError(
                f"{folders[0]}: no {what} images named like {_example(pattern)}.jpg "
                f"(looked in {', '.join(str(f) for f in folders)})"
            )
        self._on_disk[role] = found
        return found

    def _folders(self, role: str) -> tuple[list[Path], bool]:
        """The folders holding ``role``'s images, and whether they may also hold the other query split."""
        subdirs = {e.name for e in os.scandir(self.root) if e.is_dir()}
        if role == "queries":
            if f"{self.split}_queries" in subdirs:
                return [self.root / f"{self.split}_queries"], False
            if "queries" in subdirs:
                return [self.root / "queries"], True
            return [self.root], True
        name = _ROLE_FOLDERS[role]
        shards = sorted((d for d in subdirs if re.fullmatch(rf"{name}_\d+", d)), key=lambda d: int(d.rsplit("_", 1)[1]))
        if shards:
            return [self.root / d for d in shards], False
        if name in subdirs:
            return [self.root / name], False
        return [self.root], False

    def _where(self, role: str) -> str:
        folders, _ = self._folders(role)
        return str(folders[0]) if len(folders) == 1 else f"{folders[0]}..{folders[-1].name}"

    def _served_ids(self, role: str) -> dict[str, str] | set[str]:
        items = self.items(role)
        found = self._scan(role) or {}
        return found if len(items) == len(found) else {it.id for it in items}

    # --- ground truth --------------------------------------------------------------------------------

    @property
    def ground_truth_path(self) -> Path:
        return self._gt_path or self.root / f"{self.split}_ground_truth.csv"

    def ground_truth(self) -> Disc21GroundTruth:
        """The GT restricted to the served data: queries not served are dropped, and a pair whose
        reference is outside a reference subset becomes an unmatched query (its match is not in this
        database). A GT that names queries or references missing from disk is an error."""
        return self._ground_truth

    @cached_property
    def _ground_truth(self) -> Disc21GroundTruth:
        path = self.ground_truth_path
        if not path.is_file():
            raise UserError(f"{path}: DISC21 ground truth file not found (set dataset.ground_truth)")
        from .files import read_pairs_csv  # the safe reader (limits, duplicates, header)

        gt_q, gt_r = read_pairs_csv(path)
        gt_q, gt_r = np.asarray(gt_q, dtype=str), np.asarray(gt_r, dtype=str)
        # Membership through the id -> path dicts: np.isin against a million-string array is slower.
        all_queries = self._scan("queries") or {}
        served_q = self._served_ids("queries")
        on_disk = _member(gt_q, all_queries)
        if not on_disk.all() and self._lists["queries"] is None and self._counts["queries"] is None:
            raise UserError(
                f"{path}: {int((~on_disk).sum())} query id(s) have no image under {self._where('queries')} "
                f"(first: {gt_q[~on_disk][0]}); wrong split or GT file?"
            )
        keep = _member(gt_q, served_q)
        if not keep.any():
            raise UserError(f"{path}: none of its query ids is among the {len(served_q)} served queries")
        gt_q, gt_r = gt_q[keep], gt_r[keep]

        matched = gt_r != ""
        absent = matched & ~_member(gt_r, self._scan("database") or {})
        if absent.any():
            raise UserError(
                f"{path}: {int(absent.sum())} reference id(s) have no image under {self._where('database')} "
                f"(first: {gt_r[absent][0]})"
            )
        pairs = matched & _member(gt_r, self._served_ids("database"))
        return Disc21GroundTruth(query_ids=gt_q, pair_query_ids=gt_q[pairs], pair_reference_ids=gt_r[pairs])

    # --- fingerprint and checks ----------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 over (role, id, file size) of every served item and the GT file's bytes.

        File sizes come from one ``stat`` per file, not from reading the images: hashing 2M JPEGs would
        take hours, and a replaced image almost always changes size. Paths are left out so that moving
        the data does not invalidate the cache."""
        if self._fingerprint is None:
            roles: dict[str, list[Item]] = {}
            for role in ID_PATTERNS:
                try:
                    roles[role] = self.items(role)
                except KeyError:  # no training set
                    continue
            self._fingerprint = fingerprint_items(f"disc21/{self.version}/{self.split}", roles, self.ground_truth_path)
        return self._fingerprint

    def prepare(self, progress: Callable[[int], object] | None = None) -> None:
        """Check the layout: every role's folders, the subsets and, when there is a GT file (or one is
        given), the GT against the files on disk. ``progress(n)`` is told how many images were found."""
        for role in ID_PATTERNS:
            try:
                n = len(self.items(role))
            except KeyError:
                continue
            if progress is not None:
                progress(n)
        if self._gt_path is not None or self.ground_truth_path.is_file():
            self.ground_truth()


def scan_ids(folders: list[Path], pattern: str) -> dict[str, str]:
    """id -> path of the files named ``<id><image extension>`` in ``folders`` (not recursive).

    One ``os.scandir`` per folder and no stat per file; an id found twice is an error naming both files.
    """
    regex = re.compile(rf"({pattern}){_EXTENSION_RE}")
    found: dict[str, str] = {}
    for folder in folders:
        with os.scandir(folder) as it:
            for entry in it:
                m = regex.fullmatch(entry.name)
                if m is None or not entry.is_file():
                    continue
                key = m.group(1)
                if key in found:
                    raise UserError(f"{entry.path}: image id {key} is also at {found[key]}")
                found[key] = entry.path
    return found


def read_id_list(path: Path, pattern: str) -> list[str]:
    """Ids from a text file, one per line (blank lines and an image extension are tolerated)."""
    from harness.submissions import read_text_file  # size-checked, names the file on bad bytes

    lines = read_text_file(path).splitlines()
    regex = re.compile(rf"({pattern}){_EXTENSION_RE}?")
    ids = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        m = regex.fullmatch(text)
        if m is None:
            raise UserError(f"{path}: line {n}: {text[:40]!r} is not an id like {_example(pattern)}")
        ids.append(m.group(1))
    if not ids:
        raise UserError(f"{path}: id list is empty")
    return ids


def _member(ids: np.ndarray, known: dict[str, str] | set[str]) -> np.ndarray:
    return np.fromiter((i in known for i in ids.tolist()), dtype=bool, count=len(ids))


def _example(pattern: str) -> str:
    return pattern[0] + "0" * int(re.search(r"\{(\d+)\}", pattern).group(1))  # type: ignore[union-attr]
