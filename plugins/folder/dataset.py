"""``image_folder``: every image under a folder, ids = paths relative to it without the extension."""

from __future__ import annotations

import os
from pathlib import Path

from harness.datasets import IMAGE_EXTENSIONS, fingerprint_items, paused_gc
from harness.errors import UserError
from harness.params import PositiveInt
from harness.parts import Item


class ImageFolder:
    """The images of a folder (recursively; .jpg, .jpeg, .png), served as the ``images`` role."""

    version = "1"
    #: Roles served: ``images``, and the same items as ``database`` (for pipelines that call it so).
    ROLES = ("images", "database")

    def __init__(self, root: str, limit: PositiveInt | None = None) -> None:
        """``root``: the folder; ``limit``: the first N images in id order (a quick run)."""
        self.root = Path(os.path.expanduser(root))
        self.limit = limit
        self._items: list[Item] | None = None

    def prepare(self, progress=None) -> None:
        n = len(self._scan())
        if progress is not None:
            progress(n)

    def _scan(self) -> list[Item]:
        if self._items is None:
            if not self.root.is_dir():
                raise UserError(f"{self.root}: image folder not found")
            with paused_gc():
                found = []
                for dirpath, dirs, files in os.walk(self.root):
                    dirs.sort()
                    for name in files:
                        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                            path = Path(dirpath) / name
                            found.append(Item(path.relative_to(self.root).with_suffix("").as_posix(), str(path)))
            found.sort(key=lambda it: it.id)
            ids = [it.id for it in found]
            dup = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
            if dup is not None:
                raise UserError(f"{self.root}: two images share the id {dup!r} (same name, other extension)")
            if not found:
                raise UserError(f"{self.root}: no images (.jpg, .jpeg, .png) in the folder")
            self._items = found[: self.limit] if self.limit else found
        return self._items

    def items(self, role: str) -> list[Item]:
        if role not in self.ROLES:
            raise KeyError(role)
        return list(self._scan())

    def ground_truth(self) -> None:
        return None

    def fingerprint(self) -> str:
        return fingerprint_items(f"image_folder/{self.version}", {"images": self._scan()}, None)
