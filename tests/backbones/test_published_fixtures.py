"""The published-backbone folders of tests/published_backbones.py are what the real ones would be:
the published parameter counts at full depth, the published configs, tokenizers with the published
vocabulary sizes and special-token ids, loadable by transformers' Auto classes, timm's local-dir:
and vltune's own fetch_backbone."""

from __future__ import annotations

import filecmp
import json
import shutil

import pytest
import torch

import published_backbones as pb
from vltune.backbones.pretrained import PUBLISHED, fetch_backbone, load_saved
from vltune.backbones.tokenizer import VIS_EXTRA_IDS

LM = ("bart-base", "t5-base", "opt-125m")


@pytest.mark.parametrize("name", list(pb.PARAMETERS))
def test_full_depth_parameter_counts_are_the_published_ones(name):
    # built on the meta device: the published architecture, no weights, no files
    assert pb.parameter_count(name) == pb.PARAMETERS[name]


def test_clip_rn101_without_its_projection():
    # OpenAI's RN101 tower is 56,259,936 parameters with the attention pool's 2048 → 512 projection;
    # num_classes=0 keeps the pool (q, k, v, 50 positions) and drops only that projection
    assert pb.parameter_count("clip-rn101") == 56_259_936 - (2048 * 512 + 512) == 55_210_848


def test_depth_cut_keeps_everything_else():
    assert pb.bart_config(2).to_dict() == {**pb.bart_config().to_dict(), "encoder_layers": 2, "decoder_layers": 2}
    assert pb.t5_config(2).to_dict() == {**pb.t5_config().to_dict(), "num_layers": 2, "num_decoder_layers": 2}
    assert pb.opt_config(2).to_dict() == {**pb.opt_config().to_dict(), "num_hidden_layers": 2}
    # the cut removes whole layers: BART 7,087,872 per encoder / 9,451,776 per decoder layer, T5
    # 7,079,424 / 9,439,488, an OPT decoder layer or a ViT block 7,087,872
    assert pb.parameter_count("bart-base") - pb.parameter_count("bart-base", 2) == 4 * 7_087_872 + 4 * 9_451_776
    assert pb.parameter_count("t5-base") - pb.parameter_count("t5-base", 2) == 10 * 7_079_424 + 10 * 9_439_488
    assert pb.parameter_count("opt-125m") - pb.parameter_count("opt-125m", 2) == 10 * 7_087_872
    assert pb.parameter_count("vit-b16") - pb.parameter_count("vit-b16", 2) == 10 * 7_087_872
    with pytest.raises(ValueError, match="layout"):
        pb.build_model("clip-rn101", layers=2)


PUBLISHED_CONFIG = {
    "bart-base": dict(model_type="bart", d_model=768, encoder_layers=2, decoder_layers=2, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265,
                      max_position_embeddings=1024, activation_function="gelu", bos_token_id=0, pad_token_id=1,
                      eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, scale_embedding=False),
    "t5-base": dict(model_type="t5", d_model=768, d_kv=64, d_ff=3072, num_layers=2, num_decoder_layers=2,
                    num_heads=12, vocab_size=32128, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, feed_forward_proj="relu", layer_norm_epsilon=1e-6,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True),
    "opt-125m": dict(model_type="opt", hidden_size=768, num_hidden_layers=2, num_attention_heads=12, ffn_dim=3072,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768,
                     do_layer_norm_before=True, activation_function="relu", bos_token_id=2, eos_token_id=2,
                     pad_token_id=1),
}

# len(tokenizer), then name → id of its special tokens, as the published tokenizers have them
TOKENS = {
    "bart-base": (50265, {"bos": ("<s>", 0), "pad": ("<pad>", 1), "eos": ("</s>", 2), "unk": ("<unk>", 3),
                          "mask": ("<mask>", 50264), "cls": ("<s>", 0), "sep": ("</s>", 2)}),
    "opt-125m": (50265, {"bos": ("</s>", 2), "pad": ("<pad>", 1), "eos": ("</s>", 2), "unk": ("</s>", 2)}),
    "t5-base": (32100, {"pad": ("<pad>", 0), "eos": ("</s>", 1), "unk": ("<unk>", 2)}),
}
WRAP = {"bart-base": ([0], [2]), "opt-125m": ([2], []), "t5-base": ([], [1])}  # ids around a text


