"""Record golden numbers of the official eP-ALM model (tests/golden/epalm_opt.*).

Usage: python scripts/golden/record_epalm.py EP-ALM-CHECKOUT [OUT_DIR]

EP-ALM-CHECKOUT is a checkout of https://github.com/mshukor/eP-ALM (put on ``sys.path``; nothing of it
is copied here). Its ``models.epalm.ePALM`` is built around its own ``models.opt.OPTForCausalLM``
(the OPT copy whose decoder inserts / overwrites the perceptual token), from a tiny random OPT saved
to a temporary folder. The vision encoders it imports (``models.vit``, ``models.timesformer``,
``models.ast``) are replaced by a stand-in whose "hidden states" are the image tensor's slices, so
the recorded input is exactly the per-block token sequence the connector reads. Per case the OPT
and eP-ALM parameters, the inputs, the logits and every decoder layer's output go to
``epalm_opt.safetensors`` (settings in ``epalm_opt.json``).

Paper: Shukor et al., "eP-ALM: Efficient Perceptual Augmentation of Language Models",
https://arxiv.org/abs/2303.11403.
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

OPT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=6, ffn_dim=32, num_attention_heads=2,
           word_embed_proj_dim=8, max_position_embeddings=32, do_layer_norm_before=False, dropout=0.0,
           attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
VIS_DEPTH, VIS_PATCHES, VIS_DIM = 4, 3, 12
BATCH, TEXT = 2, 5
# ePALM config dicts (the keys of the shipped configs/*.yaml) and the injection window.
CASES = {
    "prompt_mlp": dict(start_layer_idx=2, end_layer_idx=5,
                       config=dict(injected_hidden_states=3, prompt_tuning=True, prompt_len=3, mlp=True)),
    "linear_step2": dict(start_layer_idx=1, end_layer_idx=6, config=dict(injected_hidden_states=2)),
    "shared_table": dict(start_layer_idx=0, end_layer_idx=4,
                         config=dict(injected_hidden_states=2, shared_connector=True, prompt_tuning=True,
                                     prompt_len=2, mlp=False)),
}


class _StandInVision(nn.Module):
    """The encoder interface ePALM.forward reads: ``(embedding, hidden states per block)``; here the
    hidden states are ``image[:, l]`` for each block l of an input shaped (B, depth, patches, d_v)."""

    embed_dim = VIS_DIM

    def forward(self, image, external_features=None):
        return image[:, -1], [image[:, i] for i in range(image.shape[1])]


def _import_official(checkout: Path):
    vit = types.ModuleType("models.vit")
    vit.stand_in = lambda **kwargs: _StandInVision()
    timesformer = types.ModuleType("models.timesformer")
    timesformer.TimeSformer = None
    ast = types.ModuleType("models.ast")
    ast.ASTModel = None
    # models/adapters.py (adapters are not used here) annotates with torchtyping, which is not installed.
    torchtyping = types.ModuleType("torchtyping")
    torchtyping.TensorType = type("TensorType", (), {"__class_getitem__": classmethod(lambda cls, item: cls)})
    sys.modules.update({"models.vit": vit, "models.timesformer": timesformer, "models.ast": ast,
                        "torchtyping": torchtyping})
    sys.path.insert(0, str(checkout))
    # Docstring decorators of the official OPT copy changed signature in later transformers; they only
    # build docstrings.
    import transformers.utils as hf_utils

    def identity(*args, **kwargs):
        return lambda f: f

    for name in ("add_code_sample_docstrings", "add_start_docstrings", "add_start_docstrings_to_model_forward",
                 "replace_return_docstrings"):
        setattr(hf_utils, name, identity)
    import models

    models.vit, models.timesformer, models.ast = vit, timesformer, ast
    import models.epalm as epalm
    import models.opt as opt

    return epalm, opt


@torch.no_grad()
def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if "layer_norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _commit(checkout: str) -> str | None:
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else os.environ.get("SOURCE_COMMIT")


def main(checkout: str, out_dir: str) -> None:
    epalm, opt = _import_official(Path(checkout))
    from transformers import OPTConfig
    from transformers.tokenization_utils_base import BatchEncoding

    tensors: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(4321)
    with tempfile.TemporaryDirectory() as tmp:
        opt.OPTForCausalLM(OPTConfig(**OPT)).save_pretrained(tmp)
        for i, (case, spec) in enumerate(CASES.items()):
            torch.manual_seed(i)
            model = epalm.ePALM(opt_model_name=tmp, vision_model_name="stand_in", use_vis_prefix=True,
                                start_layer_idx=spec["start_layer_idx"], end_layer_idx=spec["end_layer_idx"],
                                config=dict(spec["config"], use_cache=False)).eval()
            _randomise(model, 10 + i)
            with torch.no_grad():  # OPT ties its output projection to the word embedding
                model.model_text.lm_head.weight.copy_(model.model_text.model.decoder.embed_tokens.weight)
            image = torch.randn(BATCH, VIS_DEPTH, VIS_PATCHES, VIS_DIM, generator=g)
            ids = torch.randint(3, OPT["vocab_size"], (BATCH, TEXT), generator=g)
            mask = torch.ones_like(ids)
            ids[1, -2:], mask[1, -2:] = OPT["pad_token_id"], 0  # one right-padded example
            layer_outputs = []
            hooks = [layer.register_forward_hook(lambda m, a, out: layer_outputs.append(out[0].clone()))
                     for layer in model.model_text.model.decoder.layers]
            out = model(image=image, text=BatchEncoding({"input_ids": ids, "attention_mask": mask}), mode="evaluate")
            for h in hooks:
                h.remove()
            tensors.update({f"{case}.image": image, f"{case}.input_ids": ids, f"{case}.attention_mask": mask,
                            f"{case}.logits": out.logits})
            tensors.update({f"{case}.layer_output.{j}": t for j, t in enumerate(layer_outputs)})
            tensors.update({f"{case}.param.{k}": v.clone() for k, v in model.state_dict().items()
                            if k.startswith(("model_text.", "connector.", "prompt_module."))})

    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path / "epalm_opt.safetensors")
    meta = {"source": "https://github.com/mshukor/eP-ALM", "commit": _commit(checkout),
            "modules": "models/epalm.py ePALM, models/opt.py OPTForCausalLM", "opt": OPT,
            "vision_depth": VIS_DEPTH, "vision_dim": VIS_DIM, "cases": CASES, "torch": torch.__version__}
    (out_path / "epalm_opt.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: record_epalm.py EP-ALM-CHECKOUT [OUT_DIR]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else str(Path(__file__).resolve().parents[2] / "tests/golden"))
