"""Merge diagnostics: how far apart the experts are, and how far the merge lands from each of them.

Per layer of a modality-specific model, over all the layer's expert tensors together:

* ``rel_l2`` of an expert pair: ``‖W_a − W_b‖ / ‖W_seed‖`` (relative distance between the experts);
* ``cos`` of an expert pair: cosine of their task vectors ``τ = W − W_seed`` (do the experts move
  the seed the same way?);
* ``moved`` of an expert: ``‖τ_e‖ / ‖W_seed‖``;
* ``gap`` of an expert (when the merged model is given): ``‖W_merged − W_e‖ / ‖W_e‖``, the
  relative change the expert's inputs will see after merging.

The paper (Sung et al., arXiv 2304.14933) proposes weight-distance metrics to predict whether a merge will work
but does not ship them; these are the natural candidates: experts that stay close (small rel_l2,
high cos) can share one weight set with little loss. Everything is read lazily, one tensor at a time.
"""

from __future__ import annotations

import itertools
import math

import torch

from .io import EXPERTS, ExpertView, Source, split_expert_key


def _sq(x: torch.Tensor) -> float:
    return float(x.double().pow(2).sum())


def expert_diagnostics(specific: Source, seed: Source | None = None, merged: Source | None = None) -> dict:
    views = {e: ExpertView(specific, e) for e in EXPERTS}
    acc: dict[int, dict] = {}
    for key in specific.keys():
        parsed = split_expert_key(key)
        if parsed is None or parsed[1] != "v":  # visit each shared name once, through its v expert
            continue
        name, _, layer = parsed
        experts = [e for e in EXPERTS if name in views[e]]
        w = {e: views[e].get(name).double() for e in experts}
        a = acc.setdefault(layer, {"experts": experts, "pair_sq": {}, "dot": {}, "tau_sq": {}, "seed_sq": 0.0,
                                   "norm_sq": {}, "gap_sq": {}})
        base = seed.get(name).double() if seed is not None and name in seed else None
        ref = base if base is not None else sum(w.values()) / len(w)
        a["seed_sq"] += _sq(ref)
        tau = {e: w[e] - ref for e in experts}
        for e in experts:
            a["tau_sq"][e] = a["tau_sq"].get(e, 0.0) + _sq(tau[e])
            a["norm_sq"][e] = a["norm_sq"].get(e, 0.0) + _sq(w[e])
            if merged is not None and name in merged:
                a["gap_sq"][e] = a["gap_sq"].get(e, 0.0) + _sq(merged.get(name).double() - w[e])
        for x, y in itertools.combinations(experts, 2):
            p = f"{x}-{y}"
            a["pair_sq"][p] = a["pair_sq"].get(p, 0.0) + _sq(w[x] - w[y])
            a["dot"][p] = a["dot"].get(p, 0.0) + float((tau[x] * tau[y]).sum())
    layers = []
    for layer in sorted(acc):
        a = acc[layer]
        seed_norm = math.sqrt(a["seed_sq"]) or 1.0
        pairs = {}
        for p, sq in a["pair_sq"].items():
            x, y = p.split("-")
            denom = math.sqrt(a["tau_sq"][x] * a["tau_sq"][y])
            pairs[p] = {"l2": math.sqrt(sq), "rel_l2": math.sqrt(sq) / seed_norm,
                        "cos": a["dot"][p] / denom if denom > 0 else 0.0}
        row = {"layer": layer, "experts": a["experts"], "pairs": pairs,
               "moved": {e: math.sqrt(v) / seed_norm for e, v in a["tau_sq"].items()}}
        if a["gap_sq"]:
            row["gap"] = {e: math.sqrt(v) / (math.sqrt(a["norm_sq"][e]) or 1.0) for e, v in a["gap_sq"].items()}
        layers.append(row)
    summary = {
        "expert_rel_l2": _mean(p["rel_l2"] for r in layers for p in r["pairs"].values()),
        "expert_cos": _mean(p["cos"] for r in layers for p in r["pairs"].values()),
        "expert_moved": _mean(v for r in layers for v in r["moved"].values()),
    }
    if merged is not None:
        summary["merge_gap"] = _mean(v for r in layers for v in r.get("gap", {}).values())
    return {"reference": "seed" if seed is not None else "mean of the experts", "layers": layers, "summary": summary}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
