"""eP-ALM training step with cached perception vs re-running the frozen encoder, side by side.

One randomly initialised eP-ALM (a planner preset ``<opt>+<vit>`` built on a real device: nothing
is downloaded) with ``epalm-prompt`` applied. "recomputed" (the reference's way) feeds images and
runs the ViT under ``no_grad`` in every step; "cached" feeds the per-block [CLS] vectors that
``extract-perception`` would have stored. A step is what ``train.loop`` does (forward + eP-ALM loss,
backward, clip, AdamW step, zero_grad; bf16 autocast on CUDA). The two modes alternate in blocks
(order rotating every round) so that load from other processes hits both alike.

    PYTHONPATH=pipeline_src python bench/epalm_perception.py                       # opt-350m+vit-b16
    PYTHONPATH=pipeline_src python bench/epalm_perception.py --arch opt-2.7b+vit-l16 --batch 16

Prints ms/step per mode and its ratio to "recomputed"; writes JSON. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "epalm_perception.json"
BASELINE = "recomputed"
MODES = (BASELINE, "cached")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="opt-350m+vit-b16", help="planner preset <opt>+<vit>")
    p.add_argument("--lm-override", default="{}", help="JSON merged into the OPT config (e.g. a tiny LM for tests)")
    p.add_argument("--vit-override", default="{}", help="JSON timm create_model kwargs (e.g. a tiny ViT)")
    p.add_argument("--method-config", default="{}", help="JSON epalm-prompt overrides")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--text-len", type=int, default=24)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", type=int, default=5, help="steps per mode per round")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def build(args, device):
    import timm
    from transformers import OPTConfig, OPTForCausalLM

    from vltune.models.epalm import EPALM
    from vltune.pet import apply_pet
    from vltune.recipes.planner import OPT_PRESETS, VIT_PRESETS

    lm_name, _, vit_name = args.arch.partition("+")
    if lm_name not in OPT_PRESETS or vit_name not in VIT_PRESETS:
        raise SystemExit(f"--arch: unknown preset {args.arch!r}")
    torch.manual_seed(0)
    with torch.device(device):
        lm = OPTForCausalLM(OPTConfig(**{"vocab_size": 50272, "max_position_embeddings": 2048,
                                         **OPT_PRESETS[lm_name], **json.loads(args.lm_override)}))
        vit = timm.create_model(VIT_PRESETS[vit_name], pretrained=False, num_classes=0, **json.loads(args.vit_override))
    model = EPALM(lm, vit.eval())
    apply_pet(model, {**json.loads(args.method_config), "method": "epalm-prompt"})
    return model.train()


def main(argv=None) -> dict:
    from vltune.recipes.epalm.finetune import epalm_loss
    from vltune.train.loop import make_optimizer, TrainConfig

    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = build(args, device)
    opt = make_optimizer(model, TrainConfig(steps=1))
    g = torch.Generator().manual_seed(1)
    vocab, side = model.config.vocab_size, model.encoder.patch_embed.img_size[0]
    ids = torch.randint(3, vocab, (args.batch, args.text_len), generator=g).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    pixels = torch.randn(args.batch, 3, side, side, generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.no_grad(), autocast:
        cached = model.encode_images(pixels).float()  # what the feature store holds

    def step(mode):
        inputs = {"perception": cached} if mode == "cached" else {"pixel_values": pixels}
        with autocast:
            loss = epalm_loss(model, {**batch, **inputs})
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for mode in MODES:
        for _ in range(args.warmup):
            step(mode)
    times = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            sync()
            t0 = time.perf_counter()
            for _ in range(args.block):
                step(mode)
            sync()
            times[mode].append(1000 * (time.perf_counter() - t0) / args.block)
    base = statistics.median(times[BASELINE])
    rows = {m: {"ms_per_step": statistics.median(t), "ratio_vs_recomputed": statistics.median(t) / base,
                "ms_per_step_rounds": t} for m, t in times.items()}
    print(f"{'mode':<12}{'ms/step':>10}{'× recomputed':>14}")
    for m, r in rows.items():
        print(f"{m:<12}{r['ms_per_step']:>10.1f}{r['ratio_vs_recomputed']:>14.3f}")
    result = {"arch": args.arch, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else
              f"cpu ({torch.get_num_threads()} threads)", "batch": args.batch, "text_len": args.text_len,
              "image_side": side, "baseline": BASELINE, "modes": rows, "python": platform.python_version(),
              "torch": torch.__version__, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else argv}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
