"""eP-ALM training and evaluation on the tiny world: tiny OPT and ViT pretrained by the pipeline's
own code, perception cached and read back by image id, frozen backbones stay bit-identical, the
loss falls, checkpoints hold only the connection and prompt, and the loaders' checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vltune.errors import UserError
from vltune.train.loop import TrainConfig

OPT_ARCH = dict(hidden=32, layers=4, heads=2, ffn=64, max_positions=48)
VIT_ARCH = dict(image_size=64, patch_size=16, hidden=32, layers=3, heads=2, mlp_ratio=2.0)
METHOD = {"n_tokens": 2, "start_layer": 1, "end_layer": 4, "prompt_len": 3}


@pytest.fixture(scope="module")
def backbones(tiny_world, tokenizer_dir, tmp_path_factory):
    from vltune.backbones.opt import pretrain_opt
    from vltune.backbones.vit import pretrain_vit
    from vltune.features.perception import extract_perception

    root = tmp_path_factory.mktemp("epalm")
    pretrain_opt(tiny_world, tokenizer_dir, root / "opt", OPT_ARCH, TrainConfig(steps=4, log_every=2), 16)
    pretrain_vit(tiny_world, root / "vit", VIT_ARCH, 4, TrainConfig(steps=4, log_every=2), 16)
    extract_perception(tiny_world, root / "vit", root / "perception", batch_size=32, shard_size=40)
    return root


def _model(backbones, cached: bool, method: str = "epalm-prompt", dropout: float | None = None):
    from vltune.pet import apply_pet
    from vltune.recipes.epalm.finetune import build_epalm

    torch.manual_seed(0)
    model, tok = build_epalm(backbones / "opt", backbones / "vit", cached, dropout)
    apply_pet(model, {**METHOD, "method": method})
    return model, tok


def test_cached_perception_is_read_back_by_image_id(backbones, tiny_world):
    from vltune.backbones.vit import block_cls, load_vit
    from vltune.data.images import decode_images
    from vltune.data.tables import read_table, table_path
    from vltune.features.store import FeatureStore

    store = FeatureStore(backbones / "perception")
    images = read_table(table_path(tiny_world, "images"), "images")
    assert len(store) == images.num_rows and len(store.manifest["shards"]) > 1  # several shards
    vit = load_vit(backbones / "vit")
    pick = [5, 41, 0]  # across shards, out of order
    ids = [images["image_id"][i].as_py() for i in pick]
    pixels = decode_images([images["image"][i].as_py() for i in pick], 64)
    with torch.no_grad():
        fresh = block_cls(vit, pixels)
    assert fresh.shape == (3, VIT_ARCH["layers"], VIT_ARCH["hidden"])
    torch.testing.assert_close(store.get(ids, "cls_layers").float(), fresh, rtol=1e-5, atol=1e-5)


def test_cached_and_recomputed_perception_give_the_same_loss(backbones, tiny_world):
    from vltune.features.perception import perception_preprocessing
    from vltune.recipes.epalm.finetune import Perception, epalm_loss, load_examples, make_batch

    model, tok = _model(backbones, cached=False)
    model.eval()
    ex = load_examples(tiny_world, "vqa", "train", tok)
    cached = Perception(backbones / "perception")
    fresh = Perception(None, tiny_world, perception_preprocessing(model.encoder))
    idx = np.arange(12)
    a = make_batch(ex, idx, cached, tok.pad_token_id, np.random.default_rng(0))
    b = make_batch(ex, idx, fresh, tok.pad_token_id, np.random.default_rng(0))
    assert "perception" in a and "pixel_values" in b and torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(epalm_loss(model, a), epalm_loss(model, b), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="augment"):
        Perception(backbones / "perception", augment=True)
    augmented = Perception(None, tiny_world, perception_preprocessing(model.encoder), augment=True)
    ids = ex.images[:4]
    x, y = augmented.batch(ids)["pixel_values"], fresh.batch(ids)["pixel_values"]
    assert x.shape == y.shape and not torch.allclose(x, y)


def test_only_the_connection_and_prompt_change_and_the_loss_falls(backbones, tiny_world):
    from vltune.features.perception import perception_preprocessing
    from vltune.recipes.epalm.finetune import Perception, epalm_loss, load_examples, make_batch
    from vltune.train.loop import train

    model, tok = _model(backbones, cached=False, dropout=0.0)  # the encoder runs every step
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.") for n in frozen) and any(n.startswith("lm.") for n in frozen)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    perception = Perception(None, tiny_world, perception_preprocessing(model.encoder))
    ex = load_examples(tiny_world, "vqa", "train", tok)
    # One fixed batch, no dropout: a deterministic loss the slots alone must lower. A 4-step LM
    # passes little from the prefix to the text (measured: -0.8 % in 25 steps, -2 % after 40
    # pretraining steps), so the bar is small; the DAG's VQA-vs-majority check is the real one.
    fixed = make_batch(ex, np.arange(16), perception, tok.pad_token_id, np.random.default_rng(0))
    result = train(model, lambda step: fixed, epalm_loss, TrainConfig(steps=25, lr=3e-2, log_every=1))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # bit-identical
        else:
            assert not torch.equal(p, trained[n]), n
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < 0.995 * losses[0] and np.mean(losses[-5:]) < np.mean(losses[:5])


def test_finetune_saves_only_the_slots_and_evaluates(backbones, tiny_world, tmp_path, monkeypatch):
    from safetensors import safe_open

    from vltune.recipes.epalm.evaluate import evaluate_epalm
    from vltune.recipes.epalm.finetune import finetune_epalm, load_epalm

    out = tmp_path / "ckpt"
    result = finetune_epalm(tiny_world, backbones / "opt", backbones / "vit", out, "vqa", "epalm-prompt",
                            TrainConfig(steps=3, log_every=1), 8, features_dir=backbones / "perception",
                            method_config=METHOD)
    weights = next((out / "adapter").glob("*.safetensors"))
    with safe_open(str(weights), "pt") as f:
        names = list(f.keys())
    assert names and all(n.startswith(("connector.", "prompt.")) for n in names)
    n_saved = 0
    with safe_open(str(weights), "pt") as f:
        n_saved = sum(f.get_tensor(n).numel() for n in names)
    assert n_saved == result["trainable_params"]
    # the encoder is counted in the total although cached perception never loads it
    enc = sum(p.numel() for p in _model(backbones, cached=False)[0].encoder.parameters())
    cached_model, _ = _model(backbones, cached=True)
    assert result["total_params"] == sum(p.numel() for p in cached_model.parameters()) + enc
    model, _, meta = load_epalm(out)
    assert meta["perception"] == "cached" and meta["task"] == "vqa"
    saved = {n: p for n, p in model.named_parameters() if n.startswith(("connector.", "prompt."))}
    with safe_open(str(weights), "pt") as f:
        for n in names:
            assert torch.equal(saved[n], f.get_tensor(n))
    predictions = {}
    metrics, metas = evaluate_epalm({"vqa": out}, tiny_world, backbones / "perception", batch_size=16, num_beams=2,
                                    save_predictions=predictions)
    assert metas["vqa"]["method"] == "epalm-prompt"
    # the official VQA accuracy (https://visualqa.org/evaluation.html) of what was predicted, from
    # the test table's ten answers: mean over the ten leave-one-out subsets of min(1, matches / 3)
    from vltune.data.tables import read_table, table_path

    table = read_table(table_path(tiny_world, "vqa"), "vqa").to_pandas()
    answers = {str(r.question_id): list(r.answers) for r in table[table.split == "test"].itertuples()}

    def official(pred, ans):
        return np.mean([min(1.0, sum(a == pred.strip().lower() for a in ans[:i] + ans[i + 1:]) / 3)
                        for i in range(len(ans))])

    preds = {p["id"]: p["prediction"] for p in predictions["vqa"]}
    assert sorted(preds) == sorted(answers)  # every test question, once
    assert metrics["vqa_accuracy"] == pytest.approx(100 * np.mean([official(preds[q], answers[q]) for q in answers]))
    # a decoder that answers each question with its first annotator's answer: scored against that
    # question's own answers (a tiny model's predictions score 0 whatever they are compared with)
    import vltune.recipes.epalm.evaluate as epalm_eval

    # (only where every answer is one plain word, which the official normalisation leaves as it is;
    # elsewhere an empty answer)
    words = {"a", "an", "the", "none", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
             "nine", "ten"}
    plain = {q: ans for q, ans in answers.items() if all(a.isalpha() and a.islower() and a not in words for a in ans)}
    first_answer = {q: ans[0] if q in plain else "" for q, ans in answers.items()}
    monkeypatch.setattr(epalm_eval, "decode", lambda model, tok, ex, *a, **k: [first_answer[str(i)] for i in ex.ids])
    first, _ = evaluate_epalm({"vqa": out}, tiny_world, backbones / "perception", batch_size=16, num_beams=2)
    expected = 100 * np.mean([official(first_answer[q], ans) for q, ans in answers.items()])
    assert 0 < expected < 100 and first["vqa_accuracy"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="trained on 'vqa', not 'gqa'"):
        evaluate_epalm({"gqa": out}, tiny_world, backbones / "perception")


def test_loaders_take_saved_folders_and_reject_what_cannot_work(backbones, tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    from vltune.backbones.opt import ANSWER_TOKEN, load_opt
    from vltune.backbones.vit import load_vit

    lm, tok = load_opt(backbones / "opt")  # the hub layout: config.json + model.safetensors + tokenizer
    assert tok.bos_token == tok.eos_token == "</s>" and tok(["a"])["input_ids"][0][0] == tok.eos_token_id
    assert tok.convert_tokens_to_ids(ANSWER_TOKEN) < lm.config.vocab_size
    bad = tmp_path / "bart"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bart"}))
    with pytest.raises(UserError, match="must be an OPT"):
        load_opt(bad)
    # an OPT whose table has no free row for </a> cannot stay frozen
    small = tmp_path / "small-opt"
    OPTForCausalLM(OPTConfig(vocab_size=len(tok) - 1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             ffn_dim=32, word_embed_proj_dim=16)).save_pretrained(small)
    tok.save_pretrained(small)
    with pytest.raises(UserError, match="outside the LM's"):
        load_opt(small)
    vit = load_vit(backbones / "vit")
    assert vit.num_classes == 0 and len(vit.blocks) == VIT_ARCH["layers"]
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vit(tmp_path)
    with pytest.raises(UserError, match="not an eP-ALM method"):
        from vltune.recipes.epalm.finetune import finetune_epalm

        finetune_epalm(None, backbones / "opt", backbones / "vit", tmp_path / "x", "vqa", "lora",
                       TrainConfig(steps=1), 4)


def test_encoder_shape_comes_from_the_model_for_pipeline_and_published_vits(backbones, published_vit_dir, tmp_path):
    """Width and depth come from the model timm builds from the folder: the pipeline's ViT (its
    config.json has model_args) and a published-shape one (timm's pretrained config only)."""
    import timm

    from vltune.recipes.epalm.finetune import build_epalm, encoder_shape

    assert encoder_shape(backbones / "vit") == (VIT_ARCH["hidden"], VIT_ARCH["layers"])
    assert "embed_dim" not in json.loads((published_vit_dir / "config.json").read_text()).get("model_args", {})
    reference = timm.create_model(f"local-dir:{published_vit_dir}", pretrained=True, num_classes=0)
    assert encoder_shape(published_vit_dir) == (reference.embed_dim, len(reference.blocks)) == (768, 2)
    model, _ = build_epalm(backbones / "opt", published_vit_dir, cached=True)
    assert model.encoder is None and (model.vision_width, model.vision_depth) == (768, 2)
    # a timm model without a [CLS] token / blocks is refused naming the folder
    cnn = tmp_path / "cnn"
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("resnet10t", pretrained=False, num_classes=0), str(cnn), safe_serialization=True)
    with pytest.raises(UserError, match=r"cnn: a ResNet is not a timm ViT"):
        encoder_shape(cnn)
    bad = tmp_path / "not-timm"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="not-timm: timm cannot build a model"):
        build_epalm(backbones / "opt", bad, cached=True)


