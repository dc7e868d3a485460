"""Decode encoded image bytes into normalised tensors (shared by CLIP pretraining and extraction)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch

# OpenAI CLIP's normalisation (seeds-spec §5.1); the tiny CLIP uses the same so the code path is
# the one the published encoders need.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def decode_images(blobs: Sequence[bytes], size: int) -> torch.Tensor:
    """PNG/JPEG bytes → float tensor (N, 3, size, size), resized (bicubic) if needed, CLIP-normalised."""
    from PIL import Image

    out = np.empty((len(blobs), size, size, 3), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            out[i] = np.asarray(im)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std
