"""Image-encoder feature extraction into the sharded feature store, batched and resumable.

Encoders (:func:`load_encoder`, from a backbone folder):

- transformers ``CLIPModel`` (the tiny CLIP the default pretrains): ``grid`` = the image tower's
  patch tokens after the last layer, ``cls`` = the pooled [CLS] after the final LayerNorm,
  ``pooled`` = the projected CLIP image embedding.
- a timm CNN (CLIP RN101): ``grid`` = ``forward_features``, the layer-4 map before attention
  pooling, as (H·W, C) tokens: 49 × 2048 at 224 px (VL-PET max-pools it to 6×6 when loading:
  ``features.tokens.grid_pool``); ``cls`` = the head's pooled vector before any projection (RN101:
  its attention pool, 2048 wide; a plain ResNet: its global average pool). Run channels_last.
- a timm ViT (ViT-B/16, ViT-L/16, CLIP ViT-B/32): ``cls_layers`` = every block's [CLS] after the
  final norm (eP-ALM, arXiv 2303.11403, reads the last six), ``cls`` = the final pooled vector.

The pipeline: DataLoader workers decode JPEG/PNG bytes from the memory-mapped images table and
resize them (PIL bicubic, as the reference extraction) to uint8; on a GPU, ``decode: gpu`` decodes
JPEGs with nvJPEG instead (torchvision) and resizes there. The model runs batched under
``inference_mode`` (bf16 autocast on a GPU). Shards are written one at a time into a work folder
beside the output (never a declared output, so Snakemake does not delete it before a re-run): a
re-run keeps every finished shard whose checksum verifies and redoes the rest. Host memory holds one
shard of features plus the loader's prefetched batches, whatever the dataset size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.images import CLIP_MEAN, CLIP_STD
from ..data.tables import table_path
from .store import MANIFEST, write_shard
from ..utils.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    batch_size: int = 256
    shard_size: int = 4096
    num_workers: int = 0
    decode: str = "auto"        # cpu | gpu | auto (gpu when CUDA is available)
    precision: str = "auto"     # fp32 | bf16 | auto (bf16 on a GPU)
    compile: bool = False       # torch.compile the encoder (pays off on large runs, on a GPU)
    # Which transformer layer's patch tokens form a ViT CLIP's grid: -1 = the last, -2 = the one
    # before it. The last layer's patch outputs feed no loss in CLIP pretraining (only [CLS] does),
    # so LLaVA and others take the penultimate layer; a CNN's grid is its last feature map.
    grid_layer: int = -1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "ExtractConfig":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown features param {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})")
        cfg = cls(**d)
        if cfg.decode not in ("cpu", "gpu", "auto"):
            raise ValueError(f"features.decode must be cpu, gpu or auto, got {cfg.decode!r}")
        if cfg.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"features.precision must be fp32, bf16 or auto, got {cfg.precision!r}")
        if cfg.grid_layer >= 0:
            raise ValueError(f"features.grid_layer counts from the last layer (-1, -2, ...), got {cfg.grid_layer}")
        if min(cfg.batch_size, cfg.shard_size) < 1 or cfg.num_workers < 0:
            raise ValueError("features.batch_size and shard_size must be >= 1, num_workers >= 0")
        return cfg


# ----------------------------------------------------------------------------- encoders
class Encoder:
    """A frozen image tower: ``size`` × ``size`` input, normalisation, and feature outputs."""

    def __init__(self, model, kind: str, size: int, mean, std, name: str, grid_layer: int = -1):
        self.model, self.kind, self.size, self.name = model, kind, size, name
        self.mean, self.std = tuple(mean), tuple(std)
        self.grid_layer = grid_layer

    @property
    def preprocessing(self) -> dict:
        return {"resize": self.size, "interpolation": "bicubic", "mean": list(self.mean), "std": list(self.std),
                "grid_layer": self.grid_layer}

    def to(self, device: torch.device) -> "Encoder":
        self.model.to(device)
        if self.kind == "timm-cnn" and device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)  # cuDNN's fast path for convolutions
        return self

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "clip":
            last = self.grid_layer == -1
            out = self.model.vision_model(pixel_values=x, output_hidden_states=not last)
            grid = out.last_hidden_state if last else out.hidden_states[self.grid_layer]
            return {"grid": grid[:, 1:], "cls": out.pooler_output,
                    "pooled": self.model.visual_projection(out.pooler_output)}
        if self.kind == "timm-cnn":
            grid = self.model.forward_features(x.contiguous(memory_format=torch.channels_last)
                                               if x.is_cuda else x)
            # (B, C, H, W) → (B, H·W, C); the pooled vector is the image's one summary token
            return {"grid": grid.flatten(2).transpose(1, 2), "cls": self.model.forward_head(grid, pre_logits=True)}
        inter = self.model.forward_intermediates(x, norm=True, output_fmt="NLC", return_prefix_tokens=True,
                                                 intermediates_only=True)
        cls_layers = torch.stack([prefix[:, 0] for _, prefix in inter], dim=1)
        return {"cls_layers": cls_layers, "cls": cls_layers[:, -1]}


def load_encoder(backbone_dir: str | Path, grid_layer: int = -1) -> Encoder:
    from ..backbones.pretrained import folder_library, load_saved

    backbone_dir = Path(backbone_dir)
    library = folder_library(backbone_dir)
    if library == "transformers":
        from transformers import CLIPImageProcessor, CLIPModel

        model = CLIPModel.from_pretrained(str(backbone_dir)).eval()
        layers = model.config.vision_config.num_hidden_layers
        if -grid_layer > layers:
            raise ValueError(f"features.grid_layer {grid_layer}: {backbone_dir} has {layers} layers")
        proc = CLIPImageProcessor.from_pretrained(str(backbone_dir))
        return Encoder(model, "clip", proc.crop_size["height"], proc.image_mean, proc.image_std, backbone_dir.name,
                       grid_layer)
    if grid_layer != -1:
        raise ValueError(f"features.grid_layer {grid_layer}: only a transformers CLIP has layers to choose; "
                         f"{backbone_dir} is a timm model (its grid is the last feature map)")
    model, _ = load_saved(backbone_dir, kind="image")
    cfg = model.pretrained_cfg
    kind = "timm-vit" if hasattr(model, "forward_intermediates") and hasattr(model, "cls_token") else "timm-cnn"
    return Encoder(model, kind, cfg["input_size"][-1], cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD),
                   backbone_dir.name)


# ----------------------------------------------------------------------------- decoding
class EncodedImages(torch.utils.data.Dataset):
    """Rows of the images table; each item = (row index, uint8 (3, size, size)) decoded with PIL, or
    the raw bytes when ``raw`` (GPU decode). The table is memory-mapped lazily in each worker."""

    def __init__(self, path: Path, size: int, raw: bool = False):
        self.path, self.size, self.raw = path, size, raw
        self._column = None
        with self._open() as reader:
            self.length = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))

    def _open(self):
        import pyarrow as pa

        return pa.ipc.open_file(pa.memory_map(str(self.path)))

    def _images(self):
        if self._column is None:
            self._column = self._open().read_all().column("image")
        return self._column

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        blob = self._images()[i].as_py()
        return i, (blob if self.raw else decode_resize(blob, self.size))


def decode_resize(blob: bytes, size: int) -> torch.Tensor:
    """Encoded image → uint8 (3, size, size): RGB, bicubic resize without keeping the aspect ratio."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def _collate(items):
    idx = [i for i, _ in items]
    data = [x for _, x in items]
    return idx, (data if isinstance(data[0], bytes) else torch.stack(data))


