"""``import-checkpoint``: state dicts named and shaped as the authors' released checkpoints (VL-PET's
VL-BART ``torch.save(model.state_dict())``, eP-ALM's ``checkpoint_*.pth``), built here at small
shapes from the official modules' definitions, import into vltune checkpoints that load back with
every tensor equal to its source; the gated sub-layer computes VL-PET's formula from the source
tensors; a renamed, missing or extra name, a wrong shape and differing per-task copies are
refused in one line naming them, and nothing is written then."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from vltune.errors import UserError
from vltune.utils.io import read_json

D, FEAT, R, HEADS, GATE_R, VPA_R, LAYERS = 32, 8, 8, 2, 4, 4, 2
TASKS = ("vqa", "gqa", "nlvr", "caption")  # VL-PET's --tasks: the value adapter is listed under each
VLPET_CONFIG = {"adapter_dim": R, "adapter_heads": HEADS, "gate_dim": GATE_R, "vpa_dim": VPA_R}
GATE_NAMES = {  # official gate tensors of one site (attn / ff) and their shapes, per granularity
    "vlpet-large": lambda s: {f"encoder_{s}_adapter_gating_large_x_down.weight": (GATE_R, D),
                              f"encoder_{s}_adapter_gating_large_x_down.bias": (GATE_R,),
                              f"encoder_{s}_adapter_gating_large_x_up.weight": (D, GATE_R),
                              f"encoder_{s}_adapter_gating_large_x_up.bias": (D,)},
    "vlpet-middlex": lambda s: {f"encoder_{s}_adapter_gating_middle_xy_add.weight": (1, D),
                                f"encoder_{s}_adapter_gating_middle_xy_add.bias": (1,)},
    "vlpet-small": lambda s: {f"encoder_{s}_adapter_gating_small_xy_cat.weight": (1, 2 * D),
                              f"encoder_{s}_adapter_gating_small_xy_cat.bias": (1,)},
    "vlpet-middley": lambda s: {f"encoder_{s}_adapter_gating_middle_ia3_add": (D,)},
}
VLTUNE_GATE = {  # the vltune name of each official gate tensor's last part
    "gating_large_x_down.weight": "gate.down.weight", "gating_large_x_down.bias": "gate.down.bias",
    "gating_large_x_up.weight": "gate.up.weight", "gating_large_x_up.bias": "gate.up.bias",
    "gating_middle_xy_add.weight": "gate.proj.weight", "gating_middle_xy_add.bias": "gate.proj.bias",
    "gating_small_xy_cat.weight": "gate.proj.weight", "gating_small_xy_cat.bias": "gate.proj.bias",
    "gating_middle_ia3_add": "gate.z",
}


# --- fixtures: backbones and released-style files -----------------------------------------------

@pytest.fixture(scope="module")
def bart_setup(tiny_world, tokenizer, t5_tokenizer, tmp_path_factory):
    """Tiny BART and T5 backbone folders (tokenizers with <vis_extra_id_k>) and a feature store of
    width FEAT holding random features of every image of the tiny world."""
    from vltune.backbones.bart import build_tiny_bart
    from vltune.backbones.t5 import build_tiny_t5
    from vltune.data.tables import read_table, table_path
    from vltune.features.store import FeatureWriter

    root = tmp_path_factory.mktemp("import-bart")
    torch.manual_seed(0)
    build_tiny_bart(tokenizer, d_model=D, layers=LAYERS, heads=2, ffn=64, max_positions=32).save_pretrained(root / "bart")
    tokenizer.save_pretrained(root / "bart")
    build_tiny_t5(t5_tokenizer, d_model=D, d_ff=64, d_kv=16, layers=LAYERS, heads=2).save_pretrained(root / "t5")
    t5_tokenizer.save_pretrained(root / "t5")
    w = FeatureWriter(root / "features", encoder="test-clip", preprocessing={"resize": 8})
    ids = read_table(table_path(tiny_world, "images"), "images")["image_id"].to_pylist()
    w.add(ids, {"grid": torch.randn(len(ids), 4, FEAT), "cls": torch.randn(len(ids), FEAT)})
    w.close()
    return root


# the official module layout per family: encoder layer prefix, where its attn / ff modules sit,
# the decoder cross-attention holding the value adapter, the visual embedding's prefix
OFFICIAL = {
    "bart": dict(enc="model.encoder.layers.{i}.", sites={"attn": "", "ff": ""},
                 vpa="model.decoder.layers.{i}.encoder_attn.", visual="model.encoder.visual_embedding.",
                 shared="model.shared.weight", tied=("model.encoder.embed_tokens.weight",
                                                     "model.decoder.embed_tokens.weight", "lm_head.weight")),
    "t5": dict(enc="encoder.block.{i}.", sites={"attn": "layer.0.", "ff": "layer.1."},
               vpa="decoder.block.{i}.layer.1.EncDecAttention.", visual="encoder.visual_embedding.",
               shared="shared.weight", tied=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                             "lm_head.weight")),
}


ADDED_PATTERN = {"bart": r"<(vis_)?extra_id_\d+>", "t5": r"<vis_extra_id_\d+>"}  # what VL-PET's code adds
N_ADDED = {"bart": 200, "t5": 100}  # BART: 100 <extra_id_k> + 100 <vis_extra_id_k>; T5: the 100 <vis_extra_id_k>


def own_tokens(backbone_dir, family: str) -> list[str]:
    """The backbone tokenizer's tokens other than those VL-PET adds, in id order."""
    from vltune.backbones.tokenizer import load_tokenizer

    tok = load_tokenizer(backbone_dir)
    return [t for t in tok.convert_ids_to_tokens(range(len(tok))) if not re.fullmatch(ADDED_PATTERN[family], t)]


