"""Evaluating on the first N examples (the short-budget runs' `vlpet.short.eval_examples`) scores
exactly those examples: the same predictions as a full evaluation's first N, and metrics computed
from them alone."""

from __future__ import annotations

import torch

from vltune.recipes.encdec.evaluate import evaluate_vl_model
from vltune.evaluate.metrics import binary_accuracy
from vltune.evaluate.vqa import vqa_accuracy
from vltune.features.store import FeatureWriter
from vltune.recipes.encdec.tasks import load_task


def _model(tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration

    from vltune.models.encdec import VLBart

    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    return VLBart(BartForConditionalGeneration(cfg), 6, list(range(len(tokenizer) - 5, len(tokenizer)))).eval()


def _features(tiny_world, out):
    from vltune.data.tables import read_table, table_path

    ids = read_table(table_path(tiny_world, "images"), "images")["image_id"].to_pylist()
    g = torch.Generator().manual_seed(0)
    w = FeatureWriter(out, encoder="fake", preprocessing={}, shard_size=50)
    w.add(ids, {"grid": torch.randn(len(ids), 4, 6, generator=g), "cls": torch.randn(len(ids), 6, generator=g)})
    w.close()
    return out


def test_max_examples_scores_the_first_n_examples_only(tiny_world, tokenizer, tmp_path):
    model, feats = _model(tokenizer), _features(tiny_world, tmp_path / "feats")
    full_preds, sub_preds = {}, {}
    full = evaluate_vl_model(model, tokenizer, tiny_world, feats, ["vqa", "nlvr2"], batch_size=4,
                             save_predictions=full_preds)
    sub = evaluate_vl_model(model, tokenizer, tiny_world, feats, ["vqa", "nlvr2"], batch_size=4,
                            save_predictions=sub_preds, max_examples=5)
    vqa, nlvr2 = (load_task(tiny_world, t, "test", tokenizer) for t in ("vqa", "nlvr2"))
    assert full["vqa_examples"] == len(vqa) > 5 and full["nlvr2_examples"] == len(nlvr2) > 5
    assert sub["vqa_examples"] == sub["nlvr2_examples"] == 5
    for task in ("vqa", "nlvr2"):
        assert sub_preds[task] == full_preds[task][:5]  # the first five, predicted the same way
    assert sub["vqa_accuracy"] == vqa_accuracy([p["prediction"] for p in sub_preds["vqa"]], vqa.refs[:5])
    assert sub["nlvr2_accuracy"] == binary_accuracy([p["prediction"] for p in sub_preds["nlvr2"]],
                                                    list(nlvr2.refs[:5]))
    assert load_task(tiny_world, "vqa", "test", tokenizer).head(100).ids == vqa.ids  # n > len: all of them
