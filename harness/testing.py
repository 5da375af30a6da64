"""A kit for plugin authors: contract checks for every kind of part, sample images, and helpers to
load a plugin module and run a spec in a temporary directory. Use it from pytest::

    from harness.testing import check_descriptor, registry_with

    def test_my_descriptor():
        check_descriptor(MyDescriptor(dim=64))

    def test_registration():
        registry = registry_with(my_package.harness_plugin)
        assert "my_descriptor" in registry.names("descriptor")

Each ``check_*`` raises ``AssertionError`` with a message saying which rule of the contract failed.
The built-in plugins are tested with the same checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.parts import Item, Neighbors, Retrieval


def sample_images(n: int = 4, size: int = 96) -> list[Any]:
    """``n`` distinct natural RGB images (scikit-image samples and crops of them), deterministic."""
    from PIL import Image
    from skimage import data

    bases = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    out = []
    i = 0
    while len(out) < n:
        base = bases[i % len(bases)]
        k = i // len(bases)  # successive passes take other regions
        h, w = base.shape[:2]
        side = min(h, w) // (1 + k % 3)
        y0 = (k * 37) % max(1, h - side + 1)
        x0 = (k * 53) % max(1, w - side + 1)
        crop = np.ascontiguousarray(base[y0 : y0 + side, x0 : x0 + side, :3])
        out.append(Image.fromarray(crop).convert("RGB").resize((size, size)))
        i += 1
    return out


def write_images(images: Iterable[Any], folder: Path, ids: Iterable[str], fmt: str = "JPEG") -> list[Item]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    ext = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    for image, id_ in zip(images, ids):
        path = folder / f"{id_}{ext}"
        image.save(path, format=fmt)
        items.append(Item(id_, str(path)))
    return items


# -- contract checks -------------------------------------------------------------------------------


def check_descriptor(descriptor: Any, images: list[Any] | None = None) -> np.ndarray:
    """describe() returns float32 (n, d), finite, row-aligned, deterministic, batch-independent."""
    images = images if images is not None else sample_images(3)
    assert callable(getattr(descriptor, "describe", None)), "a descriptor needs describe(images)"
    out = descriptor.describe(images)
    assert isinstance(out, np.ndarray), f"describe must return a numpy array, got {type(out).__name__}"
    assert out.dtype == np.float32, f"describe must return float32, got {out.dtype}"
    assert out.ndim == 2 and out.shape[0] == len(images), f"expected shape ({len(images)}, d), got {out.shape}"
    assert out.shape[1] > 0, "descriptor dimension is 0"
    assert np.isfinite(out).all(), "describe returned NaN or inf"
    again = descriptor.describe(images)
    assert np.allclose(out, again, atol=1e-5), "describe is not deterministic"
    single = descriptor.describe(images[:1])
    assert single.shape == (1, out.shape[1]), f"a batch of one gave shape {single.shape}"
    assert np.allclose(single[0], out[0], atol=1e-4), "the output for an image depends on the rest of the batch"
    if callable(getattr(descriptor, "preprocess", None)) and callable(getattr(descriptor, "forward", None)):
        import pickle

        pickle.dumps(descriptor.preprocess)  # loader workers receive it
    return out


def check_transform(transform: Any, image: Any | None = None, seed: int = 0) -> Any:
    """transform(image, rng) returns an RGB PIL image and is deterministic given the rng's seed."""
    from PIL import Image

    image = image if image is not None else sample_images(1, 128)[0]
    original = image.copy()
    out = transform(image, np.random.default_rng(seed))
    assert isinstance(out, Image.Image), f"a transform must return a PIL image, got {type(out).__name__}"
    assert out.mode == "RGB", f"a transform must return an RGB image, got mode {out.mode}"
    assert out.size[0] > 0 and out.size[1] > 0, "empty output image"
    again = transform(image, np.random.default_rng(seed))
    assert np.array_equal(np.asarray(out), np.asarray(again)), "same rng seed gave different images"
    assert np.array_equal(np.asarray(image), np.asarray(original)), "the transform modified its input in place"
    return out


def _image_key(image: Any) -> tuple[str, tuple[int, int], bytes]:
    return image.mode, image.size, image.tobytes()


def check_attack(transform: Any, *, uses_rng: bool = False, image: Any | None = None,
                 seeds: tuple[int, ...] = (0, 1, 2, 3)) -> Any:
    """An attack is a transform (RGB out, input untouched, same seed -> same bytes) with a record of
    what it applies: ``operations()``, a non-empty list of JSON-serialisable dicts each naming its
    ``"op"``. Unless ``uses_rng``, it ignores its rng: different rngs give identical bytes and the rng
    is left as it was (a chain passes the same rng on). With ``uses_rng``, different seeds must change
    the output for at least one of ``seeds`` (the randomness really comes from the rng)."""
    image = image if image is not None else sample_images(1, 128)[0]
    out = check_transform(transform, image, seed=seeds[0])
    ops = transform.operations() if callable(getattr(transform, "operations", None)) else None
    assert isinstance(ops, list) and ops, "an attack needs operations() -> non-empty list of dicts"
    for op in ops:
        assert isinstance(op, dict) and isinstance(op.get("op"), str) and op["op"], f"bad operation record {op!r}"
    json.dumps(ops)  # records go into result documents
    first = _image_key(out)
    if not uses_rng:
        for seed in seeds[1:]:
            rng = np.random.default_rng(seed)
            state = rng.bit_generator.state
            assert _image_key(transform(image, rng)) == first, f"seed {seed} changed the output: the rng must be ignored"
            assert rng.bit_generator.state == state, "the attack drew from its rng although it does not use it"
    else:
        others = [_image_key(transform(image, np.random.default_rng(seed))) for seed in seeds[1:]]
        assert any(o != first for o in others), f"seeds {seeds} all gave the same output: the rng is not used"
    return out


