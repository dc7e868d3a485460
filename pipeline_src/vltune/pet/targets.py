"""Where PET layers go in each backbone family: one table of module-name patterns.

Patterns are whole-name regexes on ``named_modules()`` names and start with ``(?:.*\\.)?`` so they
match both a bare HF model (``model.encoder.layers.0.fc2``) and the same model inside a VL wrapper
(``bart.model.encoder.layers.0.fc2``). A new backbone (a ViLT/VLMo-style ViT, OPT) only needs a new
:class:`Family` entry. Lists follow PEFT's ``target_modules`` rule: exact name or a ``.``-suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

_ANY = r"(?:.*\.)?"


@dataclass(frozen=True)
class Site:
    """One sub-layer whose output ``H`` a PET layer modifies.

    Args:
        output: regex of the module whose output is ``H`` (tuples: the first element); it may name
            groups used by ``gate_input``.
        gate_input: template (``str.format`` over the match's named groups) of the module whose
            *input* is the gate's ``X``: the sub-layer input in post-LN BART, the un-normalised
            residual stream in pre-LN T5 (VL-PET, arXiv 2308.09804).
    """

    output: str
    gate_input: str = ""

    def gate_input_name(self, match: re.Match) -> str:
        return self.gate_input.format(**match.groupdict()) if self.gate_input else match.group(0)


@dataclass(frozen=True)
class Family:
    """Name patterns of one backbone family (keyed by the HF ``config.model_type``).

    Args:
        name: ``config.model_type``.
        encoder: regex of the encoder stack (VL-PET trains the norms inside it).
        encoder_sublayers: encoder self-attention and FFN outputs (VL-PET, VL-Adapter).
        decoder_sublayers: decoder self-attention, cross-attention and FFN outputs (VL-Adapter).
        cross_attn_value: decoder cross-attention value projections (VL-PET's value parallel adapter).
        lora_targets: PEFT's default LoRA targets for the family (q and v projections).
        encoder_blocks: regex of the encoder's list of blocks (DAS replaces skipped entries);
            "" where skipping is not supported.
    """

    name: str
    encoder: str
    encoder_sublayers: tuple[Site, ...]
    decoder_sublayers: tuple[Site, ...]
    cross_attn_value: str
    lora_targets: tuple[str, ...]
    encoder_blocks: str = ""


FAMILIES: dict[str, Family] = {
    "bart": Family(
        name="bart",
        encoder=_ANY + r"encoder",
        encoder_sublayers=(
            Site(r"(?P<layer>" + _ANY + r"encoder\.layers\.\d+)\.self_attn"),       # X = attention input
            Site(r"(?P<layer>" + _ANY + r"encoder\.layers\.\d+)\.fc2", "{layer}.fc1"),  # X = FFN input
        ),
        decoder_sublayers=(
            Site(_ANY + r"decoder\.layers\.\d+\.self_attn"),
            Site(_ANY + r"decoder\.layers\.\d+\.encoder_attn"),
            Site(r"(?P<layer>" + _ANY + r"decoder\.layers\.\d+)\.fc2", "{layer}.fc1"),  # X = FFN input (DAS)
        ),
        cross_attn_value=_ANY + r"decoder\.layers\.\d+\.encoder_attn\.v_proj",
        lora_targets=("q_proj", "v_proj"),
        encoder_blocks=_ANY + r"encoder\.layers",
    ),
    "t5": Family(
        name="t5",
        encoder=_ANY + r"encoder",
        encoder_sublayers=(  # X = input of T5LayerSelfAttention / T5LayerFF, before their pre-LN
            Site(r"(?P<layer>" + _ANY + r"encoder\.block\.\d+\.layer\.0)\.SelfAttention", "{layer}"),
            Site(r"(?P<layer>" + _ANY + r"encoder\.block\.\d+\.layer\.1)\.DenseReluDense", "{layer}"),
        ),
        decoder_sublayers=(
            # X (DAS's parallel adapters) = the residual stream entering each layer, as in the encoder
            Site(r"(?P<layer>" + _ANY + r"decoder\.block\.\d+\.layer\.0)\.SelfAttention", "{layer}"),
            Site(r"(?P<layer>" + _ANY + r"decoder\.block\.\d+\.layer\.1)\.EncDecAttention", "{layer}"),
            Site(r"(?P<layer>" + _ANY + r"decoder\.block\.\d+\.layer\.2)\.DenseReluDense", "{layer}"),
        ),
        cross_attn_value=_ANY + r"decoder\.block\.\d+\.layer\.1\.EncDecAttention\.v",
        lora_targets=("q", "v"),
    ),
    # The modality-agnostic VLMo (vltune.models.vlmo): pre-LN blocks with layer scale, one shared
    # set of weights that every stream (text, image, joint) runs through; no decoder. X = the residual
    # stream entering the sub-layer (the input of its pre-LN), as ViLT's adapters. A modality-specific
    # VLMo keeps its experts in ModuleDicts that these names do not reach (vltune.das.vlmo refuses it).
    "vlmo": Family(
        name="vlmo",
        encoder=_ANY + r"blocks",
        encoder_sublayers=(
            Site(r"(?P<layer>" + _ANY + r"blocks\.\d+)\.attn", "{layer}.norm1"),
            Site(r"(?P<layer>" + _ANY + r"blocks\.\d+)\.mlp", "{layer}.norm2"),
        ),
        decoder_sublayers=(),
        cross_attn_value="",
        lora_targets=("qkv",),
        encoder_blocks=_ANY + r"blocks",
    ),
}


def detect_family(model: nn.Module) -> Family | None:
    """The family of ``model`` (an HF model, or a VL wrapper exposing the HF ``config``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return FAMILIES.get(model_type) if model_type else None


def require_family(model: nn.Module, method: str) -> Family:
    family = detect_family(model)
    if family is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(
            f"PET method {method!r} has no module patterns for backbone {model_type!r}; "
            f"known families: {', '.join(sorted(FAMILIES))} (add one to vltune.pet.targets.FAMILIES)"
        )
    return family


def match_target(name: str, target: str | Sequence[str]) -> bool:
    """PEFT's rule: a string is a whole-name regex; a list matches the exact name or a ``.``-suffix."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


def find_modules(model: nn.Module, pattern: str) -> Iterator[tuple[str, nn.Module, re.Match]]:
    """Modules whose full name matches ``pattern``; ``ValueError`` if none does (wrong family or a
    pattern typo would otherwise inject nothing and train nothing)."""
    found = [(n, m, mt) for n, m in model.named_modules() if (mt := re.fullmatch(pattern, n))]
    if not found:
        raise ValueError(f"no module of this {type(model).__name__} matches the PET target pattern {pattern!r}")
    return iter(found)


def is_norm(module: nn.Module) -> bool:
    """LayerNorm-like by type: ``nn.LayerNorm`` and the HF norms that do not subclass it (T5LayerNorm)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def hidden_size(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "d_model", None) or config.hidden_size)


# --- forward-hook plumbing ---------------------------------------------------------------------

def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden-states argument of a module call (positional, or ``hidden_states=``)."""
    return args[0] if args else kwargs["hidden_states"]


def first_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def replace_first_output(output: Any, value: torch.Tensor) -> Any:
    """Attention modules return ``(hidden, weights, ...)``; only the hidden states change."""
    return (value, *output[1:]) if isinstance(output, tuple) else value
