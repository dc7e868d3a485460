"""Shared fixtures: a tiny shapes world and a tokenizer trained on it (built once per session), and
a loader for Python files that are not importable (bench/ scripts, another folder's test file),
and a published-shape timm ViT folder with random weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def load_module():
    """``load_module(path, name)``: the module of the file at ``path``, executed once per call."""

    def load(path: str | Path, name: str):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


TINY_WORLD = dict(seed=3, n_images={"train": 48, "val": 8, "test": 16}, nlvr2_pairs={"train": 32, "val": 8, "test": 16})


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from vltune.data.synthetic import WorldConfig, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(WorldConfig.from_dict(TINY_WORLD), out)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_world, tmp_path_factory):
    from vltune.backbones.tokenizer import train_tokenizer, world_texts

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(world_texts(tiny_world, "train"), 400, out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from vltune.backbones.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def t5_tokenizer(tokenizer_dir):
    """The same tokenizer in its T5 flavour (``text </s>``, sentinels), as the T5 backbone saves it."""
    from vltune.backbones.t5 import load_t5_tokenizer

    return load_t5_tokenizer(tokenizer_dir)


PUBLISHED_VIT = "vit_base_patch16_224.augreg2_in21k_ft_in1k"


@pytest.fixture(scope="session")
def published_vit_dir(tmp_path_factory):
    """A folder shaped like the published augreg ViT-B/16 as ``fetch_backbone`` saves it (timm's
    ``save_for_hf``; its config.json has the timm pretrained config, no embed_dim/depth), with
    random weights and only 2 of its 12 blocks (width, patch, image size and preprocessing real)."""
    import timm
    from timm.models import save_for_hf

    out = tmp_path_factory.mktemp("published") / "vit"
    torch.manual_seed(0)
    vit = timm.create_model(PUBLISHED_VIT, pretrained=False, num_classes=0, depth=2)
    save_for_hf(vit, str(out), safe_serialization=True)
    return out
