"""Feature extraction from JPEG bytes: the pipeline's extract_features vs a per-image fp32 loop.

For each encoder (CLIP RN101 layer-4 grids, CLIP ViT-B/32 per-layer [CLS]; timm architectures with
random weights, so nothing is downloaded) on the same synthetic COCO-sized JPEGs (640×480):

- ``decode_only``: the extraction's input pipeline alone (DataLoader workers + PIL, or nvJPEG on a
  GPU) — images/s it can deliver;
- ``model_only``: the encoder alone on ready pixels already on the device, batched, in the
  extraction's precision;
- ``end_to_end``: ``vltune.features.extract.extract_features`` (decode, model, fp16 shards);
- ``per_image_fp32``: how the reference repositories extract (VL-Adapter ``coco_CLIP.py``): PIL
  decode + resize of one image, fp32 model on it, one image at a time.

Prints rates side by side with ``end_to_end / min(decode_only, model_only)`` (which side limits)
and ``end_to_end / per_image_fp32``; writes JSON. No number here is asserted anywhere.

    PYTHONPATH=pipeline_src python bench/features.py                              # auto device
    PYTHONPATH=pipeline_src python bench/features.py --images 4096 --workers 14 --batch-size 256
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "features.json"
MODELS = {"rn101": "resnet101_clip", "vitb32": "vit_base_patch32_clip_224"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="rn101,vitb32",
                   help=f"comma list of {', '.join(MODELS)}, or name=timm_architecture (tiny models in tests)")
    p.add_argument("--images", type=int, default=2048, help="JPEGs in the synthetic images table")
    p.add_argument("--baseline-images", type=int, default=128, help="images the per-image fp32 loop runs on")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--decode", default="auto", choices=["cpu", "gpu", "auto"])
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (extraction and model-only)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def make_images(n: int, width: int, height: int, folder: Path) -> Path:
    """A canonical images table of ``n`` smooth-plus-noise JPEGs (quality 90, like photos); at most
    256 distinct ones, repeated (decoding costs the same, and making them is not what is timed)."""
    import pyarrow as pa
    from PIL import Image

    from vltune.data.tables import SCHEMAS, write_table

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    blobs = []
    for i in range(min(n, 256)):
        base = (np.sin(xx / (20 + i % 17)) + np.cos(yy / (15 + i % 13)))[..., None] * 60 + 128
        img = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    blobs = [blobs[i % len(blobs)] for i in range(n)]
    table = pa.table({"image_id": [f"img{i:06d}" for i in range(n)], "split": ["train"] * n, "image": blobs,
                      "scene": [""] * n}, schema=SCHEMAS["images"])
    write_table(table, folder / "images.arrow")
    return folder


def save_model(arch: str, folder: Path) -> Path:
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def decode_only(data_dir: Path, encoder, cfg, device) -> float:
    from vltune.data.tables import table_path
    from vltune.features.extract import EncodedImages, _collate, gpu_decode_resize

    gpu = cfg.decode == "gpu" or (cfg.decode == "auto" and device.type == "cuda")
    ds = EncodedImages(table_path(data_dir, "images"), encoder.size, raw=gpu)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         collate_fn=_collate, pin_memory=device.type == "cuda",
                                         prefetch_factor=4 if cfg.num_workers else None)
    n, t0 = 0, time.perf_counter()
    for _, data in loader:
        x = gpu_decode_resize(data, encoder.size, device) if gpu else data.to(device, non_blocking=True)
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - t0)


@torch.inference_mode()
def model_only(encoder, cfg, device, n_batches: int = 8) -> float:
    bf16 = device.type == "cuda"
    fn = torch.compile(encoder.__call__) if cfg.compile else encoder
    x = torch.randint(0, 256, (cfg.batch_size, 3, encoder.size, encoder.size), dtype=torch.uint8, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    for _ in range(2):  # warm-up (cuDNN autotune, compile)
        with ctx:
            fn(x.float() / 255)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        with ctx:
            out = fn(x.float() / 255)
            {k: v.to("cpu", torch.float16) for k, v in out.items()}
    sync(device)
    return n_batches * cfg.batch_size / (time.perf_counter() - t0)


@torch.inference_mode()
def per_image_fp32(data_dir: Path, encoder, device, n: int) -> float:
    from vltune.data.images import decode_images
    from vltune.data.tables import read_table, table_path

    blobs = read_table(table_path(data_dir, "images"), "images")["image"].to_pylist()[:n]
    encoder.model.float()
    encoder(decode_images(blobs[:1], encoder.size).to(device))
    sync(device)
    t0 = time.perf_counter()
    for blob in blobs:
        out = encoder(decode_images([blob], encoder.size).to(device))
        {k: v.cpu() for k, v in out.items()}
    sync(device)
    return len(blobs) / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from vltune.features.extract import ExtractConfig, extract_features, load_encoder

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = ExtractConfig(batch_size=args.batch_size, shard_size=args.shard_size, num_workers=args.workers,
                        decode=args.decode, compile=args.compile)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_images(args.images, args.width, args.height, tmp / "data")
        for item in args.models.split(","):
            key, _, arch = item.partition("=")
            bb = save_model(arch or MODELS[key], tmp / key)
            encoder = load_encoder(bb).to(device)
            row = {"architecture": arch or MODELS[key], "decode_only": decode_only(data, encoder, cfg, device),
                   "model_only": model_only(encoder, cfg, device)}
            t0 = time.perf_counter()
            extract_features(data, bb, tmp / f"store-{key}", cfg)
            row["end_to_end"] = args.images / (time.perf_counter() - t0)
            row["per_image_fp32"] = per_image_fp32(data, load_encoder(bb).to(device), device, args.baseline_images)
            row["e2e_over_min_decode_model"] = row["end_to_end"] / min(row["decode_only"], row["model_only"])
            row["e2e_over_per_image_fp32"] = row["end_to_end"] / row["per_image_fp32"]
            row["limit"] = "decode" if row["decode_only"] < row["model_only"] else "model"
            results[key] = row
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                "cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0],
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "images_per_s": results,
    }
    print(f"{'model':8} {'decode':>9} {'model':>9} {'e2e':>9} {'fp32 loop':>9} {'e2e/min':>8} {'e2e/loop':>9} limit")
    for key, r in results.items():
        print(f"{key:8} {r['decode_only']:9.1f} {r['model_only']:9.1f} {r['end_to_end']:9.1f} {r['per_image_fp32']:9.1f} "
              f"{r['e2e_over_min_decode_model']:8.2f} {r['e2e_over_per_image_fp32']:9.1f} {r['limit']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
