"""VL-BART and VL-T5: a pretrained encoder-decoder LM fed with image features (VL-T5 / VL-Adapter / VL-PET).

Paper: Cho et al., "Unifying Vision-and-Language Tasks via Text Generation" (VL-T5/VL-BART,
https://arxiv.org/abs/2102.02779), as used by VL-Adapter and VL-PET (VL-PET, arXiv 2308.09804 "Input
construction"). Written from the paper, not ported: the LMs are transformers'
``BartForConditionalGeneration`` / ``T5ForConditionalGeneration``, unchanged; only the encoder
input is built here.

Visual tokens (both families): ``v = N_f(W_f f) + N_p(W_p box) + E_img[order] + E_tok[<vis_extra_id_k>]``,
with no position embedding. ``N`` is ``LayerNorm`` for BART and T5's scale-only ``T5LayerNorm`` for
T5 (as VL-T5's ``VisualEmbedding``). Boxes are zeros (as in VL-Adapter's CLIP features), so the
box branch is a learned constant; it is kept so box-carrying features fit unchanged.

Text: BART ``LN_emb(E_tok[ids] + P[pos])``; T5 ``E_tok[ids]`` (no absolute positions, no scaling, no
embedding norm). T5 attention gets its relative position bias between text tokens only and none
for any pair involving a visual token, as VL-T5's ``JointEncoder`` does: the visual tokens have no
place in the text order, and an example's output then does not depend on how far the batch's
text was padded.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

from ..registry import Registry

# family name ("bart", "t5") → VL model class; the same string is the config value and the wildcard.
VL_FAMILIES: Registry[type] = Registry("VL model family")


class VisualEmbedding(nn.Module):
    """Projects visual features into the LM's embedding space (VL-PET, arXiv 2308.09804).

    Args:
        feat_dim: width of the visual feature vectors.
        d_model: the LM's width.
        n_images: images per example at most (2 for NLVR2).
        norm: the normalisation after each projection, called with ``d_model``.
    """

    def __init__(self, feat_dim: int, d_model: int, n_images: int = 2,
                 norm: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, d_model)
        self.feat_norm = norm(d_model)
        self.box_proj = nn.Linear(5, d_model)
        self.box_norm = norm(d_model)
        self.img_order = nn.Embedding(n_images, d_model)

    def forward(self, feats: torch.Tensor, img_order: torch.Tensor, obj_embeds: torch.Tensor) -> torch.Tensor:
        boxes = feats.new_zeros(*feats.shape[:2], 5)
        return (
            self.feat_norm(self.feat_proj(feats))
            + self.box_norm(self.box_proj(boxes))
            + self.img_order(img_order)
            + obj_embeds
        )


class VLEncoderDecoder(nn.Module):
    """What VL-BART and VL-T5 share: visual tokens, the joint mask, training and decoding calls.

    A family subclass stores its HF model under its own attribute (``bart``, ``t5``: module names,
    hence PET target patterns and checkpoint keys, keep the HF names under that prefix), sets
    :attr:`family` and :attr:`lm_attr`, and implements :meth:`encode`, :meth:`answer_prefix`,
    :meth:`lm_class` and :meth:`dropout_overrides`. :attr:`lm` returns the HF model whatever the family.
    """

    family: str = ""
    lm_attr: str = ""  # attribute holding the HF model

    def _setup(self, feat_dim: int, vis_token_ids: list[int], norm: Callable[[int], nn.Module]) -> None:
        self.config = self.lm.config
        self.visual_embedding = VisualEmbedding(feat_dim, self.config.d_model, norm=norm)
        self.register_buffer("vis_token_ids", torch.tensor(vis_token_ids, dtype=torch.long), persistent=False)
        # Prompt tuning's slot (vltune.pet "prompt"): a module returning (B, n, d) vectors that go
        # before the text; None = no prompt.
        self.encoder_prompt: nn.Module | None = None

    def _prepend_prompt(self, text: torch.Tensor, attention_mask: torch.Tensor):
        """``[prompt ; text]`` and its mask when an ``encoder_prompt`` is installed."""
        if self.encoder_prompt is None:
            return text, attention_mask
        prompt = self.encoder_prompt(len(text)).to(text.dtype)
        mask = torch.cat([attention_mask.new_ones(prompt.shape[:2]), attention_mask], dim=1)
        return torch.cat([prompt, text], dim=1), mask

    @property
    def lm(self) -> nn.Module:
        """The inner HF ``*ForConditionalGeneration`` model."""
        return getattr(self, self.lm_attr)

    def visual_tokens(self, embed_tokens: nn.Embedding, vis_feats: torch.Tensor, vis_order: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
        """(B, N_v, d) visual token embeddings; ``<vis_extra_id_k>`` rows come from ``embed_tokens``."""
        obj_embeds = embed_tokens(self.vis_token_ids[_positions_within_image(vis_order)])
        return self.visual_embedding(vis_feats.to(dtype), vis_order, obj_embeds)

    @staticmethod
    def joint_mask(attention_mask: torch.Tensor, vis_order: torch.Tensor) -> torch.Tensor:
        """``[text mask ; ones]``: every visual token is attended to."""
        return torch.cat([attention_mask, attention_mask.new_ones(vis_order.shape)], dim=1)

    def encode(self, input_ids, attention_mask, vis_feats, vis_order) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the encoder on ``[text ; visual]``; return its output and the joint attention mask.

        ``vis_feats``: (B, N_v, F); ``vis_order``: (B, N_v) image index of each visual token
        (0 for one image, 0/1 for an NLVR2 pair). Positions inside each image pick the
        ``<vis_extra_id_k>`` embedding.
        """
        raise NotImplementedError

    def answer_prefix(self) -> list[int]:
        """Decoder input ids before the first answer token, as teacher forcing feeds them."""
        raise NotImplementedError

    @staticmethod
    def lm_class() -> type:
        """The HF ``*ForConditionalGeneration`` class of the family (``from_pretrained`` target)."""
        raise NotImplementedError

    @staticmethod
    def dropout_overrides(p: float) -> dict:
        """``from_pretrained`` kwargs that set every dropout of the LM to ``p``."""
        raise NotImplementedError

    # --- training ------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, vis_feats, vis_order, labels=None, decoder_input_ids=None):
        enc_out, joint_mask = self.encode(input_ids, attention_mask, vis_feats, vis_order)
        return self.lm(
            encoder_outputs=enc_out,
            attention_mask=joint_mask,
            labels=labels,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids, attention_mask, vis_feats, vis_order, **gen_kwargs) -> torch.Tensor:
        enc_out, joint_mask = self.encode(input_ids, attention_mask, vis_feats, vis_order)
        return self.lm.generate(encoder_outputs=enc_out, attention_mask=joint_mask, **gen_kwargs)

    @torch.no_grad()
    def first_token_logits(self, input_ids, attention_mask, vis_feats, vis_order) -> torch.Tensor:
        """Logits of the first answer token after :meth:`answer_prefix` (NLVR2 true/false)."""
        prefix = torch.tensor([self.answer_prefix()], device=input_ids.device)
        out = self(input_ids, attention_mask, vis_feats, vis_order,
                   decoder_input_ids=prefix.expand(len(input_ids), -1))
        return out.logits[:, -1]


