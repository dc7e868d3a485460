"""PET checkpoints: only trainable tensors + config; reloading onto a fresh backbone reproduces the
outputs exactly; LoRA is written in PEFT's own format and loads with ``peft.PeftModel``."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from safetensors.torch import load_file

from vltune.pet import PET_CONFIG, PET_WEIGHTS, apply_pet, load_pet, method_names, save_pet, trainable_state_dict

from tiny_models import make_batch, make_vlbart, vl_logits


@torch.no_grad()
def _perturb_trainables(model: torch.nn.Module, seed: int = 7) -> None:
    """Move every trainable tensor away from its init, so a reload that re-initialises is caught."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def backbone_dir(tokenizer, tmp_path_factory):
    """A saved tiny BART + tokenizer, as the pipeline's backbone folders are."""
    from vltune.backbones.bart import build_tiny_bart

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("backbone")
    build_tiny_bart(tokenizer, d_model=32, layers=2, heads=4, ffn=64, max_positions=32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _vl_batch(tokenizer) -> dict:
    enc = tokenizer(["vqa: what color is the circle?", "vqa: how many?"], padding=True, return_tensors="pt")
    labels = tokenizer(["red", "2"], padding=True, return_tensors="pt")["input_ids"]
    g = torch.Generator().manual_seed(3)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels,
            "vis_feats": torch.randn(2, 10, 8, generator=g), "vis_order": torch.arange(2).repeat_interleave(5).expand(2, -1)}


@pytest.mark.parametrize("method", method_names())
def test_save_load_vlbart_reproduces_outputs(method, backbone_dir, tokenizer, tmp_path):
    from vltune.recipes.encdec.finetune import apply_method, build_vlbart, load_vlbart, save_vlbart

    torch.manual_seed(1)
    model, tok = build_vlbart(backbone_dir, feat_dim=8)
    apply_method(model, method)
    _perturb_trainables(model)
    save_vlbart(model, tok, tmp_path, {"method": method, "backbone": str(backbone_dir)})
    torch.manual_seed(2)  # a different init for everything the checkpoint must restore
    loaded, _, meta = load_vlbart(tmp_path)
    batch = _vl_batch(tokenizer)
    assert meta["method"] == method
    assert torch.equal(vl_logits(loaded, batch), vl_logits(model.eval(), batch))
    args = (batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"])
    assert torch.equal(loaded.generate(*args, num_beams=2, max_new_tokens=4), model.generate(*args, num_beams=2, max_new_tokens=4))
    assert (tmp_path / "model.safetensors").exists() == (method == "full")  # full keeps saving everything


@pytest.mark.parametrize("method", [m for m in method_names() if m not in ("full", "lora")])
def test_saved_keys_equal_trainable_keys(method, tmp_path):
    model = apply_pet(make_vlbart(), method)
    save_pet(model, tmp_path)
    assert set(load_file(str(tmp_path / PET_WEIGHTS))) == set(trainable_state_dict(model))
    assert json.loads((tmp_path / PET_CONFIG).read_text()) == model.pet_config.to_dict()


def test_config_dict_round_trips_through_json(tmp_path):
    """A saved config re-applies the same hyper-parameters, also non-default ones, and the tensors."""
    model = apply_pet(make_vlbart(), {"method": "vlpet-middlex", "adapter_dim": 8, "adapter_heads": 2, "scaling": 0.5})
    _perturb_trainables(model)
    save_pet(model, tmp_path)
    torch.manual_seed(5)
    fresh = load_pet(make_vlbart(), tmp_path)  # same backbone weights (seed 0), new PET init
    assert fresh.pet_config == model.pet_config
    batch = make_batch()
    assert torch.equal(vl_logits(fresh, batch), vl_logits(model, batch))


def test_lora_checkpoint_is_peft_format_and_loads_with_peft_model(tmp_path):
    model = make_vlbart()
    base_hf = make_vlbart().bart  # same seed: the same frozen backbone weights
    apply_pet(model, "lora")
    _perturb_trainables(model)  # LoRA B ≠ 0 and every bias moved
    save_pet(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 128 and config["lora_alpha"] == 32
    assert set(config["target_modules"]) == {"q_proj", "v_proj"} and config["bias"] == "all"
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert set(load_file(str(tmp_path / PET_WEIGHTS))) == {n for n in trainable_state_dict(model) if n.startswith("visual_embedding.")}

    peft_model = peft.PeftModel.from_pretrained(base_hf, str(tmp_path)).eval()
    ids = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.bart(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        theirs = peft_model(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, make_vlbart().bart(input_ids=ids, decoder_input_ids=ids[:, :4]).logits)


def test_load_rejects_tensors_of_another_method(tmp_path):
    save_pet(apply_pet(make_vlbart(), "vlpet-small"), tmp_path)
    config = json.loads((tmp_path / PET_CONFIG).read_text())
    (tmp_path / PET_CONFIG).write_text(json.dumps({**config, "method": "vlpet-large"}))
    with pytest.raises(ValueError, match=r"do not match method 'vlpet-large'.*missing .*gate\.down"):
        load_pet(make_vlbart(), tmp_path)


def test_load_vlbart_needs_the_backbone_of_a_pet_checkpoint(backbone_dir, tmp_path):
    from vltune.recipes.encdec.finetune import apply_method, build_vlbart, load_vlbart, save_vlbart

    model, tok = build_vlbart(backbone_dir, feat_dim=8)
    apply_method(model, "bitfit")
    with pytest.raises(ValueError, match="needs meta\\['backbone'\\]"):
        save_vlbart(model, tok, tmp_path, {"method": "bitfit"})
    save_vlbart(model, tok, tmp_path, {"method": "bitfit", "backbone": str(tmp_path / "moved")})
    with pytest.raises(FileNotFoundError, match="needs its backbone folder"):
        load_vlbart(tmp_path)
    assert load_vlbart(tmp_path, backbone_dir=backbone_dir)[2]["method"] == "bitfit"
