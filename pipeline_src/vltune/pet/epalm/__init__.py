"""eP-ALM's methods: ``epalm-linear`` (connection only) and ``epalm-prompt`` (+ soft prompt), for
the frozen-LM model of ``vltune.models.epalm`` (not for the encoder-decoder VL models)."""

from ..config import register_method
from .config import EpalmLinearConfig, EpalmPromptConfig

__all__ = ["EpalmLinearConfig", "EpalmPromptConfig"]

PAPER = "https://arxiv.org/abs/2303.11403"
INJECT = "vltune.pet.epalm.inject:inject_epalm"
register_method("epalm-linear", EpalmLinearConfig, INJECT, pretty_name="eP-ALM (linear connection)",
                paper=PAPER, model_kind="epalm")
register_method("epalm-prompt", EpalmPromptConfig, INJECT, pretty_name="eP-ALM (connection + prompt)",
                paper=PAPER, model_kind="epalm")
