"""Neural global descriptors: any timm architecture, and TorchScript exports (SSCD-style).

Both offer the batched contract of :class:`harness.parts.BatchedDescriptor`: ``preprocess`` (a small
picklable object run in loader worker processes), ``collate`` (batches samples, tolerating mixed shapes)
and ``forward`` (a batch -> float32 (n, d) array on the best device). ``describe`` is the same path in
one process. torch and timm are imported when a descriptor is created or first used, never when this
module is imported; the model itself is built on first use.
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from harness.errors import UserError
from harness.limits import require_memory
from harness_plugins.torch_device import BatchSize, BatchSizes, OnDevice, check_device, exact_float32, uses_float16

from .checkpoint import existing_file, file_sha256, load_state_dict
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Order, Preprocess, Resize, collate

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

Pooling = Literal["gem", "mean", "cls", "model"]


class _TorchDescriptor(OnDevice):
    """Shared machinery: preprocessing, device choice, batching, multi-scale averaging, L2 normalisation.

    Device, batch size per device and precision follow :mod:`harness_plugins.torch_device`.
    """

    version = "1"
    #: Batches samples from :attr:`preprocess`; a module-level function, so it pickles by reference.
    collate = staticmethod(collate)

    def __init__(
        self,
        *,
        size: int | None,
        resize: Resize,
        scales: Sequence[float],
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: BatchSize,
        device: str,
        half: bool,
        normalize: bool,
        interpolation: Literal["bilinear", "bicubic"] = "bilinear",
        order: Order = "resize_first",
    ) -> None:
        if order not in ("resize_first", "normalize_first"):
            raise UserError(f"order must be 'resize_first' or 'normalize_first' (got {order!r})")
        preprocess = Preprocess(
            size=size,
            resize=resize,
            scales=tuple(float(s) for s in scales),
            mean=tuple(mean),
            std=tuple(std),
            interpolation=interpolation,
            order=order,
        )
        batch_sizes = BatchSizes.parse(batch_size)
        check_device(device)
        if not preprocess.scales or any(s <= 0 for s in preprocess.scales):
            raise UserError(f"scales must be a non-empty list of positive numbers (got {list(preprocess.scales)})")
        if preprocess.size is not None and preprocess.size < 1:
            raise UserError(f"size must be a positive number of pixels or null (got {preprocess.size})")
        if preprocess.size is not None:  # one input batch alone, float32 at the largest scale
            side = preprocess.size * max(preprocess.scales)
            n = batch_sizes.host_check
            require_memory(n * 3 * side * side * 4, f"size {preprocess.size} x scale {max(preprocess.scales):g} "
                                                    f"with batch_size {n}")
        self.preprocess = preprocess
        self.batch_sizes = batch_sizes
        self.device_name = device
        self.half = half
        self.normalize = normalize
        self._model: Any = None
        self._device: Any = None
        self._dim: int | None = None

    # -- model and device ---------------------------------------------------------------------------
    def _precision(self) -> str:
        """``:float16`` when ``half`` takes effect (CUDA), else nothing: float32 results agree across
        devices (TF32 off), float16 ones do not, so they must not share cache entries."""
        return ":float16" if self.half and uses_float16(self.half, self.device) else ""

    @property
    def model(self) -> "torch.nn.Module":
        """The network in eval mode on :attr:`device`, built on first access."""
        if self._model is None:
            import torch

            device = self.device
            if self.half and device.type != "cuda":
                warnings.warn(f"half: float16 is used on CUDA only; running float32 on {device}", stacklevel=2)
            # built outside inference mode even when first used from ``forward``: the differentiable
            # form (embed_normalized) cannot backpropagate through inference tensors
            with torch.inference_mode(False):
                model = self._build(device)
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                self._model = model.to(device=device, dtype=self._dtype(torch))
        return self._model

    def _dtype(self, torch: Any) -> "torch.dtype":
        return torch.float16 if uses_float16(self.half, self.device) else torch.float32

    def _build(self, device: "torch.device") -> "torch.nn.Module":  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed(self, x: "torch.Tensor") -> "torch.Tensor":  # pragma: no cover - abstract
        """(B, 3, H, W) on the device -> (B, d) descriptors."""
        raise NotImplementedError

    # -- batched contract ---------------------------------------------------------------------------
    def forward(self, batch: Any) -> np.ndarray:
        """A collated batch (tensor, list per scale, or list of per-image tensors) -> float32 (n, d).

        With several scales the descriptors of each scale are L2-normalised (when ``normalize``),
        averaged, and normalised again (multi-scale averaging as in the GeM / revisitop literature).
        """
        import torch

        parts = _split_scales(batch, torch)
        if len(parts) != len(self.preprocess.scales):
            raise ValueError(f"batch has {len(parts)} scales, the descriptor {len(self.preprocess.scales)}")
        with torch.inference_mode():
            per_scale = [self._run_part(p, torch) for p in parts]
            if len(per_scale) > 1 and self.normalize:
                per_scale = [torch.nn.functional.normalize(v, dim=1) for v in per_scale]
            out = per_scale[0] if len(per_scale) == 1 else torch.stack(per_scale).mean(0)
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def _run_part(self, part: Any, torch: Any) -> "torch.Tensor":
        if isinstance(part, torch.Tensor):
            return self._run(part, torch)
        return torch.cat([self._run(t.unsqueeze(0), torch) for t in part])  # mixed shapes: one by one

    def _run(self, x: "torch.Tensor", torch: Any) -> "torch.Tensor":
        x = x.to(self.device, dtype=self._dtype(torch), non_blocking=True)
        with exact_float32(self.device):
            out = self._embed(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"{self._what()}: model output is {got}, expected a (batch, d) tensor")
        return out.float()

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        """float32 (len(images), d): preprocess, collate and forward in batches of ``batch_size``."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        n = self.extraction_batch_size()
        for start in range(0, len(images), n):
            samples = [self.preprocess(im) for im in images[start : start + n]]
            out.append(self.forward(collate(samples)))
        return np.concatenate(out)

    # -- differentiable form (active indexing optimises images through it) ----------------------------
    def normalized(self, image: "Image.Image") -> "torch.Tensor":
        """ToTensor and the descriptor's normalisation at the image's own size: float32 (3, H, W)."""
        return self.preprocess.normalized(image)

    def embed_normalized(self, images: Sequence["torch.Tensor"]) -> "torch.Tensor":
        """Descriptors (n, d) of normalised full-size (3, H, W) tensors, differentiable with respect to
        them: each is resized as :meth:`Preprocess.resize_tensor` does, then embedded (and L2-normalised
        when ``normalize``). With ``order: normalize_first`` this is the extraction path itself."""
        import torch

        if len(self.preprocess.scales) != 1:
            raise UserError(f"{self._what()}: the differentiable form needs one scale, got {list(self.preprocess.scales)}")
        scale = self.preprocess.scales[0]
        resized = [self.preprocess.resize_tensor(x, self.preprocess.target_size(x.shape[-1], x.shape[-2], scale))
                   for x in images]
        with torch.enable_grad():
            if len({tuple(t.shape) for t in resized}) == 1:
                out = self._run(torch.stack(resized), torch)
            else:
                out = torch.cat([self._run(t.unsqueeze(0), torch) for t in resized])
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=1)
        return out

    @property
    def dim(self) -> int:
        """Output dimension (one dummy forward at the smallest input the preprocessing produces)."""
        if self._dim is None:
            import torch

            side = self.preprocess.size or 224
            x = torch.zeros(1, 3, side, side)
            self._dim = int(self.forward([x] * len(self.preprocess.scales)).shape[1])
        return self._dim

    def _what(self) -> str:
        return type(self).__name__

    def __getstate__(self) -> dict[str, Any]:
        # Never ship the network to worker processes: they only need ``preprocess``.
        state = self.__dict__.copy()
        state["_model"] = None
        state["_device"] = None
        return state


