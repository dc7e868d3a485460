"""eP-ALM's cached perception: the [CLS] vector after every block of the frozen ViT, per image.

The reference re-runs the frozen encoder on every training step. With the encoder frozen and no
augmentation its output is a function of the image alone, so it is computed once here and training
reads it from the feature store (``vltune.recipes.epalm.finetune``); with augmentation on, training re-runs
the encoder instead. All blocks are stored (key ``cls_layers``, (depth, d_v) per image), so the
number of injected tokens M can change without re-extraction.

Preprocessing: the image resized to the encoder's input side with the encoder's interpolation
(both from its timm pretrained config, ``timm.data.resolve_data_config``), then normalised with
CLIP's constants, as the eP-ALM code (https://arxiv.org/abs/2303.11403) does for every encoder
(``normalize: clip``), or with the encoder's own mean/std (``normalize: encoder``; 0.5/0.5 for the
augreg ViTs).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from ..backbones.vit import block_cls, load_vit, vit_preprocessing
from ..data.images import CLIP_MEAN, CLIP_STD, decode_images
from ..data.tables import read_table, table_path
from .store import FeatureWriter

log = logging.getLogger(__name__)

KEY = "cls_layers"
NORMALIZATIONS = ("clip", "encoder")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def perception_preprocessing(vit, normalize: str = "clip") -> dict:
    """Input side, interpolation and mean/std the perception of ``vit`` is computed with: side and
    interpolation always the encoder's (timm's resolved data config), mean/std the encoder's
    (``"encoder"``) or CLIP's (``"clip"``)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    prep = vit_preprocessing(vit)
    if normalize == "clip":
        prep.update(mean=list(CLIP_MEAN), std=list(CLIP_STD))
    return {**prep, "normalize": normalize}


@torch.inference_mode()
def extract_perception(data_dir: str | Path, vit_dir: str | Path, out_dir: str | Path, batch_size: int = 256,
                       shard_size: int = 4096, normalize: str = "clip", dtype: str = "float32") -> Path:
    """Write every image's per-block [CLS] vectors of the ViT in ``vit_dir`` into a feature store."""
    from tqdm.auto import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    vit = load_vit(vit_dir)
    prep = perception_preprocessing(vit, normalize)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vit.to(device)
    images = read_table(table_path(data_dir, "images"), "images")
    ids, blobs = images["image_id"].to_pylist(), images["image"]
    writer = FeatureWriter(Path(out_dir), encoder=Path(vit_dir).name, preprocessing=prep, shard_size=shard_size,
                           dtype=DTYPES[dtype])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for start in tqdm(range(0, len(ids), batch_size), desc="extract_perception", mininterval=5, disable=None):
        pixels = decode_images(blobs.slice(start, batch_size).to_pylist(), prep["resize"], prep["mean"], prep["std"],
                               prep["interpolation"])
        with autocast:
            cls = block_cls(vit, pixels.to(device))
        writer.add(ids[start:start + batch_size], {KEY: cls.float()})
    log.info("perception of %d images: %d blocks × %d", len(ids), len(vit.blocks), vit.embed_dim)
    return writer.close()
