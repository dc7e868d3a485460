"""The merge methods by name, with what a plan needs to know of each, importable without torch.

``vltune.merge`` registers one per-tensor function under each of these names (``--method`` of
``vltune merge-experts``); the workflow plans its merge jobs from this table, so it stays torch-free
at parse time. ``base``: whether the method reads ``--base`` ("required", "optional", "none");
``uses_grams``: whether it reads Gram matrices (``--grams``).
"""

from __future__ import annotations

# In the order the report lists them.
MERGE_METHODS: dict[str, dict] = {
    "average": {"base": "none", "uses_grams": False},
    "interpolation": {"base": "none", "uses_grams": False},
    "arithmetic": {"base": "required", "uses_grams": False},
    "regmean": {"base": "none", "uses_grams": True},
    "ties": {"base": "required", "uses_grams": False},
    "dare": {"base": "required", "uses_grams": False},
}
# The merging study's other inits: the modality-agnostic baseline, the seed and a modality-specific
# model, each fine-tuned as it was pretrained (``merging.inits`` is these and the merges).
PRETRAINED_INITS: tuple[str, ...] = ("agnostic", "seed", "specific")


def based_merges() -> tuple[str, ...]:
    """The task-vector merges: the base model (the seed) is their centre."""
    return tuple(name for name, m in MERGE_METHODS.items() if m["base"] == "required")


def gram_merges() -> tuple[str, ...]:
    """The merges whose model depends on a task's Gram matrices (one merge per task)."""
    return tuple(name for name, m in MERGE_METHODS.items() if m["uses_grams"])
