"""CLIP feature extraction into the feature store.

Per image: ``grid`` = the spatial tokens of the image tower's last layer (what VL-Adapter/VL-PET
consume; for a ViT the patch tokens, (H/p·W/p, width)), ``cls`` = the pooled [CLS] after the
final LayerNorm (width), ``pooled`` = the projected CLIP image embedding (projection dim).
Batched, under ``torch.inference_mode``, on the GPU (bf16 autocast) when one is present.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from ..data.images import decode_images
from ..data.tables import read_table, table_path
from .store import FeatureWriter

log = logging.getLogger(__name__)


def load_clip(backbone_dir: str | Path):
    from transformers import CLIPImageProcessor, CLIPModel

    backbone_dir = Path(backbone_dir)
    if not (backbone_dir / "config.json").exists():
        raise FileNotFoundError(f"{backbone_dir}: no config.json (expected a save_pretrained CLIP folder)")
    model = CLIPModel.from_pretrained(str(backbone_dir))
    processor = CLIPImageProcessor.from_pretrained(str(backbone_dir))
    return model.eval(), processor


@torch.inference_mode()
def extract_features(data_dir: str | Path, backbone_dir: str | Path, out_dir: str | Path,
                     batch_size: int = 256, shard_size: int = 4096, encoder_name: str | None = None) -> Path:
    from tqdm.auto import tqdm

    model, processor = load_clip(backbone_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    size = processor.crop_size["height"]
    preprocessing = {"resize": size, "interpolation": "bicubic", "mean": list(processor.image_mean),
                     "std": list(processor.image_std)}
    images = read_table(table_path(data_dir, "images"), "images")
    ids, blobs = images["image_id"].to_pylist(), images["image"]
    writer = FeatureWriter(Path(out_dir), encoder=encoder_name or Path(backbone_dir).name,
                           preprocessing=preprocessing, shard_size=shard_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for start in tqdm(range(0, len(ids), batch_size), desc="extract_features", mininterval=5, disable=None):
        pixels = decode_images(blobs.slice(start, batch_size).to_pylist(), size).to(device)
        with autocast:
            out = model.vision_model(pixel_values=pixels)
            pooled = model.visual_projection(out.pooler_output)
        writer.add(ids[start:start + batch_size], {
            "grid": out.last_hidden_state[:, 1:].float(),
            "cls": out.pooler_output.float(),
            "pooled": pooled.float(),
        })
    return writer.close()