def gpu_decode_resize(blobs: list[bytes], size: int, device: torch.device) -> torch.Tensor:
    """nvJPEG batch decode on ``device`` + bicubic resize there; non-JPEG bytes decode on the CPU."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg = [i for i, b in enumerate(blobs) if b[:2] == b"\xff\xd8"]
    out = torch.empty(len(blobs), 3, size, size, dtype=torch.uint8, device=device)
    if jpeg:
        data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        by_shape: dict[tuple, list[int]] = {}
        for k, img in enumerate(decoded):
            by_shape.setdefault(tuple(img.shape), []).append(k)
        for shape, ks in by_shape.items():  # one resize kernel per source size, not one per image
            imgs = torch.stack([decoded[k] for k in ks])
            if shape[-2:] != (size, size):
                imgs = F.interpolate(imgs.float(), size=(size, size), mode="bicubic", antialias=True,
                                     align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
            out[[jpeg[k] for k in ks]] = imgs
    for i in set(range(len(blobs))) - set(jpeg):
        out[i] = decode_resize(blobs[i], size).to(device)
    return out


# ----------------------------------------------------------------------------- shards
def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.arrow"


def _finished(work: Path, s: int, ids: list[str]) -> dict | None:
    """The shard's record if its file exists, holds exactly ``ids`` and matches its checksum."""
    rec_path, path = work / f"{_shard_name(s)}.json", work / _shard_name(s)
    if not (rec_path.exists() and path.exists()):
        return None
    rec = read_json(rec_path)
    if rec.get("image_ids") != ids:
        return None
    digest = sha256_file(path)
    if digest != rec.get("sha256"):
        log.warning("%s: checksum mismatch (recorded %s, file %s): extracting it again", path, rec.get("sha256"), digest)
        return None
    return rec


