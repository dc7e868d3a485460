"""Merge time and peak memory of every merge method: vltune's lazy driver vs a naive eager loop, side
by side in one run, with throughput against the machine's measured memory-copy bandwidth.

Inputs: two randomly initialised state dicts of a BART model (``--size bart-base``: d_model 768,
6+6 layers, 50,265-token vocabulary, ~140M parameters, ~560 MB in fp32; ``tiny`` for tests), a
third one as the base of the task-vector methods, and for RegMean one Gram file per input (a random
SPD matrix per Linear of the layers). Nothing is downloaded.

Per method, two variants, each in a fresh subprocess so its peak RSS is its own:

* ``lazy``  — ``vltune.merge.merge_files``: safetensors ``safe_open``, one tensor of each input at a
  time, the output streamed to disk (memory stays near one tensor per input);
* ``naive`` — ``safetensors.torch.load_file`` of every input (whole dicts), a Python loop over the
  names calling the *same* per-tensor function, ``save_file`` of the whole output.

So the two differ only in I/O and memory strategy, never in arithmetic (their outputs are checked
to be bit-identical). Variants and methods take turns over ``--rounds`` rounds (rotating order)
and the median wall time is reported.

    PYTHONPATH=pipeline_src python bench/merge.py                       # bart-base, every method
    PYTHONPATH=pipeline_src python bench/merge.py --methods average,ties --rounds 3

See bench/README.md for what the numbers mean. No number here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "merge.json"
GB = 1e9
MB = 2**20
SIZES = {  # HF BartConfig kwargs
    "bart-base": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024),
    "tiny": dict(vocab_size=300, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64),
}
PARAMS = {"interpolation": {"ratio": 0.3}, "arithmetic": {"lambda": 0.5}, "ties": {"density": 0.5},
          "dare": {"density": 0.5, "seed": 0}, "regmean": {"alpha": 0.9}, "average": {}}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="bart-base", choices=sorted(SIZES), help="state-dict size (BART shapes)")
    p.add_argument("--methods", default="", help="comma-separated merge methods; empty = all registered")
    p.add_argument("--rounds", type=int, default=2, help="timed runs per (method, variant), order rotating")
    p.add_argument("--copy-mb", type=int, default=512, help="buffer size of the memory-copy bandwidth test")
    p.add_argument("--workdir", default=None, help="where the input files go (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the merge processes")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


# --- inputs ---------------------------------------------------------------------------------------

def make_inputs(size: str, workdir: Path, with_grams: bool) -> dict:
    from safetensors.torch import save_file
    from transformers import BartConfig, BartForConditionalGeneration

    files = {}
    for i, name in enumerate(("a", "b", "base")):
        torch.manual_seed(i)
        model = BartForConditionalGeneration(BartConfig(**SIZES[size]))
        sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied copy
        sd["model.shared.weight"] = sd["model.shared.weight"].clone()
        for k in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
            sd.pop(k, None)  # tied to model.shared
        files[name] = workdir / f"{name}.safetensors"
        save_file(sd, str(files[name]))
        del model
    if with_grams:
        from vltune.merge.grams import GRAM_KIND

        linears = {k.removesuffix(".weight"): v.shape[1] for k, v in sd.items()
                   if k.endswith(".weight") and v.ndim == 2 and ".layers." in k}
        for j, name in enumerate(("ga", "gb")):
            g = torch.Generator().manual_seed(100 + j)
            grams = {}
            for module, d in linears.items():
                a = torch.randn(d, 32, generator=g, dtype=torch.float64)
                grams[module] = a @ a.T + d * torch.eye(d, dtype=torch.float64)  # SPD
            files[name] = workdir / f"{name}.safetensors"
            save_file(grams, str(files[name]), metadata={"gram": GRAM_KIND})
    return files


def memcpy_bandwidth(mb: int, repeats: int = 5) -> float:
    """Best bytes touched (read + written) per second of a tensor copy, in GB/s."""
    src = torch.ones(mb * MB // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / GB


# --- the two variants (run in a child process) ------------------------------------------------------

def run_child(variant: str, method: str, files: dict, out: Path) -> dict:
    from vltune.merge import get_method, merge_files
    from vltune.merge.run import plan_merge, run_items
    from vltune.merge.io import DictSource

    m = get_method(method)
    base = files["base"] if m.base != "none" else None
    grams = [files["ga"], files["gb"]] if m.uses_grams else None
    inputs = [files["a"], files["b"]]
    t0 = time.perf_counter()
    if variant == "lazy":
        merge_files(method, inputs, out, base=base, grams=grams, params=PARAMS.get(method, {}))
    else:
        from safetensors.torch import load_file, save_file

        sds = [DictSource(load_file(str(p)), str(p)) for p in inputs]
        b = DictSource(load_file(str(base)), str(base)) if base else None
        g = [DictSource(load_file(str(x)), str(x)) for x in grams] if grams else None
        merged = dict(run_items(plan_merge(sds, b, g), m, m.resolve(PARAMS.get(method, {}))))
        save_file(merged, str(out))
    wall = time.perf_counter() - t0
    read = sum(Path(p).stat().st_size for p in inputs + ([base] if base else []) + (grams or []))
    return {"wall_s": wall, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bytes_read": read, "bytes_written": Path(out).stat().st_size}


def spawn(variant: str, method: str, files: dict, out: Path, threads) -> dict:
    env = {**os.environ, "BENCH_MERGE_FILES": json.dumps({k: str(v) for k, v in files.items()}),
           "BENCH_MERGE_OUT": str(out)}
    cmd = [sys.executable, __file__, "--child", variant, method] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def idle_rss_mb(threads) -> float:
    """Peak RSS of a child that imports torch + vltune.merge and merges nothing (the floor)."""
    code = ("import resource, torch, vltune.merge, safetensors.torch; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def same_output(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return set(x) == set(y) and all(torch.equal(x[k].view(torch.uint8), y[k].view(torch.uint8)) for k in x)


def main(argv: list[str] | None = None) -> dict:
    from vltune.merge import method_names
    from vltune.utils.io import write_json

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        files = {k: Path(v) for k, v in json.loads(os.environ["BENCH_MERGE_FILES"]).items()}
        print(json.dumps(run_child(*args.child, files, Path(os.environ["BENCH_MERGE_OUT"]))))
        return {}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or method_names()
    for m in methods:
        if m not in method_names():
            raise SystemExit(f"unknown merge method {m!r}; choose from {', '.join(method_names())}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        log(f"[merge] writing {args.size} inputs to {tmp}")
        files = make_inputs(args.size, tmp, "regmean" in methods)
        bandwidth = memcpy_bandwidth(args.copy_mb)
        floor = idle_rss_mb(args.threads)
        model_mb = files["a"].stat().st_size / MB
        runs = {(m, v): [] for m in methods for v in ("lazy", "naive")}
        order = list(runs)
        for k in range(args.rounds):
            log(f"[merge] round {k + 1}/{args.rounds}")
            for m, v in order[k % len(order):] + order[:k % len(order)]:
                runs[(m, v)].append(spawn(v, m, files, tmp / f"out-{m}-{v}.safetensors", args.threads))
        results = {}
        for m in methods:
            row = {}
            for v in ("lazy", "naive"):
                r = runs[(m, v)]
                wall = statistics.median(x["wall_s"] for x in r)
                touched = r[0]["bytes_read"] + r[0]["bytes_written"]
                rss = max(x["maxrss_mb"] for x in r)
                row[v] = {"wall_s": wall, "walls_s": [x["wall_s"] for x in r], "peak_rss_mb": rss,
                          "rss_above_idle_mb": rss - floor, "rss_above_idle_models": (rss - floor) / model_mb,
                          "gb_per_s": touched / wall / GB, "share_of_memcpy": touched / wall / GB / bandwidth}
            row["speedup_lazy_vs_naive"] = row["naive"]["wall_s"] / row["lazy"]["wall_s"]
            row["rss_ratio_lazy_vs_naive"] = row["lazy"]["rss_above_idle_mb"] / max(row["naive"]["rss_above_idle_mb"], 1e-9)
            row["identical_outputs"] = same_output(tmp / f"out-{m}-lazy.safetensors", tmp / f"out-{m}-naive.safetensors")
            results[m] = row
    out = {
        "benchmark": "merge",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "child")}
        | {"methods": methods, "params": {m: PARAMS.get(m, {}) for m in methods}},
        "model_mb": model_mb, "memcpy_gb_per_s": bandwidth, "idle_rss_mb": floor,
        "env": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "results": results,
    }
    head = f"{'method':<14} {'lazy s':>8} {'naive s':>8} {'speedup':>8} {'lazy MB':>9} {'naive MB':>9} {'lazy GB/s':>9} {'%memcpy':>8} {'same':>5}"
    lines = [head, "-" * len(head)]
    for m, r in results.items():
        lines.append(f"{m:<14} {r['lazy']['wall_s']:>8.2f} {r['naive']['wall_s']:>8.2f} {r['speedup_lazy_vs_naive']:>8.2f} "
                     f"{r['lazy']['rss_above_idle_mb']:>9.0f} {r['naive']['rss_above_idle_mb']:>9.0f} "
                     f"{r['lazy']['gb_per_s']:>9.2f} {100 * r['lazy']['share_of_memcpy']:>7.1f}% {str(r['identical_outputs']):>5}")
    print("\n".join(lines))
    print(f"{args.size}: one model {model_mb:.0f} MB; memcpy {bandwidth:.1f} GB/s (read+write); RSS above an idle "
          f"process ({floor:.0f} MB); median of {args.rounds} runs; wrote {args.out}")
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
