"""Configs of eP-ALM's two variants: the linear connection alone, and connection + soft prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PetConfig, check_positive, check_types


@dataclass
class EpalmLinearConfig(PetConfig):
    """``epalm-linear`` (the paper's eP-ALM_lin): only the linear connection trains.

    Defaults are the shipped configs' (``ePALM_{vqa,caption,gqa}.yaml``, eP-ALM, arXiv 2303.11403).

    Args:
        n_tokens: M, how many of the encoder's last [CLS] vectors become perceptual tokens
            (``injected_hidden_states``, 6).
        shared_connector: one Linear(d_v → D) for all M tokens (the pt-L configs) instead of M.
        start_layer: s, the LM layer where the token is inserted; null = 12 layers before
            ``end_layer`` (19 on a 32-layer OPT, 11 on OPT-350M's 24, as the reference).
        end_layer: e, the first layer not injected; null = the LM's last layer (31 / 23).
        mask: ``full`` = the reference code's zero mask row and column (the token sees the whole
            text, future included); ``causal`` = the token attends only to itself.
    """

    modules_to_save: list[str] = field(default_factory=list, metadata={"help": "modules trained in full"})
    n_tokens: int = field(default=6, metadata={"help": "M perceptual tokens (last M encoder [CLS])"})
    shared_connector: bool = field(default=False, metadata={"help": "one Linear shared by the M tokens"})
    start_layer: int | None = field(default=None, metadata={"help": "s; null: end_layer - 12"})
    end_layer: int | None = field(default=None, metadata={"help": "e (exclusive); null: last LM layer"})
    mask: str = field(default="full", metadata={"help": "full (reference code) or causal"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "n_tokens")
        for name in ("start_layer", "end_layer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{self.method}: {name} must be an int >= 0 or null, got {value!r}")
        if self.mask not in ("full", "causal"):
            raise ValueError(f"{self.method}: mask must be 'full' or 'causal', got {self.mask!r}")
        if not isinstance(self.shared_connector, bool):
            raise ValueError(f"{self.method}: shared_connector must be true or false, got {self.shared_connector!r}")

    def _window(self, n_layers: int) -> tuple[int, int]:
        end = n_layers - 1 if self.end_layer is None else self.end_layer
        return (max(0, end - 12) if self.start_layer is None else self.start_layer), end

    def window_error(self, n_layers: int, lm: str) -> str | None:
        """None if the injection window fits an LM of ``n_layers`` layers (``0 <= s < e <=
        n_layers``); else one line naming the config key to change, the LM ``lm`` and its depth."""
        start, end = self._window(n_layers)
        if 0 <= start < end <= n_layers:
            return None
        key = "start_layer" if end <= n_layers and self.start_layer is not None else "end_layer"
        return (f"config key epalm.method_configs.{self.method}.{key}: injection layers start_layer={start}, "
                f"end_layer={end} do not fit {lm}, which has {n_layers} layers "
                f"(need 0 <= start_layer < end_layer <= {n_layers})")

    def layers(self, n_layers: int) -> tuple[int, int]:
        """(s, e) on an LM of ``n_layers`` layers, defaults resolved; ValueError if outside it."""
        start, end = self._window(n_layers)
        if self.window_error(n_layers, "the LM"):
            raise ValueError(f"{self.method}: injection layers {start}..{end - 1} (start_layer={self.start_layer}, "
                             f"end_layer={self.end_layer}) do not fit an LM of {n_layers} layers")
        return start, end


@dataclass
class EpalmPromptConfig(EpalmLinearConfig):
    """``epalm-prompt`` (eP-ALM_pt; the shipped configs): linear connection + soft prompt.

    Args:
        prompt_len: P prompt vectors before the text (10 in every shipped config).
        prompt_mlp: re-parameterise the prompt table by ``Linear(D_w, D_w) → tanh → Linear(D_w, D_w)``
            (default configs); false = a free table (pt-L configs).
    """

    prompt_len: int = field(default=10, metadata={"help": "P soft-prompt vectors"})
    prompt_mlp: bool = field(default=True, metadata={"help": "MLP re-parameterisation of the prompt"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "prompt_len")
        check_types(self)
