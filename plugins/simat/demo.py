"""``simat_demo``: the miniature of :mod:`.miniature` written under the cache directory, then served
by the real SIMAT reader (so the demo exercises the same parsing and checks as the real files)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from harness.errors import UserError

from .dataset import SimatDataset
from .miniature import write_simat_miniature

#: Bump when the generated content changes for the same parameters (it enters the folder name).
BUILD_VERSION = "1"
MARKER = "build.json"


class SimatDemoDataset(SimatDataset):
    """A generated SIMAT miniature in the official file layout (12 triplets x ``copies`` images, 4 queries each)."""

    version = "1"

    def __init__(self, copies: int = 2, seed: int = 0, split: Literal["dev", "test"] = "dev",
                 root: str | None = None) -> None:
        """``root``: where to build (default ``<harness cache>/demo-simat``); one sub-folder per parameters."""
        if not 1 <= copies <= 1000:
            raise UserError(f"copies must be between 1 and 1000 (got {copies})")
        params = {"copies": copies, "seed": seed, "build": BUILD_VERSION}
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        if root is None:
            from harness.cache import default_cache_dir

            base = default_cache_dir() / "demo-simat"
        else:
            base = Path(os.path.expanduser(root))
        self.params = params
        super().__init__(root=str(base / digest), split=split)

    def build(self) -> None:
        """Write the files once (in a temporary sibling folder renamed into place: no half-written build)."""
        if (self.root / MARKER).is_file():
            return
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root.parent))
        try:
            write_simat_miniature(tmp, copies=self.params["copies"], seed=self.params["seed"])
            (tmp / MARKER).write_text(json.dumps(self.params))
            try:
                os.rename(tmp, self.root)
            except OSError:
                if not (self.root / MARKER).is_file():  # not a concurrent build that won the race
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    _ensure = build