@torch.inference_mode()
def extract_features(data_dir: str | Path, backbone_dir: str | Path, out_dir: str | Path,
                     cfg: ExtractConfig | dict | None = None, encoder_name: str | None = None,
                     work_dir: str | Path | None = None) -> Path:
    """Extract every image of ``data_dir/images.arrow`` into the store ``out_dir``; returns its manifest."""
    from tqdm.auto import tqdm

    cfg = cfg if isinstance(cfg, ExtractConfig) else ExtractConfig.from_dict(cfg or {})
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.with_name(f".{out_dir.name}.partial")
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu_decode = cfg.decode == "gpu" or (cfg.decode == "auto" and device.type == "cuda")
    if gpu_decode and device.type != "cuda":
        raise ValueError("features.decode: gpu needs a CUDA device")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    images_path = table_path(data_dir, "images")
    import pyarrow as pa

    with pa.memory_map(str(images_path)) as src:
        ids = pa.ipc.open_file(src).read_all().column("image_id").to_pylist()  # ids only, not the bytes
    shards = [ids[s:s + cfg.shard_size] for s in range(0, len(ids), cfg.shard_size)]
    settings = {"encoder": str(Path(backbone_dir).resolve()), "grid_layer": cfg.grid_layer}
    if (work / "settings.json").exists() and read_json(work / "settings.json") != settings:
        log.warning("%s holds shards of other settings (%s): extracting every shard again", work,
                    read_json(work / "settings.json"))
        shutil.rmtree(work)
        work.mkdir(parents=True)
    write_json(work / "settings.json", settings)
    done = {s: rec for s in range(len(shards)) if (rec := _finished(work, s, shards[s])) is not None}
    todo = [s for s in range(len(shards)) if s not in done]
    log.info("%d images in %d shards: %d verified from a previous run, %d to extract", len(ids), len(shards),
             len(done), len(todo))

    encoder = load_encoder(backbone_dir, cfg.grid_layer)
    if todo:
        encoder.to(device)
        model_fn = torch.compile(encoder.__call__) if cfg.compile else encoder
        mean = torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(encoder.std, device=device).view(1, 3, 1, 1)
        # batches never straddle a shard, so a shard is complete the moment its last batch is
        batches = [list(range(s * cfg.shard_size + b, min(s * cfg.shard_size + b + cfg.batch_size,
                                                           s * cfg.shard_size + len(shards[s]))))
                   for s in todo for b in range(0, len(shards[s]), cfg.batch_size)]
        loader = torch.utils.data.DataLoader(
            EncodedImages(images_path, encoder.size, raw=gpu_decode), batch_sampler=batches,
            num_workers=cfg.num_workers, collate_fn=_collate, pin_memory=device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        pending: dict[str, list[torch.Tensor]] = {}
        filled = 0
        # compress + checksum a finished shard on a thread while the GPU works on the next one;
        # at most one shard waits, so host memory stays at two shards
        from concurrent.futures import ThreadPoolExecutor

        pool, writing = ThreadPoolExecutor(1), None

        def save(s: int, tensors: dict) -> dict:
            rec = write_shard(work / _shard_name(s), shards[s], tensors)
            write_json(work / f"{_shard_name(s)}.json", rec)
            return {**rec, "shard": s}
        bar = tqdm(total=sum(len(shards[s]) for s in todo), desc="extract_features", mininterval=5, disable=None)
        shard_iter = iter(todo)
        current = next(shard_iter, None)
        for idx, data in loader:
            if gpu_decode:
                x = gpu_decode_resize(data, encoder.size, device)
            else:
                x = data.to(device, non_blocking=True)
            x = (x.float().div_(255.0) - mean) / std
            with autocast:
                feats = model_fn(x)
            for key, value in feats.items():
                pending.setdefault(key, []).append(value.to(torch.float16).cpu())
            filled += len(idx)
            bar.update(len(idx))
            if filled == len(shards[current]):
                if writing is not None:
                    rec = writing.result()
                    done[rec["shard"]] = rec
                writing = pool.submit(save, current, {k: torch.cat(v) for k, v in pending.items()})
                pending, filled, current = {}, 0, next(shard_iter, None)
        if writing is not None:
            rec = writing.result()
            done[rec["shard"]] = rec
        pool.shutdown()
        bar.close()
    # every shard verified: move them into the declared output and write the manifest last
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [done[s] for s in range(len(shards))]
    for s, rec in enumerate(records):
        shutil.move(str(work / _shard_name(s)), str(out_dir / rec["file"]))
    keys = records[0]["keys"] if records else {}
    manifest = {"format_version": 2, "encoder": encoder_name or Path(backbone_dir).name,
                "preprocessing": encoder.preprocessing, "count": len(ids), "dtype": "float16", "keys": keys,
                "extraction": {"decode": "gpu" if gpu_decode else "cpu", "precision": "bf16" if bf16 else "fp32",
                               "device": device.type},
                "shards": [{k: r[k] for k in ("file", "sha256", "count", "image_ids")} for r in records]}
    write_json(out_dir / MANIFEST, manifest)
    shutil.rmtree(work)
    return out_dir / MANIFEST
