"""eP-ALM's methods: ``epalm-linear`` (connection only) and ``epalm-prompt`` (+ soft prompt), for
the frozen-LM model of ``vltune.models.epalm`` (not for the encoder-decoder VL models)."""

from ..base import register_method
from .config import EpalmLinearConfig, EpalmPromptConfig
from .inject import inject_epalm
from .layer import LinearConnector

__all__ = ["EpalmLinearConfig", "EpalmPromptConfig", "LinearConnector"]

PAPER = "https://arxiv.org/abs/2303.11403"
register_method("epalm-linear", EpalmLinearConfig, inject_epalm, pretty_name="eP-ALM (linear connection)",
                paper=PAPER, model_kind="epalm")
register_method("epalm-prompt", EpalmPromptConfig, inject_epalm, pretty_name="eP-ALM (connection + prompt)",
                paper=PAPER, model_kind="epalm")
