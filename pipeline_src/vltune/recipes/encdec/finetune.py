"""Multitask fine-tuning of VL-BART / VL-T5 (vqa, gqa, nlvr2, caption) with round-robin single-task batches.

The PET seam: ``method`` names how the backbone is adapted before training (``full`` or any method
of the ``vltune.pet`` registry); :func:`apply_method` is the one place that applies it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...backbones.tokenizer import load_tokenizer, vis_token_ids
from ...errors import UserError
from ...features.store import FeatureStore
from ...models.encdec import VL_FAMILIES, VLEncoderDecoder, per_example_loss
from ...pet import apply_pet, count_parameters, is_pet_dir, load_pet, method_names, save_pet
from ...train.distributed import is_main_process
from ...train.loop import TrainConfig, train
from ...utils.io import read_json, save_model_file, write_json
from .tasks import VisualBank, VisualTokens, load_task, make_batch, task_schedule

log = logging.getLogger(__name__)

METHODS = tuple(method_names())
CHECKPOINT_JSON = "vl_model.json"
PET_SUBDIR = "adapter"  # PET checkpoints keep only the trainable tensors, in <checkpoint>/adapter/

__all__ = ["METHODS", "apply_method", "count_parameters", "build_vl_model", "save_vl_model", "load_vl_model",
           "finetune_vl_model", "build_vlbart", "save_vlbart", "load_vlbart", "finetune_vlbart"]


def apply_method(model: VLEncoderDecoder, method: str, method_config: dict | None = None) -> VLEncoderDecoder:
    """Set which parameters train and inject the PET layers. ``full``: all of them train.

    ``method_config``: hyper-parameter overrides of the method's config (e.g. ``{"adapter_dim": 48}``);
    an unknown method or key raises ``ValueError``.
    """
    method_config = dict(method_config or {})
    if method_config.setdefault("method", method) != method:
        raise ValueError(f"method_config names method {method_config['method']!r} but the method is {method!r}")
    return apply_pet(model, method_config)


def vl_model_class(family: str) -> type[VLEncoderDecoder]:
    """The VL model class of ``family``; an unknown family is a :class:`UserError` naming the known ones."""
    try:
        return VL_FAMILIES.get(family)
    except KeyError as e:
        raise UserError(e.args[0]) from None


def build_vl_model(family: str, backbone_dir: str | Path, feat_dim: int, dropout: float | None = None):
    """The VL model of ``family`` ("bart", "t5") on the pretrained LM in ``backbone_dir``, and the
    backbone's tokenizer. ``dropout`` (if given) replaces the LM's dropout rates for fine-tuning."""
    cls = vl_model_class(family)
    model_type = read_json(Path(backbone_dir) / "config.json").get("model_type")
    if model_type != family:  # from_pretrained would load a foreign checkpoint with a warning only
        raise UserError(f"{backbone_dir}: the backbone is a {model_type!r} model, not one of the {family!r} family")
    tok = load_tokenizer(backbone_dir)
    overrides = {} if dropout is None else cls.dropout_overrides(dropout)
    lm = cls.lm_class().from_pretrained(str(backbone_dir), **overrides)
    return cls(lm, feat_dim, vis_token_ids(tok)), tok


def check_visual_room(model: VLEncoderDecoder, bank: VisualBank, tokenizer_dir: str | Path) -> None:
    """Each visual position of an image reads its own ``<vis_extra_id_k>``: the tokenizer needs at
    least as many as an image has visual tokens."""
    have, need = len(model.vis_token_ids), bank.tokens_per_image
    if have < need:
        raise UserError(f"{tokenizer_dir}: the tokenizer has {have} <vis_extra_id_k> tokens, but an image gives "
                        f"{need} visual tokens (features.tokens {bank.visual.to_dict()}); pool the grid "
                        "(features.tokens.grid_pool) or fetch the backbone again so its tokenizer gets them")


def visual_tokens(meta: dict) -> VisualTokens:
    """The visual-token settings a checkpoint was trained with (older ones: the grid + [CLS])."""
    return VisualTokens.from_dict(meta.get("visual"))


def build_vlbart(backbone_dir: str | Path, feat_dim: int, dropout: float | None = None):
    """VL-BART on a pretrained BART (:func:`build_vl_model` for the ``bart`` family)."""
    return build_vl_model("bart", backbone_dir, feat_dim, dropout)


def save_vl_model(model: VLEncoderDecoder, tokenizer, out_dir: str | Path, meta: dict) -> None:
    """Checkpoint = LM config + tokenizer + weights + ``vl_model.json`` (family, feature width and
    ``meta``), so loading needs no flag.

    ``full`` (or no method): all weights in ``model.safetensors``. A PET method: only its trainable
    tensors + config in ``adapter/`` (LoRA in PEFT's format); ``meta["backbone"]`` must then name
    the backbone folder they apply to.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.lm.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    pet = getattr(model, "pet_config", None)
    if pet is None or pet.method == "full":
        save_model_file(model, out_dir / "model.safetensors")  # the LMs' tied embeddings once
    else:
        if not meta.get("backbone"):
            raise ValueError(f"saving a {pet.method!r} checkpoint needs meta['backbone'] (its weights are not saved)")
        save_pet(model, out_dir / PET_SUBDIR)
    write_json(out_dir / CHECKPOINT_JSON,
               {"family": model.family, "feat_dim": model.visual_embedding.feat_proj.in_features, **meta})


def load_vl_model(ckpt_dir: str | Path, backbone_dir: str | Path | None = None) -> tuple[VLEncoderDecoder, object, dict]:
    """Load a checkpoint written by :func:`save_vl_model`; one with only the first version's
    ``vlbart.json`` is a BART one. A PET checkpoint is applied to the backbone named by
    ``backbone_dir`` (default: the one recorded in its JSON)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    from ...utils.tensor_files import check_file_shapes

    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / CHECKPOINT_JSON
    if not meta_path.exists() and (ckpt_dir / "vlbart.json").exists():
        meta_path = ckpt_dir / "vlbart.json"
    meta = {"family": "bart", **read_json(meta_path)}
    cls = vl_model_class(meta["family"])
    tok = load_tokenizer(ckpt_dir)
    if is_pet_dir(ckpt_dir / PET_SUBDIR):
        backbone = backbone_dir or meta.get("backbone")
        if not backbone or not Path(backbone).is_dir():
            raise FileNotFoundError(f"{ckpt_dir}: PET checkpoint needs its backbone folder, {backbone!r} not found")
        model, _ = build_vl_model(meta["family"], backbone, meta["feat_dim"], meta.get("dropout"))
        load_pet(model, ckpt_dir / PET_SUBDIR)
        return model.eval(), tok, meta
    lm = cls.lm_class()(AutoConfig.from_pretrained(str(ckpt_dir)))
    model = cls(lm, meta["feat_dim"], vis_token_ids(tok))
    check_file_shapes(ckpt_dir / "model.safetensors", model)  # a bad file: one line naming it and the tensor
    load_model(model, str(ckpt_dir / "model.safetensors"))
    return model.eval(), tok, meta


def finetune_vl_model(data_dir, features_dir, backbone_dir, out_dir, method: str, train_cfg: TrainConfig,
                      batch_size: int, task_weights: dict[str, int], resume_dir=None,
                      dropout: float | None = None, family: str = "bart", method_config: dict | None = None,
                      visual: VisualTokens | None = None) -> dict:
    """Multitask fine-tuning of the ``family`` VL model on ``backbone_dir``; writes the checkpoint
    and ``train_log.json`` into ``out_dir`` and returns the training summary + parameter counts.
    ``visual``: which features form an image's visual tokens (recorded in the checkpoint)."""
    visual = visual or VisualTokens()
    bank = VisualBank(FeatureStore(features_dir), visual)
    torch.manual_seed(train_cfg.seed)  # the new modules' init depends on the run seed only
    model, tok = build_vl_model(family, backbone_dir, bank.dim, dropout)
    check_visual_room(model, bank, backbone_dir)
    apply_method(model, method, method_config)
    data = {t: load_task(data_dir, t, "train", tok) for t in task_weights}
    for t, ex in data.items():
        log.info("task %s: %d training examples", t, len(ex))

    def batch_fn(step: int) -> dict:
        task = task_schedule(task_weights, train_cfg.seed, step)
        rng = np.random.default_rng([train_cfg.seed, step])
        ex = data[task]
        idx = rng.choice(len(ex), size=min(batch_size, len(ex)), replace=False)
        return make_batch(ex, idx, bank, tok.pad_token_id, rng)

    def loss_fn(m, b):  # weighted mean over examples, as (sum, count) for data parallelism
        return (per_example_loss(m, b) * b["weights"]).sum(), len(b["weights"])

    result = train(model, batch_fn, loss_fn, train_cfg, resume_dir=resume_dir, desc=f"finetune_vl{family}[{method}]")
    params = count_parameters(model)
    if not is_main_process():  # rank 0 writes the checkpoint
        return {**result, **params}
    save_vl_model(model, tok, out_dir, {"method": method, "seed": train_cfg.seed, "features": str(features_dir),
                                        "dropout": dropout, "backbone": str(backbone_dir), "visual": visual.to_dict(),
                                        **params})
    write_json(Path(out_dir) / "train_log.json", {**result, **params})
    return {**result, **params}


# The names of the first, BART-only version.
save_vlbart, load_vlbart, finetune_vlbart = save_vl_model, load_vl_model, finetune_vl_model
