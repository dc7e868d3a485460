"""The DAS stages' drivers: search one task's skip set into ``skip.json``; read it back for the
fine-tuning (no manual step between the two)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..features.store import FeatureStore
from ..models.encdec import per_example_loss
from ..train.loop import TrainConfig
from ..recipes.encdec.finetune import apply_method, build_vl_model, check_visual_room
from ..recipes.encdec.tasks import TASKS, VisualBank, VisualTokens, load_task, make_batch
from ..utils.io import read_json, write_json
from .search import SearchConfig, run_search
from .supernet import build_supernet

log = logging.getLogger(__name__)

SKIP_FORMAT = "vltune-das-skip/1"


def _weighted_loss(m, b) -> torch.Tensor:
    return (per_example_loss(m, b) * b["weights"]).mean()


def search_skips(data_dir, features_dir, backbone_dir, out_json, task: str, train_cfg: TrainConfig,
                 search_cfg: SearchConfig, batch_size: int, method_config: dict | None = None,
                 family: str = "bart", dropout: float | None = None, visual: VisualTokens | None = None) -> dict:
    """Search which ``search_cfg.k`` encoder blocks of the ``family`` VL model to skip for ``task``
    (training batches from its train split, reward batches from its val split); writes ``out_json``."""
    if task not in TASKS:
        raise UserError(f"das search: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    bank = VisualBank(FeatureStore(features_dir), visual)
    torch.manual_seed(train_cfg.seed)
    model, tok = build_vl_model(family, backbone_dir, bank.dim, dropout)
    check_visual_room(model, bank, backbone_dir)
    apply_method(model, "das", {**(method_config or {}), "skip": []})
    wrappers = build_supernet(model, model.pet_config)
    train_ex, val_ex = load_task(data_dir, task, "train", tok), load_task(data_dir, task, "val", tok)

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(train_ex), size=min(batch_size, len(train_ex)), replace=False)
        return make_batch(train_ex, idx, bank, tok.pad_token_id, rng)

    def val_batch_fn(step: int) -> dict:  # a fresh validation batch per reward step
        rng = np.random.default_rng([train_cfg.seed, step, 1])
        idx = rng.choice(len(val_ex), size=min(search_cfg.val_batch_size, len(val_ex)), replace=False)
        return make_batch(val_ex, idx, bank, tok.pad_token_id, rng)

    result = run_search(model, wrappers, batch_fn, val_batch_fn, _weighted_loss, train_cfg, search_cfg,
                        desc=f"das_search[{task},k={search_cfg.k}]")
    record = {"format": SKIP_FORMAT, "task": task, "family": family, "backbone": str(backbone_dir),
              "method_config": model.pet_config.to_dict(), **result}
    write_json(out_json, record)
    return record


def read_skip(path, task: str | None = None) -> dict:
    """A ``skip.json`` written by :func:`search_skips`, checked (format, task, skip set)."""
    record = read_json(path)
    if record.get("format") != SKIP_FORMAT:
        raise UserError(f"{path}: not a DAS skip file (format {record.get('format')!r}, expected {SKIP_FORMAT!r})")
    if task is not None and record.get("task") != task:
        raise UserError(f"{path}: skip set searched for task {record.get('task')!r}, not {task!r}")
    skip, k = record.get("skip"), record.get("k")
    if not isinstance(skip, list) or len(skip) != k or len(set(skip)) != k:
        raise UserError(f"{path}: 'skip' must list k = {k} distinct blocks, got {skip!r}")
    return record


def skip_method_config(method_config: dict | None, skip_json: str | Path | None, task: str) -> dict:
    """The ``das`` method config of a fine-tuning run: the config's hyper-parameters + the searched
    ``skip`` (none without a skip file: the k = 0 baseline)."""
    config = dict(method_config or {})
    if "skip" in config:
        raise UserError("das method_config must not set 'skip': it comes from the search's skip.json")
    config["skip"] = read_skip(skip_json, task)["skip"] if skip_json else []
    return config
