"""Configs of the methods that add no layer and only choose what trains."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import PetConfig


@dataclass
class FullConfig(PetConfig):
    """``full``: every parameter trains (``modules_to_save`` is moot)."""


@dataclass
class BitFitConfig(PetConfig):
    """``bitfit``: every bias (LayerNorm biases included, as VL-Adapter's ``"bias" in name``
    selection does) plus ``modules_to_save``."""


@dataclass
class LayerNormConfig(PetConfig):
    """``layernorm``: every normalisation layer's weight and bias plus ``modules_to_save``."""
