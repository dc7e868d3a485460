"""Fill an eP-ALM model's slots: freeze the LM and the encoder, add the connection (and prompt)."""

from __future__ import annotations

from torch import nn

from ..base import freeze, train_modules_to_save
from ..config import PetConfig
from ..prompt.layer import InputPrompt
from .config import EpalmLinearConfig, EpalmPromptConfig
from .injection import Injection
from .layer import LinearConnector

# What the injector reads and fills on an eP-ALM model (``vltune.models.epalm.EPALM``): the LM and its
# config, the encoder's width and depth, and the three slots.
_EPALM_ATTRIBUTES = ("lm", "config", "vision_width", "vision_depth", "connector", "prompt", "injection")


def inject_epalm(model: nn.Module, config: PetConfig) -> None:
    if not all(hasattr(model, name) for name in _EPALM_ATTRIBUTES):
        raise ValueError(f"PET method {config.method!r} needs an eP-ALM model (vltune.models.epalm.EPALM), "
                         f"got {type(model).__name__}")
    if model.connector is not None:
        raise ValueError(f"this eP-ALM model already has a connector; {config.method!r} cannot be applied twice")
    assert isinstance(config, EpalmLinearConfig)
    if config.n_tokens > model.vision_depth:
        raise ValueError(f"{config.method}: n_tokens={config.n_tokens} but the encoder has {model.vision_depth} blocks")
    start, end = config.layers(model.config.num_hidden_layers)
    injection = Injection(start, end, config.n_tokens, config.mask)  # checks M fits in s..e-1
    freeze(model)
    model.connector = LinearConnector(config.n_tokens, model.vision_width, model.config.hidden_size,
                                      config.shared_connector)
    attach_dtype(model, model.connector)
    if isinstance(config, EpalmPromptConfig):
        # Before OPT's project_in: the word-embedding width D_w (512 for OPT-350M), PyTorch's
        # default init (N(0, 1) table), hidden width D_w for the MLP, as the reference.
        width = model.config.word_embed_proj_dim
        model.prompt = InputPrompt(config.prompt_len, width, width if config.prompt_mlp else 0)
        attach_dtype(model, model.prompt)
    model.injection = injection
    train_modules_to_save(model, config)


def attach_dtype(model: nn.Module, layer: nn.Module) -> None:
    """Put a new slot module on the LM's device and dtype (it is a child of ``model`` already)."""
    ref = next(model.lm.parameters())
    layer.to(device=ref.device, dtype=ref.dtype)
