"""Where eP-ALM's perceptual token lives in the LM: the layers it is injected into, how many
tokens, and its attention-mask mode (Shukor et al., "eP-ALM: Efficient Perceptual Augmentation of
Language Models", https://arxiv.org/abs/2303.11403). The model (``vltune.models.epalm.EPALM``)
reads it; :func:`vltune.pet.epalm.inject.inject_epalm` sets it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Injection:
    """Where the perceptual token lives in the LM (eP-ALM, arXiv 2303.11403).

    Args:
        start: layer s where the token is inserted.
        end: first layer that no longer gets a fresh token (e; layers s..e-1 are injected).
        n_tokens: M perceptual tokens (the encoder's last M [CLS] vectors), shallow → deep.
        mask: ``"full"`` (zero mask row/column, the reference) or ``"causal"``.
    """

    start: int
    end: int
    n_tokens: int
    mask: str = "full"

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"eP-ALM injection layers: need 0 <= start < end, got start={self.start}, end={self.end}")
        if self.end - self.start < self.n_tokens:
            raise ValueError(f"eP-ALM injection: {self.n_tokens} tokens need at least as many layers, "
                             f"got layers {self.start}..{self.end - 1}")
        if self.mask not in ("full", "causal"):
            raise ValueError(f"eP-ALM injection mask must be 'full' or 'causal', got {self.mask!r}")

    def token_index(self, layer: int) -> int | None:
        """Index m of the token given to ``layer`` (inserted or overwritten), or None."""
        if not self.start <= layer < self.end:
            return None
        step = (self.end - self.start) // self.n_tokens
        return min((layer - self.start) // step, self.n_tokens - 1)
