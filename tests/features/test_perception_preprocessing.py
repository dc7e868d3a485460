"""eP-ALM perception is computed with the encoder's own input side and interpolation (timm's
resolved data config), and with its mean/std under ``normalize: encoder`` or CLIP's under
``normalize: clip``; checked against PIL + torchvision applied here to the same images."""

from __future__ import annotations

import pytest
import torch
from image_reference import reference_pixels as _pixels


def reference_pixels(blobs, data_config: dict, mean, std) -> torch.Tensor:
    """The preprocessing of ``data_config`` (timm's) with ``mean``/``std``, written out independently."""
    return _pixels(blobs, data_config["input_size"][-1], data_config["interpolation"], mean, std)


def test_published_vit_preprocessing_is_timms_resolved_data_config(published_vit_dir):
    from timm.data import resolve_data_config

    from vltune.backbones.vit import load_vit
    from vltune.data.images import CLIP_MEAN, CLIP_STD
    from vltune.features.perception import perception_preprocessing

    vit = load_vit(published_vit_dir)
    cfg = resolve_data_config({}, model=vit)
    assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5)) and cfg["interpolation"] == "bicubic"  # augreg's
    own = perception_preprocessing(vit, "encoder")
    assert own == {"resize": cfg["input_size"][-1], "interpolation": cfg["interpolation"], "mean": list(cfg["mean"]),
                   "std": list(cfg["std"]), "normalize": "encoder"}
    clip = perception_preprocessing(vit, "clip")
    assert clip == {**own, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "normalize": "clip"}


@pytest.mark.parametrize("normalize", ["encoder", "clip"])
def test_extracted_perception_uses_the_encoders_side_and_interpolation(tiny_world, tmp_path, normalize):
    """A ViT whose pretrained config asks for bilinear resizing to 32 px with its own mean/std."""
    import timm
    from timm.data import resolve_data_config
    from timm.models import save_for_hf

    from vltune.backbones.vit import block_cls, load_vit
    from vltune.data.images import CLIP_MEAN, CLIP_STD
    from vltune.data.tables import read_table, table_path
    from vltune.features.perception import extract_perception
    from vltune.features.store import FeatureStore

    torch.manual_seed(0)
    overlay = dict(interpolation="bilinear", mean=(0.2, 0.3, 0.4), std=(0.6, 0.5, 0.4))
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=32,
                            depth=2, num_heads=2, pretrained_cfg_overlay=overlay)
    save_for_hf(vit, str(tmp_path / "vit"), safe_serialization=True)
    extract_perception(tiny_world, tmp_path / "vit", tmp_path / "store", batch_size=16, normalize=normalize)
    store = FeatureStore(tmp_path / "store")
    loaded = load_vit(tmp_path / "vit")
    cfg = resolve_data_config({}, model=loaded)
    assert cfg["input_size"][-1] == 32 and cfg["interpolation"] == "bilinear"
    mean, std = (overlay["mean"], overlay["std"]) if normalize == "encoder" else (CLIP_MEAN, CLIP_STD)
    images = read_table(table_path(tiny_world, "images"), "images")
    ids, blobs = images["image_id"].to_pylist()[:4], images["image"].to_pylist()[:4]
    with torch.inference_mode():
        expected = block_cls(loaded, reference_pixels(blobs, cfg, mean, std))
    torch.testing.assert_close(store.get(ids, "cls_layers").float(), expected, rtol=1e-4, atol=1e-4)
    assert store.manifest["preprocessing"]["interpolation"] == "bilinear"
    assert store.manifest["preprocessing"]["mean"] == pytest.approx(mean)
