"""Record golden numbers of the official VL-PET modules (tests/golden/vlpet_bart.*).

Usage: python scripts/golden/record_vlpet.py VL-PET-CHECKOUT [OUT_DIR]

VL-PET-CHECKOUT is a checkout of https://github.com/HenryHZY/VL-PET (its ``src`` folder is put on
``sys.path``; nothing of it is copied here). The official ``BartEncoderLayer`` is built once per gate
granularity with the flags of the repository's ``scripts/image-text/VL-PET-*.sh`` (small widths), and
its ``BartAttentionWithValueAdapter`` as the decoder cross-attention with the value parallel adapter.
Every parameter gets seeded random values, the modules run in eval mode, and their parameters, inputs
and outputs are written to ``vlpet_bart.safetensors`` (provenance and widths in ``vlpet_bart.json``).

Paper: Hu et al., "VL-PET: Vision-and-Language Parameter-Efficient Tuning via Granularity Control",
https://arxiv.org/abs/2308.09804.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

D_MODEL, HEADS, FFN = 16, 2, 32
ADAPTER_DIM, ADAPTER_HEADS, GATE_DIM, VPA_DIM = 8, 2, 4, 4
BATCH, SEQ, ENC_SEQ = 2, 5, 6
SCALING = 0.3  # the T5 scripts' --encoder_gating_scaling_factor (also tried on the BART layer)

# The encoder flags the VL-PET-*.sh scripts share, then each granularity's own gate flag.
COMMON = ["--use_adapter", "--use_single_adapter", "--no_encoder_adapter", "--use_adapter_down_dim",
          "--use_encoder_adapter_down_multihead", "--adapter_down_dim", str(ADAPTER_DIM),
          "--encoder_adapter_multihead_num_head", str(ADAPTER_HEADS), "--unfreeze_encoder_layer_norms",
          "--no_decoder_adapter", "--use_decoder_enc_attn_value_parallel_adapter_down_dim",
          "--decoder_enc_attn_value_parallel_adapter_down_dim", str(VPA_DIM), "--reduction_factor", "8",
          "--tasks", "vqa"]
GATE_FLAGS = {
    "large": ["--use_encoder_adapter_gating_large_x_lowrank", "--adapter_gating_down_dim", str(GATE_DIM)],
    "middlex": ["--use_encoder_adapter_gating_middle_xy_add"],
    "middley": ["--use_encoder_adapter_gating_middle_ia3_add"],
    "small": ["--use_encoder_adapter_gating_small_xy_cat"],
    "large_scaled": ["--use_encoder_adapter_gating_large_x_lowrank", "--adapter_gating_down_dim", str(GATE_DIM),
                     "--use_encoder_gating_scaling", "--encoder_gating_scaling_factor", str(SCALING)],
}
# scripts/image-text/T5-VL-PET-*.sh: the same gates, scaled by s (their zero-init flags only change
# the initial values, which are overwritten by random ones here).
T5_SCALING = ["--use_encoder_gating_scaling", "--encoder_gating_scaling_factor", str(SCALING)]
T5_GATES = ("large", "middlex", "middley", "small")


def _import_official(src: Path):
    sys.path.insert(0, str(src))
    # The official file decorates its model classes with docstring decorators whose signatures changed in
    # later transformers; they only build docstrings, so they are replaced by identity decorators.
    import transformers.file_utils as file_utils

    def identity(*args, **kwargs):
        return lambda f: f

    for name in ("add_code_sample_docstrings", "add_end_docstrings", "add_start_docstrings",
                 "add_start_docstrings_to_model_forward", "replace_return_docstrings"):
        setattr(file_utils, name, identity)
    # The T5 file also imports head-pruning and model-parallel functions that later transformers
    # removed; none of them is called by the modules recorded here.
    import transformers.modeling_utils as modeling_utils

    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, None)
    parallel = types.ModuleType("transformers.utils.model_parallel_utils")
    parallel.assert_device_map = parallel.get_device_map = None
    sys.modules.setdefault("transformers.utils.model_parallel_utils", parallel)
    import my_transformers.modeling_bart as modeling_bart
    import my_transformers.modeling_t5 as modeling_t5
    import param
    from adapters import AdapterConfig

    return modeling_bart, modeling_t5, param, AdapterConfig


def _config(param, AdapterConfig, flags: list[str], family: str = "bart"):
    """Backbone config + the parsed flags + ``adapter_config``, the way the official trainer
    (src/trainer_base.py, create_config) assembles them."""
    from transformers import BartConfig, T5Config

    argv, sys.argv = sys.argv, ["vlpet"] + flags
    try:
        args = param.parse_args(parse=True)
    finally:
        sys.argv = argv
    if family == "bart":
        config = BartConfig(d_model=D_MODEL, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                            encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, encoder_layers=1, decoder_layers=1,
                            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    else:
        config = T5Config(d_model=D_MODEL, d_kv=D_MODEL // HEADS, d_ff=FFN, num_heads=HEADS, num_layers=1,
                          dropout_rate=0.0, is_decoder=False)
    for k, v in vars(args).items():
        setattr(config, k, v)
    ac = AdapterConfig()
    ac.tasks = [args.tasks]
    ac.input_dim = ac.d_model = config.d_model
    ac.use_single_adapter = args.use_single_adapter
    ac.reduction_factor = args.reduction_factor
    ac.add_layer_norm_before_adapter = args.add_layer_norm_before_adapter
    ac.add_layer_norm_after_adapter = args.add_layer_norm_after_adapter
    ac.track_z = args.track_z
    ac.share_down_sampler, ac.share_up_sampler = args.share_down_sampler, args.share_up_sampler
    ac.shared_phm_rule_over_tasks = args.shared_phm_rule_over_tasks
    ac.use_adapter_down_dim = args.use_adapter_down_dim
    ac.adapter_down_dim = args.adapter_down_dim
    ac.use_parallel_adapter = False
    ac.use_scaling_factor, ac.scaling_factor = False, 1.0
    config.adapter_config = ac
    return config


@torch.no_grad()
def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if "layer_norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _commit(checkout: str) -> str | None:
    """The checkout's commit (``git rev-parse``), else ``$SOURCE_COMMIT`` (an exported tree)."""
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else os.environ.get("SOURCE_COMMIT")


