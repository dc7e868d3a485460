"""Tiny ViT (timm ``VisionTransformer``), pretrained by the pipeline as a *unimodal* image
classifier on the world's images: the frozen perception encoder of eP-ALM.

Papers: Dosovitskiy et al., "An Image is Worth 16x16 Words" (https://arxiv.org/abs/2010.11929);
eP-ALM uses ImageNet-supervised timm ViTs (``vit_base_patch16_224``, ``vit_large_patch16_224``).
The point of eP-ALM is that the encoder never saw text, so the tiny one learns from image labels
only: a multi-label scene tagger, the shapes world's counterpart of ImageNet classification. Its
[CLS] token predicts the scene's tags (:func:`tag_names`: which colours, shapes and colour–shape
pairs it shows, how many of each, in which rows and columns, which cells are occupied) through
the timm head, with a per-patch auxiliary head during pretraining. The labels come from the images
table's ``scene`` column (ids and attributes, never text), so this pretraining needs the synthetic
world; a published ViT is loaded from timm instead (:func:`load_vit`).

Measured while choosing the objective (default world, hidden 128, 4 blocks, batch 128): one softmax
per grid cell on the [CLS] stayed at "every cell empty" for 500 steps; multi-label tags alone stayed
at their base rates for 300; tags + the per-patch head reached balanced accuracies of 0.97
(colour/shape present), 0.86 (at least two) and 0.84 (colour–shape pair) at 400 steps, while
rows/columns/cells stayed near 0.5: eP-ALM's single [CLS] per block carries "what" far more easily
than "where".

Saved with timm's own ``save_for_hf`` layout (``config.json`` + ``model.safetensors``) and loaded
with ``timm.create_model("local-dir:<folder>")``, as any timm checkpoint folder.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from torch import nn

from ..data.images import CLIP_MEAN, CLIP_STD, decode_images
from ..data.synthetic import COLORS, SHAPES
from ..data.tables import read_table, table_path
from ..errors import UserError
from ..train.loop import TrainConfig, train

ARCHITECTURE = "vit_tiny_patch16_224"  # the timm entrypoint; the arch config overrides its sizes
SIZES = ("small", "large")
N_CELL_CLASSES = 1 + len(COLORS) * len(SHAPES) * len(SIZES)  # empty, or one kind of object
COUNTS = (1, 2, 3)  # "at least k" thresholds of the count tags


def build_tiny_vit(image_size: int, patch_size: int, hidden: int, layers: int, heads: int, mlp_ratio: float,
                   num_classes: int = 0):
    """A timm ViT with a [CLS] token and a final LayerNorm (``global_pool="token"``)."""
    import timm

    return timm.create_model(ARCHITECTURE, pretrained=False, img_size=image_size, patch_size=patch_size,
                             embed_dim=hidden, depth=layers, num_heads=heads, mlp_ratio=mlp_ratio,
                             num_classes=num_classes, global_pool="token")


def tag_names(grid: int) -> list[str]:
    """The scene tags the [CLS] predicts (multi-label): per colour and per shape "at least k",
    "in row r", "in column c"; per colour–shape pair "present"; per cell "occupied"."""
    names = []
    for attr in (*COLORS, *SHAPES):
        names += [f"{attr}>={k}" for k in COUNTS] + [f"{attr}@row{r}" for r in range(grid)]
        names += [f"{attr}@col{c}" for c in range(grid)]
    names += [f"{c} {s}" for c in COLORS for s in SHAPES]
    return names + [f"cell{k}" for k in range(grid * grid)]


def scene_targets(scenes: list[str], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, n_tags) 0/1 scene tags (:func:`tag_names`) and (N, grid²) class of every cell
    (0 = empty, else 1 + index of (colour, shape, size)) from the images table's scene JSON."""
    names = tag_names(grid)
    tag = {n: i for i, n in enumerate(names)}
    kinds = {key: 1 + i for i, key in enumerate((c, s, z) for c in COLORS for s in SHAPES for z in SIZES)}
    tags = torch.zeros(len(scenes), len(names))
    cells = torch.zeros(len(scenes), grid * grid, dtype=torch.long)
    for i, scene in enumerate(scenes):
        objs = json.loads(scene)
        counts = Counter(a for o in objs for a in (o["color"], o["shape"]))
        for attr, n in counts.items():
            for k in COUNTS:
                tags[i, tag[f"{attr}>={k}"]] = float(n >= k)
        for o in objs:
            for attr in (o["color"], o["shape"]):
                tags[i, tag[f"{attr}@row{o['row']}"]] = tags[i, tag[f"{attr}@col{o['col']}"]] = 1.0
            tags[i, tag[f"{o['color']} {o['shape']}"]] = 1.0
            tags[i, tag[f"cell{o['row'] * grid + o['col']}"]] = 1.0
            cells[i, o["row"] * grid + o["col"]] = kinds[(o["color"], o["shape"], o["size"])]
    return tags, cells


class SceneTagger(nn.Module):
    """The ViT with its tag head (on the [CLS]) and, for pretraining only, a per-patch head that
    classifies each patch's cell (needs one grid cell per patch). The per-patch loss teaches the
    patch tokens what they show within tens of steps; the [CLS] then learns to gather it (measured
    on the default world: without it the [CLS] stayed at the tags' base rates for 300 steps)."""

    def __init__(self, vit: nn.Module, patch_head: bool):
        super().__init__()
        self.vit = vit
        self.patch_head = nn.Linear(vit.embed_dim, N_CELL_CLASSES) if patch_head else None

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self.vit.forward_features(pixel_values)
        patches = None if self.patch_head is None else self.patch_head(feats[:, self.vit.num_prefix_tokens:])
        return self.vit.forward_head(feats), patches


