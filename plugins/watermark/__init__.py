"""Watermark robustness: watermarkers (SSL watermarking; DWT-DCT, DWT-DCT-SVD and RivaGAN from
invisible-watermark), the detections table, and the detection and image-quality metrics."""

from __future__ import annotations

import os

from harness import hookimpl

# onnxruntime (RivaGAN) writes a telemetry file under ~/.cache at import unless this is set before
# its first import in the process; plugins load before any part runs, so setting it here covers
# every later import, ours or another plugin's.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"


@hookimpl
def register_pipelines(register):
    from .pipeline import WatermarkPipeline

    register("watermark", WatermarkPipeline)


@hookimpl
def register_transforms(register):
    from .embed_transform import EmbedTransform

    register("watermark.embed", EmbedTransform)


@hookimpl
def register_watermarkers(register):
    from .invisible import DwtDct, DwtDctSvd, RivaGAN
    from .ssl import SSLWatermarker

    register("ssl", SSLWatermarker)
    register("dwt_dct", DwtDct)
    register("dwt_dct_svd", DwtDctSvd)
    register("rivagan", RivaGAN)


@hookimpl
def register_metrics(register):
    from .metrics import AUROC, AnalyticTPR, BitAccuracy, EmpiricalTPR, WordAccuracy
    from .lpips_quality import LPIPS
    from .quality import PSNR, SSIM

    register("watermark.tpr", AnalyticTPR)
    register("watermark.tpr_at_fpr", EmpiricalTPR)
    register("watermark.auroc", AUROC)
    register("watermark.bit_accuracy", BitAccuracy)
    register("watermark.word_accuracy", WordAccuracy)
    register("watermark.psnr", PSNR)
    register("watermark.ssim", SSIM)
    register("watermark.lpips", LPIPS)
