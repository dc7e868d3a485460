"""VLMo pretraining (seed, modality-specific, modality-agnostic) with MLM + ITC + ITM, and the
VLMo checkpoint format (``model.safetensors`` + ``vlmo.json``).

Objectives (Sung et al., arXiv 2304.14933, weights 1 each):
* MLM — whole-word masking (``mlm_prob`` of the words, BERT 80/10/10) on a joint pass;
* ITC — symmetric InfoNCE on the unimodal [CLS] features and on the vl-branch features, 0.5 each;
* ITM — per pair one negative image drawn ∝ softmax of the text→image ITC similarities (diagonal
  zeroed) and one negative text likewise; 3B joint passes, pooled [CLS] → 2-way CE.

Because the lower layers never mix modalities, their outputs are computed once per text and per
image and re-used by every joint pass of the step (the ITM negatives only re-run the top layers);
this is exact, not an approximation.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones.tokenizer import SPECIAL_TOKENS, load_tokenizer
from ...errors import UserError
from ...models.vlmo import VLMo, VLMoConfig, init_image_tower, specific_from_agnostic
from ...train.loop import TrainConfig, train
from ...utils.io import read_json, save_model_file, write_json
from .data import ImageBank, captions, text_batch, tokenize, whole_word_mask

log = logging.getLogger(__name__)

CONFIG_JSON = "vlmo.json"
WEIGHTS = "model.safetensors"
MAX_LOGIT_SCALE = float(np.log(100.0))


# --- checkpoints ---------------------------------------------------------------------------------

def save_vlmo(model: VLMo, out_dir: str | Path, meta: dict | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_file(model, out_dir / WEIGHTS)
    write_json(out_dir / CONFIG_JSON, {"arch": model.cfg.to_dict(), **(meta or {})})


def read_vlmo_config(model_dir: str | Path) -> tuple[VLMoConfig, dict]:
    path = Path(model_dir) / CONFIG_JSON
    meta = read_json(path)
    try:
        return VLMoConfig.from_dict(meta["arch"]), meta
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a VLMo config ({e})") from None


def load_vlmo(model_dir: str | Path) -> tuple[VLMo, dict]:
    """A VLMo model from a folder written by :func:`save_vlmo` (or a merge: same layout)."""
    from ...utils.tensor_files import check_shapes, read_safetensors

    cfg, meta = read_vlmo_config(model_dir)
    model = VLMo(cfg)
    path = Path(model_dir) / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    state = read_safetensors(path)
    check_shapes(path, model.state_dict(), state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: does not match its {cfg.mode} VLMo config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return model.eval(), meta


def build_vlmo(arch: dict, mode: str, tok, init_dir: str | Path | None = None,
               image_init: str | Path | None = None) -> VLMo:
    """A fresh model, one whose image tower (and every shared block) starts from the timm ViT in
    ``image_init`` (the paper's BEiT start, :func:`init_image_tower`; the model then preprocesses
    images as the ViT does: its resolved side, interpolation and mean/std), or one initialised from
    a pretrained VLMo in ``init_dir``: same mode, or a modality-agnostic one expanded into experts
    (every expert a copy of the shared weights), with the init's preprocessing."""
    if init_dir is not None and image_init is not None:
        raise UserError("a VLMo starts from a pretrained VLMo (--init) or from a ViT (--image-init), not both")
    cfg = VLMoConfig.from_dict({**arch, "mode": mode, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id,
                                "mask_token_id": tok.mask_token_id})
    model = VLMo(cfg)  # built first: the random init draws from the seeded RNG before anything else does
    if image_init is not None:
        from ...backbones.vit import load_vit, vit_preprocessing

        vit = load_vit(image_init)
        prep = vit_preprocessing(vit)
        if prep["resize"] != cfg.image_size:
            raise UserError(f"{image_init}: the ViT takes {prep['resize']} px images, merging.arch.image_size is "
                            f"{cfg.image_size}")
        try:
            init_image_tower(model, vit.state_dict())
        except ValueError as e:
            raise UserError(f"{image_init}: cannot initialise the VLMo's image tower ({e}); merging.arch must "
                            "match the ViT's hidden size, depth, heads, mlp_ratio, patch and image size") from None
        # the preprocessing shapes no weight: set on the built model's config
        model.cfg = replace(cfg, image_mean=prep["mean"], image_std=prep["std"],
                            image_interpolation=prep["interpolation"])
        return model
    if init_dir is None:
        return model
    init, _ = load_vlmo(init_dir)
    cfg = model.cfg = replace(cfg, image_mean=init.cfg.image_mean, image_std=init.cfg.image_std,
                              image_interpolation=init.cfg.image_interpolation)
    if {**init.cfg.to_dict(), "mode": mode} != cfg.to_dict():
        raise UserError(f"{init_dir}: its architecture {init.cfg.to_dict()} differs from the configured one "
                        f"{cfg.to_dict()} (other than the mode)")
    state = init.state_dict()
    if init.cfg.mode != mode:
        if init.cfg.mode != "agnostic":
            raise UserError(f"{init_dir}: a {init.cfg.mode} model cannot initialise a {mode} one")
        state = specific_from_agnostic(state, cfg)
    model.load_state_dict(state)
    return model


