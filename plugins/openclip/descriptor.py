"""open_clip image + text encoders (any architecture open_clip knows, or a local config file), with
weights from a local checkpoint or a labelled random initialisation. Never touches a hub.

Offline by construction: the model is built from its config by this module (open_clip's
``create_model`` would fetch configs, weights or tokenizers from the Hugging Face hub for some names),
the tokenizer is open_clip's own BPE ``SimpleTokenizer`` whose vocabulary ships in the wheel, and
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` are set before open_clip is imported so that anything
that still reached for the hub would fail at once instead of retrying for about 46 s. Architectures
whose text tower or tokenizer lives on the hub (``hf_model_name`` / ``hf_tokenizer_name`` in the
config, SigLIP's tokenizers) are refused with one line: transformers' CLIP tokenizer, offline, quietly
yields a 2-token vocabulary, and we never fall back to anything.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import UserError
from harness_plugins.torch_device import BatchSize, BatchSizes, OnDevice, check_device, exact_float32

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

#: The vocabulary of CLIP's BPE tokenizer (bpe_simple_vocab_16e6: 49,152 merges + specials).
CLIP_VOCAB_SIZE = 49408
MAX_CONFIG_BYTES = 1024 * 1024


def import_open_clip() -> Any:
    """open_clip, imported with the hub switched off (set before the first import of huggingface_hub)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported earlier (e.g. by timm): flip its flag too
        constants.HF_HUB_OFFLINE = True
    import open_clip

    return open_clip


