"""Training-step time and memory of every PET method vs full fine-tuning, side by side in one run.

Each method gets its own copy of one randomly initialised VL-BART (the planner's ``bart-base``
preset built on a real device: nothing is downloaded), ``apply_pet``, and AdamW over its trainable
parameters (``train.loop.make_optimizer``). After a few warm-up steps, methods take turns in
rounds (A's block of steps, B's block, ...; the order rotates every round) so that load from
other processes on a shared machine hits every method alike. A step is what ``train.loop`` does:
forward + loss, backward, grad clip, ``optimizer.step()``, ``zero_grad``; bf16 autocast on CUDA.

    PYTHONPATH=pipeline_src python bench/pet_step.py                      # every method, auto device
    PYTHONPATH=pipeline_src python bench/pet_step.py --device cpu --methods full,lora --rounds 3

See bench/README.md for what the numbers mean. No number here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pet_step.json"
BASELINE = "full"
MB = 2**20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="bart-base", help="planner preset (BART family; VL-T5 has no forward yet)")
    p.add_argument("--arch-override", default="{}", help="JSON merged into the preset's HF config kwargs "
                   "(e.g. a tiny model for tests)")
    p.add_argument("--methods", default="", help="comma-separated registry names; empty = all. "
                   f"'{BASELINE}' is always added as the baseline")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda if available")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16"],
                   help="autocast dtype; auto = bf16 on CUDA, fp32 on CPU (as train.loop)")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--text-len", type=int, default=20, help="text tokens per example")
    p.add_argument("--vis-len", type=int, default=36, help="visual tokens per example (one image)")
    p.add_argument("--feat-dim", type=int, default=None, help="visual feature width (default: the preset's)")
    p.add_argument("--target-len", type=int, default=5, help="target tokens per example")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method before the rounds (>= 1)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each method runs one block per round")
    p.add_argument("--block", type=int, default=2, help="timed steps per method per round")
    p.add_argument("--grad-clip", type=float, default=5.0, help="global-norm clip as in train.loop (0: off)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (default: bench/results/pet_step.json)")
    args = p.parse_args(argv)
    for name in ("batch", "text_len", "vis_len", "target_len", "rounds", "block"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 1:  # the first step allocates AdamW's moments: never time it
        p.error("--warmup must be >= 1")
    try:
        args.arch_override = json.loads(args.arch_override)
    except json.JSONDecodeError as e:
        p.error(f"--arch-override is not valid JSON: {e}")
    if not isinstance(args.arch_override, dict):
        p.error("--arch-override must be a JSON object")
    return args


def resolve_methods(spec: str) -> list[str]:
    from vltune.pet import get_method, method_names

    names = [m.strip() for m in spec.split(",") if m.strip()] or method_names()
    for name in names:
        get_method(name)  # ValueError with close names for a typo, before any model is built
    return [BASELINE] + [n for n in dict.fromkeys(names) if n != BASELINE]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def build_model(args, device: torch.device):
    """The planner preset's VL-BART with random weights on ``device`` (allocated, so it can train)."""
    from vltune.recipes.planner import ARCH_PRESETS, build_preset_model

    preset = ARCH_PRESETS.get(args.arch)
    if preset is None or preset.family != "bart":
        bart = sorted(k for k, v in ARCH_PRESETS.items() if v.family == "bart")
        raise SystemExit(f"--arch {args.arch!r}: only BART-family presets can train here ({', '.join(bart)})")
    vocab = {**preset.config, **args.arch_override}["vocab_size"]
    feat_dim = args.feat_dim or preset.feat_dim
    if args.vis_len > preset.n_vis_tokens:
        raise SystemExit(f"--vis-len {args.vis_len} > the preset's {preset.n_vis_tokens} <vis_extra_id_*> tokens")
    torch.manual_seed(args.seed)
    model = build_preset_model(args.arch, device, args.arch_override, feat_dim)
    return model, vocab - preset.n_vis_tokens, feat_dim


