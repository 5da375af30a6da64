"""A miniature SIMAT in the official file layout, with known answers (tests and the offline demo).

Vocabulary: subjects cat / dog / horse, relations on / near, objects sofa / grass: 12 triplets, each
drawn ``copies`` times (24 images by default), one caption per triplet. Every image gets every
single-word transformation (2 subjects + 1 relation + 1 object = 4 queries per image); the split is
by image (half of the regions are test). Like the release: region ids are not in dataset_id order,
triplets.csv rows are shuffled, ``norm2`` counts the queries of the whole file sharing the source
word, and transfos.csv's ``dataset_id`` column is stale (a shuffled copy).

OSCAR matrix: 0.9 where the image's triplet is the caption's; 0.5 exactly (not a success: the test is
> 0.5) where only the relation differs; 0.3 where one other word differs; 0.1 otherwise.

Known answers, with the *ideal* embeddings of :func:`ideal_embeddings` (one-hot words, image = sum of
its three words): the source's other copy wins at lambda = 0 (score 0: it never shows the target
word), the target triplet wins for every lambda > sqrt(3)/6 ~ 0.289 (score 100).
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np

SUBJECTS = ("cat", "dog", "horse")
RELATIONS = ("on", "near")
OBJECTS = ("sofa", "grass")
WORDS = SUBJECTS + RELATIONS + OBJECTS
TRIPLETS = tuple(itertools.product(SUBJECTS, RELATIONS, OBJECTS))
#: lambda above which the ideal embeddings always retrieve the target triplet
LAMBDA_THRESHOLD = float(np.sqrt(3.0) / 6.0)


def caption(t: tuple[str, str, str]) -> str:
    return f"A {t[0]} {t[1]} a {t[2]}."


def write_simat_miniature(root: Path, copies: int = 2, seed: int = 0, image_size: int = 64) -> Path:
    """Write triplets.csv, transfos.csv, captions.txt, oscar_similarity_matrix.npy and
    images/images/<region_id>.png under ``root``; returns ``root``. Deterministic for (copies, seed)."""
    from harness.testing import sample_images

    root = Path(root)
    rng = np.random.default_rng(seed)
    n = len(TRIPLETS) * copies
    triplet_of = [TRIPLETS[i % len(TRIPLETS)] for i in range(n)]  # by dataset_id
    region = rng.choice(np.arange(100, 100 + 50 * n), size=n, replace=False)  # by dataset_id
    (root / "images" / "images").mkdir(parents=True, exist_ok=True)
    for did, im in enumerate(sample_images(n, image_size)):
        im.save(root / "images" / "images" / f"{int(region[did])}.png")

    rows = [(int(region[d]), *triplet_of[d], d) for d in rng.permutation(n).tolist()]
    _write_csv(root / "triplets.csv", ["region_id", "subj", "rel", "obj", "dataset_id"], rows)

    (root / "captions.txt").write_text("".join(caption(t) + "\n" for t in TRIPLETS), encoding="utf-8")

    oracle = np.full((n, len(TRIPLETS)), 0.1, dtype=np.float32)
    for d, t in enumerate(triplet_of):
        for c, u in enumerate(TRIPLETS):
            diff = [a != b for a, b in zip(t, u)]
            if not any(diff):
                oracle[d, c] = 0.9
            elif diff == [False, True, False]:
                oracle[d, c] = 0.5
            elif sum(diff) == 1:
                oracle[d, c] = 0.3
    np.save(root / "oscar_similarity_matrix.npy", oracle)

    queries = []
    test_regions = set(rng.choice(region, size=n // 2, replace=False).tolist())
    for d in rng.permutation(n).tolist():
        t = triplet_of[d]
        for f, field in enumerate(("subj", "rel", "obj")):
            choices = (SUBJECTS, RELATIONS, OBJECTS)[f]
            for new in choices:
                if new == t[f]:
                    continue
                u = list(t)
                u[f] = new
                queries.append([int(region[d]), field, t[f], new, TRIPLETS.index(tuple(u)), TRIPLETS.index(t),
                                int(region[d]) in test_regions])
    count = {w: sum(q[2] == w for q in queries) for w in WORDS}
    stale = rng.permutation(n)
    out = []
    for i, (rid, field, value, target, tcap, qcap, is_test) in enumerate(queries):
        did_true = int(np.flatnonzero(region == rid)[0])
        out.append([i, i, rid, field, value, target, 1, qcap, tcap, int(stale[did_true]), count[value], is_test])
    header = ["", "transfo_id", "region_id", "field", "value", "target", "norm", "query_ids", "target_ids",
              "dataset_id", "norm2", "is_test"]
    _write_csv(root / "transfos.csv", header, out)
    return root


def ideal_embeddings(root: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image embeddings by dataset_id, word -> embedding) that encode the triplets exactly: one-hot
    words in d = 8 and each image the (unnormalised) sum of its subject, relation and object."""
    with open(Path(root) / "triplets.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    eye = np.eye(8, dtype=np.float32)
    words = {w: eye[i] for i, w in enumerate(WORDS)}
    images = np.zeros((len(rows), 8), dtype=np.float32)
    for r in rows:
        images[int(r["dataset_id"])] = words[r["subj"]] + words[r["rel"]] + words[r["obj"]]
    return images, words


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([[str(v) for v in r] for r in rows])
    path.write_text(buf.getvalue(), encoding="utf-8")