@pytest.mark.parametrize("name", LM)
def test_transformers_folder_loads_with_auto_classes(name, published_backbones):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = published_backbones[name]
    assert {p.name for p in folder.iterdir()} == {"config.json", "generation_config.json", "model.safetensors",
                                                  "tokenizer.json", "tokenizer_config.json"}
    cfg = AutoConfig.from_pretrained(folder).to_dict()
    assert {k: cfg[k] for k in PUBLISHED_CONFIG[name]} == PUBLISHED_CONFIG[name]
    auto = AutoModelForCausalLM if pb.KIND[name] == "causal" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(folder).eval()
    assert sum(p.numel() for p in model.parameters()) == pb.parameter_count(name, 2)
    ref = pb.build_model(name, 2)  # seeded: the same tensors as the saved ones
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k

    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        cfg.get("bos_token_id"), cfg["eos_token_id"], cfg["pad_token_id"])
    if name == "bart-base":  # the published config.json's generation settings, as transformers 5 moves them
        assert (gen.forced_bos_token_id, gen.forced_eos_token_id) == (0, 2)
        assert (gen.num_beams, gen.no_repeat_ngram_size, gen.early_stopping) == (4, 3, True)

    tok = AutoTokenizer.from_pretrained(folder)
    size, specials = TOKENS[name]
    assert len(tok) == size
    for what, (token, id_) in specials.items():
        assert (getattr(tok, f"{what}_token"), getattr(tok, f"{what}_token_id")) == (token, id_), what
    if name == "t5-base":
        assert tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [32099, 32000]
        assert tok.convert_ids_to_tokens(31999) not in tok.all_special_tokens  # a (filler) piece
    text = "How many red circles are to the left of the blue square?"
    ids = tok(text)["input_ids"]
    head, tail = WRAP[name]
    assert ids[:len(head)] == head and ids[len(ids) - len(tail):] == tail
    assert tok.unk_token_id not in ids[len(head):len(ids) - len(tail)]
    assert len(ids) - len(head) - len(tail) <= 20  # words, not characters
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert max(tok(["a b c", text], padding=True)["input_ids"][0]) < model.get_input_embeddings().num_embeddings

    with torch.no_grad():
        batch = tok([text], return_tensors="pt")
        if pb.KIND[name] == "causal":
            logits = model(**batch).logits
        else:
            logits = model(**batch, decoder_input_ids=torch.tensor([[cfg["decoder_start_token_id"]]])).logits
    assert logits.shape[-1] == cfg["vocab_size"] and torch.isfinite(logits).all()


def test_timm_folders_load_with_local_dir(published_backbones):
    import timm

    vit = timm.create_model(f"local-dir:{published_backbones['vit-b16']}", pretrained=True, num_classes=0).eval()
    rn = timm.create_model(f"local-dir:{published_backbones['clip-rn101']}", pretrained=True, num_classes=0).eval()
    assert sum(p.numel() for p in rn.parameters()) == 55_210_848
    assert (len(vit.blocks), vit.embed_dim, vit.blocks[0].attn.num_heads) == (2, 768, 12)
    assert vit.patch_embed.patch_size == (16, 16) and vit.patch_embed.grid_size == (14, 14)
    assert vit.pretrained_cfg["tag"] == "augreg2_in21k_ft_in1k" and rn.pretrained_cfg["tag"] == "openai"
    assert vit.pretrained_cfg["mean"] == [0.5] * 3 and vit.pretrained_cfg["input_size"] == (3, 224, 224)
    assert rn.pretrained_cfg["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert rn.pretrained_cfg["std"] == [0.26862954, 0.26130258, 0.27577711]
    assert rn.pretrained_cfg["interpolation"] == "bicubic"
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert vit.forward_features(x).shape == (1, 197, 768) and vit(x).shape == (1, 768)
        grid = rn.forward_features(x)
        assert grid.shape == (1, 2048, 7, 7)  # layer 4 at stride 32, before the attention pool
        assert rn.forward_head(grid).shape == (1, 2048)  # attention-pooled, no 512-d projection
    ref = pb.build_model("clip-rn101")
    for (k, v), (k2, v2) in zip(rn.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


@pytest.mark.parametrize("name", pb.NAMES)
def test_vltune_fetch_backbone_accepts_the_folder(name, published_backbones, tmp_path):
    add = VIS_EXTRA_IDS if pb.KIND[name] != "image" else []
    out = fetch_backbone(name, tmp_path / name, source=str(published_backbones[name]), kind=pb.KIND[name],
                         add_tokens=add)
    record = json.loads((out / "backbone.json").read_text())
    assert (record["kind"], record["added_tokens"]) == (pb.KIND[name], len(add))
    assert record["library"] == ("timm" if name in pb.TIMM_NAME else "transformers")
    model, tok = load_saved(out)
    if add:
        # every tokenizer id has an embedding row; for t5-base (32100 + 40 tokens) the 32128 rows grow to 32140
        assert model.get_input_embeddings().num_embeddings == len(tok) == TOKENS[name][0] + len(add)
        assert tok.convert_tokens_to_ids(add[0]) == TOKENS[name][0]
    if name in PUBLISHED:
        assert PUBLISHED[name].kind == pb.KIND[name]
    shutil.rmtree(out)


def test_writing_is_deterministic_and_atomic(tmp_path):
    a = pb.write_backbone("vit-b16", tmp_path / "a", layers=1)
    b = pb.write_backbone("vit-b16", tmp_path / "b", layers=1)
    _, mismatch, errors = filecmp.cmpfiles(a, b, ["config.json", "model.safetensors"], shallow=False)
    assert not mismatch and not errors
    for build in (pb.bart_tokenizer, pb.t5_tokenizer, pb.opt_tokenizer):
        build().save_pretrained(tmp_path / "t1")
        pb._bpe_vocab_merges.cache_clear(), pb._t5_pieces.cache_clear()
        build().save_pretrained(tmp_path / "t2")
        assert (tmp_path / "t1" / "tokenizer.json").read_bytes() == (tmp_path / "t2" / "tokenizer.json").read_bytes()
    with pytest.raises(FileExistsError):
        pb.write_backbone("vit-b16", a, layers=1)
    (tmp_path / "empty").mkdir()
    pb.write_backbone("vit-b16", tmp_path / "empty", layers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "empty", "t1", "t2"]  # no partial folders left
