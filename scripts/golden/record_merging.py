"""Record golden numbers of the official modality-merging code (tests/golden/merging_vlmo.*).

Usage: python scripts/golden/record_merging.py VL-MERGING-CHECKOUT [OUT_DIR]

VL-MERGING-CHECKOUT is a checkout of https://github.com/ylsung/vl-merging (its ``src`` folder is put
on ``sys.path``; nothing of it is copied here). ``ViLTransformerSS.merge_weights`` (interpolation),
``sum_task_vectors`` (modality arithmetic) and ``regmean`` of ``src/vilt/modules/vilt_module.py`` are
run as the unbound official functions on a stand-in object carrying only ``hparams.config``, over a
seeded random modality-specific state dict of 12 blocks (the functions loop over 12) whose deep
blocks (index >= ``vlffn_start_layer_index``) also hold the vision-language expert. The central
weights and Gram matrices they ``torch.load`` are written to a temporary folder first. Inputs and
outputs go to ``merging_vlmo.safetensors`` (settings in ``merging_vlmo.json``).

The module's imports that none of these functions use (pytorch_lightning, the ViT, heads,
objectives, DALL-E VAE) are replaced by empty stand-ins. Paper: Sung et al., "An Empirical Study of
Multimodal Model Merging", https://arxiv.org/abs/2304.14933.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

D, HIDDEN, N_BLOCKS, VL_START = 4, 8, 12, 10
PARTS = {  # expert tensors of one block: part -> (name, shape)
    "attn": [("qkv.weight", (3 * D, D)), ("q_bias", (D,)), ("v_bias", (D,)), ("proj.weight", (D, D)), ("proj.bias", (D,))],
    "mlp": [("fc1.weight", (HIDDEN, D)), ("fc1.bias", (HIDDEN,)), ("fc2.weight", (D, HIDDEN)), ("fc2.bias", (D,))],
    "norm1": [("weight", (D,)), ("bias", (D,))],
    "norm2": [("weight", (D,)), ("bias", (D,))],
}
GRAM_OF = {"qkv.weight": "", "proj.weight": "proj", "fc1.weight": "fc1", "fc2.weight": "fc2"}  # official Gram keys
CASES = {
    "interpolation": dict(merge_weights=True, merge_ratio=0.3),
    "arithmetic": dict(sum_task_vectors=True, sum_lambda=0.4),
    "regmean": dict(regmean=True, scaling_for_non_diag=0.7),
    "regmean_vqa": dict(regmean=True, scaling_for_non_diag=0.7, loss_names={"irtr": 0, "vqa": 1, "nlvr2": 0}),
}


def _import_official(checkout: Path):
    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = nn.Module
    utilities = types.ModuleType("pytorch_lightning.utilities")
    distributed = types.ModuleType("pytorch_lightning.utilities.distributed")
    distributed.rank_zero_info = print
    sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.utilities": utilities,
                        "pytorch_lightning.utilities.distributed": distributed})
    for name in ("vision_transformer", "heads", "objectives", "vilt_utils", "modeling_discrete_vae"):
        stub = types.ModuleType(f"vilt.modules.{name}")
        stub.create_d_vae = None
        sys.modules[f"vilt.modules.{name}"] = stub
    sys.path.insert(0, str(checkout / "src"))
    from vilt.modules.vilt_module import ViLTransformerSS

    return ViLTransformerSS


def _experts(block: int) -> list[str]:
    return ["v", "l", "vl"] if block >= VL_START else ["v", "l"]


def _specific(g: torch.Generator) -> dict[str, torch.Tensor]:
    sd = {"transformer.cls_token": torch.randn(1, 1, D, generator=g),
          "token_type_embeddings.weight": torch.randn(2, D, generator=g)}
    for i in range(N_BLOCKS):
        sd[f"transformer.blocks.{i}.gamma_1"] = torch.randn(D, generator=g)
        sd[f"transformer.blocks.{i}.gamma_2"] = torch.randn(D, generator=g)
        for part, tensors in PARTS.items():
            for e in _experts(i):
                for name, shape in tensors:
                    sd[f"transformer.blocks.{i}.{part}.{e}.{name}"] = torch.randn(shape, generator=g, dtype=torch.float64)
    return sd


def _central(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"transformer.blocks.{i}.{part}.{name}": torch.randn(shape, generator=g, dtype=torch.float64)
            for i in range(N_BLOCKS) for part, tensors in PARTS.items() for name, shape in tensors}


def _grams(g: torch.Generator, vqa: bool) -> dict[str, torch.Tensor]:
    """Official keys: the module holding the Linear (``…attn.v`` for qkv, ``…attn.v.proj``, ``…mlp.v.fc1``)."""
    out = {}
    for i in range(N_BLOCKS):
        experts = ["vl"] if vqa and i >= VL_START else _experts(i)
        for part, tensors in PARTS.items():
            for name, shape in tensors:
                if name not in GRAM_OF:
                    continue
                x = torch.randn(3 * shape[1], shape[1], generator=g, dtype=torch.float64)  # tokens > features
                for e in experts:
                    key = f"transformer.blocks.{i}.{part}.{e}" + (f".{GRAM_OF[name]}" if GRAM_OF[name] else "")
                    xe = x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
                    out[key] = xe.T @ xe
    return out


def _commit(checkout: str) -> str | None:
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else os.environ.get("SOURCE_COMMIT")


def main(checkout: str, out_dir: str) -> None:
    cls = _import_official(Path(checkout))
    g = torch.Generator().manual_seed(99)
    specific, central = _specific(g), _central(g)
    grams = {"all": _grams(g, vqa=False), "vqa": _grams(g, vqa=True)}
    tensors = {f"specific.{k}": v for k, v in specific.items()}
    tensors.update({f"central.{k}": v for k, v in central.items()})
    tensors.update({f"grams_{w}.{k}": v for w, gw in grams.items() for k, v in gw.items()})
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(central, Path(tmp) / "central.pt")
        for which, gw in grams.items():
            torch.save(gw, Path(tmp) / f"grams_{which}.pt")
        for case, overrides in CASES.items():
            config = {"vlffn_start_layer_index": VL_START, "only_activate_used_experts": False,
                      "loss_names": {"irtr": 0, "vqa": 0, "nlvr2": 0}, "central_weight": str(Path(tmp) / "central.pt"),
                      "gram_matrices": str(Path(tmp) / ("grams_vqa.pt" if "vqa" in case else "grams_all.pt")),
                      **overrides}
            state = types.SimpleNamespace(hparams=types.SimpleNamespace(config=config))
            fn = cls.merge_weights if "merge_weights" in overrides else (
                cls.sum_task_vectors if "sum_task_vectors" in overrides else cls.regmean)
            merged = fn(state, {k: v.clone() for k, v in specific.items()})
            tensors.update({f"{case}.{k}": v for k, v in merged.items()})

    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path / "merging_vlmo.safetensors")
    meta = {"source": "https://github.com/ylsung/vl-merging", "commit": _commit(checkout),
            "modules": "src/vilt/modules/vilt_module.py ViLTransformerSS.merge_weights, sum_task_vectors, regmean",
            "vlffn_start_layer_index": VL_START, "n_blocks": N_BLOCKS, "cases": CASES, "torch": torch.__version__}
    (out_path / "merging_vlmo.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: record_merging.py VL-MERGING-CHECKOUT [OUT_DIR]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else str(Path(__file__).resolve().parents[2] / "tests/golden"))
