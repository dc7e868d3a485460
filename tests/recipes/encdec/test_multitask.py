"""Fine-tuning set-up of VL-BART: the `vlpet.dropout` override reaches every dropout of the model."""

from __future__ import annotations

import pytest
import torch

from vltune.backbones.bart import build_tiny_bart
from vltune.recipes.encdec.finetune import build_vlbart


@pytest.fixture()
def backbone_dir(tokenizer, tmp_path):
    torch.manual_seed(0)
    bart = build_tiny_bart(tokenizer, d_model=32, layers=1, heads=2, ffn=64, max_positions=32, dropout=0.1)
    bart.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def _two_train_mode_losses(model, tokenizer):
    enc = tokenizer(["vqa: what color is the circle?"], return_tensors="pt")
    labels = tokenizer(["red"], return_tensors="pt")["input_ids"]
    feats, order = torch.randn(1, 5, 8), torch.zeros(1, 5, dtype=torch.long)
    model.train()
    return [model(enc["input_ids"], enc["attention_mask"], feats, order, labels=labels).loss.item() for _ in range(2)]


def test_dropout_override_makes_training_forward_deterministic(backbone_dir, tokenizer):
    model, _ = build_vlbart(backbone_dir, feat_dim=8, dropout=0.0)
    cfg = model.bart.config
    assert (cfg.dropout, cfg.attention_dropout, cfg.activation_dropout) == (0.0, 0.0, 0.0)
    a, b = _two_train_mode_losses(model, tokenizer)
    assert a == b


def test_no_override_keeps_the_backbones_dropout(backbone_dir, tokenizer):
    model, _ = build_vlbart(backbone_dir, feat_dim=8)
    assert model.bart.config.dropout == 0.1
    a, b = _two_train_mode_losses(model, tokenizer)
    assert a != b  # dropout is active in training mode
