"""Shared fixtures: a tiny shapes world and a tokenizer trained on it (built once per session), the
published backbones' architectures with random weights (published_backbones.py), and a loader for
Python files that are not importable (bench/ scripts, another folder's test file)."""

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


CUT_LAYERS = 2  # the published backbones' depth in the session folders (width, vocab, heads as published)


@pytest.fixture(scope="session")
def published_backbones(tmp_path_factory):
    """name → a local folder holding that published backbone (bart-base, t5-base, opt-125m, vit-b16,
    clip-rn101) as the Hub gives it after save_pretrained / save_for_hf, with random weights and
    depth cut to 2 layers (clip-rn101 whole); each written on first use. For the pipeline's
    ``published: {source: <folder>}``."""
    from published_backbones import BackboneFolders

    return BackboneFolders(tmp_path_factory.mktemp("published"), layers=CUT_LAYERS)


@pytest.fixture(scope="session")
def published_backbones_full(tmp_path_factory):
    """As ``published_backbones`` at the published depth (0.2-0.9 GB a folder)."""
    from published_backbones import BackboneFolders

    return BackboneFolders(tmp_path_factory.mktemp("published-full"))


@pytest.fixture(scope="session")
def published_vit_dir(published_backbones):
    """The augreg ViT-B/16 as ``fetch_backbone`` saves it (timm's ``save_for_hf``: its config.json
    has the timm pretrained config, no embed_dim/depth), 2 of its 12 blocks, random weights."""
    return published_backbones["vit-b16"]
