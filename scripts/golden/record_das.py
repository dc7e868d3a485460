"""Record golden numbers of the official DAS search (tests/golden/das_vilt.*).

Usage: python scripts/golden/record_das.py DAS-CHECKOUT [OUT_DIR]

DAS-CHECKOUT is a checkout of https://github.com/DoubtedSteam/DAS (its ``ViLT`` folder is put on
``sys.path``; nothing of it is copied here). Two things are recorded:

* the skipped block's stand-in: ``vilt.modules.vision_transformer_PA.Adapter_Layer`` (imported as
  ``ParallelAdapter`` by ``vilt_module_search.py`` and run as ``x = adapter_list[i](x)`` in place of
  block i), at two output scales, with seeded random parameters;
* a ViLT encoder block with DAS's parallel adapters: ``Block`` of vision_transformer_PA.py
  (``x + Attn(LN(x)) + A_0(x)``, then ``x + MLP(LN(x)) + A_1(x)``), at width 16 with its two
  ``Adapter_Layer`` children built at that width (the class hard-codes 768 as their default);
* the search: ``ViLTransformerSS.forward`` of ``vilt/modules/vilt_module_search.py`` (the sampling,
  reward and gate update) and ``training_epoch_end`` (the final selection), run as the unbound
  official functions on a stand-in object whose ``calculate_loss`` returns a fixed loss per skip set.
  Each reward step's gate before and after, its skip sets and their losses are kept.

The module's own imports that play no part in these functions (pytorch_lightning's base class, the
heads, objectives and metric utilities) are replaced by empty stand-ins. Paper: "Not All Attention
Is Needed: Parameter and Computation Efficient Transfer Learning for Multi-modal Large Language
Models" (DAS), https://arxiv.org/abs/2403.15226.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

D_MODEL, BOTTLENECK, SEQ, BATCH = 16, 8, 5, 2
N_BLOCKS, SKIP_NUM, DAS_STEP, REWARD_STEPS = 12, 2, 3, 4  # the module hard-codes 12 gates


def _import_official(checkout: Path):
    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = nn.Module
    sys.modules["pytorch_lightning"] = pl
    sys.path.insert(0, str(checkout / "ViLT"))
    import vilt.modules  # noqa: F401  (the package, before its stand-in submodules)

    for name in ("heads", "objectives", "vilt_utils"):
        stub = types.ModuleType(f"vilt.modules.{name}")
        stub.epoch_wrapup = lambda module: None
        sys.modules[f"vilt.modules.{name}"] = stub
        setattr(sys.modules["vilt.modules"], name, stub)
    import vilt.modules.vilt_module_search as search
    import vilt.modules.vision_transformer_PA as vit_pa

    return search, vit_pa


@torch.no_grad()
def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if "layer_norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


class _Search:
    """What ``ViLTransformerSS.forward`` / ``training_epoch_end`` read from ``self``; the official
    ``get_prob``, ``clean_flag`` and ``apply_flag`` are bound to it."""

    def __init__(self, search, gate: torch.Tensor, set_loss: torch.Tensor):
        cls = search.ViLTransformerSS
        self.current_tasks = ["vqa"]
        self.training = True
        self.current_epoch, self.das_epoch, self.warmup_epoch = 0, 1, 0
        self.das_count, self.das_turn, self.das_step, self.das_val_size = 0, 1, DAS_STEP, 1
        self.skip_num = torch.ones(1) * SKIP_NUM
        self.skip_flag = torch.ones(N_BLOCKS) * -1.0
        self.das_gate = gate.clone()
        self.set_loss = set_loss  # loss of a skip set = sum of its blocks' entries
        self.val_calls: list[tuple[list[int], float]] = []
        for name in ("get_prob", "clean_flag", "apply_flag"):
            setattr(self, name, types.MethodType(getattr(cls, name), self))

    def get_val_loader(self, size):
        return iter([{"split": "val"}])

    def calculate_loss(self, ret, batch):
        skipped = [i for i in range(N_BLOCKS) if self.skip_flag[i] > 0]
        loss = float(self.set_loss[skipped].sum())
        if batch.get("split") == "val":
            self.val_calls.append((skipped, loss))
        ret["vqa_loss"] = torch.tensor(loss)
        return ret


def main(checkout: str, out_dir: str) -> None:
    search, vit_pa = _import_official(Path(checkout))
    tensors: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(2024)

    for i, scalar in enumerate(("1.0", "0.5")):
        adapter = vit_pa.Adapter_Layer(d_model=D_MODEL, bottleneck=BOTTLENECK, adapter_scalar=scalar).eval()
        _randomise(adapter, 300 + i)
        x = torch.randn(BATCH, SEQ, D_MODEL, generator=g)
        with torch.no_grad():
            out = adapter(x)  # as the search module calls it for a skipped block: residual added
        case = f"skip_adapter_{i}"
        tensors.update({f"{case}.input": x, f"{case}.output": out})
        tensors.update({f"{case}.param.{k}": v.clone() for k, v in adapter.state_dict().items()})

    block = vit_pa.Block(D_MODEL, num_heads=2, mlp_ratio=2.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    block.adapter0 = vit_pa.Adapter_Layer(d_model=D_MODEL, bottleneck=BOTTLENECK)
    block.adapter1 = vit_pa.Adapter_Layer(d_model=D_MODEL, bottleneck=BOTTLENECK)
    block.eval()
    _randomise(block, 310)
    x = torch.randn(BATCH, SEQ, D_MODEL, generator=torch.Generator().manual_seed(2025))
    mask = torch.ones(BATCH, SEQ, dtype=torch.bool)
    mask[1, -2:] = False  # padded keys
    with torch.no_grad():
        out, _ = block(x, mask=mask)
    tensors.update({"block.input": x, "block.mask": mask, "block.output": out})
    tensors.update({f"block.param.{k}": v.clone() for k, v in block.state_dict().items()})

    torch.manual_seed(7)
    gate0 = torch.randn(N_BLOCKS, generator=g)
    set_loss = torch.rand(N_BLOCKS, generator=g)  # losses in [0, 2): rewards exp(-L) well apart
    state = _Search(search, gate0, set_loss)
    steps = []
    for step in range(REWARD_STEPS):
        before = state.das_gate.clone()
        state.val_calls.clear()
        search.ViLTransformerSS.forward(state, {"split": "train"})
        steps.append({"gate_before": before.tolist(), "gate_after": state.das_gate.tolist(),
                      "sets": [s for s, _ in state.val_calls], "losses": [l for _, l in state.val_calls]})
    search.ViLTransformerSS.training_epoch_end(state, [])
    final = [i for i in range(N_BLOCKS) if state.skip_flag[i] > 0]
    # The same selection on a gate with ties (never updated): which blocks the official sort keeps.
    tied = _Search(search, torch.zeros(N_BLOCKS), set_loss)
    search.ViLTransformerSS.training_epoch_end(tied, [])
    tied_final = [i for i in range(N_BLOCKS) if tied.skip_flag[i] > 0]

    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path / "das_vilt.safetensors")
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    meta = {
        "source": "https://github.com/DoubtedSteam/DAS",
        "commit": done.stdout.strip() if done.returncode == 0 else os.environ.get("SOURCE_COMMIT"),
        "modules": {"skip_adapter": "ViLT/vilt/modules/vision_transformer_PA.py Adapter_Layer",
                    "block": "ViLT/vilt/modules/vision_transformer_PA.py Block (heads 2, mlp_ratio 2, qkv_bias, LN eps 1e-6)",
                    "search": "ViLT/vilt/modules/vilt_module_search.py ViLTransformerSS.forward, training_epoch_end"},
        "d_model": D_MODEL, "bottleneck": BOTTLENECK, "skip_adapter_scalars": [1.0, 0.5],
        "search": {"n_blocks": N_BLOCKS, "skip_num": SKIP_NUM, "das_step": DAS_STEP, "policy_lr": 1.0,
                   "steps": steps, "final_skip": final, "tied_gate_final_skip": tied_final},
        "torch": torch.__version__,
    }
    (out_path / "das_vilt.json").write_text(json.dumps(meta, indent=1) + "\n")
    assert all(math.isfinite(v) for s in steps for v in s["gate_after"])


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: record_das.py DAS-CHECKOUT [OUT_DIR]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else str(Path(__file__).resolve().parents[2] / "tests/golden"))