def released_vocab_size(backbone_dir, family: str) -> int:
    return len(own_tokens(backbone_dir, family)) + N_ADDED[family]


def released_id(token: str, backbone_dir, family: str) -> int:
    """The id of ``token`` in VL-PET's tokenizer (its tokenization.py / multitask.py): the LM's own
    tokens first; BART then adds <extra_id_99..0>, <vis_extra_id_99..0>; VL-T5's
    <vis_extra_id_k> is vocab_size - k - 1."""
    own = own_tokens(backbone_dir, family)
    n = len(own)
    if m := re.fullmatch(r"<vis_extra_id_(\d+)>", token):
        return n + N_ADDED[family] - 1 - int(m.group(1))
    if family == "bart" and (m := re.fullmatch(r"<extra_id_(\d+)>", token)):
        return n + 99 - int(m.group(1))
    return own.index(token)


VOCAB_NAMES = {"bart": {"model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                        "lm_head.weight", "model.encoder.visual_embedding.obj_order_embedding.weight", "final_logits_bias"},
               "t5": {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight",
                      "encoder.visual_embedding.obj_order_embedding.weight"}}


def assert_rows_follow_their_tokens(model, tok, sd, backbone_dir, family: str) -> None:
    """Each probed token's embedding (and BART's logit bias) row in vltune is its released row."""
    state, prefix = model.state_dict(), f"{family}."
    shared = "model.shared.weight" if family == "bart" else "shared.weight"
    probes = [own_tokens(backbone_dir, family)[5], "<vis_extra_id_0>", "<vis_extra_id_1>", "<vis_extra_id_77>",
              "<vis_extra_id_99>"] + (["<extra_id_0>", "<extra_id_42>"] if family == "bart" else [])
    for t in probes:
        new, old = tok.convert_tokens_to_ids(t), released_id(t, backbone_dir, family)
        assert torch.equal(state[prefix + shared][new], sd[shared][old]), t
        assert torch.equal(state[prefix + "lm_head.weight"][new], sd["lm_head.weight"][old]), t
        if family == "bart":
            assert torch.equal(state["bart.final_logits_bias"][0, new], sd["final_logits_bias"][0, old]), t
    vis = [tok.convert_tokens_to_ids(f"<vis_extra_id_{k}>") for k in range(100)]
    assert model.vis_token_ids.tolist() == vis  # visual position k reads <vis_extra_id_k>'s row


def official_vlbart(backbone_dir, method: str, seed: int = 0, family: str = "bart") -> dict[str, torch.Tensor]:
    """A VL-PET VL-BART (or VL-T5) state dict as ``torch.save(model.state_dict())`` writes it: the
    HF model's own names (the official modeling files keep them), the encoder layers' multi-head
    adapters and gates, the decoder's value parallel adapter under every task, the visual embedding
    with its individual norms (T5's scale-only) and the object-order embedding that is the shared
    token embedding."""
    from transformers import AutoConfig, BartForConditionalGeneration, T5ForConditionalGeneration

    o = OFFICIAL[family]
    g = torch.Generator().manual_seed(seed)
    cls = BartForConditionalGeneration if family == "bart" else T5ForConditionalGeneration
    config = AutoConfig.from_pretrained(backbone_dir)
    config.vocab_size = released_vocab_size(backbone_dir, family)
    lm = cls(config)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in lm.state_dict().items()}
    for tied in o["tied"]:
        sd[tied] = sd[o["shared"]]
    shapes = {}
    for i in range(LAYERS):
        for site, where in o["sites"].items():
            p = o["enc"].format(i=i) + where
            for h in range(HEADS):
                shapes[f"{p}{site}_adapter_multihead_down.{h}.weight"] = (R // HEADS, D)
                shapes[f"{p}{site}_adapter_multihead_down.{h}.bias"] = (R // HEADS,)
            shapes[f"{p}{site}_adapter_multihead_up.weight"] = (D, R)
            shapes[f"{p}{site}_adapter_multihead_up.bias"] = (D,)
            shapes.update({p + k: v for k, v in GATE_NAMES[method](site).items()})
    v = o["visual"]
    shapes.update({f"{v}feat_embedding.0.weight": (D, FEAT), f"{v}feat_embedding.0.bias": (D,),
                   f"{v}feat_embedding.1.weight": (D,), f"{v}absolute_vis_pos_embedding.0.weight": (D, 5),
                   f"{v}absolute_vis_pos_embedding.0.bias": (D,), f"{v}absolute_vis_pos_embedding.1.weight": (D,),
                   f"{v}img_order_embedding.weight": (2, D)})
    if family == "bart":  # LayerNorm; T5LayerNorm has no bias
        shapes.update({f"{v}feat_embedding.1.bias": (D,), f"{v}absolute_vis_pos_embedding.1.bias": (D,)})
    sd.update({k: torch.randn(s, generator=g) for k, s in shapes.items()})
    sd[f"{v}obj_order_embedding.weight"] = sd[o["shared"]]
    for i in range(LAYERS):
        vpa = {"down_sampler.weight": torch.randn(VPA_R, D, generator=g), "down_sampler.bias": torch.randn(VPA_R, generator=g),
               "up_sampler.weight": torch.randn(D, VPA_R, generator=g), "up_sampler.bias": torch.randn(D, generator=g)}
        for task in TASKS:  # one module under every task name: equal copies
            for k, t in vpa.items():
                sd[o["vpa"].format(i=i) + f"attn_value_parallel_adapter.adapters.{task}.{k}"] = t
    return sd


def vltune_name(official: str) -> str | None:
    """Where the test expects an official VL-BART tensor in vltune's model (None: a copy of another)."""
    if official == "model.encoder.visual_embedding.obj_order_embedding.weight":
        return None
    visual = {"feat_embedding.0": "feat_proj", "feat_embedding.1": "feat_norm", "absolute_vis_pos_embedding.0": "box_proj",
              "absolute_vis_pos_embedding.1": "box_norm", "img_order_embedding": "img_order"}
    for k, v in visual.items():
        if official.startswith(f"model.encoder.visual_embedding.{k}."):
            return f"visual_embedding.{v}.{official.rsplit('.', 1)[1]}"
    parts = official.split(".")
    if parts[:3] == ["model", "encoder", "layers"]:
        layer, rest = f"bart.model.encoder.layers.{parts[3]}", ".".join(parts[4:])
        for site, module in (("attn", "self_attn"), ("ff", "fc2")):
            if rest.startswith(f"{site}_adapter_multihead_down."):
                return f"{layer}.{module}.vlpet.adapter.down.{parts[5]}.{parts[6]}"
            if rest.startswith(f"{site}_adapter_multihead_up."):
                return f"{layer}.{module}.vlpet.adapter.up.{parts[5]}"
            if rest.startswith(f"encoder_{site}_adapter_"):
                return f"{layer}.{module}.vlpet.{VLTUNE_GATE[rest[len(f'encoder_{site}_adapter_'):]]}"
    if "attn_value_parallel_adapter" in official:
        which = {"down_sampler": "down.0", "up_sampler": "up"}[parts[-2]]
        return f"bart.model.decoder.layers.{parts[3]}.encoder_attn.v_proj.vpa.{which}.{parts[-1]}"
    return f"bart.{official}"


def vltune_name_t5(official: str) -> str | None:
    """As :func:`vltune_name`, for VL-T5 (``encoder.block.N.layer.{0,1}``, vltune's ``t5.``)."""
    if official == "encoder.visual_embedding.obj_order_embedding.weight":
        return None
    if official.startswith("encoder.visual_embedding."):
        return vltune_name("model." + official)
    parts = official.split(".")
    if parts[0] == "encoder" and len(parts) > 5 and "adapter" in parts[5]:
        module = {"0": "SelfAttention", "1": "DenseReluDense"}[parts[4]]
        layer, rest = f"t5.encoder.block.{parts[2]}.layer.{parts[4]}.{module}.vlpet", ".".join(parts[5:])
        for site in ("attn", "ff"):
            if rest.startswith(f"{site}_adapter_multihead_down."):
                return f"{layer}.adapter.down.{parts[6]}.{parts[7]}"
            if rest.startswith(f"{site}_adapter_multihead_up."):
                return f"{layer}.adapter.up.{parts[6]}"
            if rest.startswith(f"encoder_{site}_adapter_"):
                return f"{layer}.{VLTUNE_GATE[rest[len(f'encoder_{site}_adapter_'):]]}"
    if "attn_value_parallel_adapter" in official:
        which = {"down_sampler": "down.0", "up_sampler": "up"}[parts[-2]]
        return f"t5.decoder.block.{parts[2]}.layer.1.EncDecAttention.v.vpa.{which}.{parts[-1]}"
    return f"t5.{official}"


def _import_vlpet(setup, sd, tmp_path, method="vlpet-large", name="LAST.pth", family="bart", config=None):
    from vltune.import_checkpoint import import_vlpet

    path = tmp_path / name
    torch.save(sd, path)
    out = tmp_path / "imported"
    record = import_vlpet(path, out, setup / family, FEAT, method, config or VLPET_CONFIG,
                          features=str(setup / "features"), family=family)
    return path, out, record


# --- VL-PET --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["vlpet-large", "vlpet-middlex", "vlpet-middley", "vlpet-small"])
def test_vlpet_import_loads_back_with_every_official_tensor_in_place(bart_setup, tmp_path, method):
    from vltune.recipes.encdec.finetune import load_vl_model

    sd = official_vlbart(bart_setup / "bart", method)
    path, out, record = _import_vlpet(bart_setup, sd, tmp_path, method)
    model, tok, meta = load_vl_model(out)  # the PET checkpoint on the backbone it recorded (its own)
    state = model.state_dict()
    for name, tensor in sd.items():
        target = vltune_name(name)
        if target is not None and name not in VOCAB_NAMES["bart"]:
            assert torch.equal(state[target], tensor), name
    assert_rows_follow_their_tokens(model, tok, sd, bart_setup / "bart", "bart")
    assert meta["method"] == method and meta["seed"] is None and meta["imported"] == record
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["source"] == str(path.resolve()) and read_json(out / "import.json") == record


def test_vlpet_gated_sublayer_computes_the_official_formula_from_the_source_tensors(bart_setup, tmp_path):
    """Encoder layer 0 of the imported large-gate model against VL-PET's BART layer written out:
    H' = H + up(gelu_new(cat_h down_h(H))), Ĥ = H' ⊙ σ(W_gu gelu_new(W_gd X + b) + b), y = LN(X + Ĥ),
    for self-attention (X = layer input) and FFN (X = its input)."""
    from torch.nn import functional as F
    from transformers import BartForConditionalGeneration

    from vltune.recipes.encdec.finetune import load_vl_model

    sd = official_vlbart(bart_setup / "bart", "vlpet-large", seed=3)
    _, out, _ = _import_vlpet(bart_setup, sd, tmp_path)
    model, _, _ = load_vl_model(out)
    plain = BartForConditionalGeneration.from_pretrained(out / "backbone").eval().model.encoder.layers[0]
    p = "model.encoder.layers.0."

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    def modified(h, x, site):
        down = torch.cat([lin(h, f"{p}{site}_adapter_multihead_down.{i}") for i in range(HEADS)], -1)
        h_mod = h + lin(F.gelu(down, approximate="tanh"), f"{p}{site}_adapter_multihead_up")
        gate = torch.sigmoid(lin(F.gelu(lin(x, f"{p}encoder_{site}_adapter_gating_large_x_down"), approximate="tanh"),
                                 f"{p}encoder_{site}_adapter_gating_large_x_up"))
        return h_mod * gate

    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y1 = plain.self_attn_layer_norm(x + modified(plain.self_attn(x)[0], x, "attn"))
        ff = plain.fc2(plain.activation_fn(plain.fc1(y1)))
        expected = plain.final_layer_norm(y1 + modified(ff, y1, "ff"))
        got = model.eval().bart.model.encoder.layers[0](x, None)
    got = got[0] if isinstance(got, tuple) else got
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_vlt5_import_loads_back_with_every_official_tensor_in_place(bart_setup, tmp_path):
    from vltune.recipes.encdec.finetune import load_vl_model

    sd = official_vlbart(bart_setup / "t5", "vlpet-large", family="t5")
    _, out, record = _import_vlpet(bart_setup, sd, tmp_path, family="t5")
    model, tok, meta = load_vl_model(out)
    state = model.state_dict()
    assert meta["family"] == "t5" and record["tensors"] == len(sd)
    for name, tensor in sd.items():
        target = vltune_name_t5(name)
        if target is not None and name not in VOCAB_NAMES["t5"]:
            assert torch.equal(state[target], tensor), name
    assert_rows_follow_their_tokens(model, tok, sd, bart_setup / "t5", "t5")


def test_vlt5_gated_sublayer_computes_the_official_formula_with_its_scaling(bart_setup, tmp_path):
    """Encoder block 0's self-attention sub-layer of an imported VL-T5 (large gate, s = 0.3) against
    VL-PET's T5 layer written out: H = Attn(LN(X)), y = X + s · (H + ΔH) ⊙ G(X)."""
    from torch.nn import functional as F
    from transformers import T5ForConditionalGeneration

    from vltune.recipes.encdec.finetune import load_vl_model

    sd = official_vlbart(bart_setup / "t5", "vlpet-large", seed=5, family="t5")
    _, out, _ = _import_vlpet(bart_setup, sd, tmp_path, family="t5", config={**VLPET_CONFIG, "scaling": 0.3})
    model, _, _ = load_vl_model(out)
    plain = T5ForConditionalGeneration.from_pretrained(out / "backbone").eval().encoder.block[0].layer[0]
    p = "encoder.block.0.layer.0."

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        h = plain.SelfAttention(plain.layer_norm(x))[0]
        down = torch.cat([lin(h, f"{p}attn_adapter_multihead_down.{i}") for i in range(HEADS)], -1)
        h_mod = h + lin(F.gelu(down, approximate="tanh"), f"{p}attn_adapter_multihead_up")
        gate = torch.sigmoid(lin(F.gelu(lin(x, f"{p}encoder_attn_adapter_gating_large_x_down"), approximate="tanh"),
                                 f"{p}encoder_attn_adapter_gating_large_x_up"))
        expected = x + 0.3 * h_mod * gate
        got = model.eval().t5.encoder.block[0].layer[0](x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_vlpet_import_accepts_ddp_prefixed_names(bart_setup, tmp_path):
    sd = official_vlbart(bart_setup / "bart", "vlpet-large")
    _, out, record = _import_vlpet(bart_setup, {f"module.{k}": v for k, v in sd.items()}, tmp_path)
    assert record["tensors"] == len(sd) and (out / "adapter/pet_model.safetensors").is_file()


@pytest.mark.parametrize("case, pattern", [
    ("renamed", r"LAST\.pth: 1 official names have no counterpart in vltune's vlpet-large VL-BART: "
                r"model\.encoder\.layers\.1\.ff_adapter_multihead_upp\.weight; 1 tensors of vltune's vlpet-large "
                r"VL-BART are not in the file: bart\.model\.encoder\.layers\.1\.fc2\.vlpet\.adapter\.up\.weight$"),
    ("missing", r"LAST\.pth: 1 tensors of vltune's vlpet-large VL-BART are not in the file: "
                r"bart\.model\.encoder\.layers\.0\.self_attn\.vlpet\.gate\.up\.bias$"),
    ("extra", r"LAST\.pth: 1 official names have no counterpart in vltune's vlpet-large VL-BART: "
              r"model\.encoder\.layers\.0\.attn_adapter\.adapters\.vqa\.down_sampler\.weight$"),
    ("shape", r"LAST\.pth: shapes differ from vltune's vlpet-large VL-BART: model\.encoder\.layers\.0\."
              r"attn_adapter_multihead_up\.weight \(32, 6\) \(vltune bart\.model\.encoder\.layers\.0\.self_attn\."
              r"vlpet\.adapter\.up\.weight \(32, 8\)\)$"),
    ("untied head", r"LAST\.pth: tensors that are one tied tensor in vltune's vlpet-large VL-BART differ in the file: "
                    r"bart\.lm_head\.weight, bart\.model\.decoder\.embed_tokens\.weight, bart\.model\.encoder\."
                    r"embed_tokens\.weight, bart\.model\.shared\.weight$"),
    ("task copies", r"LAST\.pth: model\.decoder\.layers\.1\.encoder_attn\.attn_value_parallel_adapter\.adapters\.vqa\."
                    r"up_sampler\.bias and model\.decoder\.layers\.1\.encoder_attn\.attn_value_parallel_adapter\."
                    r"adapters\.caption\.up_sampler\.bias both map to vltune's bart\.model\.decoder\.layers\.1\."
                    r"encoder_attn\.v_proj\.vpa\.up\.bias but differ"),
])
def test_vlpet_import_refuses_a_file_that_does_not_fit_naming_the_names(bart_setup, tmp_path, case, pattern):
    sd = official_vlbart(bart_setup / "bart", "vlpet-large")
    if case == "renamed":
        sd["model.encoder.layers.1.ff_adapter_multihead_upp.weight"] = sd.pop("model.encoder.layers.1.ff_adapter_multihead_up.weight")
    elif case == "missing":
        del sd["model.encoder.layers.0.encoder_attn_adapter_gating_large_x_up.bias"]
    elif case == "extra":  # a VL-Adapter module, not part of VL-PET
        sd["model.encoder.layers.0.attn_adapter.adapters.vqa.down_sampler.weight"] = torch.zeros(4, D)
    elif case == "shape":
        sd["model.encoder.layers.0.attn_adapter_multihead_up.weight"] = torch.zeros(D, 6)
    elif case == "untied head":  # an LM head of its own, where vltune's BART ties it to the embedding
        sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    else:  # separate adapters per task (not VL-PET's --use_single_adapter)
        key = "model.decoder.layers.1.encoder_attn.attn_value_parallel_adapter.adapters.caption.up_sampler.bias"
        sd[key] = sd[key] + 1
    with pytest.raises(UserError, match=pattern):
        _import_vlpet(bart_setup, sd, tmp_path)
    assert not (tmp_path / "imported").exists() and not (tmp_path / "imported.importing").exists()


def test_vlpet_import_refuses_a_vocabulary_without_vl_pets_added_tokens(bart_setup, tmp_path):
    """A file whose embedding has the backbone tokenizer's own rows only (not VL-PET's 200 added
    tokens) cannot be re-indexed: one line with both counts."""
    sd = official_vlbart(bart_setup / "bart", "vlpet-large")
    n_own = len(own_tokens(bart_setup / "bart", "bart"))
    for name in VOCAB_NAMES["bart"]:
        sd[name] = sd[name][..., :n_own] if name == "final_logits_bias" else sd[name][:n_own]
    with pytest.raises(UserError, match=rf"LAST\.pth: model\.shared\.weight has {n_own} rows, but VL-PET's VL-BART "
                                        rf"vocabulary on the tokenizer of .*bart has {n_own + 200} tokens \(its own "
                                        rf"{n_own} \+ 200 added by VL-PET\)$"):
        _import_vlpet(bart_setup, sd, tmp_path)


def test_vlpet_import_of_another_gate_granularity_is_refused(bart_setup, tmp_path):
    sd = official_vlbart(bart_setup / "bart", "vlpet-small")
    with pytest.raises(UserError, match=r"8 official names have no counterpart in vltune's vlpet-large VL-BART: "
                                        r"model\.encoder\.layers\.0\.encoder_attn_adapter_gating_small_xy_cat\.bias.*"
                                        r"\(\+3 more\); 16 tensors of vltune's vlpet-large VL-BART are not in the file"):
        _import_vlpet(bart_setup, sd, tmp_path)


def test_cli_import_error_is_one_line_and_keeps_the_existing_folder(bart_setup, tmp_path, capsys):
    from vltune.cli import main

    sd = official_vlbart(bart_setup / "bart", "vlpet-large")
    del sd["model.encoder.visual_embedding.img_order_embedding.weight"]
    torch.save(sd, tmp_path / "LAST.pth")
    out = tmp_path / "imported"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc = main(["import-checkpoint", "--from", "vlpet", str(tmp_path / "LAST.pth"), "--out", str(out),
               "--method", "vlpet-large", "--backbone", str(bart_setup / "bart"), "--features",
               str(bart_setup / "features"), "--params", f'{{"method_config": {str(VLPET_CONFIG).replace(chr(39), chr(34))}}}'])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # transformers' load bars aside
    assert rc == 2 and "Traceback" not in err and len(errors) == 1
    assert errors[0] == (f"vltune import-checkpoint: error: {tmp_path / 'LAST.pth'}: 1 tensors of vltune's vlpet-large "
                      "VL-BART are not in the file: visual_embedding.img_order.weight")
    assert (out / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("args, message", [
    (["--from", "vl-t5"], "import-checkpoint: --from 'vl-t5' is not one of vlpet, epalm, vl-merging"),
    (["--from", "vlpet", "--method", "vlpet-large"], "import-checkpoint --from vlpet needs --backbone, --features"),
    (["--from", "vlpet", "--method", "lora", "--backbone", "b", "--features", "f"],
     "import-checkpoint --from vlpet: method 'lora' is not a VL-PET variant (vlpet-large, vlpet-middlex, "
     "vlpet-middley, vlpet-small)"),
    (["--from", "epalm", "--method", "vlpet-large", "--lm", "l", "--encoder", "e", "--task", "vqa"],
     "--method 'vlpet-large' is not an eP-ALM method (epalm-linear, epalm-prompt)"),
    (["--from", "vlpet", "--method", "vlpet-large", "--backbone", "b", "--features", "f", "--params", '{"dropout": 0}'],
     "import-checkpoint: unknown param 'dropout' (expected method_config, visual)"),
    (["--from", "vl-merging"], "{path}: import-checkpoint --from vl-merging is not possible: the released VLMo "
                               "encodes positions with a relative position bias table per block, which vltune's VLMo "
                               "(learned absolute position embeddings) has no tensor for"),
])
def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    from vltune.cli import main

    path = tmp_path / "ckpt.pth"
    torch.save({"w": torch.zeros(1)}, path)
    rc = main(["import-checkpoint", *args, str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"vltune import-checkpoint: error: {message.format(path=path)}"]


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    from vltune.import_checkpoint import read_state_dict

    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"bad\.pth: not a PyTorch checkpoint that loads with weights_only"):
        read_state_dict(tmp_path / "bad.pth")
    torch.save({"model": {"connector.0.weight": torch.zeros(1), "step": 3}}, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match=r"mixed\.pth: entries that are not name → tensor: step$"):
        read_state_dict(tmp_path / "mixed.pth")


def test_evaluate_vlbart_scores_an_imported_checkpoint_and_its_metrics_name_the_source(bart_setup, tiny_world, tmp_path):
    from vltune.cli import main

    _, out, record = _import_vlpet(bart_setup, official_vlbart(bart_setup / "bart", "vlpet-large"), tmp_path)
    rc = main(["evaluate-vlbart", "--checkpoint", str(out), "--backbone", str(out / "backbone"), "--data", str(tiny_world),
               "--features", str(bart_setup / "features"), "--experiment", "vlpet-bart-imported", "--out",
               str(tmp_path / "metrics.json"), "--params",
               '{"tasks": ["vqa"], "max_examples": 4, "batch_size": 8, "answer_max_len": 2}'])
    metrics = read_json(tmp_path / "metrics.json")
    assert rc == 0 and metrics["imported_from"] == record and metrics["vqa_examples"] == 4
    assert metrics["experiment"] == "vlpet-bart-imported" and metrics["method"] == "vlpet-large"
    assert metrics["seed"] is None and metrics["train_wall_s"] is None and 0 <= metrics["vqa_accuracy"] <= 100


# --- eP-ALM --------------------------------------------------------------------------------------

EPALM_CONFIG = {"n_tokens": 2, "start_layer": 1, "end_layer": 4, "prompt_len": 3}
OPT_D, VIT_D = 32, 24


@pytest.fixture(scope="module")
def epalm_setup(tokenizer_dir, tmp_path_factory):
    """A tiny OPT (4 layers, width OPT_D) and a tiny timm ViT (3 blocks, width VIT_D), as saved."""
    from timm.models import save_for_hf

    from vltune.backbones.opt import build_tiny_opt, load_opt_tokenizer
    from vltune.backbones.vit import build_tiny_vit

    root = tmp_path_factory.mktemp("import-epalm")
    torch.manual_seed(0)
    tok = load_opt_tokenizer(tokenizer_dir)
    build_tiny_opt(tok, hidden=OPT_D, layers=4, heads=2, ffn=64, max_positions=48).save_pretrained(root / "opt")
    tok.save_pretrained(root / "opt")
    arch = dict(img_size=32, patch_size=16, embed_dim=VIT_D, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=0,
                global_pool="token")
    vit = build_tiny_vit(32, 16, VIT_D, 3, 2, 2.0)
    save_for_hf(vit, str(root / "vit"), safe_serialization=True, model_args=arch)
    return root


def official_epalm(prompt: bool, seed: int = 0) -> dict:
    """An eP-ALM ``checkpoint_best.pth``: {'model': filtered state dict, 'optimizer', 'lr_scheduler',
    'config', 'epoch'}; the state dict holds ``connector`` (a ModuleList of Linear(vis_dim → text_dim),
    one per injected [CLS]) and ``prompt_module.prefix_embedding`` (Embedding, Linear, Tanh, Linear)."""
    g = torch.Generator().manual_seed(seed)
    model = {}
    for m in range(EPALM_CONFIG["n_tokens"]):
        model[f"connector.{m}.weight"] = torch.randn(OPT_D, VIT_D, generator=g)
        model[f"connector.{m}.bias"] = torch.randn(OPT_D, generator=g)
    if prompt:
        model.update({"prompt_module.prefix_embedding.0.weight": torch.randn(3, OPT_D, generator=g),
                      "prompt_module.prefix_embedding.1.weight": torch.randn(OPT_D, OPT_D, generator=g),
                      "prompt_module.prefix_embedding.1.bias": torch.randn(OPT_D, generator=g),
                      "prompt_module.prefix_embedding.3.weight": torch.randn(OPT_D, OPT_D, generator=g),
                      "prompt_module.prefix_embedding.3.bias": torch.randn(OPT_D, generator=g)})
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "lr_scheduler": {"last_epoch": 3}, "config": {"injected_hidden_states": 2, "prompt_len": 3}, "epoch": 7}


EPALM_NAMES = {"connector.0.weight": "connector.linears.0.weight", "connector.0.bias": "connector.linears.0.bias",
               "connector.1.weight": "connector.linears.1.weight", "connector.1.bias": "connector.linears.1.bias",
               "prompt_module.prefix_embedding.0.weight": "prompt.embedding.weight",
               "prompt_module.prefix_embedding.1.weight": "prompt.reparam.0.weight",
               "prompt_module.prefix_embedding.1.bias": "prompt.reparam.0.bias",
               "prompt_module.prefix_embedding.3.weight": "prompt.reparam.2.weight",
               "prompt_module.prefix_embedding.3.bias": "prompt.reparam.2.bias"}


def _import_epalm(setup, obj, tmp_path, method="epalm-prompt"):
    from vltune.import_checkpoint import import_epalm

    path = tmp_path / "checkpoint_best.pth"
    torch.save(obj, path)
    config = EPALM_CONFIG if method == "epalm-prompt" else {k: v for k, v in EPALM_CONFIG.items() if k != "prompt_len"}
    record = import_epalm(path, tmp_path / "imported", setup / "opt", setup / "vit", "vqa", method, config)
    return path, tmp_path / "imported", record


@pytest.mark.parametrize("method", ["epalm-prompt", "epalm-linear"])
def test_epalm_import_loads_back_with_every_official_tensor_in_place(epalm_setup, tmp_path, method):
    from vltune.recipes.epalm.finetune import load_epalm

    obj = official_epalm(prompt=method == "epalm-prompt")
    path, out, record = _import_epalm(epalm_setup, obj, tmp_path, method)
    model, _, meta = load_epalm(out)
    state = model.state_dict()
    for name, tensor in obj["model"].items():
        assert torch.equal(state[EPALM_NAMES[name]], tensor), name
    assert meta["task"] == "vqa" and meta["method"] == method and meta["imported"] == record
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["tensors"] == len(obj["model"])


@pytest.mark.parametrize("case, pattern", [
    ("renamed", r"checkpoint_best\.pth: 1 official names have no counterpart in vltune's epalm-prompt eP-ALM: "
                r"prompt_module\.prefix_embedding\.2\.weight; 1 tensors of vltune's epalm-prompt eP-ALM are not in the "
                r"file: prompt\.reparam\.2\.weight$"),
    ("missing", r"checkpoint_best\.pth: 2 tensors of vltune's epalm-prompt eP-ALM are not in the file: "
                r"connector\.linears\.1\.bias, connector\.linears\.1\.weight$"),
    ("extra", r"checkpoint_best\.pth: 2 official names have no counterpart in vltune's epalm-prompt eP-ALM: "
              r"connector\.2\.bias, connector\.2\.weight$"),
    ("shape", r"checkpoint_best\.pth: shapes differ from vltune's epalm-prompt eP-ALM: prompt_module\.prefix_embedding"
              r"\.0\.weight \(30, 32\) \(vltune prompt\.embedding\.weight \(3, 32\)\)$"),
])
def test_epalm_import_refuses_a_file_that_does_not_fit_naming_the_names(epalm_setup, tmp_path, case, pattern):
    obj = official_epalm(prompt=True)
    sd = obj["model"]
    if case == "renamed":
        sd["prompt_module.prefix_embedding.2.weight"] = sd.pop("prompt_module.prefix_embedding.3.weight")
    elif case == "missing":
        del sd["connector.1.weight"], sd["connector.1.bias"]
    elif case == "extra":  # three injected [CLS] where the config has two
        sd["connector.2.weight"], sd["connector.2.bias"] = torch.zeros(OPT_D, VIT_D), torch.zeros(OPT_D)
    else:  # deep prompts: prompt_len × nb_prompts rows
        sd["prompt_module.prefix_embedding.0.weight"] = torch.zeros(30, OPT_D)
    with pytest.raises(UserError, match=pattern):
        _import_epalm(epalm_setup, obj, tmp_path)
    assert not (tmp_path / "imported").exists()


def test_cli_import_saves_the_released_lm_where_asked_and_the_ledger_records_the_source(bart_setup, tmp_path):
    from vltune.cli import main
    from vltune.recipes.encdec.finetune import load_vl_model

    sd = official_vlbart(bart_setup / "bart", "vlpet-middlex")
    path = tmp_path / "LAST.pth"
    torch.save(sd, path)
    params = '{"method_config": {"adapter_dim": 8, "adapter_heads": 2, "gate_dim": 4, "vpa_dim": 4}}'
    rc = main(["--ledger", str(tmp_path / "ledger.json"), "import-checkpoint", "--from", "vlpet", str(path),
               "--out", str(tmp_path / "ckpt"), "--backbone-out", str(tmp_path / "lm"), "--method", "vlpet-middlex",
               "--backbone", str(bart_setup / "bart"), "--features", str(bart_setup / "features"), "--params", params])
    assert rc == 0 and not (tmp_path / "ckpt/backbone").exists()
    model, _, meta = load_vl_model(tmp_path / "ckpt")
    assert meta["backbone"] == str(tmp_path / "lm")
    assert torch.equal(model.state_dict()["bart.model.encoder.layers.1.fc1.weight"], sd["model.encoder.layers.1.fc1.weight"])
    ledger = read_json(tmp_path / "ledger.json")
    assert ledger["command"] == "import-checkpoint"
    assert ledger["resolved"]["imported"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_epalm_scores_an_imported_checkpoint_and_its_metrics_name_the_source(epalm_setup, tiny_world, tmp_path):
    from vltune.cli import main

    _, out, record = _import_epalm(epalm_setup, official_epalm(prompt=True), tmp_path)
    rc = main(["evaluate-epalm", "--checkpoints", f"vqa={out}", "--data", str(tiny_world), "--experiment",
               "epalm-imported", "--out", str(tmp_path / "metrics.json"), "--params",
               '{"batch_size": 64, "num_beams": 1, "answer_max_len": 2}'])
    metrics = read_json(tmp_path / "metrics.json")
    assert rc == 0 and metrics["imported_from"] == {"vqa": record} and metrics["experiment"] == "epalm-imported"
    assert metrics["train_wall_s"] is None and metrics["train_final_loss"] == {"vqa": None}
    assert 0 <= metrics["vqa_accuracy"] <= 100
