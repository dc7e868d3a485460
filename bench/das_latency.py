"""DAS: inference latency against the share of encoder blocks skipped, side by side in one run.

One randomly initialised model gets the ``das`` PET method with 0, 1, ..., n of its n blocks
replaced by an adapter (the blocks skipped are the last j; VL-BART's blocks cost the same, the
VLMo's vision-language blocks a little more than those below, for their joint attention):
``--family bart`` a VL-BART (a planner preset, or the default config's tiny BART shape; its n
encoder blocks, timed on encoder + decoder over the answer prefix), ``--family vlmo`` the merging
study's modality-agnostic VLMo on VQA (the default config's ``merging.arch``; its n blocks, which
the text, image and joint streams share, timed on the task model's whole forward). For each j
the script counts FLOPs per sample (``vltune.evaluate.cost.count_flops``) and times the measured
call in interleaved rounds, so load from other processes falls on all variants alike. It prints,
per device, the skipped share of blocks, the FLOPs saved, the latency saved, and their ratio
(latency saving / FLOPs saving; 1.0 = latency falls exactly with FLOPs).

    PYTHONPATH=pipeline_src python bench/das_latency.py                       # tiny default shape, CPU (+ CUDA if present)
    PYTHONPATH=pipeline_src python bench/das_latency.py --arch bart-base --batch 32 --devices cuda
    PYTHONPATH=pipeline_src python bench/das_latency.py --family vlmo --threads 1

See bench/README.md. No number here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "das_latency.json"
# The default config's tiny BART (config/config.yaml backbones.bart.arch; vocabulary 1000).
TINY_DEFAULT = dict(vocab_size=1000, d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, max_position_embeddings=64)
# The default config's VLMo (config/config.yaml merging.arch; vocabulary 1000) and a VQA head of
# 100 answers (the head is a small share of the forward).
VLMO_DEFAULT = dict(vocab_size=1000, d_model=64, layers=4, vl_layers=2, heads=4, mlp_ratio=4, max_text_len=40,
                    image_size=64, patch_size=16)
VLMO_ANSWERS = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family", default="bart", choices=("bart", "vlmo"), help="VL-BART's encoder or the VLMo's blocks")
    p.add_argument("--arch", default="tiny-default", help="bart: 'tiny-default' (config.yaml's BART shape) or a planner preset (bart-base); vlmo: 'tiny-default' only")
    p.add_argument("--arch-override", default="{}", help="JSON merged into the HF config kwargs (vlmo: VLMoConfig fields)")
    p.add_argument("--devices", default="auto", help="comma-separated cpu,cuda; auto = cpu, plus cuda if available")
    p.add_argument("--batch", type=int, default=64, help="examples per call")
    p.add_argument("--text-len", type=int, default=10, help="text tokens per example")
    p.add_argument("--vis-len", type=int, default=17, help="bart: visual tokens per example (one image; the default: 4x4 grid + CLS); vlmo: set by image_size / patch_size")
    p.add_argument("--feat-dim", type=int, default=128, help="bart: visual feature width")
    p.add_argument("--adapter-dim", type=int, default=None, help="DAS r (default d_model/8)")
    p.add_argument("--skip-dim", type=int, default=None, help="DAS r' (default d_model/4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant before the rounds")
    p.add_argument("--rounds", type=int, default=10, help="rounds; each variant runs one block per round")
    p.add_argument("--block", type=int, default=3, help="timed calls per variant per round")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    args = p.parse_args(argv)
    for name in ("batch", "text_len", "vis_len", "rounds", "block"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        args.arch_override = json.loads(args.arch_override)
    except json.JSONDecodeError as e:
        p.error(f"--arch-override is not valid JSON: {e}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    for d in devices:
        if d not in ("cpu", "cuda") or (d == "cuda" and not torch.cuda.is_available()):
            p.error(f"--devices: {d!r} is not an available device (cpu, cuda)")
    args.devices = devices
    if args.family == "vlmo" and args.arch != "tiny-default":
        p.error("--arch: the vlmo family has only 'tiny-default' (change its shape with --arch-override)")
    return args


def build_model(args, device: str, skip: list[int]):
    from vltune.pet import apply_pet
    from vltune.recipes.planner import build_preset_model

    torch.manual_seed(args.seed)  # every variant: the same backbone and the same kept adapters' init
    if args.family == "vlmo":
        return build_vlmo_task(args, device, skip)
    if args.arch == "tiny-default":
        model = build_preset_model("bart-base", device, {**TINY_DEFAULT, **args.arch_override}, args.feat_dim)
    else:
        model = build_preset_model(args.arch, device, args.arch_override, args.feat_dim)
    d = model.config.d_model
    apply_pet(model, {"method": "das", "adapter_dim": args.adapter_dim or d // 8, "skip_dim": args.skip_dim or d // 4,
                      "skip": skip})
    return model.eval()


def build_vlmo_task(args, device: str, skip: list[int]):
    from vltune.das.vlmo import TASK_HEADS
    from vltune.models.vlmo import VLMo, VLMoConfig
    from vltune.pet import apply_pet
    from vltune.recipes.vlmo.tasks import TaskModel

    with torch.device(device):
        cfg = VLMoConfig(**{**VLMO_DEFAULT, **args.arch_override})
        model = TaskModel(VLMo(cfg), "vqa", VLMO_ANSWERS)
    d = cfg.d_model
    apply_pet(model, {"method": "das", "adapter_dim": args.adapter_dim or d // 8, "skip_dim": args.skip_dim or d // 4,
                      "skip": skip, "modules_to_save": TASK_HEADS["vqa"]})
    return model.to(device).eval()


def make_batch(args, vocab: int, device: str, image_size: int = 0) -> dict:
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(3, vocab - 200, (args.batch, args.text_len), generator=g)
    if args.family == "vlmo":
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids, dtype=torch.bool).to(device),
                "pixels": torch.randn(args.batch, 3, image_size, image_size, generator=g).to(device)}
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "vis_feats": torch.randn(args.batch, args.vis_len, args.feat_dim, generator=g).to(device),
            "vis_order": torch.zeros(args.batch, args.vis_len, dtype=torch.long).to(device)}


def measure_device(args, device: str) -> dict:
    from vltune.das.vlmo import forward_call
    from vltune.evaluate.cost import count_flops, first_token_call
    from vltune.pet.das.inject import encoder_blocks

    n = len(encoder_blocks(build_model(args, "meta", [])))
    variants = {j: build_model(args, device, list(range(n - j, n))) for j in range(n + 1)}
    measured = first_token_call if args.family == "bart" else forward_call
    cfg = variants[0].config
    batch = make_batch(args, cfg.vocab_size, device, getattr(cfg, "image_size", 0))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    @torch.inference_mode()
    def call(model):
        measured(model, batch)

    flops = {j: count_flops(m, batch, measured) / args.batch for j, m in variants.items()}
    for m in variants.values():
        for _ in range(args.warmup):
            call(m)
    sync()
    times: dict[int, list[float]] = {j: [] for j in variants}
    order = list(variants)
    for r in range(args.rounds):
        for j in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            for _ in range(args.block):
                t0 = time.perf_counter()
                call(variants[j])
                sync()
                times[j].append(1000 * (time.perf_counter() - t0))
    rows = {}
    base_ms, base_flops = statistics.median(times[0]), flops[0]
    for j in variants:
        ms = statistics.median(times[j])
        flops_saved = 1 - flops[j] / base_flops
        latency_saved = 1 - ms / base_ms
        rows[j] = {"skipped": j, "skipped_share": j / n, "flops_per_sample": flops[j],
                   "flops_saved_pct": 100 * flops_saved, "ms_median": ms, "latency_saved_pct": 100 * latency_saved,
                   "ratio_to_k0": ms / base_ms,
                   "latency_over_flops_saving": (latency_saved / flops_saved) if j else None,
                   "times_ms": times[j]}
    return {"n_blocks": n, "rows": rows}


def format_table(device: str, result: dict) -> str:
    lines = [f"[{device}] {result['n_blocks']} blocks",
             f"{'skipped':>8} {'share':>6} {'MFLOPs/sample':>14} {'FLOPs -%':>9} {'ms/call':>9} {'× k=0':>7} {'latency -%':>11} {'lat/FLOPs saving':>17}"]
    for r in result["rows"].values():
        ratio = "–" if r["latency_over_flops_saving"] is None else f"{r['latency_over_flops_saving']:.2f}"
        lines.append(f"{r['skipped']:>8} {r['skipped_share']:>6.2f} {r['flops_per_sample'] / 1e6:>14.2f} "
                     f"{r['flops_saved_pct']:>9.1f} {r['ms_median']:>9.2f} {r['ratio_to_k0']:>7.3f} "
                     f"{r['latency_saved_pct']:>11.1f} {ratio:>17}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = {}
    for device in args.devices:
        results[device] = measure_device(args, device)
        print(format_table(device, results[device]), flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record = {"benchmark": "das_latency", "config": config, "results": results, "env": {
        "time": datetime.now(timezone.utc).isoformat(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(args.out)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
