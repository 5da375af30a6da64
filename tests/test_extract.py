"""Extraction paths: plain descriptors through a thread pool, batched ones through a torch DataLoader
with worker processes and the descriptor's own collate (mixed image sizes)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UserError
from harness.extract import extract
from harness.testing import sample_images, write_images


class MeanRGB:
    def describe(self, images):
        return np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images])


class VariableSizeBatched(MeanRGB):
    """preprocess keeps each image's own size; collate returns a list, as aspect-preserving resizes do."""

    def preprocess(self, image):
        w, h = image.size
        return np.asarray(image.resize((w // 2 + 7 * (w % 3), h // 2)), dtype=np.float32)

    @staticmethod
    def collate(samples):
        return list(samples)

    def forward(self, batch):
        return np.stack([np.asarray(a).mean(axis=(0, 1)) for a in batch]).astype(np.float32)


@pytest.fixture
def items(tmp_path):
    images = [im.resize((64 + 8 * i, 48 + 4 * i)) for i, im in enumerate(sample_images(7, 96))]
    return write_images(images, tmp_path / "img", [f"I{i}" for i in range(7)], fmt="PNG")


def test_plain_path_keeps_order_and_counts(items):
    seen = []
    out = extract(MeanRGB(), items, batch_size=3, workers=2, progress=seen.append)
    expected = MeanRGB().describe([it.load() for it in items])
    assert out.dtype == np.float32 and np.allclose(out, expected)
    assert seen == [3, 3, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_path_with_custom_collate_and_mixed_sizes(items, workers):
    desc = VariableSizeBatched()
    out = extract(desc, items, batch_size=3, workers=workers)
    expected = np.stack([desc.forward([desc.preprocess(it.load())])[0] for it in items])
    assert out.shape == (7, 3) and np.allclose(out, expected, atol=1e-5)


def test_bad_descriptor_output_is_a_user_error(items):
    class Wrong(MeanRGB):
        def describe(self, images):
            return np.zeros((len(images) + 1, 4), dtype=np.float32)

    class NaNs(MeanRGB):
        def describe(self, images):
            return np.full((len(images), 4), np.nan, dtype=np.float32)

    with pytest.raises(UserError, match=r"shape \(3, d\)"):
        extract(Wrong(), items[:3], batch_size=3, workers=1)
    with pytest.raises(UserError, match="NaN"):
        extract(NaNs(), items[:3], batch_size=3, workers=1)


@pytest.mark.parametrize("batched,workers", [(False, 2), (True, 0), (True, 1)])
def test_unreadable_image_is_one_line_naming_the_file(items, tmp_path, batched, workers):
    bad = tmp_path / "img" / "I3.png"
    bad.write_bytes(b"not an image at all")
    desc = VariableSizeBatched() if batched else MeanRGB()
    with pytest.raises(UserError) as info:
        extract(desc, items, batch_size=3, workers=workers)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{bad}: cannot read image")