def test_an_injection_window_past_the_lms_depth_stops_finetuning_naming_the_key(backbones, tiny_world, tmp_path,
                                                                                 monkeypatch):
    """The tiny OPT has 4 layers: end_layer 5 (or start_layer ≥ end_layer) is refused before training."""
    import vltune.recipes.epalm.finetune as epalm_mod
    from vltune.recipes.epalm.finetune import finetune_epalm

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(epalm_mod, "train", no_training)
    args = (tiny_world, backbones / "opt", backbones / "vit", tmp_path / "out", "vqa", "epalm-prompt",
            TrainConfig(steps=1), 4)
    with pytest.raises(UserError, match=r"epalm\.method_configs\.epalm-prompt\.end_layer: .*start_layer=1, end_layer=5 "
                                        r"do not fit the OPT in .*opt, which has 4 layers"):
        finetune_epalm(*args, features_dir=backbones / "perception", method_config={**METHOD, "end_layer": 5})
    with pytest.raises(UserError, match=r"epalm-prompt\.start_layer: .*start_layer=3, end_layer=3 .* 4 layers"):
        finetune_epalm(*args, features_dir=backbones / "perception",
                       method_config={**METHOD, "n_tokens": 1, "start_layer": 3, "end_layer": 3})
    assert not (tmp_path / "out").exists()
