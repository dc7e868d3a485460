"""The VLMo's images are preprocessed as its image stream expects: a VLMo started from a published
ViT resizes and normalises as that ViT's timm data config says (checked against PIL + torchvision
applied here), keeps it through its checkpoint and the models grown from it; a VLMo from scratch
keeps CLIP's constants and bicubic resizing."""

from __future__ import annotations

import pytest
import torch
from image_reference import reference_pixels

from vltune.data.images import CLIP_MEAN, CLIP_STD
from vltune.errors import UserError

SPLIT = "val"


class _Tok:
    """What build_vlmo reads of a tokenizer."""

    pad_token_id, mask_token_id = 0, 4

    def __len__(self):
        return 50


def _images(data_dir, n=3):
    from vltune.data.tables import read_table, table_path

    t = read_table(table_path(data_dir, "images"), "images")
    t = t.filter(t["split"].to_numpy(zero_copy_only=False) == SPLIT)
    return t["image_id"].to_pylist()[:n], t["image"].to_pylist()[:n]


def test_vlmo_from_a_published_vit_uses_the_vits_preprocessing(published_vit_dir, tiny_world, tmp_path):
    import timm
    from timm.data import resolve_data_config

    from vltune.recipes.vlmo.data import ImageBank
    from vltune.recipes.vlmo.pretrain import build_vlmo, load_vlmo, save_vlmo

    data_cfg = resolve_data_config({}, model=timm.create_model(f"local-dir:{published_vit_dir}", pretrained=False,
                                                                num_classes=0))
    assert tuple(data_cfg["mean"]) != tuple(CLIP_MEAN)  # augreg: 0.5 / 0.5
    arch = dict(d_model=768, layers=2, vl_layers=1, heads=12, mlp_ratio=4, max_text_len=12, image_size=224,
                patch_size=16)
    seed = build_vlmo(arch, "agnostic", _Tok(), image_init=published_vit_dir)
    prep = seed.cfg.preprocessing
    assert prep == {"resize": 224, "interpolation": data_cfg["interpolation"], "mean": list(data_cfg["mean"]),
                    "std": list(data_cfg["std"])}
    ids, blobs = _images(tiny_world)
    bank = ImageBank(tiny_world, (SPLIT,), prep)
    expected = reference_pixels(blobs, data_cfg["input_size"][-1], data_cfg["interpolation"], data_cfg["mean"],
                          data_cfg["std"])
    torch.testing.assert_close(bank.gather(ids), expected, atol=2e-3, rtol=0)  # the bank holds float16
    # the checkpoint carries it, and a model grown from it (specific pretraining) keeps it
    save_vlmo(seed, tmp_path / "seed")
    loaded, _ = load_vlmo(tmp_path / "seed")
    assert loaded.cfg.preprocessing == prep
    del seed, loaded
    specific = build_vlmo(arch, "specific", _Tok(), init_dir=tmp_path / "seed")
    assert specific.cfg.preprocessing == prep
    with pytest.raises(UserError, match="224 px images, merging.arch.image_size is 64"):
        build_vlmo({**arch, "image_size": 64}, "agnostic", _Tok(), image_init=published_vit_dir)


def test_scratch_vlmo_keeps_clip_constants(tiny_world, tmp_path):
    from vltune.data.images import decode_images
    from vltune.recipes.vlmo.data import ImageBank
    from vltune.recipes.vlmo.pretrain import build_vlmo, read_vlmo_config, save_vlmo
    from vltune.utils.io import read_json, write_json

    arch = dict(d_model=16, layers=2, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12, image_size=32, patch_size=16)
    model = build_vlmo(arch, "agnostic", _Tok())
    assert model.cfg.preprocessing == {"resize": 32, "interpolation": "bicubic", "mean": list(CLIP_MEAN),
                                       "std": list(CLIP_STD)}
    ids, blobs = _images(tiny_world)
    bank = ImageBank(tiny_world, (SPLIT,), model.cfg.preprocessing)
    torch.testing.assert_close(bank.gather(ids), decode_images(blobs, 32).half().float(), atol=0, rtol=0)
    torch.testing.assert_close(bank.gather(ids), reference_pixels(blobs, 32, "bicubic", CLIP_MEAN, CLIP_STD),
                               atol=2e-3, rtol=0)
    # a checkpoint written before the preprocessing was recorded reads as CLIP + bicubic
    save_vlmo(model, tmp_path / "old")
    meta = read_json(tmp_path / "old" / "vlmo.json")
    for key in ("image_mean", "image_std", "image_interpolation"):
        del meta["arch"][key]
    write_json(tmp_path / "old" / "vlmo.json", meta)
    assert read_vlmo_config(tmp_path / "old")[0].preprocessing == model.cfg.preprocessing


