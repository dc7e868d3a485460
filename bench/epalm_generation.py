"""eP-ALM caption generation with transformers' KV cache vs re-running the whole sequence, side by side.

One randomly initialised eP-ALM per shape (nothing is downloaded) with ``epalm-prompt`` applied:
``default`` is the default config's OPT (``config/config.yaml`` ``backbones.opt.arch`` and
``epalm.method_configs.epalm-prompt``), ``opt-350m`` the published facebook/opt-350m architecture
(planner preset: hidden 1024, 24 post-LN layers, 16 heads, FFN 4096, word embeddings 512, 50,272
rows) with the method's defaults. Perception is a fixed random (B, depth, d_v) tensor, as the
cached [CLS] vectors ``extract-perception`` stores (the encoder costs the same in both modes).

"uncached" (the reference's decoding) is ``EPALM.generate(use_cache=False)``: every step re-runs the
whole sequence; "cached" is ``use_cache=True``. Each call generates exactly ``--new-tokens`` tokens
(min = max), greedy and beam search, under ``torch.inference_mode`` on CPU (and CUDA if present;
the timer stops after ``torch.cuda.synchronize()``). The modes alternate in blocks whose order
rotates every round, so load from other processes hits both alike; ``same_tokens`` records
whether both modes produced the same tokens.

    PYTHONPATH=pipeline_src python bench/epalm_generation.py                      # both shapes, beams 1 and 3
    PYTHONPATH=pipeline_src python bench/epalm_generation.py --shapes opt-350m --beams 3 --rounds 3

Prints ms/call per mode and the speed-up (uncached / cached); writes JSON. Nothing here is asserted.
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "epalm_generation.json"
BASELINE = "uncached"
MODES = (BASELINE, "cached")
VIT_B16 = {"vision_width": 768, "vision_depth": 12}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", default="default,opt-350m", help="comma list of default, opt-350m")
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"), help="config giving the default shape")
    p.add_argument("--lm-override", default="{}", help="JSON merged into every OPT config (e.g. a tiny LM for tests)")
    p.add_argument("--method-config", default="{}", help="JSON merged into every epalm-prompt config")
    p.add_argument("--beams", default="1,3", help="comma list of num_beams")
    p.add_argument("--devices", default="auto", help="comma list of cpu, cuda; auto = cpu (+ cuda if present)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--text-len", type=int, default=6, help="prompt text tokens (rows left padded to unequal lengths)")
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per mode (of 2 new tokens)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--block", type=int, default=1, help="calls per mode per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def shape_configs(name: str, args) -> tuple[dict, dict, dict]:
    """(OPTConfig kwargs, epalm-prompt config, encoder dims) of one shape."""
    import yaml

    from vltune.recipes.planner import OPT_PRESETS

    override = json.loads(args.lm_override)
    if name == "opt-350m":
        lm = {"vocab_size": 50272, "max_position_embeddings": 2048, **OPT_PRESETS["opt-350m"]}
        return {**lm, **override}, {"method": "epalm-prompt"}, VIT_B16
    if name != "default":
        raise SystemExit(f"--shapes: unknown shape {name!r} (expected default or opt-350m)")
    cfg = yaml.safe_load(Path(args.config).read_text())
    arch, vit = cfg["backbones"]["opt"]["arch"], cfg["backbones"]["vit"]["arch"]
    lm = {"vocab_size": -(-(cfg["tokenizer"]["vocab_size"] + 8) // 8) * 8, "hidden_size": arch["hidden"],
          "num_hidden_layers": arch["layers"], "num_attention_heads": arch["heads"], "ffn_dim": arch["ffn"],
          "max_position_embeddings": arch["max_positions"], "word_embed_proj_dim": arch["hidden"],
          "do_layer_norm_before": True}
    method = {"method": "epalm-prompt", **cfg["epalm"]["method_configs"]["epalm-prompt"]}
    return {**lm, **override}, method, {"vision_width": vit["hidden"], "vision_depth": vit["layers"]}


def build(name: str, args, device: torch.device):
    from transformers import OPTConfig, OPTForCausalLM

    from vltune.models.epalm import EPALM
    from vltune.pet import apply_pet

    lm_kwargs, method, vision = shape_configs(name, args)
    method = {**method, **json.loads(args.method_config)}
    torch.manual_seed(args.seed)
    with torch.device(device):
        lm = OPTForCausalLM(OPTConfig(pad_token_id=1, bos_token_id=2, eos_token_id=2, **lm_kwargs))
    model = EPALM(lm.eval(), None, **vision)
    apply_pet(model, method)
    return model.to(device).eval(), lm_kwargs, method, vision


def inputs(model, vision: dict, args, device: torch.device):
    g = torch.Generator().manual_seed(args.seed + 1)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.text_len), generator=g)
    mask = torch.ones_like(ids)
    for row in range(args.batch):  # unequal lengths, left padded: row r loses r % 3 tokens
        cut = min(row % 3, args.text_len - 1)
        ids[row, :cut], mask[row, :cut] = 1, 0
    perception = torch.randn(args.batch, vision["vision_depth"], vision["vision_width"], generator=g)
    return ids.to(device), mask.to(device), perception.to(device)


def run_device(device: torch.device, args) -> dict:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    results = {}
    for name in args.shapes.split(","):
        model, lm_kwargs, method, vision = build(name, args, device)
        ids, mask, perception = inputs(model, vision, args, device)
        inj = model.injection
        shape = {"lm": lm_kwargs, "method": method, "injection": {"start": inj.start, "end": inj.end,
                 "n_tokens": inj.n_tokens, "mask": inj.mask},
                 "prompt_len": model.prompt.embedding.num_embeddings if model.prompt is not None else 0, "beams": {}}
        for beams in (int(b) for b in args.beams.split(",")):
            kw = dict(num_beams=beams, do_sample=False, pad_token_id=1, eos_token_id=2)

            def call(mode, n_new=args.new_tokens):
                with torch.inference_mode():
                    return model.generate(ids, mask, perception=perception, use_cache=mode == "cached",
                                          min_new_tokens=n_new, max_new_tokens=n_new, **kw)

            for mode in MODES:
                for _ in range(args.warmup):
                    call(mode, 2)
            times, out = {m: [] for m in MODES}, {}
            for r in range(args.rounds):
                for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                    for _ in range(args.block):
                        sync()
                        t0 = time.perf_counter()
                        out[mode] = call(mode)
                        sync()
                        times[mode].append(1000 * (time.perf_counter() - t0))
            base = statistics.median(times[BASELINE])
            rows = {m: {"ms_per_call": statistics.median(t), "speedup_vs_uncached": base / statistics.median(t),
                        "ms_per_call_all": t} for m, t in times.items()}
            same = torch.equal(out["cached"], out[BASELINE])
            assert out["cached"].shape == (args.batch, args.new_tokens)
            shape["beams"][str(beams)] = {"modes": rows, "same_tokens": same}
            print(f"{device.type:<5}{name:<10}beams={beams}  uncached {rows[BASELINE]['ms_per_call']:>10.1f} ms"
                  f"  cached {rows['cached']['ms_per_call']:>9.1f} ms  speed-up "
                  f"{rows['cached']['speedup_vs_uncached']:>6.2f}x  same tokens: {same}", flush=True)
        results[name] = shape
        del model
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.devices.split(",")
    result = {"baseline": BASELINE, "batch": args.batch, "text_len": args.text_len, "new_tokens": args.new_tokens,
              "rounds": args.rounds, "block": args.block, "devices": {},
              "env": {"loadavg_before": os.getloadavg(), "cpu_threads": torch.get_num_threads(),
                      "python": platform.python_version(), "torch": torch.__version__},
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else argv}
    for dev in devices:
        device = torch.device(dev)
        label = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        result["devices"][dev] = {"name": label, "shapes": run_device(device, args)}
    result["env"]["loadavg_after"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    return result


if __name__ == "__main__":
    main()