def check_postprocessor(step: Any, train: np.ndarray | None = None, dim: int = 32) -> None:
    rng = np.random.default_rng(0)
    train = train if train is not None else rng.standard_normal((200, dim)).astype(np.float32)
    x = rng.standard_normal((10, train.shape[1])).astype(np.float32)
    step.fit(train)
    for role in ("queries", "database", "train"):
        y = step.apply(x, role)
        assert isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[0] == len(x), f"apply({role}) gave {getattr(y, 'shape', y)}"
        assert np.isfinite(y).all(), f"apply({role}) returned NaN or inf"


def check_index(index: Any, dim: int = 16, nb: int = 200, nq: int = 5, train: bool = True) -> Neighbors:
    """add + search return Neighbors with in-range indices and best-first rows."""
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((nb, dim)).astype(np.float32)
    if train and getattr(index, "needs_training", False):
        index.train(rng.standard_normal((max(nb, 1000), dim)).astype(np.float32))
    index.add(xb)
    result = index.search(xb[:nq].copy())
    assert isinstance(result, Neighbors), f"search must return harness.parts.Neighbors, got {type(result).__name__}"
    q, r, s = result.as_pairs()
    assert len(q) == len(r) == len(s)
    assert ((q >= 0) & (q < nq)).all(), "query indices out of range"
    assert ((r >= 0) & (r < nb)).all(), "database indices out of range"
    if result.form == "knn":
        scores = np.where(result.indices >= 0, result.scores, -np.inf)
        assert (np.diff(scores, axis=1) <= 1e-6).all(), "kNN rows must be sorted best first (higher score = better)"
    return result


def check_metric(metric: Any, ground_truth: Any, retrieval: Retrieval) -> dict[str, Any]:
    """A metric names its protocol and version and returns a dict of named numbers (or None)."""
    assert isinstance(getattr(metric, "protocol", None), str), "a metric needs a str `protocol`"
    assert isinstance(getattr(metric, "version", None), str), "a metric needs a str `version`"
    values = metric(ground_truth, retrieval)
    assert isinstance(values, dict) and values, "a metric must return a non-empty dict"
    for k, v in values.items():
        assert isinstance(k, str), f"metric value names must be str, got {k!r}"
        ok = v is None or isinstance(v, (int, float, str, list, np.integer, np.floating))
        assert ok, f"metric value {k!r} is {type(v).__name__}, expected a number or None"
    json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()})
    return values


def check_dataset(dataset: Any, roles: tuple[str, ...] = ("queries", "database")) -> None:
    """Items per role with unique ids and loadable images; a stable fingerprint."""
    prepare = getattr(dataset, "prepare", None)
    if callable(prepare):
        prepare(progress=None)
    for role in roles:
        items = list(dataset.items(role))
        assert items, f"role {role!r} has no items"
        ids = [it.id for it in items]
        assert len(set(ids)) == len(ids), f"duplicate ids in role {role!r}"
        assert all(isinstance(it, Item) for it in items), "items must be harness.parts.Item"
        image = items[0].load()
        assert image.mode == "RGB"
    fp = dataset.fingerprint()
    assert isinstance(fp, str) and fp, "fingerprint must be a non-empty str"
    assert fp == dataset.fingerprint(), "fingerprint is not stable"
    dataset.ground_truth()


def check_watermarker(marker: Any, image: Any | None = None, key: int = 1) -> None:
    image = image if image is not None else sample_images(1, 128)[0]
    marked = marker.embed(image, key)
    assert marked.size == image.size, "embedding must keep the image size"
    marker.detect(marked, key)


# -- registration and specs -------------------------------------------------------------------------


def registry_with(*modules: Any, entry_points: bool = False):
    """A registry holding the given plugin modules and the built-in ``retrieval`` pipeline (and every
    installed plugin if ``entry_points``).
    Fails if one of the given modules failed to load or register."""
    from harness.plugins import load_registry

    extra = [(getattr(m, "__name__", repr(m)), m) for m in modules]
    if not entry_points:  # the default pipeline, so that a spec without `pipeline:` runs
        import harness_plugins.retrieval as retrieval

        if all(m is not retrieval for m in modules):
            extra.append(("retrieval", retrieval))
    registry = load_registry(extra, entry_points=entry_points)
    names = {n for n, _ in extra}
    failures = [f for f in registry.failures if f.plugin in names]
    assert not failures, "plugin failed: " + "; ".join(f"{f.plugin} {f.stage}: {f.error}" for f in failures)
    return registry


def run_spec_dict(spec: dict[str, Any], tmp_path: Path, overrides: list[str] = (), registry: Any = None) -> dict[str, Any]:
    """Write ``spec`` as YAML under ``tmp_path`` and run it with a private cache; returns the document."""
    import yaml

    from harness.runner import run_spec

    path = Path(tmp_path) / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    doc, _ = run_spec(str(path), list(overrides), cache_dir=str(Path(tmp_path) / "cache"),
                      output_dir=str(Path(tmp_path) / "results"), registry=registry)
    return doc
