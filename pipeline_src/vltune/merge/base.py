"""What every merge method shares: the registry, the method record and its parameter checks.

A merge method is a pure function of one tensor name: it gets the tensors the N inputs hold under
that name (same shape), the base model's tensor (task-vector methods), the inputs' Gram matrices
when the tensor is a Linear weight and Grams were given (RegMean), the name itself (seeded methods
draw their randomness from it, so the result does not depend on the order tensors are visited)
and the resolved parameters, and returns a new tensor of the same shape and dtype. It does no I/O
and never edits its inputs; ``vltune.merge.run`` opens the files and calls it once per name.
(The shape of mergekit's ``merge_methods/``: one registry, one per-tensor function per method.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..errors import UserError
from ..merge_methods import MERGE_METHODS as PLANNED
from ..registry import Registry

MergeFn = Callable[..., torch.Tensor]


class MergeError(UserError):
    """Inputs that cannot be merged (mismatched names or shapes, a missing base or Gram, a singular
    Gram sum): one clear line naming the file and the tensor."""


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method.

    Args:
        name: registry name (also the CLI ``--method`` and the config value).
        fn: ``fn(tensors, *, base, grams, key, params) -> Tensor``.
        params: parameter name -> default (the type of the default is the parameter's type).
        base: "required", "optional" or "none": whether the method uses ``--base``.
        uses_grams: whether the method reads Gram matrices (RegMean).
        pretty_name, reference_url: shown in the report and ``--help``.
    """

    name: str
    fn: MergeFn
    params: Mapping[str, Any] = field(default_factory=dict)
    base: str = "none"
    uses_grams: bool = False
    pretty_name: str = ""
    reference_url: str = ""

    def resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """The method's defaults updated with ``overrides``; an unknown name or a wrong type raises."""
        out = dict(self.params)
        for key, value in (overrides or {}).items():
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise MergeError(f"merge method {self.name!r} has no parameter {key!r} (parameters: {known})")
            out[key] = _coerce(self.name, key, value, self.params[key])
        return out


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if isinstance(value, str) and kind is not str:  # from the command line (k=v)
        try:
            value = {"true": True, "false": False}[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError):
            raise MergeError(f"merge method {method!r}: parameter {key}={value!r} is not a {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise MergeError(f"merge method {method!r}: parameter {key}={value!r} is not a {kind.__name__}")
    return value


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def register(name: str, *, params: Mapping[str, Any] | None = None, pretty_name: str = "",
             reference_url: str = "") -> Callable[[MergeFn], MergeFn]:
    """Decorator registering a per-tensor merge function under ``name``; whether it reads a base
    model and Gram matrices comes from its entry in ``vltune.merge_methods`` (the workflow plans
    from that torch-free table, so it is the one place these are written)."""
    if name not in PLANNED:
        raise ValueError(f"merge method {name!r} has no entry in vltune.merge_methods.MERGE_METHODS")
    base, uses_grams = PLANNED[name]["base"], PLANNED[name]["uses_grams"]
    if base not in ("required", "optional", "none"):
        raise ValueError(f"vltune.merge_methods: {name}.base must be required|optional|none, got {base!r}")

    def deco(fn: MergeFn) -> MergeFn:
        MERGE_METHODS.add(name, MergeMethod(name, fn, dict(params or {}), base, uses_grams, pretty_name or name,
                                            reference_url),
                          pretty_name=pretty_name or name, reference_url=reference_url)
        return fn

    return deco


def get_method(name: str) -> MergeMethod:
    try:
        return MERGE_METHODS.get(name)
    except KeyError as e:
        raise MergeError(e.args[0]) from None


def method_names() -> list[str]:
    return MERGE_METHODS.names()


def stack_float(tensors: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, *shape) in at least ``dtype`` precision (float64 inputs stay float64)."""
    work = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else dtype
    return torch.stack([t.to(work) for t in tensors])


def check_inputs(tensors: list[torch.Tensor], key: str, base: torch.Tensor | None = None) -> None:
    """Every input (and the base) holds ``key`` with one shape; raises naming the key and the shapes."""
    if not tensors:
        raise MergeError(f"{key}: nothing to merge (no input tensors)")
    shapes = [tuple(t.shape) for t in tensors] + ([tuple(base.shape)] if base is not None else [])
    if len(set(shapes)) > 1:
        raise MergeError(f"{key}: shapes differ between the inputs{' and the base' if base is not None else ''}: {shapes}")
    if not all(t.is_floating_point() for t in tensors):
        raise MergeError(f"{key}: only floating-point tensors can be merged, got {tensors[0].dtype}")