@dataclass(frozen=True)
class ClipPreprocess:
    """open_clip's evaluation transform (resize, centre crop, normalise), as a small picklable object:
    the torchvision pipeline is rebuilt lazily in each process from these numbers."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __call__(self, image: "Image.Image") -> "torch.Tensor":
        return self._transform()(image.convert("RGB") if image.mode != "RGB" else image)

    def _transform(self) -> Any:
        t = self.__dict__.get("_t")
        if t is None:
            from open_clip.transform import image_transform

            t = image_transform(self.size, is_train=False, mean=self.mean, std=self.std,
                                resize_mode=self.resize_mode, interpolation=self.interpolation)
            object.__setattr__(self, "_t", t)
        return t

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_t"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class OpenClipDescriptor(OnDevice):
    """An open_clip model (image and text towers) from a local checkpoint, or a labelled random init.

    ``model``: an open_clip architecture name (``open_clip.list_models()``, e.g. ``ViT-B-32``; OpenAI's
    CLIP weights need the ``-quickgelu`` variant, e.g. ``ViT-B-32-quickgelu``). ``config``: a local
    JSON model config in open_clip's format (``embed_dim``, ``vision_cfg``, ``text_cfg``) instead of a
    built-in one; ``model`` is then only its label. ``checkpoint``: a local state dict
    (``.safetensors``, or a torch file read with ``weights_only=True``), e.g. open_clip's
    ``open_clip_model.safetensors``; None = random init seeded by ``seed`` (fingerprint
    ``random_init:...``). ``size`` overrides the input resolution (position embeddings of the
    checkpoint are interpolated as open_clip does). ``normalize``: unit-norm outputs (default);
    ``false`` gives the raw ``encode_image`` / ``encode_text`` outputs (what SIMAT's heads expect).
    ``device``, ``batch_size`` (an integer or per device type, ``{cpu: 32, cuda: 256}``) as for
    ``timm`` (:mod:`harness_plugins.torch_device`); float32 on every device.
    """

    version = "1"

    def __init__(
        self,
        model: str,
        checkpoint: str | None = None,
        config: str | None = None,
        size: int | None = None,
        normalize: bool = True,
        batch_size: BatchSize = None,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        open_clip = import_open_clip()
        self.batch_sizes = BatchSizes.parse(batch_size)
        check_device(device)
        if size is not None and size < 1:
            raise UserError(f"size must be a positive number of pixels (got {size})")
        if checkpoint is not None:
            from harness_plugins.timm.checkpoint import existing_file

            checkpoint = existing_file(checkpoint, "checkpoint")
        self.model_name = model
        self.config_path = os.path.expanduser(config) if config else None
        self._cfg = _model_config(open_clip, model, self.config_path)
        _refuse_hub(self._cfg, model)
        if size is not None:
            self._cfg["vision_cfg"]["image_size"] = size
        image_size = self._cfg["vision_cfg"].get("image_size", 224)
        if not isinstance(image_size, int):
            raise UserError(f"open_clip model {model!r}: non-square image_size {image_size} is not supported")
        pre = dict(self._cfg.get("preprocess_cfg") or {})
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.preprocess = ClipPreprocess(
            size=image_size,
            mean=tuple(pre.get("mean", OPENAI_DATASET_MEAN)),
            std=tuple(pre.get("std", OPENAI_DATASET_STD)),
            interpolation=pre.get("interpolation", "bicubic"),
            resize_mode=pre.get("resize_mode", "shortest"),
        )
        self.checkpoint = checkpoint
        self.normalize = normalize
        self.device_name = device
        self.seed = seed
        self._model: Any = None
        self._device: Any = None
        self._tokenizer: Any = None

    # -- identity -------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """``checkpoint:<sha256>`` or ``random_init:seed<N>:...``, plus the config file's hash if any."""
        import open_clip
        import torch

        from harness_plugins.timm.checkpoint import file_sha256

        cfg = f":config={file_sha256(self.config_path)}" if self.config_path else ""
        if self.checkpoint is not None:
            return f"checkpoint:{file_sha256(self.checkpoint)}{cfg}"
        return (f"random_init:seed{self.seed}:open_clip={open_clip.__version__}:"
                f"torch={torch.__version__.split('+')[0]}{cfg}")

    # -- model ----------------------------------------------------------------------------------------
    @property
    def model(self) -> "torch.nn.Module":
        if self._model is None:
            import torch

            net = self._build(torch)
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            self._model = net.to(self.device)
        return self._model

    def _build(self, torch: Any) -> "torch.nn.Module":
        open_clip = import_open_clip()
        cfg = copy.deepcopy(self._cfg)
        cfg.pop("preprocess_cfg", None)
        custom_text = bool(cfg.pop("custom_text", False))
        if "timm_model_name" in cfg["vision_cfg"]:
            cfg["vision_cfg"]["timm_model_pretrained"] = False  # never timm's hub weights
        cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
        with torch.random.fork_rng(devices=[]):  # reproducible random init without touching global RNG
            torch.manual_seed(self.seed)
            try:
                net = cls(**cfg)
            except (TypeError, ValueError, KeyError, AssertionError) as exc:
                raise UserError(f"open_clip model {self.model_name!r}: cannot build from its config "
                                f"({type(exc).__name__}: {exc})") from None
        if self.checkpoint is not None:
            self._load_weights(net, custom_text, open_clip)
        return net

    def _load_weights(self, net: Any, custom_text: bool, open_clip: Any) -> None:
        from harness_plugins.timm.checkpoint import load_state_dict

        state = load_state_dict(self.checkpoint)  # type: ignore[arg-type]
        if custom_text and "text_projection" in state:
            state = open_clip.model.convert_to_custom_text_state_dict(state)
        state = dict(state)
        open_clip.model.resize_pos_embed(state, net)  # no-op unless ``size`` changed the grid
        if hasattr(open_clip.model, "resize_text_pos_embed"):
            open_clip.model.resize_text_pos_embed(state, net)
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            sizes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
            detail = sizes[0] if sizes else str(exc).splitlines()[0]
            raise UserError(f"{self.checkpoint}: does not fit open_clip model {self.model_name!r}: {detail}") from None
        missing = [k for k in result.missing_keys if k != "logit_bias"]
        unexpected = list(result.unexpected_keys)
        if missing or unexpected:
            raise UserError(
                f"{self.checkpoint}: does not fit open_clip model {self.model_name!r}: "
                + "; ".join(f"{len(ks)} {what} keys (e.g. {', '.join(ks[:3])})"
                            for what, ks in (("missing", missing), ("unexpected", unexpected)) if ks)
            )

    @property
    def tokenizer(self) -> Any:
        """open_clip's bundled BPE tokenizer; checked to be the 49,408-token CLIP vocabulary."""
        if self._tokenizer is None:
            import_open_clip()
            from open_clip.tokenizer import SimpleTokenizer

            text_cfg = self._cfg["text_cfg"]
            kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
            try:
                tok = SimpleTokenizer(context_length=text_cfg.get("context_length", 77), **kwargs)
            except TypeError as exc:
                raise UserError(f"open_clip model {self.model_name!r}: tokenizer_kwargs {kwargs} ({exc})") from None
            vocab = text_cfg.get("vocab_size", CLIP_VOCAB_SIZE)
            if tok.vocab_size != CLIP_VOCAB_SIZE or vocab != tok.vocab_size:
                raise UserError(f"open_clip model {self.model_name!r}: its text tower has a vocabulary of {vocab}, "
                                f"the bundled BPE tokenizer {tok.vocab_size}; no other tokenizer is used offline")
            self._tokenizer = tok
        return self._tokenizer

    # -- batched image contract -----------------------------------------------------------------------
    def forward(self, batch: Any) -> np.ndarray:
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))
        with torch.inference_mode(), exact_float32(self.device):
            out = self.model.encode_image(x.to(self.device, dtype=torch.float32)).float()
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        """float32 (n, d) image embeddings (unit-norm unless ``normalize: false``)."""
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self.forward(torch.stack([self.preprocess(im) for im in images[s : s + self.batch_size]]))
               for s in range(0, len(images), self.batch_size)]
        return np.concatenate(out)

    def describe_texts(self, texts: list[str]) -> np.ndarray:
        """float32 (n, d) text embeddings (unit-norm unless ``normalize: false``)."""
        import torch

        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise UserError("describe_texts: every text must be a str")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[s : s + self.batch_size])
            with torch.inference_mode(), exact_float32(self.device):
                e = self.model.encode_text(tokens.to(self.device)).float()
                if self.normalize:
                    e = torch.nn.functional.normalize(e, dim=-1)
            out.append(np.ascontiguousarray(e.cpu().numpy(), dtype=np.float32))
        return np.concatenate(out)

    @property
    def dim(self) -> int:
        return int(self._cfg["embed_dim"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # never ship the network to worker processes
        state["_model"] = None
        state["_device"] = None
        state["_tokenizer"] = None  # its BPE tables are 2 MB; rebuilt on use
        return state


def _model_config(open_clip: Any, name: str, path: str | None) -> dict[str, Any]:
    if path is not None:
        from harness.submissions import read_text_file

        try:
            cfg = json.loads(read_text_file(path, max_bytes=MAX_CONFIG_BYTES))
        except ValueError as exc:
            raise UserError(f"{path}: not a JSON model config ({exc})") from None
        if isinstance(cfg, dict) and "model_cfg" in cfg:  # open_clip_config.json of a hub repo
            cfg = cfg["model_cfg"]
        if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), (dict, int)) for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise UserError(f"{path}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
        return cfg
    cfg = open_clip.get_model_config(name) if isinstance(name, str) else None
    if cfg is None:
        close = difflib.get_close_matches(str(name), open_clip.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise UserError(f"unknown open_clip model {name!r}{hint}; see open_clip.list_models()")
    return copy.deepcopy(cfg)


def _refuse_hub(cfg: dict[str, Any], name: str) -> None:
    """One clear line for architectures whose parts would come from a hub."""
    text_cfg, vision_cfg = cfg.get("text_cfg") or {}, cfg.get("vision_cfg") or {}
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        which = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
        raise UserError(f"open_clip model {name!r}: its tokenizer / text tower ({which}) comes from the Hugging Face "
                        "hub, which is not used (offline); pick an architecture with open_clip's bundled BPE tokenizer")
    if "siglip" in str(name).lower():
        raise UserError(f"open_clip model {name!r}: SigLIP tokenizers come from the Hugging Face hub, which is not "
                        "used (offline); pick an architecture with open_clip's bundled BPE tokenizer")
    if "multimodal_cfg" in cfg:
        raise UserError(f"open_clip model {name!r}: CoCa-style models (multimodal_cfg) are not supported")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise UserError(f"open_clip model {name!r}: vision_cfg and text_cfg must be mappings")
