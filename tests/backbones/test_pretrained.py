"""Published backbones: tiny checkpoints saved here with save_pretrained / save_for_hf stand in for
the published ones (local folders and an offline Hugging Face cache); no network."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vltune.errors import UserError
from vltune.backbones.pretrained import PUBLISHED, BackboneNotFound, fetch_backbone, load_published, load_saved


@pytest.fixture(scope="module")
def tiny_bart_dir(tmp_path_factory, tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                     decoder_ffn_dim=32, max_position_embeddings=32)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bart")
    BartForConditionalGeneration(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, depth=2, embed_dim=32,
                             num_heads=2, num_classes=0).eval()


def test_transformers_local_folder_round_trip(tiny_bart_dir, tmp_path):
    out = fetch_backbone("my-bart", tmp_path / "bb", source=str(tiny_bart_dir))
    record = json.loads((out / "backbone.json").read_text())
    assert record["library"] == "transformers" and record["kind"] == "seq2seq"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    model, tok = load_saved(out)
    ref, _, _ = load_published("ref", source=str(tiny_bart_dir))
    ids = tok(["a red circle"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_opt_causal_from_local_folder(tmp_path, tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    model, tok, spec = load_published("opt-350m", source=str(tmp_path / "opt"))
    assert type(model).__name__ == "OPTForCausalLM" and spec.kind == "causal"  # kind of the shipped name


def test_a_name_outside_the_shipped_table_takes_its_kind_from_the_folders_config(tmp_path, tokenizer):
    """An OPT folder under a name vltune does not ship loads as a causal LM (from its config's
    architectures, or transformers' own model_type mappings when it lists none); a BART one as
    seq2seq, though transformers also has a BartForCausalLM."""
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    out = fetch_backbone("my-opt", tmp_path / "bb", source=str(tmp_path / "opt"))
    assert json.loads((out / "backbone.json").read_text())["kind"] == "causal"
    config = json.loads((tmp_path / "opt/config.json").read_text())
    del config["architectures"]
    (tmp_path / "opt/config.json").write_text(json.dumps(config))
    model, _, spec = load_published("my-opt", source=str(tmp_path / "opt"))
    assert spec.kind == "causal" and type(model).__name__ == "OPTForCausalLM"


def test_a_config_that_is_no_language_model_is_refused_naming_the_key(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="'bert' model.*neither a seq2seq nor a causal LM.*published.kind"):
        load_published("my-bert", source=str(tmp_path / "bert"))


def test_timm_local_folder_round_trip(tmp_path):
    from timm.models import save_for_hf

    vit = _tiny_vit()
    save_for_hf(vit, tmp_path / "vit", safe_serialization=True)
    out = fetch_backbone("vit-b16", tmp_path / "bb", source=str(tmp_path / "vit"))
    assert json.loads((out / "backbone.json").read_text())["library"] == "timm"
    model, tok = load_saved(out)
    assert tok is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), vit(x))


@pytest.fixture()
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as a process started with it sees it (huggingface_hub reads it on import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_id_from_offline_cache(tiny_bart_dir, tmp_path, hub_offline):
    """A Hub id resolves through the HF cache layout (models--org--name/snapshots/<rev>) offline."""
    repo = tmp_path / "cache" / "models--someorg--tiny-bart"
    rev = "0" * 40
    shutil.copytree(tiny_bart_dir, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    model, tok, spec = load_published("tiny", source="someorg/tiny-bart", cache_dir=tmp_path / "cache")
    assert spec.source == "someorg/tiny-bart" and type(model).__name__ == "BartForConditionalGeneration"


def test_missing_checkpoint_offline_says_where(tmp_path, hub_offline):
    with pytest.raises(BackboneNotFound) as err:
        load_published("bart-base", cache_dir=tmp_path / "empty-cache")
    msg = str(err.value)
    assert "'facebook/bart-base'" in msg and str(tmp_path / "empty-cache") in msg and "HF_HUB_OFFLINE" in msg


def test_missing_timm_checkpoint_offline_says_where(tmp_path, hub_offline):
    with pytest.raises(BackboneNotFound, match=r"'clip-rn101': checkpoint 'resnet101_clip.openai' not found in "
                                               r"the Hugging Face cache .*empty"):
        load_published("clip-rn101", cache_dir=tmp_path / "empty")


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(BackboneNotFound, match="not a published one"):
        load_published("bert-huge")
    with pytest.raises(BackboneNotFound, match="local folder .*nope does not exist"):
        load_published("x", source=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneNotFound, match="no config.json"):
        load_published("x", source=str(tmp_path / "empty"))


def test_published_names_cover_the_seeds():
    assert {"bart-base", "t5-base", "opt-350m", "opt-2.7b", "opt-6.7b", "vit-b16", "vit-l16", "clip-rn101",
            "clip-vit-b32"} <= set(PUBLISHED)
    import timm

    for entry in PUBLISHED.values():  # every timm name is one timm actually publishes
        if entry.library == "timm":
            assert entry.source in timm.list_pretrained(entry.source)


def _tokenizer_without_visual_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.train_from_iterator(["a red circle left of a blue square"] * 4,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_vl_tokens_are_added_to_a_published_lm_once_and_deterministically(tmp_path):
    """A published LM lacks VL-T5's <vis_extra_id_k>: fetch adds them with embedding rows drawn under a
    fixed seed (so a PET checkpoint applies to the same backbone), keeps every original row, and the
    VL model then gets one distinct token per visual position instead of <unk> for all."""
    from safetensors.torch import load_file
    from transformers import BartConfig, BartForConditionalGeneration

    from vltune.backbones.tokenizer import VIS_EXTRA_IDS
    from vltune.recipes.encdec.finetune import build_vlbart

    tok = _tokenizer_without_visual_tokens()
    assert tok.convert_tokens_to_ids(VIS_EXTRA_IDS[0]) == tok.unk_token_id
    cfg = BartConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
    BartForConditionalGeneration(cfg).save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    a = fetch_backbone("lm", tmp_path / "a", source=str(tmp_path / "src"), add_tokens=VIS_EXTRA_IDS)
    b = fetch_backbone("lm", tmp_path / "b", source=str(tmp_path / "src"), add_tokens=VIS_EXTRA_IDS)
    assert json.loads((a / "backbone.json").read_text())["added_tokens"] == len(VIS_EXTRA_IDS)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    src = load_file(tmp_path / "src/model.safetensors")
    key = "model.shared.weight"
    assert wa[key].shape[0] == len(tok) + len(VIS_EXTRA_IDS)
    torch.testing.assert_close(wa[key][: len(tok)], src[key])  # the published rows are untouched
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same new rows every time
    model, vl_tok = build_vlbart(a, feat_dim=8)
    ids = model.vis_token_ids.tolist()
    assert len(set(ids)) == len(VIS_EXTRA_IDS) and vl_tok.unk_token_id not in ids
    again = fetch_backbone("lm", tmp_path / "c", source=str(a), add_tokens=VIS_EXTRA_IDS)
    assert json.loads((again / "backbone.json").read_text())["added_tokens"] == 0


def test_known_layers_of_a_published_lm_without_loading_it(tmp_path):
    """The shipped OPTs' depths are the Hub configs' num_hidden_layers; a local folder's is read
    from its config.json; a Hub id that is not shipped is unknown before fetching."""
    from transformers import OPTConfig

    from vltune.backbones.pretrained import known_layers

    assert (known_layers("opt-350m"), known_layers("opt-2.7b"), known_layers("opt-6.7b")) == (24, 32, 32)
    assert known_layers("someone/opt-x") is None and known_layers("vit-b16") is None
    OPTConfig(num_hidden_layers=3).save_pretrained(tmp_path / "opt")
    assert known_layers("my-opt", str(tmp_path / "opt")) == 3
    assert known_layers("my-opt", str(tmp_path / "missing")) is None