# --- objectives ----------------------------------------------------------------------------------

def _info_nce(text: torch.Tensor, image: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sim = log_scale.clamp(max=MAX_LOGIT_SCALE).exp() * text @ image.T  # (texts, images)
    target = torch.arange(len(sim), device=sim.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2, sim


def _hard_negatives(sim: torch.Tensor) -> torch.Tensor:
    """For each row, one column ≠ the diagonal drawn ∝ softmax(row) (the global RNG, seeded per step)."""
    w = F.softmax(sim.detach().float(), dim=1)
    w.fill_diagonal_(0)
    w = w + (w.sum(1, keepdim=True) == 0).float() * (1 - torch.eye(len(w), device=w.device))  # degenerate rows
    return torch.multinomial(w, 1).squeeze(1)


def pretrain_losses(model: VLMo, b: dict) -> dict[str, torch.Tensor]:
    ids, mask, px = b["input_ids"], b["attention_mask"], b["pixel_values"]
    text, image = model.text_shallow(ids, mask), model.image_shallow(px)
    uni_t = F.normalize(model.itc_text_proj(model.unimodal_top(text, mask, "l")[:, 0]), dim=-1)
    uni_i = F.normalize(model.itc_image_proj(model.unimodal_top(image, None, "v")[:, 0]), dim=-1)
    vl_t = F.normalize(model.itc_vl_text_proj(model.unimodal_top(text, mask, "vl")[:, 0]), dim=-1)
    vl_i = F.normalize(model.itc_vl_image_proj(model.unimodal_top(image, None, "vl")[:, 0]), dim=-1)
    itc_uni, sim = _info_nce(uni_t, uni_i, model.logit_scale)
    itc_vl, _ = _info_nce(vl_t, vl_i, model.logit_scale_vl)
    neg_image, neg_text = _hard_negatives(sim), _hard_negatives(sim.T)
    joint = model.joint_top(torch.cat([text, text, text[neg_text]]), torch.cat([mask, mask, mask[neg_text]]),
                            torch.cat([image, image[neg_image], image]))
    itm_logits = model.itm_head(model.pooled(joint))
    n = len(ids)
    itm_labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(itm_logits.device)
    masked = model.joint_top(model.text_shallow(b["mlm_ids"], mask), mask, image)[:, : ids.shape[1]]
    labels = b["mlm_labels"]
    sel = labels != -100
    mlm_logits = model.mlm_decoder(model.mlm_transform(masked[sel]))
    return {"mlm": F.cross_entropy(mlm_logits, labels[sel]), "itc": (itc_uni + itc_vl) / 2,
            "itm": F.cross_entropy(itm_logits, itm_labels),
            "itm_acc": (itm_logits.argmax(1) == itm_labels).float().mean(),
            "mlm_acc": (mlm_logits.argmax(1) == labels[sel]).float().mean(),
            "itc_r1": (sim.argmax(1) == torch.arange(n, device=sim.device)).float().mean()}


def pretrain_loss(model: VLMo, b: dict) -> torch.Tensor:
    parts = pretrain_losses(model, b)
    return parts["mlm"] + parts["itc"] + parts["itm"]


# --- the run ----------------------------------------------------------------------------------------

class CaptionBatches:
    """Step → batch of (image, one of its captions, masked copy) from one split, reproducibly."""

    def __init__(self, data_dir, split: str, tok, preprocessing: dict, max_len: int, batch_size: int,
                 mlm_prob: float, seed: int):
        self.ids, caps = captions(data_dir, split)
        if min(len(self.ids), batch_size) < 2:  # ITC and ITM contrast each pair with another one
            raise UserError(f"{data_dir}: VLMo pretraining batches need 2 or more image-caption pairs; the "
                            f"{split} split has {len(self.ids)} and merging.pretrain.batch_size is {batch_size}")
        self.bank = ImageBank(data_dir, (split,), preprocessing)
        flat = [c for cs in caps for c in cs]
        self.offsets = np.cumsum([0] + [len(cs) for cs in caps])
        self.texts = tokenize(tok, flat, max_len)
        self.tok, self.batch_size, self.mlm_prob, self.seed = tok, batch_size, mlm_prob, seed
        self.vocab = (len(SPECIAL_TOKENS), len(tok))

    def __call__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, step, 3])
        rows = rng.choice(len(self.ids), size=min(self.batch_size, len(self.ids)), replace=False)
        picks = [int(self.offsets[r] + rng.integers(self.offsets[r + 1] - self.offsets[r])) for r in rows]
        ids = [self.texts.ids[p] for p in picks]
        masked = [whole_word_mask(self.texts.ids[p], self.texts.words[p], self.mlm_prob, rng,
                                  self.tok.mask_token_id, self.vocab) for p in picks]
        x, mask = text_batch(ids, self.tok.pad_token_id)
        mx, _ = text_batch([m[0] for m in masked], self.tok.pad_token_id)
        labels, _ = text_batch([m[1] for m in masked], -100)
        labels[~mask] = -100
        return {"input_ids": x, "attention_mask": mask, "mlm_ids": mx, "mlm_labels": labels,
                "pixel_values": self.bank.gather([self.ids[r] for r in rows])}


