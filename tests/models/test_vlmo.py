"""The VLMo model: expert routing and naming, a specific model grown from an agnostic one computes
the same function, merging its untouched experts gives the agnostic model back, and the Gram hooks
equal XᵀX of the real (unpadded) Linear inputs."""

from __future__ import annotations

import pytest
import torch

from vltune.merge import merge_experts
from vltune.merge.grams import collect, linear_modules
from vltune.models.vlmo import VLMo, VLMoConfig, expert_layers, specific_from_agnostic

ARCH = dict(vocab_size=50, d_model=16, layers=3, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12,
            image_size=16, patch_size=8)


def batch(seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (b, 7), generator=g)
    mask = torch.ones(b, 7, dtype=torch.bool)
    mask[0, 4:] = False  # one padded text
    ids[~mask] = 0
    return ids, mask, torch.randn(b, 3, 16, 16, generator=g)


def models():
    torch.manual_seed(0)
    agnostic = VLMo(VLMoConfig(**ARCH)).eval()
    specific = VLMo(VLMoConfig(**ARCH, mode="specific")).eval()
    specific.load_state_dict(specific_from_agnostic(agnostic.state_dict(), specific.cfg))
    return agnostic, specific


def test_experts_per_layer_and_parameter_names():
    cfg = VLMoConfig(**ARCH, mode="specific")
    assert expert_layers(cfg) == [("v", "l"), ("v", "l"), ("v", "l", "vl")]
    names = set(VLMo(cfg).state_dict())
    assert "blocks.0.attn.v.qkv.weight" in names and "blocks.0.norm2.l.bias" in names
    assert "blocks.2.mlp.vl.fc2.weight" in names and "blocks.1.mlp.vl.fc2.weight" not in names
    agnostic = set(VLMo(VLMoConfig(**ARCH)).state_dict())
    assert "blocks.0.attn.qkv.weight" in agnostic and not any(".v." in n for n in agnostic)


def test_bad_configs_are_errors():
    with pytest.raises(ValueError, match="mode"):
        VLMoConfig(**ARCH, mode="moe")
    with pytest.raises(ValueError, match="vl_layers"):
        VLMoConfig(**{**ARCH, "vl_layers": 4})
    with pytest.raises(ValueError, match="unknown VLMo arch key 'widht'"):
        VLMoConfig.from_dict({**ARCH, "widht": 3})


def test_specific_model_from_the_seed_computes_the_agnostic_function():
    agnostic, specific = models()
    ids, mask, px = batch()
    with torch.no_grad():
        torch.testing.assert_close(specific.joint(ids, mask, px), agnostic.joint(ids, mask, px))
        torch.testing.assert_close(specific.text_features(ids, mask), agnostic.text_features(ids, mask))
        torch.testing.assert_close(specific.image_features(px), agnostic.image_features(px))


def test_experts_route_by_modality():
    agnostic, specific = models()
    ids, mask, px = batch()
    with torch.no_grad():
        specific.blocks[0].attn["v"].qkv.weight.add_(torch.randn(48, 16))  # change only the vision expert of layer 0
        torch.testing.assert_close(specific.text_features(ids, mask), agnostic.text_features(ids, mask))
        assert not torch.allclose(specific.image_features(px), agnostic.image_features(px))
        specific.blocks[2].mlp["vl"].fc1.bias.add_(1.0)  # the deep vl expert: joint passes only
        torch.testing.assert_close(specific.text_features(ids, mask), agnostic.text_features(ids, mask))


def test_padding_does_not_change_the_joint_output():
    agnostic, _ = models()
    ids, mask, px = batch()
    with torch.no_grad():
        full = agnostic.joint(ids, mask, px)
        short = agnostic.joint(ids[:1, :4], mask[:1, :4], px[:1])
    torch.testing.assert_close(full[0, :4], short[0, :4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full[0, 7:], short[0, 4:], rtol=1e-5, atol=1e-5)


def test_merging_identical_experts_gives_the_agnostic_model_back():
    agnostic, specific = models()
    merged = merge_experts("interpolation", specific.state_dict(), params={"ratio": 0.3})
    reference = agnostic.state_dict()
    assert set(merged) == set(reference)
    for k in reference:
        torch.testing.assert_close(merged[k], reference[k], rtol=1e-6, atol=1e-6)


def test_gram_hooks_equal_xtx_of_the_unpadded_inputs():
    _, specific = models()
    ids, mask, px = batch()
    grams, counts = collect(specific, lambda: specific.joint(ids, mask, px), linear_modules(specific),
                            mask_fn=lambda: specific.token_mask)
    # joint pass: v and l experts below the vl layer, only vl in it
    assert {k.split(".")[3] for k in grams if k.startswith("blocks.2.")} == {"vl"}
    assert {k.split(".")[3] for k in grams if k.startswith("blocks.0.")} == {"v", "l"}
    x = specific.embed_text(ids)
    norm = specific.blocks[0].norm1["l"]
    inp = norm(x)[mask].double()
    torch.testing.assert_close(grams["blocks.0.attn.l.qkv"], inp.T @ inp)
    assert counts["blocks.0.attn.l.qkv"] == int(mask.sum())
    assert counts["blocks.2.attn.vl.qkv"] == int(mask.sum()) + 3 * 5  # text tokens + 3 images × (4 patches + CLS)
    assert all(g.dtype == torch.float64 for g in grams.values())


def _tiny_vit(depth=3, layer_scale=None):
    import timm

    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=16,
                             depth=depth, num_heads=2, mlp_ratio=2.0, num_classes=0, global_pool="token",
                             init_values=layer_scale).eval()