def make_batch(args, n_text_ids: int, feat_dim: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(args.seed + 1)
    batch = {
        "input_ids": torch.randint(3, n_text_ids, (args.batch, args.text_len), generator=g),
        "attention_mask": torch.ones(args.batch, args.text_len, dtype=torch.long),
        "vis_feats": torch.randn(args.batch, args.vis_len, feat_dim, generator=g),
        "vis_order": torch.zeros(args.batch, args.vis_len, dtype=torch.long),
        "labels": torch.randint(3, n_text_ids, (args.batch, args.target_len), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(model, optimizer) -> dict[str, int]:
    """Resident bytes of one method: weights (frozen too) + buffers, gradients of the trainable
    parameters (alive from backward to ``zero_grad``) and AdamW's moments."""
    optim = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return {"params": _bytes(model.parameters()) + _bytes(model.buffers()),
            "grads": _bytes(p for p in model.parameters() if p.requires_grad),
            "optim": _bytes(optim)}


class Runner:
    """One method's model, optimizer and measurements."""

    def __init__(self, name: str, base, args, device: torch.device):
        from vltune.pet import apply_pet, count_parameters
        from vltune.train.loop import TrainConfig, make_optimizer

        self.name, self.device, self.grad_clip = name, device, args.grad_clip
        self.model = apply_pet(copy.deepcopy(base), name).train()
        self.counts = count_parameters(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.model, TrainConfig())
        self.times_ms: list[float] = []
        self.peak_rise = 0  # CUDA: largest rise of max_memory_allocated above a block's start

    def step(self, batch: dict, amp_dtype) -> None:
        from vltune.models.encdec import per_example_loss

        with torch.autocast(self.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = per_example_loss(self.model, batch).mean()
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def block(self, batch: dict, amp_dtype, n: int, timed: bool = True) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        for _ in range(n):
            t0 = time.perf_counter()
            self.step(batch, amp_dtype)
            if cuda:
                torch.cuda.synchronize()  # time the kernels, not their launch
            if timed:
                self.times_ms.append(1e3 * (time.perf_counter() - t0))
        if cuda and timed:  # after warm-up the moments exist at the start: the rise is the step's own
            self.peak_rise = max(self.peak_rise, torch.cuda.max_memory_allocated() - start)


def summarize(r: Runner, cuda: bool) -> dict:
    t = r.times_ms
    q1, _, q3 = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else (t[0],) * 3
    mem = state_bytes(r.model, r.optimizer)
    row = {"trainable_params": r.counts["trainable_params"], "total_params": r.counts["total_params"],
           "trainable_pct": r.counts["trainable_pct"], "n_steps": len(t), "times_ms": t,
           "ms_median": statistics.median(t), "ms_q1": q1, "ms_q3": q3, "ms_iqr": q3 - q1,
           **{f"{k}_mb": v / MB for k, v in mem.items()}, "state_mb": sum(mem.values()) / MB,
           # CUDA: as if alone on the GPU = its resident weights + moments + the block's peak rise.
           "peak_mb": (mem["params"] + mem["optim"] + r.peak_rise) / MB if cuda else None}
    return row


def add_ratios(results: dict[str, dict]) -> None:
    base = results[BASELINE]
    for row in results.values():
        row["ratio_to_full"] = row["ms_median"] / base["ms_median"]
        row["state_ratio_to_full"] = row["state_mb"] / base["state_mb"]
        row["peak_ratio_to_full"] = row["peak_mb"] / base["peak_mb"] if row["peak_mb"] is not None else None


def format_table(methods: list[str], results: dict[str, dict]) -> str:
    cuda = results[BASELINE]["peak_mb"] is not None
    head = (f"{'method':<14} {'trainable':>12} {'%':>7} {'ms/step':>9} {'IQR':>7} {'x full':>7} "
            f"{'state MB':>9} {'x full':>7}" + (f" {'peak MB':>9} {'x full':>7}" if cuda else ""))
    lines = [head, "-" * len(head)]
    for m in methods:
        r = results[m]
        line = (f"{m:<14} {r['trainable_params']:>12,} {r['trainable_pct']:>7.2f} {r['ms_median']:>9.1f} "
                f"{r['ms_iqr']:>7.1f} {r['ratio_to_full']:>7.2f} "
                f"{r['state_mb']:>9.1f} {r['state_ratio_to_full']:>7.2f}")
        if cuda:
            line += f" {r['peak_mb']:>9.1f} {r['peak_ratio_to_full']:>7.2f}"
        lines.append(line)
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()}


def _cpu_name() -> str:
    try:  # Linux; platform.processor() is often empty there
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table, write ``--out`` and return what was written."""
    from vltune.pet import PET_METHODS
    from vltune.utils.io import write_json

    args = parse_args(argv)
    # Denormal AdamW state makes CPU steps many times slower; the CLI flushes it too.
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods, device = resolve_methods(args.methods), resolve_device(args.device)
    cuda = device.type == "cuda"
    amp = {"auto": "bf16" if cuda else "no", "no": "no", "bf16": "bf16"}[args.mixed_precision]
    amp_dtype = torch.bfloat16 if amp == "bf16" else None
    load_before = os.getloadavg()

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    base, n_text_ids, feat_dim = build_model(args, device)
    batch = make_batch(args, n_text_ids, feat_dim, device)
    runners = []
    for name in methods:
        log(f"[pet_step] {name}: apply_pet + {args.warmup} warm-up steps")
        runners.append(Runner(name, base, args, device))
        runners[-1].block(batch, amp_dtype, args.warmup, timed=False)
    del base
    for k in range(args.rounds):
        log(f"[pet_step] round {k + 1}/{args.rounds}")
        for r in runners[k % len(runners):] + runners[:k % len(runners)]:  # rotate who goes first
            r.block(batch, amp_dtype, args.block)

    results = {r.name: summarize(r, cuda) for r in runners}
    add_ratios(results)
    for name, row in results.items():
        row["pretty_name"] = PET_METHODS.meta(name)["pretty_name"]
    out = {
        "benchmark": "pet_step",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "feat_dim": feat_dim,
                   "methods": methods, "device": device.type, "mixed_precision": amp},
        "memory": "state_mb = weights + buffers + trainable grads + AdamW moments (computed from the tensors); "
                  + ("peak_mb = resident weights + moments + the largest rise of torch.cuda.max_memory_allocated "
                     "during the method's step blocks (measured)" if cuda else "peak_mb: not measured on CPU"),
        "env": {**environment(device), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "methods": methods,
        "results": results,
    }
    print(format_table(methods, results))
    print(f"{device.type}, {amp}; median of {args.rounds}x{args.block} steps after {args.warmup} warm-up; "
          f"load avg {load_before[0]:.1f} -> {out['env']['loadavg_after'][0]:.1f}; wrote {args.out}")
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
