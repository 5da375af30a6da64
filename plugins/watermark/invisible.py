"""Bit-string watermarks of the ``invisible-watermark`` package (the one Stable Diffusion ships):
DWT-DCT (``dwtDct``), DWT-DCT-SVD (``dwtDctSvd``) and RivaGAN (its encoder/decoder ONNX models ship
inside the wheel; they run on onnxruntime, which the package needs but does not declare).

The message is ``bits`` bits derived from the key (RivaGAN: always 32). Detection decodes the bits;
score = number of bits equal to the key's message, p-value = P[Bin(k, 1/2) >= score] (one-sided
binomial test, stats.py). Images are handed to the library in BGR order, as it reads them with cv2.
The library refuses to embed into images under 256 x 256 pixels of area; detection takes any size
(attacks shrink images), bits with no block to vote decode as 0.

onnxruntime writes a telemetry file (~/.cache/Microsoft/DeveloperTools/.onnxruntime) when it is
imported unless ``ORT_DISABLE_TELEMETRY=1`` is set first: :func:`onnxruntime_module` sets it.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from harness.errors import UserError
from harness.params import PositiveInt

from . import keys as keymod
from .batching import size_groups
from .detections import Detection
from .stats import binomial_pvalue

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

MIN_AREA = 256 * 256  # the library's own limit for embedding


def onnxruntime_module() -> Any:
    """onnxruntime, imported with its telemetry off (the variable must be set before the import)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # too late if another module imported it first: see __init__
    try:
        import onnxruntime
    except ImportError:
        raise UserError("rivagan needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("invisible-watermark")
    except metadata.PackageNotFoundError:
        raise UserError("the invisible-watermark methods need the package: pip install invisible-watermark") from None


def _bgr(image: "Image.Image") -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _rgb_image(bgr: np.ndarray) -> "Image.Image":
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB")


class _BitString:
    version = "1"
    method = ""
    k = 32

    def message(self, key: int) -> np.ndarray:
        """The key's message bits (uint8 0/1)."""
        return keymod.message_bits(key, self.k)

    def fingerprint(self) -> str:
        return f"invisible-watermark=={_package_version()}:{self.method}"

    def _check_embed_size(self, image: "Image.Image") -> None:
        w, h = image.size
        if w * h < MIN_AREA:
            raise UserError(f"{self.method}: cannot embed into a {w}x{h} image (invisible-watermark needs at least 256x256 pixels of area)")

    def embed(self, image: "Image.Image", key: int) -> "Image.Image":
        return self.embed_batch([image], [key])[0]

    def detect(self, image: "Image.Image", key: int) -> Detection:
        return self.detect_batch([image], [key])[0]

    def embed_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list["Image.Image"]:
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        for im in images:
            self._check_embed_size(im)
        return [_rgb_image(self._encode(_bgr(im), self.message(k))) for im, k in zip(images, keys)]

    def detect_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list[Detection]:
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        bits = [self._decode(_bgr(im)) for im in images]
        return self._detections(bits, keys)

    def _detections(self, bits: Sequence[np.ndarray], keys: Sequence[int]) -> list[Detection]:
        out = []
        for b, key in zip(bits, keys):
            b = np.asarray(b, dtype=np.uint8).ravel()
            m = int((b == self.message(key)).sum())
            out.append(Detection(score=float(m), bits=b, p_value=float(binomial_pvalue(m, self.k))))
        return out

    def _encode(self, bgr: np.ndarray, bits: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, bgr: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _Dwt(_BitString):
    def __init__(self, bits: PositiveInt = 32, scale: float = 36.0) -> None:
        if scale <= 0:
            raise UserError(f"scale must be > 0 (got {scale})")
        _package_version()
        self.k = int(bits)
        self.scale = float(scale)

    def fingerprint(self) -> str:
        return super().fingerprint() + f":bits={self.k}:scale={self.scale:g}"

    def _codec(self, bits: Sequence[int]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_embed_size(self, image: "Image.Image") -> None:
        super()._check_embed_size(image)
        w, h = image.size
        blocks = (h // 2 // 4) * (w // 2 // 4)  # 4x4 blocks of the half-size DWT band
        if blocks < self.k:
            raise UserError(f"{self.method}: a {w}x{h} image has {blocks} blocks, fewer than the {self.k} message bits")

    def _encode(self, bgr: np.ndarray, bits: np.ndarray) -> np.ndarray:
        return self._codec([int(b) for b in bits]).encode(bgr.copy())

    def _decode(self, bgr: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # bits without a block average an empty list
            return np.asarray(self._codec([]).decode(bgr.copy()), dtype=np.uint8)


class DwtDct(_Dwt):
    """invisible-watermark's DWT-DCT (dwtDct): message bits in the largest DCT coefficient of 4x4 blocks of the U channel's DWT band."""

    method = "dwtDct"

    def _codec(self, bits: Sequence[int]) -> Any:
        from imwatermark.maxDct import EmbedMaxDct

        return EmbedMaxDct(list(bits), wmLen=self.k, scales=[0, self.scale, 0], block=4)


class DwtDctSvd(_Dwt):
    """invisible-watermark's DWT-DCT-SVD (dwtDctSvd): message bits in the top singular value of DCT'd 4x4 blocks of the U channel's DWT band."""

    method = "dwtDctSvd"

    def _codec(self, bits: Sequence[int]) -> Any:
        from imwatermark.dwtDctSvd import EmbedDwtDctSvd

        return EmbedDwtDctSvd(list(bits), wmLen=self.k, scales=[0, self.scale, 0], block=4)


class RivaGAN(_BitString):
    """RivaGAN (Zhang et al. 2019) from invisible-watermark: a 32-bit message by a learned encoder/decoder; the ONNX models ship in the wheel."""

    method = "rivaGan"
    k = 32
    threshold = 0.52  # the library's decision threshold on the decoder's outputs
    _sessions: dict[str, Any] = {}

    def __init__(self, batch_size: PositiveInt = 4) -> None:
        _package_version()
        self.batch_size = int(batch_size)

    def fingerprint(self) -> str:
        from harness_plugins.timm.checkpoint import file_sha256

        return super().fingerprint() + ":" + ",".join(f"{n}-sha256={file_sha256(self._model_path(n))[:16]}" for n in ("encoder", "decoder"))

    @staticmethod
    def _model_path(which: str) -> str:
        import importlib.util

        spec = importlib.util.find_spec("imwatermark")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("rivagan needs the invisible-watermark package: pip install invisible-watermark")
        path = os.path.join(list(spec.submodule_search_locations)[0], f"rivagan_{which}.onnx")
        if not os.path.isfile(path):
            raise UserError(f"{path}: RivaGAN model missing from the invisible-watermark installation")
        return path

    def _session(self, which: str) -> Any:
        if which not in self._sessions:
            ort = onnxruntime_module()
            RivaGAN._sessions[which] = ort.InferenceSession(self._model_path(which), providers=["CPUExecutionProvider"])
        return self._sessions[which]

    @staticmethod
    def _frames(bgrs: Sequence[np.ndarray]) -> np.ndarray:
        # (B, 3, 1, H, W) in [-1, 1], the library's layout (a one-frame video)
        x = np.stack(bgrs).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)[:, :, None])

    def embed_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list["Image.Image"]:
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        for im in images:
            self._check_embed_size(im)
        out: list[Any] = [None] * len(images)
        enc = self._session("encoder")
        for rows in size_groups(images, self.batch_size):
            frames = self._frames([_bgr(images[i]) for i in rows])
            data = np.stack([self.message(keys[i]) for i in rows]).astype(np.float32)
            y = enc.run(None, {"frame": frames, "data": data})[0]
            pix = ((np.clip(y, -1.0, 1.0)[:, :, 0].transpose(0, 2, 3, 1) + 1.0) * 127.5).astype(np.uint8)  # truncation, as the library
            for i, p in zip(rows, pix):
                out[i] = _rgb_image(p)
        return out

    def detect_batch(self, images: Sequence["Image.Image"], keys: Sequence[int]) -> list[Detection]:
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images for {len(keys)} keys")
        bits: list[Any] = [None] * len(images)
        dec = self._session("decoder")
        for rows in size_groups(images, self.batch_size):
            y = dec.run(None, {"frame": self._frames([_bgr(images[i]) for i in rows])})[0]
            for i, v in zip(rows, y):
                bits[i] = (v > self.threshold).astype(np.uint8)
        return self._detections(bits, keys)

