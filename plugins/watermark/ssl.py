"""SSL watermarking (Fernandez et al., "Watermarking Images in Self-Supervised Latent Spaces", 2022).

The image is optimised so that its feature, under a fixed descriptor network, carries the mark:

- zero-bit (``bits: 0``): the feature enters the dual hypercone around the key's carrier a; loss
  -(rho (f.a)^2 - |f|^2) with rho = 1 / cos^2(theta), theta the angle whose analytic FPR is ``fpr``.
  Detection: score = |cos(f, a)|, p-value = I_{1-c^2}((D-1)/2, 1/2) (two-sided, see stats.py).
- multi-bit (``bits: K``): K orthonormal carriers a_k, bit k = [f.a_k > 0]; loss
  sum_k max(0, margin - (f.a_k) s_k) / K with s_k = +-1 the message signs. Detection: the decoded
  bits, score = number matching the key's message, p-value = P[Bin(K, 1/2) >= score].

Marking: Adam (``lr``) on the normalised image for ``steps`` steps; each step the current image is
SSIM-attenuated, clipped to the target PSNR, then augmented (one random augmentation per image and
step, drawn from a generator derived from the key), and the loss lambda_w * watermark + lambda_i *
|x - x0|^2 is minimised; at the end the image is attenuated, clipped and rounded to 8 bits. Images
are processed at their own resolution (batches group images of one size; augmented views of equal
shape share a forward pass), on CUDA when available.

Secrets: carriers and message come from the key (keys.py); with ``carrier_key`` set, every image
uses the carriers of that key (the paper's setting: one secret direction for all images) and the
key still chooses each image's message.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from harness.errors import UserError
from harness.params import NonNegativeInt, PositiveInt
from harness_plugins.torch_device import DEVICE_TYPES, BatchSize, BatchSizes

from . import keys as keymod
from .batching import size_groups
from .detections import Detection
from .stats import binomial_pvalue, hypercone_pvalue, hypercone_threshold

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

Pooling = Literal["gem", "mean", "cls", "model"]
Detector = Literal["auto", "torch", "onnxruntime"]


@lru_cache(maxsize=4096)
def _carriers(key: int, k: int, dim: int) -> np.ndarray:
    out = keymod.carriers(key, k, dim)
    out.setflags(write=False)
    return out


def load_whitening(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight (d_out, d_in), bias (d_out,) or None) from .npy (weight only), .npz or .safetensors
    (``weight`` and optional ``bias``). Never unpickles."""
    from harness.submissions import check_file

    path = os.path.expanduser(path)
    check_file(path, 1 << 30)
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            arrays: dict[str, np.ndarray] = dict(load_file(path))
        else:
            loaded = np.load(path, allow_pickle=False)
            arrays = {"weight": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad user file
        raise UserError(f"{path}: not a readable whitening file ({type(exc).__name__}: {exc})") from None
    unknown = sorted(set(arrays) - {"weight", "bias"})
    if "weight" not in arrays or unknown:
        raise UserError(f"{path}: expected arrays 'weight' and optional 'bias', found {sorted(arrays)}")
    w = np.asarray(arrays["weight"], dtype=np.float64)
    b = arrays.get("bias")
    if w.ndim != 2 or min(w.shape) < 1:
        raise UserError(f"{path}: weight must be a (d_out, d_in) matrix, got shape {w.shape}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (w.shape[0],):
            raise UserError(f"{path}: bias has shape {b.shape}, expected ({w.shape[0]},)")
    if not np.isfinite(w).all() or (b is not None and not np.isfinite(b).all()):
        raise UserError(f"{path}: whitening holds NaN or inf")
    return w.astype(np.float32), None if b is None else b.astype(np.float32)


class SSLWatermarker:
    """SSL watermarking: marks by optimising the image in a descriptor's feature space (zero-bit hypercone or K-bit).

    Backbone: any timm ``model`` with a local ``checkpoint`` (safetensors or weights-only torch file),
    or a random initialisation seeded by ``seed`` (labelled ``random_init`` in its identity; the
    paper's is a DINO ResNet-50). ``whitening``: optional linear map applied to the backbone feature
    (.npy matrix, or .npz / .safetensors with ``weight`` and ``bias``), scaled by ``whitening_scale``
    (default d_in, as the reference scales its PCA whitening). ``bits``: 0 = zero-bit. ``fpr``: the
    false-positive rate whose hypercone the zero-bit loss aims for (detection reports the p-value;
    thresholds are the metrics'). ``psnr``: target in dB. ``steps``/``lr``/``lambda_w``/``lambda_i``/
    ``margin``: the optimisation (paper: 100 steps, Adam lr 0.01, margin 5; with an unwhitened
    backbone the image term outweighs the watermark term, lower ``lambda_i`` then). ``augment``/
    ``attenuate``: the per-step augmentation and the SSIM attenuation. Batches hold at most
    ``batch_size`` images of one size (an integer, or per device type: ``{cpu: 8, cuda: 32}``) and
    ``max_batch_pixels`` pixels (default 512 x 512 on CPU). ``device`` as for ``timm``.
    ``detector``: what runs detection's forward passes: ``auto`` = onnxruntime on the CPU (the same
    network exported once per run; torch if it does not export), torch on GPU; ``torch`` or
    ``onnxruntime`` to choose.
    """

    version = "2"  # 2: detection on onnxruntime on the CPU (features equal to float32 rounding)

    def __init__(
        self,
        model: str = "resnet50",
        checkpoint: str | None = None,
        checkpoint_key: str | None = None,
        pooling: Pooling = "model",
        whitening: str | None = None,
        whitening_scale: float | None = None,
        bits: NonNegativeInt = 0,
        fpr: float = 1e-6,
        psnr: float = 42.0,
        steps: NonNegativeInt = 100,
        lr: float = 0.01,
        lambda_w: float = 1.0,
        lambda_i: float = 1.0,
        margin: float = 5.0,
        augment: bool = True,
        attenuate: bool = True,
        carrier_key: int | None = None,
        batch_size: BatchSize = 8,
        max_batch_pixels: PositiveInt | None = None,
        device: str = "auto",
        detector: Detector = "auto",
        seed: int = 0,
    ) -> None:
        from harness_plugins.timm.descriptors import TimmDescriptor

        if not 0.0 < fpr < 1.0:
            raise UserError(f"fpr must be in (0, 1) (got {fpr})")
        if lr <= 0:
            raise UserError(f"lr must be > 0 (got {lr})")
        self.batch_sizes = BatchSizes.parse(batch_size, {t: 8 for t in DEVICE_TYPES})
        self.backbone = TimmDescriptor(model=model, checkpoint=checkpoint, checkpoint_key=checkpoint_key, pooling=pooling,
                                       size=None, device=device, seed=seed, batch_size=dict(self.batch_sizes.sizes))
        self.model_name = model
        self.checkpoint = self.backbone.checkpoint
        self.whitening_path = os.path.expanduser(whitening) if whitening else None
        self._whitening = load_whitening(self.whitening_path) if self.whitening_path else None
        if whitening_scale is not None and whitening is None:
            raise UserError("whitening_scale needs a whitening file")
        self.whitening_scale = whitening_scale
        self.bits = int(bits)
        self.fpr = float(fpr)
        self.target_psnr = float(psnr)
        self.steps = int(steps)
        self.lr = float(lr)
        self.lambda_w, self.lambda_i, self.margin = float(lambda_w), float(lambda_i), float(margin)
        self.augment, self.attenuate = bool(augment), bool(attenuate)
        self.carrier_key = carrier_key
        self._max_batch_pixels = max_batch_pixels
        self.seed = seed
        self._head: Any = None
        self._dim: int | None = None
        self._window: Any = None
        self._channels_last = False
        self.detector = detector
        self._onnx: Any = None  # the exported detector, False once export failed
        self.onnx_fallback: str | None = None  # why detection stayed on torch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_onnx"] = None  # an onnxruntime session does not pickle; a copy exports again
        return state

    # -- identity ---------------------------------------------------------------------------------
    @property
    def backbone_label(self) -> str:
        origin = "checkpoint" if self.checkpoint else f"random_init(seed={self.seed})"
        return f"timm:{self.model_name}:{origin}" + (":whitened" if self._whitening else "")

    def fingerprint(self) -> str:
        from harness_plugins.timm.checkpoint import file_sha256

        parts = [f"timm:{self.model_name}"]
        parts.append(f"checkpoint-sha256={file_sha256(self.checkpoint)}" if self.checkpoint else f"random_init(seed={self.seed})")
        if self.whitening_path:
            parts.append(f"whitening-sha256={file_sha256(self.whitening_path)}")
        return "|".join(parts)

    # -- features -----------------------------------------------------------------------------------
    @property
    def device(self) -> "torch.device":
        return self.backbone.device

    @property
    def batch_size(self) -> int:
        """Images per batch on :attr:`device`."""
        return self.batch_sizes.for_device(self.device)

    def _norm_consts(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        mean = torch.tensor(self.backbone.preprocess.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone.preprocess.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        return mean, std

    def _to_tensor(self, images: Sequence["Image.Image"]) -> "torch.Tensor":
        import torch

        mean, std = self._norm_consts()
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]).transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device) / 255.0
        return (x - mean) / std

    def _to_images(self, x: "torch.Tensor") -> list["Image.Image"]:
        from PIL import Image

        mean, std = self._norm_consts()
        pix = torch_round_pixels(x, mean, std)
        arr = pix.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        return [Image.fromarray(a, "RGB") for a in arr]

    def features(self, x: "torch.Tensor") -> "torch.Tensor":
        """(B, 3, H, W) normalised images -> (B, D) features (whitened when configured), differentiable."""
        import torch

        self._prepare_model()
        return self._head_of(self.backbone._embed(x.contiguous(memory_format=torch.channels_last)).float())

    def _head_of(self, f: "torch.Tensor") -> "torch.Tensor":
        """The whitening head (when configured) over backbone features."""
        import torch

        if self._whitening is not None:
            if self._head is None:
                w, b = self._whitening
                if w.shape[1] != f.shape[1]:
                    raise UserError(f"{self.whitening_path}: weight takes {w.shape[1]}-d input, the backbone gives {f.shape[1]}-d features")
                scale = float(self.whitening_scale if self.whitening_scale is not None else w.shape[1])
                wt = torch.from_numpy(w).to(self.device) * scale
                bt = None if b is None else torch.from_numpy(b).to(self.device) * scale
                self._head = (wt, bt)
            wt, bt = self._head
            f = f @ wt.T + (bt if bt is not None else 0.0)
        return f

    def _prepare_model(self) -> None:
        """Build the network outside inference mode (its weights serve autograd when marking) and
        switch it to channels-last, which CPU convolutions run about 2.5x faster on batches."""
        if not self._channels_last:
            import torch

            self.backbone.model.to(memory_format=torch.channels_last)
            self._channels_last = True

    @property
    def dim(self) -> int:
        if self._dim is None:
            import torch

            self._prepare_model()
            with torch.no_grad():
                self._dim = int(self.features(torch.zeros(1, 3, 64, 64, device=self.device)).shape[1])
            if self._dim < 2:
                raise UserError(f"{self.backbone_label}: feature dimension {self._dim} is too small for the hypercone test")
            if self.bits > self._dim:
                raise UserError(f"bits: {self.bits} carriers do not fit in the {self._dim}-d feature space")
        return self._dim

    @property
    def max_batch_pixels(self) -> int | None:
        """Pixel cap per batch: on CPU 512 x 512 by default (larger batches of large images run slower
        there: the activations leave the caches), none on GPU."""
        if self._max_batch_pixels is not None:
            return int(self._max_batch_pixels)
        return None if self.device.type == "cuda" else 512 * 512

    # -- secrets --------------------------------------------------------------------------------------
    def message(self, key: int) -> np.ndarray | None:
        """The key's message bits (uint8, length ``bits``), None for zero-bit."""
        return keymod.message_bits(key, self.bits) if self.bits else None

    def carriers(self, key: int) -> np.ndarray:
        """(K, D) orthonormal carriers of a key (K = max(bits, 1))."""
        return _carriers(int(self.carrier_key if self.carrier_key is not None else key), max(self.bits, 1), self.dim)

    # -- embedding ----------------------------------------------------------------------------------
    def embed(self, image: "Image.Image", key: int) -> "Image.Image":
        return self.embed_batch([image], [key])[0]

    def embed_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list["Image.Image"]:
        """Marked copies of ``images`` (same sizes), in order; batches group images of one size."""
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        out: list[Any] = [None] * len(images)
        for rows in size_groups(images, self.batch_size, self.max_batch_pixels):
            marked = self._embed_group([images[i] for i in rows], [keys[i] for i in rows])
            for i, im in zip(rows, marked):
                out[i] = im
        return out

    def _embed_group(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list["Image.Image"]:
        import torch

        from .ssl_marking import augment, gaussian_window, output_shape, psnr_clip, sample_augmentation, ssim_attenuation

        dev = self.device
        _, std = self._norm_consts()
        std255 = std * 255.0
        if self._window is None:
            self._window = torch.from_numpy(gaussian_window()).to(dev).expand(3, 1, 17, 17).contiguous()
        window = self._window
        x0 = self._to_tensor(images)
        cars = torch.from_numpy(np.stack([self.carriers(k) for k in keys]).astype(np.float32)).to(dev)  # (B, K, D)
        if self.bits:
            signs = torch.from_numpy(np.stack([self.message(k) for k in keys]).astype(np.float32) * 2 - 1).to(dev)
        else:
            cos_theta = hypercone_threshold(self.dim, self.fpr)
            rho = 1.0 / cos_theta**2  # 1 + tan^2(theta)
        rngs = [keymod.key_rng(k, "ssl-augment") for k in keys]
        h, w = x0.shape[-2:]

        def constrain(x: "torch.Tensor") -> "torch.Tensor":
            if self.attenuate:
                x = ssim_attenuation(x, x0, window)
            return psnr_clip(x, x0, std255, self.target_psnr)

        x = x0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=self.lr)
        for _ in range(self.steps):
            xc = constrain(x)
            if self.augment:
                augs = [sample_augmentation(r, h, w) for r in rngs]
                feats = self._grouped_features(
                    [augment(xc[i : i + 1], a) for i, a in enumerate(augs)], [output_shape(a, h, w) for a in augs]
                )
            else:
                feats = self.features(xc)
            dots = torch.einsum("bd,bkd->bk", feats, cars)
            if self.bits:
                loss_w = (self.margin - dots * signs).clamp_min(0).sum(dim=1) / self.bits
            else:
                loss_w = -(rho * dots[:, 0] ** 2 - (feats**2).sum(dim=1))
            loss_i = ((x - x0) ** 2).sum(dim=(1, 2, 3))
            loss = (self.lambda_w * loss_w + self.lambda_i * loss_i).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return self._to_images(constrain(x.detach()))

    def _grouped_features(self, views: list["torch.Tensor"], shapes: list[tuple[int, int]]) -> "torch.Tensor":
        """Features of views of mixed shapes: one forward per distinct shape, rows back in order."""
        import torch

        order: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(shapes):
            order.setdefault(tuple(s), []).append(i)
        rows, feats = [], []
        for idx in order.values():
            rows += idx
            feats.append(self.features(torch.cat([views[i] for i in idx])))
        f = torch.cat(feats)
        inverse = torch.empty(len(rows), dtype=torch.long, device=f.device)
        inverse[torch.tensor(rows, device=f.device)] = torch.arange(len(rows), device=f.device)
        return f[inverse]

    # -- detection ----------------------------------------------------------------------------------
    def detect(self, image: "Image.Image", key: int) -> Detection:
        return self.detect_batch([image], [key])[0]

    def detect_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list[Detection]:
        """One :class:`Detection` per image; batches group images of one size."""
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        feats = self.detect_features(images)
        return self.decide(feats, keys)

    def detect_features(self, images: Sequence["Image.Image"]) -> np.ndarray:
        """(n, D) float64 features of the images at their own resolution (inference mode)."""
        import torch

        out = np.zeros((len(images), self.dim), dtype=np.float64)  # (self.dim builds the model first)
        onnx = self._onnx_detector(images)
        with torch.inference_mode():
            for rows in size_groups(images, self.batch_size, self.max_batch_pixels):
                x = self._to_tensor([images[i] for i in rows])
                f = self.features(x) if onnx is None else self._head_of(torch.from_numpy(onnx(x.numpy())).to(self.device))
                out[rows] = f.double().cpu().numpy()
        return out

    def _onnx_detector(self, images: Sequence["Image.Image"]) -> Any:
        """The onnxruntime detector when ``detector`` asks for it (exported on first use), else None."""
        if self.detector == "torch" or (self.detector == "auto" and self.device.type != "cpu") or not images:
            return None
        if self._onnx is None:
            import torch

            from .onnx_features import export

            self._prepare_model()
            example = self._to_tensor([images[0]])
            self._onnx, why = export(self.backbone.model, self.backbone._embed, example, torch.get_num_threads())
            if self._onnx is None:
                if self.detector == "onnxruntime":
                    raise UserError(f"{self.backbone_label}: detector onnxruntime: the network does not export ({why})")
                self._onnx, self.onnx_fallback = False, why
        return self._onnx or None

    def decide(self, feats: np.ndarray, keys: Sequence[int]) -> list[Detection]:
        """Detections from features: hypercone p-values (zero-bit) or decoded bits (multi-bit)."""
        dots = np.stack([self.carriers(k) @ f for f, k in zip(feats, keys)]) if len(keys) else np.zeros((0, 1))
        if not self.bits:
            norms = np.linalg.norm(feats, axis=1)
            cos = np.abs(dots[:, 0]) / np.where(norms > 0, norms, 1.0)
            p = hypercone_pvalue(cos, self.dim)
            return [Detection(score=float(c), p_value=float(pv)) for c, pv in zip(cos, p)]
        bits = (dots > 0).astype(np.uint8)
        msgs = np.stack([self.message(k) for k in keys])
        matches = (bits == msgs).sum(axis=1)
        p = binomial_pvalue(matches, self.bits)
        return [Detection(score=float(m), bits=b, p_value=float(pv)) for m, b, pv in zip(matches, bits, p)]


def torch_round_pixels(x: "torch.Tensor", mean: "torch.Tensor", std: "torch.Tensor") -> "torch.Tensor":
    """Normalised images -> 8-bit pixel values (float tensor of integers in 0..255)."""
    return (255.0 * (x * std + mean)).round().clamp(0, 255)

