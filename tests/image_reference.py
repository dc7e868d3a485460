"""Image preprocessing written out independently of vltune.data.images, for tests to compare
with: PIL decode and resize, torchvision normalisation."""

from __future__ import annotations

import io

import torch


def reference_pixels(blobs, side: int, interpolation: str, mean, std) -> torch.Tensor:
    """Encoded images → float (N, 3, side, side): RGB, resized with ``interpolation`` (as timm
    names it), then ``(x / 255 - mean) / std``."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}[interpolation]
    out = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB").resize((side, side), resample)
        out.append(TF.normalize(TF.pil_to_tensor(im).float() / 255.0, list(mean), list(std)))
    return torch.stack(out)