def main(checkout: str, out_dir: str) -> None:
    modeling_bart, modeling_t5, param, AdapterConfig = _import_official(Path(checkout) / "src")
    tensors: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(1234)
    for i, (gate, flags) in enumerate(GATE_FLAGS.items()):
        config = _config(param, AdapterConfig, COMMON + flags)
        layer = modeling_bart.BartEncoderLayer(config).eval()
        _randomise(layer, 100 + i)
        x = torch.randn(BATCH, SEQ, D_MODEL, generator=g)
        (out,) = layer(x, attention_mask=None, task="vqa")
        tensors[f"{gate}.input"] = x
        tensors[f"{gate}.output"] = out
        tensors.update({f"{gate}.param.{k}": v.clone() for k, v in layer.state_dict().items()})

    # T5 encoder block (pre-LN; the gates read the residual stream entering each sub-layer).
    for i, gate in enumerate(T5_GATES):
        config = _config(param, AdapterConfig, COMMON + GATE_FLAGS[gate] + T5_SCALING, family="t5")
        block = modeling_t5.T5Block(config, has_relative_attention_bias=True).eval()
        _randomise(block, 400 + i)
        x = torch.randn(BATCH, SEQ, D_MODEL, generator=g)
        out = block(x, task="vqa")[0]
        tensors[f"t5_{gate}.input"] = x
        tensors[f"t5_{gate}.output"] = out
        tensors.update({f"t5_{gate}.param.{k}": v.clone() for k, v in block.state_dict().items()})

    # Decoder cross-attention with the value parallel adapter, built as BartDecoderLayer builds it.
    config = _config(param, AdapterConfig, COMMON + GATE_FLAGS["large"])
    vpa_config = copy.deepcopy(config.adapter_config)
    vpa_config.use_adapter_down_dim = True
    vpa_config.adapter_down_dim = config.decoder_enc_attn_value_parallel_adapter_down_dim
    attn = modeling_bart.BartAttentionWithValueAdapter(D_MODEL, HEADS, dropout=0.0, is_decoder=True,
                                                       adapter_config=vpa_config, config=config).eval()
    _randomise(attn, 200)
    q = torch.randn(BATCH, SEQ, D_MODEL, generator=g)
    enc = torch.randn(BATCH, ENC_SEQ, D_MODEL, generator=g)
    out, _, _ = attn(hidden_states=q, key_value_states=enc, task="vqa")
    tensors.update({"vpa.query": q, "vpa.encoder": enc, "vpa.output": out})
    tensors.update({f"vpa.param.{k}": v.clone() for k, v in attn.state_dict().items()})

    # T5 decoder cross-attention sub-layer with the value parallel adapter (T5LayerCrossAttention).
    config = _config(param, AdapterConfig, COMMON + GATE_FLAGS["large"] + T5_SCALING, family="t5")
    config.is_decoder = True
    cross = modeling_t5.T5LayerCrossAttention(config, is_decoder=True).eval()
    _randomise(cross, 210)
    q = torch.randn(BATCH, SEQ, D_MODEL, generator=g)
    enc = torch.randn(BATCH, ENC_SEQ, D_MODEL, generator=g)
    out = cross(q, key_value_states=enc, task="vqa")[0]
    tensors.update({"t5_vpa.query": q, "t5_vpa.encoder": enc, "t5_vpa.output": out})
    tensors.update({f"t5_vpa.param.{k}": v.clone() for k, v in cross.state_dict().items()})

    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path / "vlpet_bart.safetensors")
    commit = _commit(checkout)
    meta = {
        "source": "https://github.com/HenryHZY/VL-PET", "commit": commit,
        "modules": {"encoder": "src/my_transformers/modeling_bart.py BartEncoderLayer",
                    "vpa": "src/my_transformers/modeling_bart.py BartAttentionWithValueAdapter",
                    "t5": "src/my_transformers/modeling_t5.py T5Block (encoder, relative attention bias)",
                    "t5_vpa": "src/my_transformers/modeling_t5.py T5LayerCrossAttention"},
        "flags": {"common": COMMON, **GATE_FLAGS, "t5_scaling": T5_SCALING},
        "d_model": D_MODEL, "heads": HEADS, "ffn": FFN, "adapter_dim": ADAPTER_DIM, "adapter_heads": ADAPTER_HEADS,
        "gate_dim": GATE_DIM, "vpa_dim": VPA_DIM, "scaling": SCALING, "activation_function": "gelu",
        "t5": {"d_kv": D_MODEL // HEADS, "d_ff": FFN, "num_heads": HEADS, "feed_forward_proj": "relu"},
        "torch": torch.__version__,
    }
    (out_path / "vlpet_bart.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: record_vlpet.py VL-PET-CHECKOUT [OUT_DIR]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else str(Path(__file__).resolve().parents[2] / "tests/golden"))
