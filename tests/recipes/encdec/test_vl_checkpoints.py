"""VL models from pretrained backbones of both families: a checkpoint records its family and loads
back to identical outputs; a backbone of the wrong family or an unknown family is a clear error;
the fine-tuning dropout override reaches T5's single dropout rate."""

from __future__ import annotations

import pytest
import torch

from vltune.backbones.bart import build_tiny_bart
from vltune.backbones.t5 import build_tiny_t5
from vltune.errors import UserError
from vltune.models.encdec import VLBart, VLT5
from vltune.recipes.encdec.finetune import build_vl_model, load_vl_model, save_vl_model, vl_model_class
from vltune.utils.io import read_json


@pytest.fixture()
def backbone_dirs(tokenizer, t5_tokenizer, tmp_path):
    torch.manual_seed(0)
    dirs = {"bart": tmp_path / "bart", "t5": tmp_path / "t5"}
    build_tiny_bart(tokenizer, d_model=32, layers=1, heads=2, ffn=64, max_positions=32).save_pretrained(dirs["bart"])
    tokenizer.save_pretrained(dirs["bart"])
    build_tiny_t5(t5_tokenizer, d_model=32, d_ff=64, d_kv=16, layers=1, heads=2).save_pretrained(dirs["t5"])
    t5_tokenizer.save_pretrained(dirs["t5"])
    return dirs


def _outputs(model, tok):
    enc = tok(["vqa: what color is the circle?", "nlvr: two squares"], padding=True, return_tensors="pt")
    feats = torch.randn(2, 10, 8, generator=torch.Generator().manual_seed(3))
    order = torch.arange(2).repeat_interleave(5).expand(2, -1)
    labels = tok(["red", "true"], padding=True, return_tensors="pt")["input_ids"]
    args = (enc["input_ids"], enc["attention_mask"], feats, order)
    return (model(*args, labels=labels).logits, model.first_token_logits(*args),
            model.generate(*args, num_beams=2, max_new_tokens=4))


@pytest.mark.parametrize("family, cls", [("bart", VLBart), ("t5", VLT5)])
def test_checkpoint_round_trip_records_the_family_and_keeps_the_outputs(backbone_dirs, tmp_path, family, cls):
    torch.manual_seed(1)
    model, tok = build_vl_model(family, backbone_dirs[family], feat_dim=8)
    model.eval()
    save_vl_model(model, tok, tmp_path / "ckpt", {"method": "full", "seed": 1})
    assert read_json(tmp_path / "ckpt/vl_model.json")["family"] == family
    loaded, loaded_tok, meta = load_vl_model(tmp_path / "ckpt")
    assert isinstance(loaded, cls) and meta["family"] == family and meta["feat_dim"] == 8
    assert loaded_tok("true")["input_ids"] == tok("true")["input_ids"]
    for a, b in zip(_outputs(model, tok), _outputs(loaded, loaded_tok)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_backbone_of_another_family_is_refused_naming_it(backbone_dirs):
    with pytest.raises(UserError, match=r"bart.*'bart' model, not one of the 't5' family"):
        build_vl_model("t5", backbone_dirs["bart"], feat_dim=8)


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(UserError, match=r"'bert'.*Did you mean 'bart'.*Available: bart, t5"):
        vl_model_class("bert")


def test_t5_dropout_override_sets_its_one_rate(backbone_dirs):
    model, tok = build_vl_model("t5", backbone_dirs["t5"], feat_dim=8, dropout=0.0)
    assert model.t5.config.dropout_rate == 0.0
    model.train()
    enc = tok(["vqa: what color is the circle?"], return_tensors="pt")
    labels = tok(["red"], return_tensors="pt")["input_ids"]
    feats, order = torch.randn(1, 5, 8), torch.zeros(1, 5, dtype=torch.long)
    a, b = (model(enc["input_ids"], enc["attention_mask"], feats, order, labels=labels).loss.item() for _ in range(2))
    assert a == b
    assert build_vl_model("t5", backbone_dirs["t5"], feat_dim=8)[0].t5.config.dropout_rate == 0.1
