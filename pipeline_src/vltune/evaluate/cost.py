"""Inference cost of a VL model: FLOPs per sample (counted by ``torch.utils.flop_counter``) and
latency (median wall time over repeated batches, warm-up calls excluded).

The measured call is a function ``call(model, batch)``. For VL-BART / VL-T5 (the default) it is
:meth:`VLEncoderDecoder.first_token_logits`: the encoder over ``[text ; visual]`` and the decoder
over the answer prefix, i.e. NLVR2's whole inference and the first step of VQA/GQA decoding. Its
cost does not depend on what the model generates, so two models' FLOPs differ exactly by their
architectures. For the VLMo task models it is the model's forward (the whole inference of a batch).
"""

from __future__ import annotations

import statistics
import time

import torch
from typing import Callable

from torch.utils import flop_counter

# PyTorch counts scaled_dot_product_attention's CUDA kernels but not the CPU flash kernel that
# HF's "sdpa" attention runs on CPU: without this, attention scores would count 0 FLOPs there.
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_counter.flop_registry:
    @flop_counter.register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def first_token_call(model, batch: dict):
    """VL-BART / VL-T5's measured call (module docstring)."""
    return model.first_token_logits(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"])


Call = Callable[[torch.nn.Module, dict], object]


@torch.inference_mode()
def count_flops(model, batch: dict, call: Call = first_token_call) -> int:
    """FLOPs of one measured call on ``batch`` (multiply-add = 2 FLOPs)."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        call(model, batch)
    return int(counter.get_total_flops())


@torch.inference_mode()
def median_latency_s(model, batch: dict, repeats: int = 20, warmup: int = 3, call: Call = first_token_call) -> float:
    """Median seconds of one measured call on ``batch`` over ``repeats`` timed calls after ``warmup``."""
    sync = torch.cuda.synchronize if batch["input_ids"].is_cuda else (lambda: None)
    for _ in range(warmup):
        call(model, batch)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call(model, batch)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inference_cost(model, batch: dict, repeats: int = 20, warmup: int = 3, call: Call = first_token_call) -> dict:
    """``flops_per_sample``, ``latency_ms`` (per batch) and ``latency_ms_per_sample`` on ``batch``."""
    model.eval()
    n = len(batch["input_ids"])
    latency = median_latency_s(model, batch, repeats, warmup, call)
    return {"flops_per_sample": count_flops(model, batch, call) / n, "latency_ms": 1000 * latency,
            "latency_ms_per_sample": 1000 * latency / n, "latency_batch_size": n, "latency_repeats": repeats}
