"""Typed ``--params`` of the ``vltune`` subcommands: one frozen dataclass per kind of params.

A command's ``--params`` JSON is the rule's slice of the validated config (workflow/rules/
common.smk). ``Kind.from_params(text_or_dict, command)`` checks it: an unknown key, a value of the
wrong type or a missing required key is one line naming the key (UserError). A key the JSON does
not give takes its default from workflow/schemas/config.schema.yaml, the one place the workflow's
defaults are written (read once, when first needed); where the schema file is not there (an
installed package without its workflow), such a key is required. A few keys are command-line
conveniences the schema does not hold: their default is stated on the field (``command_default``).
``Kind.from_config(config)`` builds the same settings from a validated config.

Torch-free: the workflow can import it while parsing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import types
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from .errors import UserError

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

_NO_DEFAULT = object()


@functools.cache
def _schema() -> dict | None:
    if not SCHEMA_FILE.is_file():
        return None
    import yaml

    return yaml.safe_load(SCHEMA_FILE.read_text())


def _resolve(node: dict, root: dict) -> dict:
    """A schema node with its ``$ref`` (``#/$defs/<name>``) merged in (the node's own keys win)."""
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill(value: Any, node: dict, root: dict) -> Any:
    """``value`` with the defaults of the properties it leaves out, at every depth (what the
    workflow's validation with defaults does)."""
    if not isinstance(value, dict):
        return value
    props = _resolve(node, root).get("properties", {})
    out = dict(value)
    for name, sub in props.items():
        sub = _resolve(sub, root)
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = _fill(out[name], sub, root)
    return out


def schema_default(path: str) -> Any:
    """The schema's default of the config key ``path`` (dotted, e.g. ``vlpet.batch_size``), with
    its nested defaults; ``_NO_DEFAULT`` when the schema gives none or is not there."""
    root = _schema()
    if root is None:
        return _NO_DEFAULT
    node = root
    for part in path.split("."):
        node = _resolve(node, root).get("properties", {}).get(part)
        if node is None:
            raise KeyError(f"{path}: not a key of {SCHEMA_FILE.name}")
    node = _resolve(node, root)
    return _fill(copy.deepcopy(node["default"]), node, root) if "default" in node else _NO_DEFAULT


def parse_params(text: str, command: str) -> dict:
    """A command's ``--params`` text as the JSON object it must be."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--params for {command} is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise UserError(f"--params for {command} must be a JSON object, got {type(params).__name__}")
    return params


def _lookup(config: dict, path: str) -> Any:
    value = config
    for part in path.split("."):
        value = value[part]
    return value


def config_key(path: str | None = None, *, command_default: Any = _NO_DEFAULT, omit_unset: bool = False):
    """A settings field. ``path``: the config key it comes from, relative to the kind's
    ``SECTION`` (its default is the schema's); ``command_default``: the default of a key the schema
    does not hold; ``omit_unset``: a key passed on only when given (its default is None)."""
    metadata = {"path": path, "command_default": command_default, "omit_unset": omit_unset}
    if omit_unset:
        return dataclasses.field(default=None, metadata=metadata)
    return dataclasses.field(default=_NO_DEFAULT, metadata=metadata)


def _describe(tp) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a JSON object",
            list: "a JSON list", type(None): "null"}.get(get_origin(tp) or tp, str(tp))


def _accepts(tp, value) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in get_args(tp))
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, origin or tp)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of the params kinds: ``SECTION`` is the config section the fields' paths start in."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def _path(cls, f: dataclasses.Field, section: str | None) -> str | None:
        path = f.metadata.get("path")
        if path is None:
            return None
        base = cls.SECTION if section is None else section
        return path[1:] if path.startswith("/") else (f"{base}.{path}" if base else path)

    @classmethod
    def from_params(cls, params: str | dict, command: str, section: str | None = None):
        """Check and type the ``--params`` of ``command`` (JSON text or its parsed object).
        ``section``: the config section of the fields' paths when not the kind's own."""
        params = parse_params(params, command) if isinstance(params, str) else params
        if not isinstance(params, dict):
            raise UserError(f"--params for {command} must be a JSON object, got {type(params).__name__}")
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise UserError(f"{command}: unknown param {unknown[0]!r} (expected {', '.join(sorted(names))})")
        hints = get_type_hints(cls)
        values = {}
        for f in fields:
            if f.name in params:
                value = params[f.name]
            elif f.metadata.get("omit_unset"):
                value = None
            else:
                value = _NO_DEFAULT
                path = cls._path(f, section)
                if path is not None:
                    value = schema_default(path)
                if value is _NO_DEFAULT and f.metadata.get("command_default", _NO_DEFAULT) is not _NO_DEFAULT:
                    value = copy.deepcopy(f.metadata["command_default"])
                if value is _NO_DEFAULT:
                    where = f" (config key {path})" if path else ""
                    raise UserError(f"{command}: --params needs key {f.name!r}{where}")
            if not _accepts(hints[f.name], value):
                raise UserError(f"{command}: param {f.name!r} must be {_describe(hints[f.name])}, got {value!r}")
            values[f.name] = value
        return cls(**values)

    @classmethod
    def from_config(cls, config: dict, section: str | None = None, **given):
        """The settings a rule passes, read off the validated ``config`` (``given``: the values a
        rule sets itself, e.g. a budget from a wildcard)."""
        params = dict(given)
        for f in dataclasses.fields(cls):
            path = cls._path(f, section)
            if f.name in params or path is None:
                continue
            try:
                params[f.name] = _lookup(config, path)
            except KeyError:
                pass  # not in the config: the schema's or the command's default
        return cls.from_params(params, f"config section {section or cls.SECTION or '(top)'}", section)

    def to_dict(self) -> dict:
        """The params as the command passes them on (a key passed only when given is left out when unset)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_unset") and getattr(self, f.name) is None)}


# --- data (workflow/rules/data.smk) ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Download(Settings):
    """vltune download (common.smk download_params)."""

    SECTION: ClassVar[str] = "download"
    mirror: str | None = config_key("mirror")
    retries: int = config_key("retries")
    backoff: float = config_key("backoff")
    timeout: float = config_key("timeout")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Convert(Settings):
    """vltune convert (data.smk's params.hp)."""

    SECTION: ClassVar[str] = "download"
    vqa_vocab_size: int = config_key("vqa_vocab_size")


# --- backbones (workflow/rules/backbones.smk, epalm.smk) ----------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerTrain(Settings):
    """vltune train-tokenizer (backbones.smk's params.tok)."""

    SECTION: ClassVar[str] = "tokenizer"
    vocab_size: int = config_key("vocab_size")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackboneTrain(Settings):
    """vltune pretrain-clip / -bart / -t5 / -opt (common.smk backbone_params); the section is
    ``backbones.<name>``."""

    arch: dict = config_key("arch")
    train: dict = config_key("train")
    batch_size: int = config_key("batch_size")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VitTrain(BackboneTrain):
    """vltune pretrain-vit (common.smk vit_params)."""

    SECTION: ClassVar[str] = "backbones.vit"
    patch_loss_weight: float = config_key("patch_loss_weight")


# --- VL-PET (workflow/rules/vlpet.smk) ------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class VlpetFinetune(Settings):
    """vltune finetune-vlbart (common.smk finetune_params)."""

    SECTION: ClassVar[str] = "vlpet"
    train: dict = config_key("train")
    batch_size: int = config_key("batch_size")
    task_weights: dict = config_key("task_weights")
    dropout: float | None = config_key("dropout")
    method_config: dict | None = config_key(command_default={})  # vlpet.method_configs[<method>]
    visual: dict | None = config_key("/features.tokens")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluate(Settings):
    """vltune evaluate-vlbart (common.smk evaluate_params, imported_evaluate_params)."""

    SECTION: ClassVar[str] = "evaluate"
    split: str = config_key("split")
    batch_size: int = config_key("batch_size")
    caption_beams: int = config_key("caption_beams")
    caption_max_len: int = config_key("caption_max_len")
    answer_max_len: int = config_key("answer_max_len")
    vqa_normalize: str | None = config_key("vqa_normalize", omit_unset=True)
    tasks: list = config_key(command_default=["vqa", "gqa", "nlvr2", "caption"])  # sorted(vlpet.task_weights)
    max_examples: int | None = config_key(omit_unset=True)  # vlpet.short.eval_examples of a short run


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImportCheckpoint(Settings):
    """vltune import-checkpoint (common.smk import_vlpet_params, import_epalm_params)."""

    method_config: dict | None = config_key(command_default={})  # <study>.method_configs[<method>]
    visual: dict | None = config_key(omit_unset=True)  # features.tokens (VL-BART / VL-T5)


# --- eP-ALM (workflow/rules/epalm.smk) ------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Perception(Settings):
    """vltune extract-perception (common.smk perception_params: the features section and
    epalm.normalize). Only batch_size, shard_size, normalize and dtype change what is extracted."""

    SECTION: ClassVar[str] = "features"
    batch_size: int = config_key("batch_size")
    shard_size: int = config_key("shard_size")
    num_workers: int = config_key("num_workers")
    decode: str = config_key("decode")
    precision: str = config_key("precision")
    compile: bool = config_key("compile")
    grid_layer: int = config_key("grid_layer")
    normalize: str = config_key("/epalm.normalize")
    dtype: str = config_key(command_default="float32")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpalmTrain(Settings):
    """vltune finetune-epalm (common.smk epalm_train_params)."""

    SECTION: ClassVar[str] = "epalm"
    train: dict = config_key("train")
    batch_size: int = config_key("batch_size")
    loss_weight: float = config_key("loss_weight")
    dropout: float | None = config_key("dropout")
    augment: bool = config_key("augment")
    normalize: str = config_key("normalize")
    method_config: dict | None = config_key(command_default={})  # epalm.method_configs[<method>]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpalmEvaluate(Settings):
    """vltune evaluate-epalm (common.smk epalm_evaluate_params)."""

    SECTION: ClassVar[str] = "epalm.evaluate"
    split: str = config_key("/evaluate.split")
    batch_size: int = config_key("batch_size")
    num_beams: int = config_key("num_beams")
    answer_max_len: int = config_key("answer_max_len")
    caption_max_len: int = config_key("caption_max_len")
    kv_cache: bool = config_key("kv_cache")


# --- merging study (workflow/rules/merging.smk) -------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class VlmoPretrain(Settings):
    """vltune pretrain-vlmo (common.smk vlmo_pretrain_params; ``train`` is the stage's budget)."""

    SECTION: ClassVar[str] = "merging.pretrain"
    arch: dict = config_key("/merging.arch")
    train: dict = config_key()  # merging.pretrain.<stage>
    batch_size: int = config_key("batch_size")
    mlm_prob: float = config_key("mlm_prob")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CollectGrams(Settings):
    """vltune collect-grams (merging.smk's params.hp)."""

    SECTION: ClassVar[str] = "merging.grams"
    batch_size: int = config_key("batch_size")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlmoFinetune(Settings):
    """vltune finetune-vlmo (common.smk vlmo_finetune_params); ``evaluate``: {split, batch_size}."""

    SECTION: ClassVar[str] = "merging.finetune"
    train: dict = config_key("train")
    batch_size: int = config_key("batch_size")
    evaluate: dict = config_key(command_default={})  # evaluate.split, evaluate.batch_size


# --- DAS (workflow/rules/das.smk) -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class DasFinetune(Settings):
    """vltune das-finetune (common.smk das_finetune_params)."""

    SECTION: ClassVar[str] = "das"
    train: dict = config_key("train")
    batch_size: int = config_key("batch_size")
    dropout: float | None = config_key("dropout")
    method_config: dict | None = config_key("method_config")
    visual: dict | None = config_key("/features.tokens")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DasSearch(DasFinetune):
    """vltune das-search (common.smk das_search_params: das.search less its steps, which are the
    supernet's train budget)."""

    search: dict = config_key(command_default={})  # das.search without steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class DasEvaluate(Settings):
    """vltune das-evaluate (common.smk das_evaluate_params)."""

    SECTION: ClassVar[str] = "evaluate"
    split: str = config_key("split")
    batch_size: int = config_key("batch_size")
    caption_beams: int = config_key("caption_beams")
    caption_max_len: int = config_key("caption_max_len")
    answer_max_len: int = config_key("answer_max_len")
    vqa_normalize: str | None = config_key("vqa_normalize", omit_unset=True)
    max_examples: int | None = config_key(omit_unset=True)
    latency: dict = config_key("/das.latency")
