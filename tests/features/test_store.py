"""The feature store: round trip by image_id across shards, and corruption detection."""

from __future__ import annotations

import json

import pytest
import torch

from vltune.features.store import FeatureStore, FeatureStoreError, FeatureWriter


def _write(root, n=7, shard_size=3):
    g = torch.Generator().manual_seed(0)
    ids = [f"img{i}" for i in range(n)]
    grid, pooled = torch.randn(n, 4, 5, generator=g), torch.randn(n, 6, generator=g)
    w = FeatureWriter(root, encoder="test-clip", preprocessing={"resize": 8}, shard_size=shard_size)
    w.add(ids[:4], {"grid": grid[:4], "pooled": pooled[:4]})  # batches do not align with shards
    w.add(ids[4:], {"grid": grid[4:], "pooled": pooled[4:]})
    w.close()
    return ids, grid, pooled


def test_round_trip_by_image_id_across_shards(tmp_path):
    ids, grid, pooled = _write(tmp_path)
    store = FeatureStore(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 7 and len(manifest["shards"]) == 3
    assert manifest["encoder"] == "test-clip" and manifest["keys"] == {"grid": [4, 5], "pooled": [6]}
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    order = [6, 0, 3]
    got = store.get([ids[i] for i in order], "grid")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), grid[order].half().float())
    all_ids, all_pooled = store.all("pooled")
    assert all_ids == ids
    torch.testing.assert_close(all_pooled.float(), pooled.half().float())


def test_corrupted_shard_is_detected_and_named(tmp_path):
    _write(tmp_path)
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = FeatureStore(tmp_path)
    store.get(["img0"], "grid")  # shard 0 is intact
    with pytest.raises(FeatureStoreError, match="shard-00001.safetensors: checksum mismatch"):
        store.get(["img4"], "grid")


def test_missing_manifest_and_unknown_ids_are_clear_errors(tmp_path):
    with pytest.raises(FeatureStoreError, match="no feature-store manifest"):
        FeatureStore(tmp_path)
    _write(tmp_path)
    store = FeatureStore(tmp_path)
    with pytest.raises(KeyError, match="nope"):
        store.get(["nope"], "grid")
    with pytest.raises(KeyError, match="feature 'cls' not in store"):
        store.get(["img0"], "cls")
