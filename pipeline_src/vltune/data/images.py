"""Decode encoded image bytes into normalised tensors (shared by CLIP pretraining and extraction)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch

# OpenAI CLIP's normalisation; the tiny CLIP uses the same so the code path is
# the one the published encoders need.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# timm's / torchvision's interpolation names → PIL's resampling filters
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def pil_resample(interpolation: str):
    """PIL's resampling filter named ``interpolation`` (as timm's pretrained configs name them)."""
    from PIL import Image

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"image interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    return getattr(Image.Resampling, interpolation.upper())


def decode_uint8(blobs: Sequence[bytes], size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """PNG/JPEG bytes → uint8 tensor (N, 3, size, size), resized with ``interpolation`` if needed."""
    from PIL import Image

    resample = pil_resample(interpolation)
    out = np.empty((len(blobs), size, size, 3), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), resample)
            out[i] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def normalize(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float, scaled to [0, 1], then ``(x - mean) / std`` per channel."""
    x = images.float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def decode_images(blobs: Sequence[bytes], size: int, mean: Sequence[float] = CLIP_MEAN,
                  std: Sequence[float] = CLIP_STD, interpolation: str = "bicubic") -> torch.Tensor:
    """PNG/JPEG bytes → float tensor (N, 3, size, size), resized with ``interpolation`` (bicubic by
    default) if needed, normalised with ``mean``/``std`` (CLIP's by default)."""
    return normalize(decode_uint8(blobs, size, interpolation), mean, std)