@torch.no_grad()
def validation_scores(model: VLMo, batches: CaptionBatches, n_batches: int = 2) -> dict:
    """Held-out sanity numbers for the log: losses, ITM / MLM accuracy, in-batch ITC R@1."""
    model.eval()
    torch.manual_seed(0)
    sums: dict[str, float] = {}
    for step in range(n_batches):
        for k, v in pretrain_losses(model, batches(step)).items():
            sums[k] = sums.get(k, 0.0) + float(v) / n_batches
    return {f"val_{k}": v for k, v in sums.items()}


def pretrain_vlmo(data_dir, tokenizer_dir, out_dir, arch: dict, mode: str, train_cfg: TrainConfig,
                  batch_size: int, mlm_prob: float, init_dir=None, resume_dir=None, stage: str = "",
                  image_init=None) -> dict:
    """Pretrain a ``mode`` VLMo (from ``init_dir`` or ``image_init`` if given, :func:`build_vlmo`) and
    save it with its train log."""
    tok = load_tokenizer(tokenizer_dir)
    torch.manual_seed(train_cfg.seed)  # a fresh model's init depends on the config's seed only
    model = build_vlmo(arch, mode, tok, init_dir, image_init)
    max_len = model.cfg.max_text_len
    batches = CaptionBatches(data_dir, "train", tok, model.cfg.preprocessing, max_len, batch_size, mlm_prob,
                             train_cfg.seed)
    log.info("pretraining a %s VLMo (%d parameters) on %d images", mode, sum(p.numel() for p in model.parameters()),
             len(batches.ids))
    val = CaptionBatches(data_dir, "val", tok, model.cfg.preprocessing, max_len, batch_size, mlm_prob, 12345)
    result = train(model, batches, pretrain_loss, train_cfg, resume_dir=resume_dir, desc=f"pretrain_vlmo[{stage or mode}]")
    result.update(validation_scores(model, val))
    params = sum(p.numel() for p in model.parameters())
    save_vlmo(model, out_dir, {"stage": stage, "init": str(init_dir or ""), "image_init": str(image_init or ""),
                               "tokenizer": str(tokenizer_dir),
                               "steps": train_cfg.steps, "params": params})
    write_json(Path(out_dir) / "train_log.json", {**result, "params": params})
    return result