def pretrain_vit(data_dir: str | Path, out_dir: str | Path, arch: dict, grid: int, train_cfg: TrainConfig,
                 batch_size: int, patch_loss_weight: float = 1.0, resume_dir: str | Path | None = None) -> dict:
    """Train a tiny ViT as a scene tagger on the train split (BCE over :func:`tag_names`, plus
    ``patch_loss_weight`` × the per-patch cell cross-entropy); save the ViT with its tag head."""
    from timm.models import save_for_hf

    images = read_table(table_path(data_dir, "images"), "images")
    images = images.filter(pc.equal(images["split"], "train"))
    if images.num_rows == 0:
        raise UserError(f"{data_dir}: no training images for the ViT")
    if patch_loss_weight and arch["image_size"] != grid * arch["patch_size"]:
        raise UserError(f"ViT patch loss: the world's {grid}x{grid} grid must have one cell per patch "
                        f"(image_size {arch['image_size']} = grid × patch_size {arch['patch_size']}); "
                        "set patch_loss_weight to 0 otherwise")
    pixels = decode_images(images["image"].to_pylist(), arch["image_size"])
    tags, cells = scene_targets(images["scene"].to_pylist(), grid)
    torch.manual_seed(train_cfg.seed)  # initialisation depends on the config's seed only
    model = SceneTagger(build_tiny_vit(**arch, num_classes=tags.shape[1]), patch_loss_weight > 0)

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(pixels), size=min(batch_size, len(pixels)), replace=False)
        return {"pixel_values": pixels[idx], "tags": tags[idx], "cells": cells[idx]}

    def loss_fn(m, b):
        tag_logits, patch_logits = m(b["pixel_values"])
        loss = nn.functional.binary_cross_entropy_with_logits(tag_logits, b["tags"])
        if patch_logits is not None:
            loss = loss + patch_loss_weight * nn.functional.cross_entropy(patch_logits.flatten(0, 1), b["cells"].flatten())
        return loss

    result = train(model, batch_fn, loss_fn, train_cfg, resume_dir=resume_dir, desc="pretrain_vit")
    result["tag_accuracy_train_batch"] = _tag_accuracy(model, batch_fn(0))
    vit = model.vit
    vit.pretrained_cfg = {**vit.pretrained_cfg, "tag": "shapes_scene", "mean": list(CLIP_MEAN),
                          "std": list(CLIP_STD), "crop_pct": 1.0, "num_classes": vit.num_classes}
    save_for_hf(vit, str(out_dir), safe_serialization=True, model_config={"label_names": tag_names(grid)},
                model_args=dict(img_size=arch["image_size"], patch_size=arch["patch_size"], embed_dim=arch["hidden"],
                                depth=arch["layers"], num_heads=arch["heads"], mlp_ratio=arch["mlp_ratio"],
                                num_classes=vit.num_classes, global_pool="token"))
    return result


@torch.no_grad()
def _tag_accuracy(model, batch: dict) -> float:
    """Balanced accuracy of the [CLS] tags inside one training batch: a sanity number for the log."""
    pred = model(batch["pixel_values"])[0] > 0
    pos = batch["tags"] > 0
    return float(0.5 * pred[pos].float().mean() + 0.5 * (~pred[~pos]).float().mean())


def load_vit(name_or_path: str | Path):
    """A frozen-ready timm ViT without its head: a folder saved by :func:`pretrain_vit` (or any
    timm ``save_for_hf`` folder), or a timm model name with a pretrained tag
    (``vit_large_patch16_224.augreg_in21k_ft_in1k``) resolved from the local cache."""
    import timm

    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json (expected a timm save_for_hf folder; run the pretrain_vit rule)")
        model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
    else:
        model = timm.create_model(str(name_or_path), pretrained=True, num_classes=0)
    if getattr(model, "num_prefix_tokens", 0) < 1 or getattr(model, "global_pool", "token") != "token":
        raise UserError(f"{name_or_path}: eP-ALM reads the [CLS] token; this ViT has none (global_pool "
                        f"{getattr(model, 'global_pool', None)!r})")
    return model.eval()


def block_cls(vit, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, depth, width): the [CLS] vector after every block, each through the ViT's *final* norm
    (eP-ALM, arXiv 2303.11403, ``models/vit.py`` with ``return_hidden_state=True``), shallow → deep."""
    out = vit.forward_intermediates(pixel_values, indices=len(vit.blocks), norm=True, return_prefix_tokens=True,
                                    output_fmt="NLC", intermediates_only=True)
    return torch.stack([prefix[:, 0] for _, prefix in out], dim=1)


def vit_preprocessing(vit) -> dict:
    """What the encoder expects: input side, interpolation and mean/std, as timm resolves them from
    the model's pretrained config (``timm.data.resolve_data_config``). Images are resized to the
    input side directly (no ``crop_pct`` centre crop: the world's images are framed whole)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=vit)
    height, width = cfg["input_size"][-2:]
    if height != width:
        raise UserError(f"{vit.pretrained_cfg.get('architecture', type(vit).__name__)}: input size "
                        f"{height}x{width} is not square (images are resized to a square side)")
    return {"resize": int(width), "interpolation": str(cfg["interpolation"]),
            "mean": [float(m) for m in cfg["mean"]], "std": [float(s) for s in cfg["std"]]}