class TimmDescriptor(_TorchDescriptor):
    """Any timm architecture with local weights, pooled into a global descriptor.

    ``model`` is a timm name (``timm.list_models()``; a ``.tag`` suffix is allowed). Weights come from
    ``checkpoint`` (``.safetensors``, or a torch file read with ``weights_only=True``; wrappers such as
    ``{"state_dict": ...}`` and ``module.`` prefixes are undone, ``checkpoint_key`` picks a wrapper
    entry, a classifier head is ignored; other missing or unexpected keys are an error unless
    ``strict: false``). ``pretrained: true`` downloads timm's weights from the Hugging Face hub (needs network;
    never used in tests); with neither, the weights are a random init seeded by ``seed``.

    ``pooling``: ``gem`` (generalised mean with ``gem_p`` over the feature map or patch tokens),
    ``mean``, ``cls`` (class token of ViT-like models) or ``model`` (the model's own pooled,
    head-less output). ``size``/``resize``/``scales`` as in the literature: square, short-side or
    long-side resize, descriptors averaged over scales. ``mean``/``std`` default to the model's pretrained config.
    ``device: auto`` uses CUDA when present, else the CPU (torch's default thread count); ``half`` is float16 on GPU only.
    ``batch_size``: an integer, or per device type (``{cpu: 32, cuda: 256}``); unset, extraction uses
    the spec's ``extraction.batch_size``, else 32 on the CPU and 128 on CUDA.
    ``order``: ``resize_first`` (PIL resize, then normalisation) or ``normalize_first`` (normalisation at
    full size, then a bilinear tensor resize without antialiasing, as active indexing's reference).
    """

    def __init__(
        self,
        model: str,
        checkpoint: str | None = None,
        pretrained: bool = False,
        pooling: Pooling = "model",
        gem_p: float = 3.0,
        size: int | None = 224,
        resize: Resize = "square",
        scales: Sequence[float] = (1.0,),
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        batch_size: BatchSize = None,
        device: str = "auto",
        half: bool = False,
        normalize: bool = False,
        checkpoint_key: str | None = None,
        strict: bool = True,
        seed: int = 0,
        order: Order = "resize_first",
    ) -> None:
        cfg = _timm_config(model)
        if checkpoint is not None:
            checkpoint = existing_file(checkpoint, "checkpoint")
            if pretrained:
                raise UserError("give either checkpoint or pretrained: true, not both")
        if gem_p <= 0:
            raise UserError(f"gem_p must be > 0 (got {gem_p})")
        super().__init__(
            size=size,
            resize=resize,
            scales=scales,
            mean=mean if mean is not None else cfg.get("mean") or IMAGENET_MEAN,
            std=std if std is not None else cfg.get("std") or IMAGENET_STD,
            interpolation=cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear",
            batch_size=batch_size,
            device=device,
            half=half,
            normalize=normalize,
            order=order,
        )
        self.model_name = model
        self.checkpoint = checkpoint
        self.checkpoint_key = checkpoint_key
        self.pretrained = pretrained
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.strict = strict
        self.seed = seed
        self._classifier = cfg.get("classifier")

    def fingerprint(self) -> str:
        """sha256 of the checkpoint file (changes when the file does); otherwise the weights' origin;
        ``:float16`` appended when ``half`` takes effect."""
        if self.checkpoint is not None:
            return file_sha256(self.checkpoint) + self._precision()
        import timm
        import torch

        origin = "pretrained" if self.pretrained else f"random-init-seed{self.seed}"
        return f"{origin}:timm={timm.__version__}:torch={torch.__version__.split('+')[0]}{self._precision()}"

    def _what(self) -> str:
        return f"timm model {self.model_name!r}"

    def _build(self, device: "torch.device") -> "torch.nn.Module":
        import torch

        with torch.random.fork_rng(devices=[]):  # a reproducible random init without touching global RNG
            torch.manual_seed(self.seed)
            net = _create_timm(self.model_name, self.pretrained)
        if self.checkpoint is not None:
            self._load_weights(net)
        if self.pooling == "cls" and getattr(net, "cls_token", None) is None:
            raise UserError(
                f"pooling 'cls' needs a model with a class token; {self.model_name!r} has none "
                "(use 'gem', 'mean' or 'model')"
            )
        return net

    def _load_weights(self, net: "torch.nn.Module") -> None:
        state = load_state_dict(self.checkpoint, self.checkpoint_key)  # type: ignore[arg-type]
        # The model is built head-less (num_classes=0): a classifier in the checkpoint is expected.
        heads = (self._classifier,) if isinstance(self._classifier, str) else tuple(self._classifier or ())
        state = {k: v for k, v in state.items() if not any(k.startswith(h + ".") for h in heads)}
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            sizes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
            detail = sizes[0] if sizes else str(exc).splitlines()[0]
            more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
            raise UserError(f"{self.checkpoint}: does not fit {self._what()}: {detail}{more}") from None
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if (missing or unexpected) and self.strict:
            raise UserError(
                f"{self.checkpoint}: does not fit {self._what()}: "
                + "; ".join(
                    f"{len(keys)} {what} keys (e.g. {', '.join(keys[:3])})"
                    for what, keys in (("missing", missing), ("unexpected", unexpected))
                    if keys
                )
                + " (strict: false loads it anyway)"
            )
        if missing or unexpected:
            warnings.warn(
                f"{self.checkpoint}: {len(missing)} missing and {len(unexpected)} unexpected keys ignored",
                stacklevel=2,
            )

    def _embed(self, x: "torch.Tensor") -> "torch.Tensor":
        net = self.model
        if self.pooling == "model":
            return net(x)
        feats = net.forward_features(x)
        if feats.ndim == 4:  # feature map; NCHW unless the model says otherwise (swin: NHWC)
            if getattr(net, "output_fmt", "NCHW") == "NHWC":
                feats = feats.permute(0, 3, 1, 2)
            if self.pooling == "cls":  # pragma: no cover - models with cls_token return tokens
                raise UserError(f"pooling 'cls' needs tokens; {self._what()} returns a feature map")
            if self.pooling == "mean":
                return feats.float().mean(dim=(2, 3))
            return _gem(feats.flatten(2), self.gem_p, dim=2)
        if feats.ndim == 3:  # tokens (B, N, C): prefix tokens (class, registers) first
            if self.pooling == "cls":
                return feats[:, 0]
            prefix = int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None else 0))
            patches = feats[:, prefix:]
            if self.pooling == "mean":
                return patches.float().mean(dim=1)
            return _gem(patches, self.gem_p, dim=1)
        raise UserError(f"{self._what()}: forward_features returned shape {tuple(feats.shape)}; use pooling 'model'")


