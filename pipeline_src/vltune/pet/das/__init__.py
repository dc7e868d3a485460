"""``das``: DAS's parallel adapters on every sub-layer, and skipped encoder blocks replaced by one
larger residual adapter each. ``skip`` lists the replaced blocks; the search
that chooses them lives in :mod:`vltune.das`. Layers in ``.layer``, injection in ``.inject``."""

from ..config import register_method
from .config import DasConfig

__all__ = ["DasConfig"]

register_method("das", DasConfig, "vltune.pet.das.inject:inject_das", pretty_name="DAS",
                paper="https://arxiv.org/abs/2309.01479")
