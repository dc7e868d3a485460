"""``das``: DAS's parallel adapters on every sub-layer, and skipped encoder blocks replaced by one
larger residual adapter each (seeds-spec §2(b)). ``skip`` lists the replaced blocks; the search
that chooses them lives in :mod:`vltune.das`."""

from ..base import register_method
from .config import DasConfig
from .inject import encoder_blocks, inject_das
from .layer import DasAdapter, SkippedBlock

__all__ = ["DasConfig", "DasAdapter", "SkippedBlock", "encoder_blocks"]

register_method("das", DasConfig, inject_das, pretty_name="DAS", paper="https://arxiv.org/abs/2309.01479")
