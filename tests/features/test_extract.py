"""Feature extraction: equal to a per-image fp32 reference, identical with DataLoader workers,
resumable shard by shard (verified shards kept, a corrupted one redone)."""

from __future__ import annotations

import json

import pytest
import torch

import vltune.features.extract as extract_mod
from vltune.features.extract import decode_resize
from vltune.data.tables import read_table, table_path
from vltune.features.extract import ExtractConfig, extract_features, load_encoder
from vltune.features.store import FeatureStore, write_shard


def _save_timm(name, out, size=32):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0,
                              pretrained_cfg_overlay={"input_size": (3, size, size)}).eval()
    save_for_hf(model, out, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    _save_timm("test_resnet", out)
    return out


def _pixels(blobs, enc):
    x = torch.stack([decode_resize(b, enc.size) for b in blobs]).float() / 255
    return (x - torch.tensor(enc.mean).view(1, 3, 1, 1)) / torch.tensor(enc.std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def reference(tiny_world, cnn_dir):
    """The reference repositories' way: one image at a time, fp32, PIL bicubic resize."""
    enc = load_encoder(cnn_dir)
    images = read_table(table_path(tiny_world, "images"), "images")
    ids, grids, pooled = images["image_id"].to_pylist(), [], []
    with torch.inference_mode():
        for blob in images["image"].to_pylist():
            x = _pixels([blob], enc)
            fmap = enc.model.forward_features(x)
            grids.append(fmap.flatten(2).transpose(1, 2)[0])
            pooled.append(fmap.mean((2, 3))[0])  # a plain ResNet's head: global average pooling
    return ids, torch.stack(grids), torch.stack(pooled)


def test_grid_matches_per_image_reference(tiny_world, cnn_dir, reference, tmp_path):
    manifest_path = extract_features(tiny_world, cnn_dir, tmp_path / "store", {"batch_size": 16, "shard_size": 20})
    ids, ref, ref_pooled = reference
    store = FeatureStore(tmp_path / "store")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == len(ids) == 72 and [s["count"] for s in manifest["shards"]] == [20, 20, 20, 12]
    # a CNN writes its grid and its pooled vector, as a ViT CLIP writes its patches and [CLS]
    assert manifest["keys"] == {"grid": list(ref.shape[1:]), "cls": [ref.shape[-1]]}
    assert manifest["preprocessing"]["resize"] == 32
    got = store.get(ids, "grid")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), ref.half().float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(store.get(ids, "cls").float(), ref_pooled.half().float(), atol=2e-3, rtol=2e-3)
    assert not (tmp_path / ".store.partial").exists()


def test_workers_give_identical_shards(tiny_world, cnn_dir, tmp_path):
    cfg = {"batch_size": 16, "shard_size": 32}
    a = json.loads(extract_features(tiny_world, cnn_dir, tmp_path / "a", cfg).read_text())
    b = json.loads(extract_features(tiny_world, cnn_dir, tmp_path / "b", {**cfg, "num_workers": 2}).read_text())
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def _watch_shard_writes(monkeypatch, killed_after: int | None = None) -> list[str]:
    """Record the name of every shard extract_features writes (the returned list); with
    ``killed_after``, the job is killed (KeyboardInterrupt) when it comes to write one more."""
    written: list[str] = []

    def write(path, ids, feats):
        if killed_after is not None and len(written) == killed_after:
            raise KeyboardInterrupt("job killed")
        written.append(path.name)
        return write_shard(path, ids, feats)  # the store's own, not an earlier patch

    monkeypatch.setattr(extract_mod, "write_shard", write)
    return written


def test_resume_skips_verified_shards_and_redoes_a_corrupted_one(tiny_world, cnn_dir, tmp_path, monkeypatch):
    cfg = {"batch_size": 8, "shard_size": 16}  # 5 shards
    out = tmp_path / "store"
    full = json.loads(extract_features(tiny_world, cnn_dir, tmp_path / "oneshot", cfg).read_text())

    written = _watch_shard_writes(monkeypatch, killed_after=3)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_world, cnn_dir, out, cfg)
    work = tmp_path / ".store.partial"
    assert written == ["shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"]
    assert not (out / "manifest.json").exists()  # nothing that looks complete
    shard1 = work / "shard-00001.arrow"
    data = bytearray(shard1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard1.write_bytes(bytes(data))

    written = _watch_shard_writes(monkeypatch)
    decoded = []
    real_decode = extract_mod.decode_resize
    monkeypatch.setattr(extract_mod, "decode_resize", lambda b, s: decoded.append(1) or real_decode(b, s))
    resumed = json.loads(extract_features(tiny_world, cnn_dir, out, cfg).read_text())
    assert written == ["shard-00001.arrow", "shard-00003.arrow", "shard-00004.arrow"]
    assert len(decoded) == 16 + 16 + 8  # only the images of the shards it redid
    assert resumed["shards"] == full["shards"]  # same bytes as an uninterrupted run
    assert not work.exists()


def test_vit_per_layer_cls(tiny_world, tmp_path):
    model = _save_timm("test_vit", tmp_path / "vit")
    extract_features(tiny_world, tmp_path / "vit", tmp_path / "store", {"batch_size": 32})
    store = FeatureStore(tmp_path / "store")
    depth, width = len(model.blocks), model.embed_dim
    assert store.keys == {"cls_layers": [depth, width], "cls": [width]}
    images = read_table(table_path(tiny_world, "images"), "images")
    ids = images["image_id"].to_pylist()[:3]
    x = _pixels(images["image"].to_pylist()[:3], load_encoder(tmp_path / "vit"))
    with torch.inference_mode():
        final = model.forward_features(x)[:, 0]  # CLS after the final norm
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        first = model.norm(model.blocks[0](h))[:, 0]  # block 0's CLS, through the final norm
    cls_layers = store.get(ids, "cls_layers").float()
    torch.testing.assert_close(cls_layers[:, -1], final.half().float(), atol=3e-3, rtol=3e-3)
    torch.testing.assert_close(cls_layers[:, 0], first.half().float(), atol=3e-3, rtol=3e-3)
    torch.testing.assert_close(store.get(ids, "cls"), store.get(ids, "cls_layers")[:, -1])


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="unknown features param 'workers'"):
        ExtractConfig.from_dict({"workers": 2})
    with pytest.raises(ValueError, match="features.decode must be"):
        ExtractConfig.from_dict({"decode": "nvjpeg"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decode_close_to_pil(tiny_world):
    from vltune.features.extract import decode_resize, gpu_decode_resize
    import io
    from PIL import Image

    blobs = []
    for i, blob in enumerate(read_table(table_path(tiny_world, "images"), "images")["image"].to_pylist()[:8]):
        buf = io.BytesIO()
        Image.open(io.BytesIO(blob)).convert("RGB").save(buf, "JPEG", quality=95)
        blobs.append(buf.getvalue())
    gpu = gpu_decode_resize(blobs, 48, torch.device("cuda")).cpu().float()
    cpu = torch.stack([decode_resize(b, 48) for b in blobs]).float()
    assert (gpu - cpu).abs().mean() < 3.0  # decoders' IDCT and the resize kernels differ slightly


def _save_tiny_clip(tokenizer, out):
    from transformers import CLIPImageProcessor

    from vltune.backbones.clip import build_tiny_clip
    from vltune.data.images import CLIP_MEAN, CLIP_STD

    torch.manual_seed(0)
    model = build_tiny_clip(tokenizer, image_size=32, patch_size=16, hidden=16, layers=2, heads=2, intermediate=32,
                            projection=16, max_text_len=16).eval()
    model.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(out)
    return model


def test_clip_grid_layer_picks_that_layers_patch_tokens(tiny_world, tokenizer, tmp_path):
    """grid_layer -1 = the last layer's patch tokens (as before), -2 = the penultimate layer's (the
    ones CLIP's loss trains); [CLS] and the pooled vector do not depend on it."""
    model = _save_tiny_clip(tokenizer, tmp_path / "clip")
    images = read_table(table_path(tiny_world, "images"), "images")
    ids = images["image_id"].to_pylist()[:4]
    x = _pixels(images["image"].to_pylist()[:4], load_encoder(tmp_path / "clip"))
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
    for layer in (-1, -2):
        out = tmp_path / f"store{layer}"
        manifest = json.loads(extract_features(tiny_world, tmp_path / "clip", out, {"grid_layer": layer}).read_text())
        assert manifest["preprocessing"]["grid_layer"] == layer
        grid = FeatureStore(out).get(ids, "grid").float()
        torch.testing.assert_close(grid, hidden[layer][:, 1:].half().float(), atol=3e-3, rtol=3e-3)
    last, pen = (FeatureStore(tmp_path / f"store{layer}") for layer in (-1, -2))
    assert not torch.allclose(last.get(ids, "grid"), pen.get(ids, "grid"))
    torch.testing.assert_close(last.get(ids, "cls"), pen.get(ids, "cls"))
    with pytest.raises(ValueError, match="has 2 layers"):
        extract_features(tiny_world, tmp_path / "clip", tmp_path / "bad", {"grid_layer": -3})


def test_grid_layer_is_refused_for_a_cnn_and_must_count_from_the_end(tiny_world, cnn_dir, tmp_path):
    with pytest.raises(ValueError, match="only a transformers CLIP has layers to choose"):
        extract_features(tiny_world, cnn_dir, tmp_path / "store", {"grid_layer": -2})
    with pytest.raises(ValueError, match="counts from the last layer"):
        ExtractConfig.from_dict({"grid_layer": 1})


def test_partial_shards_of_other_settings_are_not_resumed(tiny_world, tokenizer, tmp_path, monkeypatch):
    """A killed extraction with grid_layer -1, re-run with -2: its finished shards hold the wrong
    layer, so every shard is extracted again."""
    _save_tiny_clip(tokenizer, tmp_path / "clip")
    cfg = {"batch_size": 8, "shard_size": 16}
    _watch_shard_writes(monkeypatch, killed_after=2)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_world, tmp_path / "clip", tmp_path / "store", {**cfg, "grid_layer": -1})
    written = _watch_shard_writes(monkeypatch)
    extract_features(tiny_world, tmp_path / "clip", tmp_path / "store", {**cfg, "grid_layer": -2})
    assert len(written) == 5  # all of them, none taken from the killed run
    fresh = extract_features(tiny_world, tmp_path / "clip", tmp_path / "fresh", {**cfg, "grid_layer": -2})
    assert json.loads((tmp_path / "store/manifest.json").read_text())["shards"] == json.loads(fresh.read_text())["shards"]
