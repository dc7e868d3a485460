"""Model merging: one registry of merge methods over state dicts, one lazy driver, Gram collection.

Methods (``MERGE_METHODS``, registered when this package is imported): ``average``,
``interpolation`` (ratio), ``arithmetic`` (modality/task arithmetic: base + λ Σ task vectors),
``ties``, ``dare`` (seeded) and ``regmean`` (Gram matrices). ``merge_files`` merges N safetensors
state dicts with the same names; ``merge_experts`` merges the modality experts of one VLMo-style
model into a modality-agnostic one. ``vltune merge`` and ``vltune merge-experts`` are the CLI.
"""

from . import linear, regmean, task_arithmetic  # noqa: F401  (registers the methods)
from .base import MERGE_METHODS, MergeError, MergeMethod, get_method, method_names, register
from .io import EXPERTS, DictSource, ExpertView, SafetensorsSource, StreamWriter, split_expert_key
from .run import merge_experts, merge_files, merge_state_dicts, plan_experts, plan_merge

__all__ = [
    "MERGE_METHODS", "MergeError", "MergeMethod", "get_method", "method_names", "register",
    "EXPERTS", "DictSource", "ExpertView", "SafetensorsSource", "StreamWriter", "split_expert_key",
    "merge_experts", "merge_files", "merge_state_dicts", "plan_experts", "plan_merge",
]