@pytest.mark.parametrize("layer_scale", [None, 0.3])
def test_vlmo_started_from_a_vit_computes_the_vits_image_features(layer_scale):
    """merging.pretrain.image_init: the image stream of a VLMo initialised from a timm ViT (γ = 1
    without layer scale, the ViT's γ with it; image token types at zero) is the ViT, bit for bit,
    in its shallow and top layers; the text side keeps its random embeddings."""
    from vltune.models.vlmo import init_image_tower

    vit = _tiny_vit(layer_scale=layer_scale)
    model = VLMo(VLMoConfig(**ARCH)).eval()
    text_before = model.text_embed.weight.clone()
    loaded = init_image_tower(model, vit.state_dict())
    assert "patch_embed.weight" in loaded and "blocks.2.mlp.fc2.weight" in loaded and "text_embed.weight" not in loaded
    pixels = batch()[2]
    with torch.no_grad():
        assert torch.equal(model.unimodal_top(model.image_shallow(pixels), None, "v"), vit.forward_features(pixels))
    assert torch.equal(model.text_embed.weight, text_before)
    expected_gamma = torch.ones(16) if layer_scale is None else torch.full((16,), layer_scale)
    assert torch.equal(model.blocks[0].gamma1, expected_gamma)


def test_a_vit_of_another_shape_is_refused_naming_the_tensor():
    from vltune.models.vlmo import init_image_tower

    with pytest.raises(ValueError, match="the ViT has 2 blocks, the VLMo 3 layers"):
        init_image_tower(VLMo(VLMoConfig(**ARCH)), _tiny_vit(depth=2).state_dict())
    wide = VLMo(VLMoConfig(**{**ARCH, "mlp_ratio": 4}))
    with pytest.raises(ValueError, match=r"'blocks.0.mlp.fc1.weight' has shape \(32, 16\).*\(64, 16\).*mlp_ratio 4"):
        init_image_tower(wide, _tiny_vit().state_dict())
    with pytest.raises(ValueError, match="modality-agnostic"):
        init_image_tower(VLMo(VLMoConfig(**ARCH, mode="specific")), _tiny_vit().state_dict())


class _Tok:
    """What build_vlmo reads of a tokenizer."""

    pad_token_id, mask_token_id = 0, 4

    def __len__(self):
        return ARCH["vocab_size"]


def test_build_vlmo_starts_from_a_saved_vit_folder_and_refuses_bad_starts(tmp_path):
    """The pretrain-vlmo --image-init path: a timm save_for_hf folder (what pretrain_vit writes)
    starts the image stream; a ViT of another shape or both starts at once are UserErrors naming
    the folder / the two options."""
    from timm.models import save_for_hf

    from vltune.errors import UserError
    from vltune.recipes.vlmo.pretrain import build_vlmo

    vit = _tiny_vit()
    save_for_hf(vit, str(tmp_path / "vit"), safe_serialization=True,
                model_args=dict(img_size=16, patch_size=8, embed_dim=16, depth=3, num_heads=2, mlp_ratio=2.0,
                                num_classes=0, global_pool="token"))
    arch = {k: v for k, v in ARCH.items() if k != "vocab_size"}
    model = build_vlmo(arch, "agnostic", _Tok(), image_init=tmp_path / "vit").eval()
    pixels = batch()[2]
    with torch.no_grad():
        assert torch.equal(model.unimodal_top(model.image_shallow(pixels), None, "v"), vit.forward_features(pixels))
    with pytest.raises(UserError, match=r"vit: cannot initialise the VLMo's image tower .*merging.arch"):
        build_vlmo({**arch, "mlp_ratio": 4}, "agnostic", _Tok(), image_init=tmp_path / "vit")
    with pytest.raises(UserError, match="not both"):
        build_vlmo(arch, "agnostic", _Tok(), init_dir=tmp_path / "seed", image_init=tmp_path / "vit")


def test_pretraining_batches_of_fewer_than_two_pairs_are_refused_before_training(tiny_world, tokenizer):
    """ITC and ITM contrast each image-caption pair with another one of the batch: a split with a
    single pair (or batch_size 1) has no negative, so it stops with the split and key named."""
    from vltune.errors import UserError
    from vltune.recipes.vlmo.pretrain import CaptionBatches

    prep = VLMoConfig(vocab_size=len(tokenizer), d_model=16, layers=2, vl_layers=1, heads=2).preprocessing
    assert CaptionBatches(tiny_world, "val", tokenizer, prep, 16, 2, 0.15, 0)(0)["input_ids"].shape[0] == 2
    with pytest.raises(UserError, match=r"2 or more image-caption pairs; the val split has \d+ and "
                                        r"merging.pretrain.batch_size is 1"):
        CaptionBatches(tiny_world, "val", tokenizer, prep, 16, 1, 0.15, 0)
