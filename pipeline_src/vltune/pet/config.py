"""The PET registry and method configs, importable without torch (the workflow reads them when it
plans: a method-config typo stops it before any job).

A method is a config dataclass (hyper-parameters with the paper's BART-base defaults, plus
per-backbone-family overrides) and an ``inject(model, config)`` function that freezes the model,
adds the method's layers at name-pattern targets (``targets.py``) and marks what trains. Methods
register themselves by name in :data:`PET_METHODS` when their subpackage is imported; the
injector (and a method's own save/load) is named as ``"module:function"`` and imported on first
use, so registering a method imports no torch.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping

from ..registry import Registry

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


def _resolve(ref: str | None) -> Callable | None:
    if ref is None:
        return None
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class PetMethod:
    """A registered method: its config class and where its code lives. ``save``/``load`` are only
    for methods with their own file format (LoRA: PEFT's); they write/read that format and return
    the tensors/names they handled."""

    config_cls: type[PetConfig]
    inject_ref: str
    save_ref: str | None = None
    load_ref: str | None = None

    @property
    def inject(self) -> Callable:
        return _resolve(self.inject_ref)

    @property
    def save(self) -> Callable | None:
        return _resolve(self.save_ref)

    @property
    def load(self) -> Callable | None:
        return _resolve(self.load_ref)


# What a method applies to: "encdec" = the encoder-decoder VL models (VL-BART / VL-T5, the VL-PET
# experiment); "epalm" = the frozen-LM eP-ALM model (vltune.models.epalm).
MODEL_KINDS = ("encdec", "epalm")


def register_method(name: str, config_cls: type[PetConfig], inject: str, *, pretty_name: str, paper: str | None,
                    save: str | None = None, load: str | None = None, model_kind: str = "encdec") -> None:
    """Register ``name``; ``inject``/``save``/``load`` are ``"module:function"`` references."""
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


def pet_config_dict(model_or_config: Any) -> dict[str, Any]:
    """The JSON-ready config of a PET model (or of a config)."""
    config = model_or_config if isinstance(model_or_config, PetConfig) else getattr(model_or_config, "pet_config", None)
    if config is None:
        raise ValueError("this model has no PET method applied (call apply_pet first)")
    return config.to_dict()


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
