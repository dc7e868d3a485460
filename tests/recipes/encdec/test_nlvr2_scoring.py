"""NLVR2 scoring reads the logits of the first answer token: the decoder prefix each family feeds
(BART ``</s> <s>``, T5 ``<pad>``) must be the one its training targets put before ``true``/``false``."""

from __future__ import annotations

import pytest
import torch

from vltune.backbones.bart import build_tiny_bart
from vltune.backbones.t5 import build_tiny_t5
from vltune.backbones.tokenizer import VIS_EXTRA_IDS
from vltune.models.encdec import VLBart, VLT5
from vltune.recipes.encdec.tasks import load_task


def _model(family, tokenizer, t5_tokenizer):
    torch.manual_seed(0)
    if family == "bart":
        lm = build_tiny_bart(tokenizer, d_model=32, layers=1, heads=2, ffn=64, max_positions=32)
        return VLBart(lm, 8, tokenizer.convert_tokens_to_ids(VIS_EXTRA_IDS)).eval(), tokenizer
    lm = build_tiny_t5(t5_tokenizer, d_model=32, d_ff=64, d_kv=16, layers=1, heads=2)
    return VLT5(lm, 8, t5_tokenizer.convert_tokens_to_ids(VIS_EXTRA_IDS)).eval(), t5_tokenizer


def _scored_ids(tok) -> tuple[int, int]:
    """The ids nlvr2_predictions compares (vltune.recipes.encdec.evaluate)."""
    return tuple(tok(w, add_special_tokens=False)["input_ids"][0] for w in ("true", "false"))


@pytest.mark.parametrize("family, prefix_tokens", [("bart", ["</s>", "<s>"]), ("t5", ["<pad>"])])
def test_training_targets_put_the_scored_token_right_after_the_answer_prefix(
        tiny_world, tokenizer, t5_tokenizer, family, prefix_tokens):
    model, tok = _model(family, tokenizer, t5_tokenizer)
    prefix = model.answer_prefix()
    assert prefix == tok.convert_tokens_to_ids(prefix_tokens)
    ex = load_task(tiny_world, "nlvr2", "train", tok)
    true_id, false_id = _scored_ids(tok)
    for label, [(target, _)] in zip(ex.refs, ex.targets):
        decoder_in = [model.config.decoder_start_token_id, *target[:-1]]  # teacher forcing: shift right
        assert decoder_in[:len(prefix)] == prefix
        assert target[len(prefix) - 1] == (true_id if label else false_id)
        if family == "t5":
            assert target[0] == (true_id if label else false_id)  # T5 targets carry no BOS


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_first_token_logits_are_the_teacher_forced_logits_of_the_answer(tokenizer, t5_tokenizer, family):
    model, tok = _model(family, tokenizer, t5_tokenizer)
    enc = tok(["nlvr: there is a red circle", "nlvr: two squares"], padding=True, return_tensors="pt")
    feats = torch.randn(2, 10, 8, generator=torch.Generator().manual_seed(2))
    order = torch.arange(2).repeat_interleave(5).expand(2, -1)
    labels = tok(["true", "false"], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    forced = model(enc["input_ids"], enc["attention_mask"], feats, order, labels=labels).logits
    scored = model.first_token_logits(enc["input_ids"], enc["attention_mask"], feats, order)
    torch.testing.assert_close(scored, forced[:, len(model.answer_prefix()) - 1])