class TorchScriptDescriptor(_TorchDescriptor):
    """A TorchScript export (SSCD-style): image batch -> (n, d) descriptors, L2-normalised by default.

    Loaded with ``torch.jit.load`` on the chosen device. Preprocessing: ``size`` with ``square``,
    ``short_side`` or ``long_side`` resize (SSCD evaluates at 288 on the short side, or 320 x 320),
    ImageNet ``mean`` and ``std`` unless given. ``order`` as for ``timm`` (``normalize_first``: active
    indexing's ToTensor, normalisation, then resize to 288 x 288).
    """

    def __init__(
        self,
        path: str,
        size: int | None = 288,
        resize: Resize = "square",
        scales: Sequence[float] = (1.0,),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: BatchSize = None,
        device: str = "auto",
        half: bool = False,
        normalize: bool = True,
        order: Order = "resize_first",
    ) -> None:
        path = existing_file(path, "TorchScript")
        super().__init__(
            size=size, resize=resize, scales=scales, mean=mean, std=std,
            batch_size=batch_size, device=device, half=half, normalize=normalize, order=order,
        )
        self.path = path

    def fingerprint(self) -> str:
        """sha256 of the TorchScript file (``:float16`` appended when ``half`` takes effect)."""
        return file_sha256(self.path) + self._precision()

    def _what(self) -> str:
        return f"TorchScript model {self.path}"

    def _build(self, device: "torch.device") -> "torch.nn.Module":
        import torch

        try:
            with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; it is the format
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(self.path, map_location=device)
        except Exception as exc:  # noqa: BLE001 - a bad user file
            line = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise UserError(f"{self.path}: not a loadable TorchScript file ({line.strip()})") from None

    def _embed(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.model(x)


# -- helpers ------------------------------------------------------------------------------------------
def _gem(x: "torch.Tensor", p: float, dim: int, eps: float = 1e-6) -> "torch.Tensor":
    """Generalised mean pooling (Radenovic et al.): (mean of clamp(x)^p)^(1/p) along ``dim``; in
    float32 (a no-op for float32 input): float16 underflows at eps^p and overflows x^3 above 40."""
    return x.float().clamp(min=eps).pow(p).mean(dim=dim).pow(1.0 / p)


def _split_scales(batch: Any, torch: Any) -> list[Any]:
    """One entry per scale: a (B, 3, H, W) tensor, or a list of (3, H, W) tensors of mixed shapes."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    items = list(batch)
    if items and all(isinstance(t, torch.Tensor) and t.ndim == 3 for t in items):
        return [items]  # one scale, images of mixed shapes
    return items


def _timm_config(name: str) -> dict[str, Any]:
    """Check ``name`` against timm's registry (did-you-mean on failure); return its pretrained config."""
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        base = str(name).split(".")[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise UserError(f"unknown timm model {name!r}{hint}; see timm.list_models()")
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _create_timm(name: str, pretrained: bool) -> "torch.nn.Module":
    import timm

    # ViT-like models take any input size only with dynamic_img_size (multi-scale, short-side resize);
    # architectures without that option reject the keyword, and are size-agnostic anyway.
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, dynamic_img_size=True)
    except TypeError as exc:
        if "dynamic_img_size" not in str(exc):
            raise
    return timm.create_model(name, pretrained=pretrained, num_classes=0)
