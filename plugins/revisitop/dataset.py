"""Revisited Oxford / Paris read from disk (protocols.md §2), optionally with the R1M distractors.

Layout (as revisitop's download scripts leave it)::

    <root>/gnd_roxford5k.pkl          imlist, qimlist, gnd (easy/hard/junk indices and bbx per query)
    <root>/jpg/<image name>.jpg       database and query images
    <distractors>/jpg/<a>/<name>.jpg  R1M images (any depth), listed in <distractors>/revisitop1m.txt

The ground-truth pickle is read with a restricted unpickler (never ``pickle.load``); a JSON file with
the same content may be given instead. Queries are served with their ``bbx``, so they are cropped on
load. The database is ``imlist`` in file order (the GT indexes it), followed by the distractors.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Literal

from harness.datasets import IMAGE_EXTENSIONS, fingerprint_items, paused_gc
from harness.errors import UserError
from harness.parts import Item

from .groundtruth import RevisitopGroundTruth

DISTRACTOR_LIST = "revisitop1m.txt"


class RevisitopDataset:
    """ROxford5k / RParis6k from gnd_<benchmark>.pkl and jpg/, with optional R1M distractors."""

    version = "1"

    def __init__(
        self,
        root: str,
        benchmark: Literal["roxford5k", "rparis6k"],
        distractors: str | None = None,
        ground_truth: str | None = None,
    ) -> None:
        """``root``: the folder holding ``gnd_<benchmark>.pkl`` and ``jpg/``. ``distractors``: the R1M
        folder (with ``revisitop1m.txt``, whose order is kept, or else scanned and sorted by path) or an
        image list file. ``ground_truth``: another GT file (``.pkl`` or ``.json``)."""
        self.root = Path(os.path.expanduser(root))
        self.benchmark = benchmark
        self._gt_path = Path(os.path.expanduser(ground_truth)) if ground_truth else None
        self._distractors = Path(os.path.expanduser(distractors)) if distractors else None
        self._fingerprint: str | None = None

    @property
    def ground_truth_path(self) -> Path:
        return self._gt_path or self.root / f"gnd_{self.benchmark}.pkl"

    # --- roles ---------------------------------------------------------------------------------------

    def items(self, role: str) -> list[Item]:
        """``queries`` (with ``bbox``, in qimlist order) or ``database`` (imlist order, then distractors)."""
        if role == "queries":
            return self._queries
        if role == "database":
            return self._database
        raise KeyError(role)

    def ground_truth(self) -> RevisitopGroundTruth:
        return self._ground_truth

    @cached_property
    def _ground_truth(self) -> RevisitopGroundTruth:
        path = self.ground_truth_path
        if not path.is_file():
            raise UserError(f"{path}: revisitop ground truth not found (download gnd_{self.benchmark}.pkl "
                            f"into the dataset root, or set dataset.ground_truth)")
        return RevisitopGroundTruth.from_file(path, self.benchmark)

    @cached_property
    def _queries(self) -> list[Item]:
        gt = self.ground_truth()
        paths = self._image_paths(gt.qimlist)
        return [Item(name, path, bbox=g.bbx) for name, path, g in zip(gt.qimlist, paths, gt.gnd)]

    @cached_property
    def _database(self) -> list[Item]:
        gt = self.ground_truth()
        items = [Item(name, path) for name, path in zip(gt.imlist, self._image_paths(gt.imlist))]
        if self._distractors is not None:
            with paused_gc():
                extra = distractor_items(self._distractors)
            clash = set(gt.imlist).intersection(it.id for it in extra)
            if clash:
                raise UserError(f"{self._distractors}: distractor id {sorted(clash)[0]!r} is also a database image name")
            items += extra
        return items

    def _image_paths(self, names: tuple[str, ...]) -> list[str]:
        """``jpg/<name>.jpg`` for each name, checked against one listing of the folder."""
        folder = self.root / "jpg"
        if not folder.is_dir():
            raise UserError(f"{folder}: image folder not found")
        with os.scandir(folder) as it:
            present = {e.name for e in it}
        missing = [n for n in names if f"{n}.jpg" not in present]
        if missing:
            raise UserError(f"{folder}: {len(missing)} of {len(names)} images named in {self.ground_truth_path.name} "
                            f"are missing (first: {missing[0]}.jpg)")
        return [str(folder / f"{n}.jpg") for n in names]

    # --- fingerprint and checks ----------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 over (role, id, file size, bbox) of every item and the GT file's bytes.

        Sizes come from one ``stat`` per file (R1M: a million), never from reading the images."""
        if self._fingerprint is None:
            roles = {role: self.items(role) for role in ("queries", "database")}
            self._fingerprint = fingerprint_items(
                f"revisitop/{self.version}/{self.benchmark}", roles, self.ground_truth_path
            )
        return self._fingerprint

    def prepare(self, progress: Callable[[int], object] | None = None) -> None:
        """Check the GT file and that every image it names (and every listed distractor) is on disk."""
        for role in ("queries", "database"):
            n = len(self.items(role))
            if progress is not None:
                progress(n)


def distractor_items(source: Path) -> list[Item]:
    """R1M distractors as items whose ids are their paths relative to the image folder, without
    extension (``4/f/4f0a...``). A list file (or ``revisitop1m.txt`` in the folder) fixes the order;
    otherwise the images found under the folder are sorted by relative path."""
    if source.is_file():
        list_file: Path | None = source
        base = source.parent / "jpg" if (source.parent / "jpg").is_dir() else source.parent
    elif source.is_dir():
        list_file = source / DISTRACTOR_LIST if (source / DISTRACTOR_LIST).is_file() else None
        base = source / "jpg" if (source / "jpg").is_dir() else source
    else:
        raise UserError(f"{source}: distractor folder or list not found")
    found = dict(_walk_images(base))  # relative path without extension -> relative path
    if list_file is None:
        if not found:
            raise UserError(f"{base}: no distractor images (.jpg) found")
        return [Item(i, str(base / found[i])) for i in sorted(found)]
    from harness.submissions import read_text_file  # size-checked, names the file on bad bytes

    names = [line.strip() for line in read_text_file(list_file).splitlines() if line.strip()]
    if not names:
        raise UserError(f"{list_file}: distractor list is empty")
    ids = [_strip_extension(n) for n in names]
    missing = [n for n, i in zip(names, ids) if i not in found]
    if missing:
        raise UserError(f"{base}: {len(missing)} of {len(names)} distractors listed in {list_file.name} are missing "
                        f"(first: {missing[0]})")
    if len(set(ids)) != len(ids):
        raise UserError(f"{list_file}: lists some distractor twice")
    return [Item(i, str(base / found[i])) for i in ids]


def _walk_images(base: Path) -> Iterator[tuple[str, str]]:
    """(id, relative path) of every image file under ``base``, with os.scandir (no stat per file).

    Symlinked folders are followed (R1M shards often live on other disks); a broken link loop or an
    unreadable folder is a one-line error naming the path instead of an internal OSError."""
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = base / rel if rel else base
        try:
            it = os.scandir(folder)
        except OSError as exc:
            raise UserError(f"{folder}: cannot list distractor folder: {exc.strerror}") from None
        with it:
            for entry in it:
                path = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError as exc:  # e.g. ELOOP: a symlink pointing at itself
                    raise UserError(f"{entry.path}: cannot read distractor path: {exc.strerror}") from None
                if is_dir:
                    stack.append(path)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    yield _strip_extension(path), path


def _strip_extension(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name