def test_every_stage_after_a_vit_start_decodes_with_the_vits_preprocessing(tiny_world, tokenizer_dir, tmp_path,
                                                                           monkeypatch):
    """Seed pretraining from a ViT, specific pretraining from the seed, Gram collection and
    fine-tuning on the specific model: every image bank they build uses the ViT's preprocessing."""
    import timm
    from timm.models import save_for_hf

    import vltune.recipes.vlmo.data as vlmo_data
    from vltune.train.loop import TrainConfig
    from vltune.recipes.vlmo.pretrain import pretrain_vlmo
    from vltune.recipes.vlmo.tasks import collect_task_grams, finetune_vlmo

    overlay = dict(interpolation="bilinear", mean=(0.2, 0.3, 0.4), std=(0.6, 0.5, 0.4))
    torch.manual_seed(1)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=16,
                            depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0, global_pool="token",
                            pretrained_cfg_overlay=overlay)
    save_for_hf(vit, str(tmp_path / "vit"), safe_serialization=True)
    seen = []
    init = vlmo_data.ImageBank.__init__

    def spy(self, data_dir, splits, preprocessing):
        seen.append(dict(preprocessing))
        init(self, data_dir, splits, preprocessing)

    monkeypatch.setattr(vlmo_data.ImageBank, "__init__", spy)
    arch = dict(d_model=16, layers=2, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12, image_size=16, patch_size=8)
    cfg = TrainConfig(steps=1, log_every=1)
    pretrain_vlmo(tiny_world, tokenizer_dir, tmp_path / "seed", arch, "agnostic", cfg, 4, 0.25,
                  image_init=tmp_path / "vit")
    pretrain_vlmo(tiny_world, tokenizer_dir, tmp_path / "specific", arch, "specific", cfg, 4, 0.25,
                  init_dir=tmp_path / "seed")
    collect_task_grams(tmp_path / "specific", tiny_world, tokenizer_dir, "vqa", "val", 32)
    finetune_vlmo(tmp_path / "specific", tiny_world, tokenizer_dir, "vqa", cfg, 4, eval_split="val")
    expected = {"resize": 16, "interpolation": "bilinear", "mean": list(overlay["mean"]), "std": list(overlay["std"])}
    assert len(seen) == 6 and all(p == expected for p in seen), seen


def test_a_vit_start_draws_the_same_random_init_as_building_the_model_first(tmp_path):
    """The recorded preprocessing changes no weight: the model is built (its random init drawn)
    before the ViT is loaded, as a VLMo built and then given the ViT's tower by hand."""
    import timm
    from timm.models import save_for_hf

    from vltune.backbones.vit import load_vit
    from vltune.models.vlmo import VLMo, VLMoConfig, init_image_tower
    from vltune.recipes.vlmo.pretrain import build_vlmo

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=16,
                            depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0, global_pool="token")
    save_for_hf(vit, str(tmp_path / "vit"), safe_serialization=True)
    arch = dict(d_model=16, layers=2, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12, image_size=16, patch_size=8)
    torch.manual_seed(3)
    built = build_vlmo(arch, "agnostic", _Tok(), image_init=tmp_path / "vit")
    after_built = torch.rand(3)
    torch.manual_seed(3)
    by_hand = VLMo(VLMoConfig(**arch, vocab_size=50, pad_token_id=0, mask_token_id=4))
    init_image_tower(by_hand, load_vit(tmp_path / "vit").state_dict())
    assert torch.equal(torch.rand(3), after_built)
    for (name, a), (_, b) in zip(built.state_dict().items(), by_hand.state_dict().items()):
        assert torch.equal(a, b), name