@VL_FAMILIES.register("bart")
class VLBart(VLEncoderDecoder):
    """``BartForConditionalGeneration`` + :class:`VisualEmbedding` over a joint text+image encoder input.

    Args:
        bart: the (pretrained) BART; its modules keep their names under ``bart.``.
        feat_dim: width of the visual feature vectors.
        vis_token_ids: token ids of ``<vis_extra_id_0..K-1>``, one per visual position of an image.
    """

    family = "bart"
    lm_attr = "bart"

    def __init__(self, bart: nn.Module, feat_dim: int, vis_token_ids: list[int]):
        super().__init__()
        self.bart = bart
        self._setup(feat_dim, vis_token_ids, nn.LayerNorm)

    @staticmethod
    def lm_class() -> type:
        from transformers import BartForConditionalGeneration

        return BartForConditionalGeneration

    @staticmethod
    def dropout_overrides(p: float) -> dict:
        """``from_pretrained`` kwargs that set every dropout of the LM to ``p``."""
        return dict(dropout=p, attention_dropout=p, activation_dropout=p)

    def encode(self, input_ids, attention_mask, vis_feats, vis_order) -> tuple[BaseModelOutput, torch.Tensor]:
        """``[text ; visual]`` (``[prompt ; text ; visual]`` with an ``encoder_prompt``) through
        BART's encoder layers; returns the output and the joint attention mask."""
        enc = self.bart.get_encoder()
        text = enc.embed_tokens(input_ids)
        text = text + enc.embed_positions(text[:, :, -1]).to(text.device)
        # As VL-Adapter: the prompt goes after the positions, inside the embedding LayerNorm.
        text, attention_mask = self._prepend_prompt(text, attention_mask)
        text = enc.layernorm_embedding(text)
        vis = self.visual_tokens(enc.embed_tokens, vis_feats, vis_order, text.dtype)
        hidden = torch.cat([text, vis], dim=1)
        hidden = nn.functional.dropout(hidden, p=enc.dropout, training=self.training)
        joint_mask = self.joint_mask(attention_mask, vis_order)
        mask4d = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=joint_mask)
        for layer in enc.layers:
            hidden = layer(hidden, mask4d)
            if isinstance(hidden, tuple):  # older transformers return (hidden, attn)
                hidden = hidden[0]
        return BaseModelOutput(last_hidden_state=hidden), joint_mask

    def answer_prefix(self) -> list[int]:
        # BART targets are "<s> answer </s>"; shifted right, the decoder reads "</s> <s>" first.
        return [self.config.decoder_start_token_id, self.config.bos_token_id]


