"""Checks of a validated workflow config that its JSON schema cannot express (workflow/rules/
common.smk runs them while parsing, before any job). Each raises ValueError naming the key.
Torch-free: the PET registry's config dataclasses are."""

from __future__ import annotations

import math


def check_finite(value, key: str = "config") -> None:
    """YAML reads `.nan` and `.inf` as numbers, which JSON schema's `number` admits: refused here,
    naming the key, before they become a learning rate or a budget."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}" if key != "config" else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {key}: {value} is not a finite number")


def check_method_configs(config: dict) -> None:
    """Each method's hyper-parameters through its config dataclass now, so a typo in
    `vlpet.method_configs`, `epalm.method_configs` or `das.method_config` stops the workflow before
    any job (the schema cannot know the keys). DAS's `skip` is the search's result, never a config value."""
    from .pet import resolve_config

    checks = [(f"{section}.method_configs.{method}", method, overrides)
              for section in ("vlpet", "epalm") for method, overrides in config[section]["method_configs"].items()]
    das = (config.get("das") or {}).get("method_config", {})
    if "skip" in das:
        raise ValueError("config key das.method_config.skip: the skip set comes from das_search's skip.json")
    checks.append(("das.method_config", "das", das))
    for key, method, overrides in checks:
        try:
            resolve_config({**overrides, "method": method})
        except ValueError as e:
            raise ValueError(f"config key {key}: {e}") from None


def check_data_and_backbones(config: dict) -> None:
    """What the schema cannot say: a real dataset names its sources, and each backbone is either
    fetched (`published`) or pretrained here (`arch` and `train`)."""
    if config["dataset"] != "shapes" and not config["download"]["sources"]:
        raise ValueError(f"config key download.sources: dataset {config['dataset']!r} is not the synthetic "
                         "'shapes' world, so list the official sources to convert (e.g. [coco2014, vqav2])")
    for key, b in config["backbones"].items():
        if b.get("published") is None and not ("arch" in b and "train" in b):
            raise ValueError(f"config key backbones.{key}: give `published` (a backbone to fetch) or both "
                             "`arch` and `train` (a tiny one the pipeline pretrains)")
