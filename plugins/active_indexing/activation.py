"""Active indexing's image activation (Fernandez et al., arXiv 2210.10620; protocols.md §5).

Each database image that will be published (an "original") is optimised so that its descriptor moves
towards its own quantised reconstruction in the trained index (the target). With ``x`` the
ImageNet-normalised image at its own size, ``H`` its JND heatmap (:mod:`.jnd`) and ``delta`` the free
variable (initialised at 1e-6 N(0, 1) from the item's own generator)::

    x_t  = x + scaling * H * alpha * tanh(delta)                       (alpha per channel)
    loss = -cos(f(x_t), target) + image_weight * mean((x_t - x)^2)     f: resize, network, post-processing
    delta <- Adam(lr) for ``steps`` steps

then the image is un-normalised, clamped to [0, 1] and rounded to 8 bits (stored as PNG). Defaults
are the reference's (10 steps, Adam at lr 1, image weight 1e-2, scaling 3). The reference averages the
loss over a batch of 16; here each image's loss is summed, so an image's result does not depend on
the images it is batched with (Adam normalises the gradient's scale away, up to its epsilon).

The spec's ``activation:`` is a plain mapping, checked by :func:`check` at validation time.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from harness.errors import UserError

from . import jnd

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

METHODS = ("none", "jnd")  # none: passive indexing


@dataclass(frozen=True)
class Activation:
    """The activation options of a cell (``name: none`` is passive indexing)."""

    name: str = "jnd"
    steps: int = 10
    lr: float = 1.0
    image_weight: float = 1e-2
    scaling: float = 3.0
    batch_size: int = 16

    @property
    def active(self) -> bool:
        return self.name != "none"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_RULES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "steps": (int, lambda v: v >= 0, "an integer >= 0"),
    "lr": (float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "image_weight": (float, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "scaling": (float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
}


def check(value: Any) -> Iterable[tuple[tuple, str, str | None]]:
    """Problems of an ``activation:`` mapping, as (sub-path, message, suggestion)."""
    if not isinstance(value, dict):
        yield (), f"expected a mapping such as {{name: jnd, steps: 10}} (or {{name: none}}), got {type(value).__name__}", None
        return
    name = value.get("name")
    if name is None:
        yield (), "missing 'name': none (passive indexing) or jnd (the paper's activation)", None
    elif name not in METHODS:
        close = difflib.get_close_matches(str(name), METHODS, n=1)
        yield ("name",), f"unknown activation {name!r} (expected one of {', '.join(METHODS)})", close[0] if close else None
    for key, v in value.items():
        if key == "name":
            continue
        if key not in _RULES:
            close = difflib.get_close_matches(str(key), list(_RULES), n=1, cutoff=0.6)
            yield (key,), "unknown activation option (known: " + ", ".join(_RULES) + ")", close[0] if close else None
            continue
        kind, ok, text = _RULES[key]
        valid_type = not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else int)
        if not valid_type or not ok(v):
            yield (key,), f"expected {text}, got {v!r}", None
        elif name == "none":
            yield (key,), "passive indexing (name: none) takes no options", None


def parse(value: dict[str, Any] | None) -> Activation:
    """The validated mapping (or None: passive) as :class:`Activation`."""
    if value is None:
        return Activation(name="none")
    problems = list(check(value))
    if problems:
        sub, message, _ = problems[0]
        raise UserError(f"activation{''.join('.' + str(s) for s in sub)}: {message}")
    opts = {k: (float(v) if _RULES[k][0] is float else int(v)) for k, v in value.items() if k != "name"}
    return Activation(name=value["name"], **opts)


def require_differentiable(descriptor: Any, name: str) -> None:
    """The activation optimises images through the descriptor: it must offer the differentiable form."""
    if not (callable(getattr(descriptor, "embed_normalized", None)) and callable(getattr(descriptor, "normalized", None))):
        raise UserError(f"activation needs a differentiable descriptor (timm or torchscript); {name!r} has no "
                        "embed_normalized / normalized methods")


def differentiable_steps(steps: Sequence[Any], names: Sequence[str]) -> None:
    for step, name in zip(steps, names):
        if not callable(getattr(step, "apply_torch", None)):
            raise UserError(f"activation: post-processing step {name!r} has no differentiable form (apply_torch); "
                            "use pca, pca_whiten, l2_normalize or truncate, or no post-processing")


@dataclass
class Activated:
    """The activated images and, per image, what the activation did."""

    images: list["Image.Image"]
    stats: list[dict[str, float]]


def activate(images: Sequence["Image.Image"], targets: np.ndarray, descriptor: Any, steps: Sequence[Any],
             config: Activation, rngs: Sequence[np.random.Generator]) -> Activated:
    """Activate a batch of images towards ``targets`` (n, d), through ``descriptor`` (differentiable form)
    and the fitted post-processing ``steps`` (``apply_torch``). Per image: cosine to the target before
    and after (the final 8-bit image, described again), PSNR and L-inf distance (grey levels)."""
    import torch
    from PIL import Image

    device = getattr(descriptor, "device", torch.device("cpu"))
    mean = torch.tensor(descriptor.preprocess.mean, dtype=torch.float32, device=device)[:, None, None]
    std = torch.tensor(descriptor.preprocess.std, dtype=torch.float32, device=device)[:, None, None]
    pixels = [torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0).to(device)
              for im in images]
    x = [descriptor.normalized(im).to(device) for im in images]
    heat = [jnd.heatmap(p) for p in pixels]
    target = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=device)
    deltas = [torch.from_numpy((1e-6 * rng.standard_normal(tuple(xi.shape))).astype(np.float32)).to(device).requires_grad_(True)
              for xi, rng in zip(x, rngs)]

    def features(ims: list["torch.Tensor"]) -> "torch.Tensor":
        f = descriptor.embed_normalized(ims)
        for step in steps:
            f = step.apply_torch(f)
        return f

    def current() -> list["torch.Tensor"]:
        return [xi + jnd.perturbation(d, h, config.scaling) for xi, d, h in zip(x, deltas, heat)]

    with torch.no_grad():
        cos_before = torch.nn.functional.cosine_similarity(features(x), target, dim=1)
    optimizer = torch.optim.Adam(deltas, lr=config.lr)
    for _ in range(config.steps):
        xt = current()
        cos = torch.nn.functional.cosine_similarity(features(xt), target, dim=1)
        mse = torch.stack([((a - b) ** 2).mean() for a, b in zip(xt, x)])
        loss = (-cos + config.image_weight * mse).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    out_images, finals = [], []
    with torch.no_grad():
        for xt, p in zip(current(), pixels):
            rgb = torch.round(255.0 * torch.clamp(xt * std + mean, 0.0, 1.0))
            finals.append((rgb / 255.0 - mean) / std)
            out_images.append(Image.fromarray(rgb.to(torch.uint8).permute(1, 2, 0).cpu().numpy(), "RGB"))
        # the final image as stored, through the descriptor's own extraction path when it is the same one
        cos_after = torch.nn.functional.cosine_similarity(features(finals), target, dim=1)
    stats = []
    for i, (im, p) in enumerate(zip(out_images, pixels)):
        diff = 255.0 * (np.asarray(im, dtype=np.float64) / 255.0 - p.permute(1, 2, 0).cpu().numpy().astype(np.float64))
        mse = float(np.mean(diff**2))
        stats.append({"cos_before": float(cos_before[i]), "cos_after": float(cos_after[i]),
                      "psnr": float(10 * np.log10(255.0**2 / mse)) if mse > 0 else None,
                      "linf": float(np.abs(diff).max()) if diff.size else 0.0})
    return Activated(out_images, stats)


def activate_all(items: Sequence[Any], targets: np.ndarray, descriptor: Any, steps: Sequence[Any], config: Activation,
                 rng_of: Callable[[Any], np.random.Generator], write: Callable[[int, "Image.Image"], None],
                 progress: Callable[[int], None]) -> dict[str, Any]:
    """Activate every item in batches of ``config.batch_size``; ``write(position, image)`` stores each.
    Returns the per-image statistics and their means, and the seconds per image."""
    start = time.perf_counter()
    stats: list[dict[str, float]] = []
    for b in range(0, len(items), config.batch_size):
        chunk = items[b : b + config.batch_size]
        out = activate([it.load() for it in chunk], targets[b : b + len(chunk)], descriptor, steps, config,
                       [rng_of(it) for it in chunk])
        for j, image in enumerate(out.images):
            write(b + j, image)
        stats.extend(out.stats)
        progress(len(chunk))
    seconds = time.perf_counter() - start

    def mean(key: str) -> float | None:
        vals = [s[key] for s in stats if s[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {"per_image": stats, "summary": {"items": len(stats), "seconds_per_image": seconds / max(1, len(stats)),
                                             **{f"mean_{k}": mean(k) for k in ("cos_before", "cos_after", "psnr", "linf")}}}
