"""The merge methods by name, with what a plan needs to know of each, importable without torch.

``vltune.merge`` registers one per-tensor function under each of these names (``--method`` of
``vltune merge-experts``); the workflow plans its merge jobs from this table, so it stays torch-free
at parse time. ``base``: whether the method reads ``--base`` ("required", "optional", "none");
``uses_grams``: whether it reads Gram matrices (``--grams``).
"""

from __future__ import annotations

MERGE_METHODS: dict[str, dict] = {
    "average": {"base": "none", "uses_grams": False},
    "interpolation": {"base": "none", "uses_grams": False},
    "arithmetic": {"base": "required", "uses_grams": False},
    "ties": {"base": "required", "uses_grams": False},
    "dare": {"base": "required", "uses_grams": False},
    "regmean": {"base": "none", "uses_grams": True},
}


def based_merges() -> tuple[str, ...]:
    """The task-vector merges: the base model (the seed) is their centre."""
    return tuple(name for name, m in MERGE_METHODS.items() if m["base"] == "required")


def gram_merges() -> tuple[str, ...]:
    """The merges whose model depends on a task's Gram matrices (one merge per task)."""
    return tuple(name for name, m in MERGE_METHODS.items() if m["uses_grams"])
