"""Parameter budget planner: trainable / total parameters of a VL model + PET method, on the meta
device (no weights allocated, nothing downloaded).

Presets hold the published dimensions. Vocabularies are the resized ones the VL models train with:
bart-base 50,265 + 200 added tokens (``<extra_id_*>``, ``<vis_extra_id_*>``; VL-Adapter resizes the
embedding by the number added) = 50,465; t5-base: VL-T5 resizes to its tokenizer's 32,100 + 100
``<vis_extra_id_*>`` = 32,200 (dropping t5-base's 28 padding rows). Percentages are
trainable / all parameters incl. the new modules, as VL-PET prints them (VL-PET, arXiv 2308.09804).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..models.encdec import VLBart, VisualEmbedding
from ..pet.base import apply_pet, count_parameters
from ..pet.config import PetConfig


@dataclass(frozen=True)
class ArchPreset:
    """One planner architecture: the HF family, its config kwargs and the visual feature width."""

    family: str
    config: dict[str, Any] = field(default_factory=dict)
    feat_dim: int = 2048  # CLIP RN101 grid features
    n_vis_tokens: int = 100  # <vis_extra_id_k> rows at the end of the vocabulary


ARCH_PRESETS: dict[str, ArchPreset] = {
    "bart-base": ArchPreset("bart", dict(
        vocab_size=50265 + 200, d_model=768, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
        max_position_embeddings=1024,
    )),
    "t5-base": ArchPreset("t5", dict(
        vocab_size=32100 + 100, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
        num_heads=12, feed_forward_proj="relu", tie_word_embeddings=True,
    )),
}


class _T5VisualEmbedding(VisualEmbedding):
    """VL-T5's visual embedding uses T5LayerNorm (scale only, no bias) where VL-BART uses LayerNorm."""

    def __init__(self, feat_dim: int, d_model: int):
        super().__init__(feat_dim, d_model)
        from transformers.models.t5.modeling_t5 import T5LayerNorm

        self.feat_norm = T5LayerNorm(d_model)
        self.box_norm = T5LayerNorm(d_model)


class PlannerVLT5(nn.Module):
    """``T5ForConditionalGeneration`` + visual embedding with VL-T5's module tree, for counting only.

    It has no forward: the full VL-T5 model belongs in ``models/encdec.py``; when it lands,
    :func:`build_meta_model` should build that class instead (it only needs ``.config``, the HF
    model as one child, ``visual_embedding`` and an ``encoder_prompt`` slot).
    """

    def __init__(self, t5: nn.Module, feat_dim: int):
        super().__init__()
        self.t5 = t5
        self.config = t5.config
        self.visual_embedding = _T5VisualEmbedding(feat_dim, t5.config.d_model)
        self.encoder_prompt: nn.Module | None = None


def build_preset_model(arch: str, device: str | torch.device = "meta", config_overrides: Mapping[str, Any] | None = None,
                       feat_dim: int | None = None) -> nn.Module:
    """The VL model of preset ``arch`` (its HF config updated by ``config_overrides``) on ``device``:
    the meta device to count parameters, a real one for random-weight benchmarks."""
    try:
        preset = ARCH_PRESETS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; presets: {', '.join(sorted(ARCH_PRESETS) + epalm_arch_names())}") from None
    config = {**preset.config, **(config_overrides or {})}
    feat_dim = feat_dim or preset.feat_dim
    with torch.device(device):
        if preset.family == "bart":
            from transformers import BartConfig, BartForConditionalGeneration

            bart = BartForConditionalGeneration(BartConfig(**config))
            # <vis_extra_id_k> is row V-1-k of the resized table (VL-PET, arXiv 2308.09804).
            vocab = config["vocab_size"]
            return VLBart(bart, feat_dim, [vocab - 1 - k for k in range(preset.n_vis_tokens)])
        from transformers import T5Config, T5ForConditionalGeneration

        return PlannerVLT5(T5ForConditionalGeneration(T5Config(**config)), feat_dim)


# eP-ALM presets: published OPT decoders (HF config.json values; OPT-350m is post-LN with a 512-wide
# word embedding and project_in/out) and timm ImageNet ViTs. An eP-ALM arch is "<lm>+<encoder>".
OPT_PRESETS: dict[str, dict[str, Any]] = {
    "opt-350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                     word_embed_proj_dim=512, do_layer_norm_before=False),
    "opt-2.7b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, ffn_dim=10240,
                     word_embed_proj_dim=2560),
    "opt-6.7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, ffn_dim=16384,
                     word_embed_proj_dim=4096),
}
VIT_PRESETS = {"vit-b16": "vit_base_patch16_224", "vit-l16": "vit_large_patch16_224"}


def epalm_arch_names() -> list[str]:
    return [f"{lm}+{enc}" for lm in OPT_PRESETS for enc in VIT_PRESETS]


def build_epalm_meta_model(arch: str) -> nn.Module:
    """eP-ALM (frozen OPT + headless ViT) of ``"<lm>+<encoder>"`` with every tensor on the meta device."""
    import timm
    from transformers import OPTConfig, OPTForCausalLM

    from ..models.epalm import EPALM

    lm_name, _, enc_name = arch.partition("+")
    if lm_name not in OPT_PRESETS or enc_name not in VIT_PRESETS:
        raise ValueError(f"unknown eP-ALM arch {arch!r}; presets: {', '.join(epalm_arch_names())}")
    with torch.device("meta"):
        lm = OPTForCausalLM(OPTConfig(vocab_size=50272, max_position_embeddings=2048, **OPT_PRESETS[lm_name]))
        vit = timm.create_model(VIT_PRESETS[enc_name], pretrained=False, num_classes=0)
    return EPALM(lm, vit)


def build_meta_model(arch: str) -> nn.Module:
    """The VL model of preset ``arch`` with every tensor on the meta device."""
    if "+" in arch:
        return build_epalm_meta_model(arch)
    return build_preset_model(arch, "meta")


def plan_parameters(arch: str, method: str | Mapping[str, Any] | PetConfig) -> dict[str, int | float]:
    """``{"trainable", "total", "trainable_pct"}`` of ``arch`` adapted by ``method``."""
    model = build_meta_model(arch)
    with torch.device("meta"):  # new PET layers are allocated on the meta device too
        apply_pet(model, method)
    counts = count_parameters(model)
    return {"trainable": counts["trainable_params"], "total": counts["total_params"],
            "trainable_pct": counts["trainable_pct"]}
