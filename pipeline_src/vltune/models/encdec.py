"""VL-BART: a BART encoder-decoder fed with image features (VL-T5 / VL-Adapter / VL-PET).

Paper: Cho et al., "Unifying Vision-and-Language Tasks via Text Generation" (VL-T5/VL-BART,
https://arxiv.org/abs/2102.02779), as used by VL-Adapter and VL-PET (seeds-spec §1(b) "Input
construction"). Written from the spec, not ported: BART itself is transformers'
``BartForConditionalGeneration``, unchanged; only the encoder input is built here.

Encoder input = ``concat([LN_emb(E_tok[ids] + P[pos]), v])`` where the visual tokens
``v = LN_f(W_f f) + LN_p(W_p box) + E_img[order] + E_tok[<vis_extra_id_k>]`` get no position
embedding and no embedding LayerNorm. Boxes are zeros (as in VL-Adapter's CLIP features), so the
box branch is a learned constant; it is kept so box-carrying features fit unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BartForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput


class VisualEmbedding(nn.Module):
    """Projects visual features into the LM's embedding space (seeds-spec §1(b) item 3)."""

    def __init__(self, feat_dim: int, d_model: int, n_images: int = 2):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, d_model)
        self.feat_norm = nn.LayerNorm(d_model)
        self.box_proj = nn.Linear(5, d_model)
        self.box_norm = nn.LayerNorm(d_model)
        self.img_order = nn.Embedding(n_images, d_model)

    def forward(self, feats: torch.Tensor, img_order: torch.Tensor, obj_embeds: torch.Tensor) -> torch.Tensor:
        boxes = feats.new_zeros(*feats.shape[:2], 5)
        return (
            self.feat_norm(self.feat_proj(feats))
            + self.box_norm(self.box_proj(boxes))
            + self.img_order(img_order)
            + obj_embeds
        )


class VLBart(nn.Module):
    """``BartForConditionalGeneration`` + :class:`VisualEmbedding` over a joint text+image encoder input.

    Args:
        bart: the (pretrained) BART; its modules keep their names under ``bart.``.
        feat_dim: width of the visual feature vectors.
        vis_token_ids: token ids of ``<vis_extra_id_0..K-1>``, one per visual position of an image.
    """

    def __init__(self, bart: BartForConditionalGeneration, feat_dim: int, vis_token_ids: list[int]):
        super().__init__()
        self.bart = bart
        self.config = bart.config
        self.visual_embedding = VisualEmbedding(feat_dim, bart.config.d_model)
        # Prompt tuning's slot (vltune.pet "prompt"): a module returning (B, n, d) vectors that go
        # before the text; None = no prompt.
        self.encoder_prompt: nn.Module | None = None
        self.register_buffer("vis_token_ids", torch.tensor(vis_token_ids, dtype=torch.long), persistent=False)

    # --- encoder -------------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask, vis_feats, vis_order) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the encoder on ``[text ; visual]`` (``[prompt ; text ; visual]`` with an
        ``encoder_prompt``); return its output and the joint attention mask.

        ``vis_feats``: (B, N_v, F); ``vis_order``: (B, N_v) image index of each visual token
        (0 for one image, 0/1 for an NLVR2 pair). Positions inside each image pick the
        ``<vis_extra_id_k>`` embedding.
        """
        enc = self.bart.get_encoder()
        text = enc.embed_tokens(input_ids)
        text = text + enc.embed_positions(text[:, :, -1]).to(text.device)
        if self.encoder_prompt is not None:  # as VL-Adapter: after the positions, inside the embedding LN
            prompt = self.encoder_prompt(len(input_ids)).to(text.dtype)
            text = torch.cat([prompt, text], dim=1)
            attention_mask = torch.cat([attention_mask.new_ones(prompt.shape[:2]), attention_mask], dim=1)
        text = enc.layernorm_embedding(text)
        obj_embeds = enc.embed_tokens(self.vis_token_ids[_positions_within_image(vis_order)])
        vis = self.visual_embedding(vis_feats.to(text.dtype), vis_order, obj_embeds)
        hidden = torch.cat([text, vis], dim=1)
        hidden = nn.functional.dropout(hidden, p=enc.dropout, training=self.training)
        joint_mask = torch.cat([attention_mask, attention_mask.new_ones(vis_order.shape)], dim=1)
        mask4d = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=joint_mask)
        for layer in enc.layers:
            hidden = layer(hidden, mask4d)
            if isinstance(hidden, tuple):  # older transformers return (hidden, attn)
                hidden = hidden[0]
        return BaseModelOutput(last_hidden_state=hidden), joint_mask

    # --- training ------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, vis_feats, vis_order, labels=None, decoder_input_ids=None):
        enc_out, joint_mask = self.encode(input_ids, attention_mask, vis_feats, vis_order)
        return self.bart(
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
        return self.bart.generate(encoder_outputs=enc_out, attention_mask=joint_mask, **gen_kwargs)

    @torch.no_grad()
    def first_token_logits(self, input_ids, attention_mask, vis_feats, vis_order) -> torch.Tensor:
        """Logits of the first answer token after ``[decoder_start, <s>]`` (NLVR2 true/false)."""
        cfg = self.config
        start = torch.tensor([[cfg.decoder_start_token_id, cfg.bos_token_id]], device=input_ids.device)
        out = self(input_ids, attention_mask, vis_feats, vis_order, decoder_input_ids=start.expand(len(input_ids), 2))
        return out.logits[:, 1]


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