@VL_FAMILIES.register("t5")
class VLT5(VLEncoderDecoder):
    """``T5ForConditionalGeneration`` + :class:`VisualEmbedding` (with ``T5LayerNorm``) over a joint
    text+image encoder input.

    Args:
        t5: the (pretrained) T5; its modules keep their names under ``t5.``.
        feat_dim: width of the visual feature vectors.
        vis_token_ids: token ids of ``<vis_extra_id_0..K-1>``, one per visual position of an image.
    """

    family = "t5"
    lm_attr = "t5"

    def __init__(self, t5: nn.Module, feat_dim: int, vis_token_ids: list[int]):
        from transformers.models.t5.modeling_t5 import T5LayerNorm

        super().__init__()
        self.t5 = t5
        eps = t5.config.layer_norm_epsilon
        self._setup(feat_dim, vis_token_ids, lambda d: T5LayerNorm(d, eps=eps))

    @staticmethod
    def lm_class() -> type:
        from transformers import T5ForConditionalGeneration

        return T5ForConditionalGeneration

    @staticmethod
    def dropout_overrides(p: float) -> dict:
        """``from_pretrained`` kwargs that set every dropout of the LM to ``p`` (T5 has one rate)."""
        return dict(dropout_rate=p)

    def encode(self, input_ids, attention_mask, vis_feats, vis_order) -> tuple[BaseModelOutput, torch.Tensor]:
        """``[text ; visual]`` (``[prompt ; text ; visual]`` with an ``encoder_prompt``) through T5's
        encoder blocks; the prompt takes part in the text's relative position bias."""
        enc = self.t5.get_encoder()
        text, attention_mask = self._prepend_prompt(enc.embed_tokens(input_ids), attention_mask)
        vis = self.visual_tokens(enc.embed_tokens, vis_feats, vis_order, text.dtype)
        hidden = enc.dropout(torch.cat([text, vis], dim=1))
        joint_mask = self.joint_mask(attention_mask, vis_order)
        mask4d = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=joint_mask)
        n_text, n_vis = text.shape[1], vis.shape[1]
        # (1, H, L, L) text-text bias, zero-padded to (1, H, L+N_v, L+N_v); shared by every block.
        bias = enc.block[0].layer[0].SelfAttention.compute_bias(n_text, n_text, device=hidden.device)
        bias = nn.functional.pad(bias, (0, n_vis, 0, n_vis))
        for block in enc.block:
            hidden = block(hidden, mask4d, bias)[0]
        hidden = enc.dropout(enc.final_layer_norm(hidden))
        return BaseModelOutput(last_hidden_state=hidden), joint_mask

    def answer_prefix(self) -> list[int]:
        # T5 targets are "answer </s>" (no BOS); shifted right, the decoder reads only "<pad>".
        return [self.config.decoder_start_token_id]


def per_example_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Token cross-entropy averaged over each example's target tokens, shape (B,).

    A function of the (possibly accelerate-wrapped) model, so DDP wrappers work unchanged.
    """
    labels = batch["labels"]
    out = model(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"], labels=labels)
    tok = nn.functional.cross_entropy(out.logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return tok.sum(1) / (labels != -100).sum(1).clamp(min=1)


def _positions_within_image(vis_order: torch.Tensor) -> torch.Tensor:
    """(B, N_v) index of each visual token inside its own image (0..K-1 for each image)."""
    n_images = int(vis_order.max().item()) + 1 if vis_order.numel() else 1
    per_image = vis_order.shape[1] // n_images
    return torch.arange(vis_order.shape[1], device=vis_order.device).remainder(per_image).expand_as(vis_order)
