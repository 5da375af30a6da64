"""The openclip descriptor: open_clip's bundled BPE tokenizer (never a hub's), offline refusals,
local checkpoints, labelled random init, and the image / text contracts (tiny random config)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.errors import UserError
from harness.testing import check_descriptor, registry_with, sample_images

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _tiny(config, **kw):
    from harness_plugins.openclip.descriptor import OpenClipDescriptor

    return OpenClipDescriptor(model="tiny", config=config, device="cpu", **kw)


def test_registered():
    import harness_plugins.openclip as plugin

    assert "openclip" in registry_with(plugin).names("descriptor")


def test_bundled_bpe_tokenizer_gives_clip_token_ids(tiny_config):
    from open_clip.tokenizer import SimpleTokenizer

    d = _tiny(tiny_config)
    tok = d.tokenizer
    assert type(tok) is SimpleTokenizer and tok.vocab_size == 49408
    ids = tok(["a photo of a cat", "a painting of a cat"])
    # CLIP's published ids: <start> a photo of a cat <end>, and "painting" = 3086
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and int(ids[0, 7:].abs().sum()) == 0
    assert ids[1, :7].tolist() == [49406, 320, 3086, 539, 320, 2368, 49407]
    assert ids.shape == (2, 77)
    d.describe_texts(["a photo of a cat"])
    assert "transformers" not in sys.modules  # nothing reached for transformers' CLIPTokenizer


def test_hub_tokenizers_fail_at_once_with_one_line(tmp_path):
    from harness_plugins.openclip.descriptor import OpenClipDescriptor

    hf = dict(TINY, text_cfg=dict(TINY["text_cfg"], hf_tokenizer_name="openai/clip-vit-base-patch32"))
    path = tmp_path / "hf.json"
    path.write_text(json.dumps(hf))
    start = time.perf_counter()
    with pytest.raises(UserError, match="comes from the Hugging Face hub") as err:
        OpenClipDescriptor(model="hf", config=str(path))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"ViT-B-16-SigLIP.*Hugging Face hub"):
        OpenClipDescriptor(model="ViT-B-16-SigLIP")
    assert time.perf_counter() - start < 5  # no network retries
    with pytest.raises(UserError, match=r"unknown open_clip model 'ViT-B-33'.*did you mean"):
        OpenClipDescriptor(model="ViT-B-33")


def test_offline_switch_is_set_before_open_clip_is_imported():
    code = ("import os; from harness_plugins.openclip.descriptor import import_open_clip; import_open_clip(); "
            "import huggingface_hub.constants as c; print(os.environ['HF_HUB_OFFLINE'], "
            "os.environ['TRANSFORMERS_OFFLINE'], c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert r.stdout.split() == ["1", "1", "True"]


def test_image_and_text_contracts(tiny_config):
    d = _tiny(tiny_config)
    out = check_descriptor(d)
    assert out.shape[1] == 16 and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    t = d.describe_texts(["a dog", "a cat", "a dog"])
    assert t.dtype == np.float32 and t.shape == (3, 16) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert np.allclose(t[0], t[2]) and not np.allclose(t[0], t[1])
    assert d.describe_texts([]).shape == (0, 16) and d.describe([]).shape == (0, 16)
    # batched form: picklable preprocess (no model inside), forward on a stacked batch
    images = sample_images(2)
    pre = pickle.loads(pickle.dumps(d.preprocess))
    import torch

    batch = torch.stack([pre(im) for im in images])
    assert np.allclose(d.forward(batch), d.describe(images), atol=1e-6)
    assert len(pickle.dumps(d)) < 10_000  # the network never travels to workers
    raw = _tiny(tiny_config, normalize=False).describe_texts(["a dog"])
    assert np.allclose(raw / np.linalg.norm(raw), t[:1], atol=1e-6) and not np.isclose(np.linalg.norm(raw), 1)


def test_preprocess_is_open_clip_eval_transform(tiny_config):
    import open_clip

    d = _tiny(tiny_config)
    ref = open_clip.image_transform(32, is_train=False)
    for im in sample_images(3, 80) + [sample_images(1, 50)[0].resize((70, 40))]:
        assert float((ref(im) - d.preprocess(im)).abs().max()) == 0.0


def test_random_init_is_labelled_and_seeded(tiny_config):
    a, b, c = _tiny(tiny_config), _tiny(tiny_config), _tiny(tiny_config, seed=1)
    assert a.fingerprint().startswith("random_init:seed0:") and "config=" in a.fingerprint()
    assert c.fingerprint().startswith("random_init:seed1:")
    ims = sample_images(2)
    assert np.array_equal(a.describe(ims), b.describe(ims))
    assert not np.allclose(a.describe(ims), c.describe(ims))


def test_local_checkpoint_round_trip_and_mismatch(tiny_config, tmp_path):
    import torch
    from safetensors.torch import save_file

    src = _tiny(tiny_config, seed=3)
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    save_file(state, str(tmp_path / "clip.safetensors"))
    torch.save(state, tmp_path / "clip.pt")
    ims = sample_images(2)
    for name in ("clip.safetensors", "clip.pt"):
        d = _tiny(tiny_config, checkpoint=str(tmp_path / name))
        assert d.fingerprint().startswith("checkpoint:")
        assert np.allclose(d.describe(ims), src.describe(ims), atol=1e-6)
        assert np.allclose(d.describe_texts(["red"]), src.describe_texts(["red"]), atol=1e-6)
    # a larger input size: the checkpoint's position embeddings are interpolated, outputs still unit-norm
    big = _tiny(tiny_config, checkpoint=str(tmp_path / "clip.safetensors"), size=48)
    assert big.describe(ims).shape == (2, 16)
    del state["text_projection"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UserError, match=r"partial.safetensors: does not fit .*1 missing keys \(e.g. text_projection\)"):
        _tiny(tiny_config, checkpoint=str(tmp_path / "partial.safetensors")).describe(ims)
    torch.save({"model": src.model}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="refused: the file holds pickled Python objects"):
        _tiny(tiny_config, checkpoint=str(tmp_path / "pickled.pt")).describe(ims)
    with pytest.raises(UserError, match="checkpoint file not found"):
        _tiny(tiny_config, checkpoint=str(tmp_path / "missing.safetensors"))


def test_vit_b32_random_init_builds_and_encodes():
    """The real architecture at random init (about 5 s on 2 cores: build plus one image and one text)."""
    from harness_plugins.openclip.descriptor import OpenClipDescriptor

    d = OpenClipDescriptor(model="ViT-B-32", device="cpu")
    assert d.describe(sample_images(1)).shape == (1, 512)
    assert d.describe_texts(["a cat"]).shape == (1, 512)
    assert d.fingerprint().startswith("random_init:")
