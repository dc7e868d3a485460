"""The PET registry and what every method shares: a config base class, freezing, the trainable set.

A method is a config dataclass (hyper-parameters with the paper's BART-base defaults, plus
per-backbone-family overrides) and an ``inject(model, config)`` function that freezes the model,
adds the method's layers at name-pattern targets (``targets.py``) and marks what trains. Methods
register themselves by name in :data:`PET_METHODS` when their subpackage is imported.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from ..registry import Registry
from .targets import detect_family, is_norm, match_target

PET_METHODS: Registry["PetMethod"] = Registry("PET method")


@dataclass
class PetConfig:
    """Fields every method shares.

    Args:
        method: the registry name this config belongs to.
        modules_to_save: modules trained in full besides the method's own layers (exact module name
            or a suffix at a ``.``); VL-Adapter and VL-PET always train the visual embedding.
    """

    method: str = field(default="", metadata={"help": "registry name of the method"})
    modules_to_save: list[str] = field(
        default_factory=lambda: ["visual_embedding"],
        metadata={"help": "modules trained in full (exact name or '.'-suffix)"},
    )

    # Per backbone family (``targets.FAMILIES`` key): defaults that differ from BART-base's.
    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        if not isinstance(self.modules_to_save, list) or not all(isinstance(m, str) for m in self.modules_to_save):
            raise ValueError(f"{self.method}: modules_to_save must be a list of module names, got {self.modules_to_save!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], family: str | None = None) -> "PetConfig":
        """Build from a plain dict (YAML/JSON); family defaults first, then ``values``.

        An unknown key raises ``ValueError`` naming it, so a typo never silently falls back to a default.
        """
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=2)
                hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ValueError(
                    f"unknown key {key!r} in the config of PET method {values.get('method')!r}.{hint}"
                    f" Known keys: {', '.join(known)}"
                )
        return cls(**{**cls.family_defaults.get(family or "", {}), **values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PetMethod:
    """A registered method. ``save``/``load`` are only for methods with their own file format
    (LoRA: PEFT's); they write/read that format and return the tensors/names they handled."""

    config_cls: type[PetConfig]
    inject: Callable[[nn.Module, PetConfig], None]
    save: Callable[[nn.Module, Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    load: Callable[[nn.Module, Any], set[str]] | None = None


# What a method applies to: "encdec" = the encoder-decoder VL models (VL-BART / VL-T5, the VL-PET
# experiment); "epalm" = the frozen-LM eP-ALM model (vltune.models.epalm).
MODEL_KINDS = ("encdec", "epalm")


def register_method(name: str, config_cls: type[PetConfig], inject: Callable[[nn.Module, PetConfig], None], *,
                    pretty_name: str, paper: str | None, save=None, load=None, model_kind: str = "encdec") -> None:
    if model_kind not in MODEL_KINDS:
        raise ValueError(f"PET method {name!r}: model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
    PET_METHODS.add(name, PetMethod(config_cls, inject, save, load), pretty_name=pretty_name, paper=paper,
                    model_kind=model_kind)


def get_method(name: str) -> PetMethod:
    """The registered method, or a ``ValueError`` with close names and the ones available."""
    try:
        return PET_METHODS.get(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None


def method_names(model_kind: str | None = "encdec") -> list[str]:
    """Registered methods for one kind of model (see :data:`MODEL_KINDS`); ``None``: all of them."""
    if model_kind is not None and model_kind not in MODEL_KINDS:
        raise ValueError(f"model_kind must be one of {MODEL_KINDS} or None, got {model_kind!r}")
    return [n for n in PET_METHODS.names() if model_kind is None or PET_METHODS.meta(n)["model_kind"] == model_kind]


def resolve_config(spec: str | Mapping[str, Any] | PetConfig, family: str | None = None) -> PetConfig:
    """A method name, a dict with a ``method`` key, or a config instance → a validated config."""
    if isinstance(spec, PetConfig):
        method = get_method(spec.method)
        if type(spec) is not method.config_cls:
            raise ValueError(f"PET method {spec.method!r} takes a {method.config_cls.__name__}, got {type(spec).__name__}")
        return spec
    values = {"method": spec} if isinstance(spec, str) else dict(spec)
    if not values.get("method"):
        raise ValueError(f"a PET method config needs a 'method' key (one of {', '.join(method_names())}); got {values!r}")
    return get_method(values["method"]).config_cls.from_dict(values, family)


def apply_pet(model: nn.Module, spec: str | Mapping[str, Any] | PetConfig) -> nn.Module:
    """Freeze/unfreeze ``model`` and inject the PET method in place; returns ``model``.

    The resolved config is kept as ``model.pet_config`` (what :func:`pet_config_dict` and
    ``save_pet`` write). Family defaults (e.g. T5's r=192, s=0.3) apply to names and dicts.
    """
    if getattr(model, "pet_config", None) is not None:
        raise ValueError(f"PET method {model.pet_config.method!r} is already applied to this model")
    family = detect_family(model)
    config = resolve_config(spec, family.name if family else None)
    get_method(config.method).inject(model, config)
    model.pet_config = config
    return model


def pet_config_dict(model_or_config: nn.Module | PetConfig) -> dict[str, Any]:
    """The JSON-ready config of a PET model (or of a config)."""
    config = model_or_config if isinstance(model_or_config, PetConfig) else getattr(model_or_config, "pet_config", None)
    if config is None:
        raise ValueError("this model has no PET method applied (call apply_pet first)")
    return config.to_dict()


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains, by name (tied weights once): exactly what a PET checkpoint holds."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> dict:
    # Tied weights (BART's shared embedding / lm_head) are counted once: parameters() dedups them.
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}


# --- helpers the injectors share ---------------------------------------------------------------

def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


def train_modules_to_save(model: nn.Module, config: PetConfig) -> None:
    """Unfreeze the config's ``modules_to_save`` (absent ones are skipped: a bare HF backbone has no
    visual embedding)."""
    for name, module in model.named_modules():
        if name and match_target(name, config.modules_to_save):
            module.requires_grad_(True)


def train_norms(root: nn.Module) -> None:
    """Unfreeze every normalisation layer under ``root`` (chosen by module type, not by name)."""
    for module in root.modules():
        if is_norm(module):
            module.requires_grad_(True)


def init_linears(module: nn.Module, std: float | None) -> None:
    """BART's ``_init_weights`` for new Linear layers (weight N(0, std), bias 0); ``None`` keeps
    PyTorch's default init, which is what HF T5 leaves on modules it does not know."""
    if std is None:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def attach(parent: nn.Module, name: str, layer: nn.Module) -> nn.Module:
    """Add ``layer`` as child ``name`` of ``parent``, on ``parent``'s device and dtype (a model may be
    on a GPU, in bf16 or on the meta device when the method is applied)."""
    ref = next(parent.parameters(), None)
    if ref is not None:
        layer.to(device=ref.device, dtype=ref.dtype)
    parent.add_module(name, layer)
    return layer


def check_positive(config: PetConfig, *names: str, allow_zero: bool = False) -> None:
    """``ValueError`` naming the field when an int hyper-parameter is not positive."""
    for name in names:
        value = getattr(config, name)
        ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            bound = "≥ 0" if allow_zero else "> 0"
            raise ValueError(f"{config.method}: {name} must be an int {bound}, got {value!r}")


def check_types(config: PetConfig) -> None:
    """``ValueError`` naming the field when a bool / float / optional-float field has the wrong type
    (YAML turns ``1e-2`` into a string, ``yes`` into a bool: catch both before any work)."""
    for f in fields(config):
        value = getattr(config, f.name)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if f.type == "bool" and not isinstance(value, bool):
            raise ValueError(f"{config.method}: {f.name} must be true or false, got {value!r}")
        if f.type == "float" and not is_number:
            raise ValueError(f"{config.method}: {f.name} must be a number, got {value!r}")
        if f.type == "float | None" and value is not None and not is_number:
            raise ValueError(f"{config.method}: {f.name} must be a number or null, got {value!r}")
