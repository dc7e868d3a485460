"""eP-ALM: a frozen decoder-only LM (OPT) conditioned on a frozen unimodal encoder (ViT) through one
perceptual token, injected into the LM's late layers, and an optional soft prompt.

Paper: Shukor et al., "eP-ALM: Efficient Perceptual Augmentation of Language Models" (ICCV 2023,
https://arxiv.org/abs/2303.11403); behaviour of ``mshukor/eP-ALM`` at 9ecfeb9 (``models/epalm.py``,
``models/opt.py``) as restated in eP-ALM, arXiv 2303.11403. Written from the paper, not ported: the LM is
transformers' ``OPTForCausalLM`` *unchanged* (any published OPT loads as it is) and the changes the
reference makes inside its copy of ``OPTDecoder.forward`` are forward pre-hooks on the decoder and
its layers here:

* layer 0: the soft prompt ``Q`` (P vectors of the word-embedding width, through OPT's
  ``project_in`` when it has one) goes before the text; it gets no position embedding (the text
  keeps positions 0, 1, …) and P mask columns "on the left";
* layer s: the perceptual token ``p_0`` goes before everything (sequence length + 1);
* layers s < ℓ < e: position 0 is overwritten with ``p_m``, ``m = min((ℓ − s) // ((e − s) // M), M − 1)``;
* layers ≥ e: the token is left as layer e − 1 made it.

Attention mask (``Injection.mask``): ``"full"`` (the reference's code, default) pads the 4-D mask
with a zero row and column, so the token attends to every position and every position to it; with
teacher forcing, layers ≥ e then read a token that has seen future text (eP-ALM, arXiv 2303.11403).
``"causal"`` lets the token attend only to itself, which no later position can exploit (at the
first position, every later position still attends to it).

Decoding (:meth:`EPALM.generate`). ``use_cache=False`` is the reference's accelerate scripts: every
step re-runs the whole sequence, so each step inserts the prompt and the token afresh.
``use_cache=True`` (the default) runs the same prefill and then reuses transformers' KV cache: the
prompt's keys/values sit in every layer's cache and the token's in those of layers ≥ s (so layers
< s hold one position fewer), and each step feeds only the new text token, with that layer's rows
of the same mask. This computes what the uncached path computes, because a cached position's
keys/values never depend on later text — except in one case: with ``"full"`` and e < the number of
layers, the token leaves layer e − 1 having attended to all text, so its state, and with it every
position's in layers > e, changes with each new token. There each step re-queries the token at
layer e − 1 (against the cached keys) and re-runs layers ≥ e over the whole sequence from their
stored inputs (kept in the cache, so beam search reorders them with it). One difference remains
there: a left pad at a layer with neither the prompt nor the token has no key to attend to, so its
softmax is uniform over all keys, later text included; ``"full"`` lets the token read the pads, so
without a cache their change reaches the text (of the order 1e-6 in the logits), while the cache
keeps their prefill value. With a prompt, or the token from layer 0, every pad row has a key and
the two paths agree to rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..pet.epalm.injection import Injection


def extended_mask(text_mask: torch.Tensor, n_prompt: int, visual: bool, mode: str, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D mask (B, 1, N, N) over ``[visual?][prompt][text]``: causal over prompt + text
    with padded text keys masked; the visual token's row/column per ``mode`` (see the module doc)."""
    b, t = text_mask.shape
    n = n_prompt + t
    keys = torch.cat([text_mask.new_ones(b, n_prompt), text_mask], dim=1).bool()
    allowed = torch.ones(n, n, dtype=torch.bool, device=text_mask.device).tril()[None] & keys[:, None, :]
    if visual:
        allowed = nn.functional.pad(allowed, (1, 0, 1, 0), value=True)
        if mode == "causal":
            allowed[:, 0, 1:] = False
    mask = torch.zeros(allowed.shape, dtype=dtype, device=text_mask.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass
class _Run:
    """State of one LM forward call under injection (set by the decoder hook, read by the layer hooks)."""

    tokens: torch.Tensor | None  # (B, M, D) perceptual tokens
    prompt: torch.Tensor | None  # (P, D) prompt in the hidden width (after project_in)
    text_mask: torch.Tensor | None = None
    masks: dict | None = None
    kv_cache: bool = False  # generate(use_cache=True): a KV cache may be filled and read
    step: bool = False  # this call feeds only new text after a filled cache
    n_new: int = 0  # text positions fed by this call
    text_len: int = 0  # text positions so far (prompt and token not counted)
    cache: object = None  # the transformers Cache of this call (None without one)


class _StoreAfterToken:
    """A view of a transformers ``Cache`` for one call of a layer whose input is ``[token; new
    text]`` while the layer's cache already holds the token's keys/values: stores only the new text's
    and returns the whole layer (the cached token's keys included)."""

    def __init__(self, cache):
        self.cache = cache

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.cache.update(keys[:, :, 1:], values[:, :, 1:], layer_idx, *args, **kwargs)


class EPALM(nn.Module):
    """Frozen ``OPTForCausalLM`` + frozen ViT (or cached [CLS] vectors) + the eP-ALM slots.

    The PET methods ``epalm-linear`` / ``epalm-prompt`` (``vltune.pet.epalm``) fill the slots:
    ``connector`` ((B, M, d_v) → (B, M, D)), ``prompt`` (an ``InputPrompt``, or None) and
    ``injection``. With the slots empty the model is the plain LM.

    Args:
        lm: the (pretrained) OPT; its modules keep their names under ``lm.``.
        encoder: a timm ViT, or None when training reads cached [CLS] vectors.
        vision_width, vision_depth: d_v and the number of encoder blocks (from ``encoder`` if given).
    """

    def __init__(self, lm: nn.Module, encoder: nn.Module | None = None, vision_width: int | None = None,
                 vision_depth: int | None = None):
        super().__init__()
        if getattr(lm.config, "model_type", None) != "opt":
            raise ValueError(f"eP-ALM hooks OPT decoder layers; got a {getattr(lm.config, 'model_type', None)!r} model")
        self.lm = lm
        self.config = lm.config
        self.encoder = encoder
        self.vision_width = int(vision_width or encoder.embed_dim)
        self.vision_depth = int(vision_depth or len(encoder.blocks))
        self.connector: nn.Module | None = None
        self.prompt: nn.Module | None = None
        self.injection: Injection | None = None
        self._run: _Run | None = None
        decoder = self.decoder
        decoder.register_forward_pre_hook(self._decoder_pre_hook, with_kwargs=True)
        for i, layer in enumerate(decoder.layers):
            layer.register_forward_pre_hook(partial(self._layer_pre_hook, i), with_kwargs=True)

    @property
    def decoder(self) -> nn.Module:
        return self.lm.model.decoder

    @property
    def n_prefix(self) -> int:
        """Positions before the text in the LM's output: the perceptual token and the prompt."""
        n_prompt = 0 if self.prompt is None else self.prompt.embedding.num_embeddings
        return n_prompt + (self.connector is not None)

    # --- perception ----------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, depth, d_v) [CLS] after every encoder block, through the final norm (frozen: no grad)."""
        from ..backbones.vit import block_cls

        if self.encoder is None:
            raise ValueError("this eP-ALM model has no encoder: pass cached perception instead of pixel_values")
        with torch.no_grad():
            return block_cls(self.encoder, pixel_values)

    def perceptual_tokens(self, perception: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None):
        """(B, M, D) connector outputs from the encoder's last M [CLS] vectors (cached or recomputed)."""
        if self.connector is None or self.injection is None:
            raise ValueError("no eP-ALM connector: apply the epalm-linear or epalm-prompt method first")
        if perception is None:
            if pixel_values is None:
                raise ValueError("eP-ALM needs either cached perception (B, depth, d_v) or pixel_values")
            perception = self.encode_images(pixel_values)
        if perception.ndim != 3 or perception.shape[1] < self.injection.n_tokens or perception.shape[2] != self.vision_width:
            raise ValueError(f"perception must be (B, depth >= {self.injection.n_tokens}, {self.vision_width}) "
                             f"[CLS] vectors, got {tuple(perception.shape)}")
        return self.connector(perception[:, -self.injection.n_tokens:].to(self._dtype()))

    def _dtype(self) -> torch.dtype:
        return self.decoder.embed_tokens.weight.dtype

    # --- hooks ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _injecting(self, tokens: torch.Tensor | None, kv_cache: bool = False):
        prompt = None
        if self.prompt is not None:
            prompt = self.prompt(1)[0]
            if self.decoder.project_in is not None:
                prompt = self.decoder.project_in(prompt)
        self._run = _Run(tokens, prompt, kv_cache=kv_cache) if tokens is not None or prompt is not None else None
        try:
            yield
        finally:
            self._run = None

    @staticmethod
    def _cache_key(kwargs) -> str:
        return "past_key_values" if "past_key_values" in kwargs else "cache"

    def _refreshes_token(self) -> bool:
        """True when the token's state after layer e − 1 depends on the text (``"full"`` mask and
        e < the number of layers): cached steps then re-run layers ≥ e (see the module doc)."""
        run = self._run
        return (run.tokens is not None and self.injection.mask == "full"
                and self.injection.end < len(self.decoder.layers))

    def _decoder_pre_hook(self, module, args, kwargs):
        run = self._run
        if run is None:
            return None
        cache = kwargs.get(self._cache_key(kwargs))
        past = 0 if cache is None else cache.get_seq_length()
        if not run.kv_cache and (kwargs.get("use_cache") or past > 0):
            raise NotImplementedError("eP-ALM reads a KV cache only through EPALM.generate(use_cache=True)")
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs["inputs_embeds"]
        mask = kwargs.get("attention_mask")
        run.cache, run.step, run.n_new, run.masks = cache, past > 0, ref.shape[1], {}
        run.text_len = run.text_len + ref.shape[1] if run.step else ref.shape[1]
        if mask is None:  # generate drops an all-ones mask
            mask = torch.ones(len(ref), run.text_len, dtype=torch.long, device=ref.device)
        run.text_mask = mask
        if not run.step:
            return None
        # a step: the 2-D mask spans the text only, while the cache also holds the prompt (and the
        # token); give OPT the text positions and no mask (every layer gets its own below)
        kwargs = {**kwargs, "attention_mask": None}
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = (mask.cumsum(1) * mask - 1)[:, -run.n_new:].long()  # OPT's own rule
        return args, kwargs

    def _mask(self, visual: bool, dtype: torch.dtype) -> torch.Tensor:
        run = self._run
        key = (visual, dtype)
        if key not in run.masks:
            n_prompt = 0 if run.prompt is None else len(run.prompt)
            mode = self.injection.mask if self.injection is not None else "full"
            run.masks[key] = extended_mask(run.text_mask, n_prompt, visual, mode, dtype)
        return run.masks[key]

    def _layer_pre_hook(self, layer: int, module, args, kwargs):
        run = self._run
        if run is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if run.step:
            return self._cached_layer_pre_hook(layer, hidden, args, kwargs)
        if layer == 0 and run.prompt is not None:
            hidden = torch.cat([run.prompt.to(hidden.dtype).expand(len(hidden), -1, -1), hidden], dim=1)
        m = None if run.tokens is None else self.injection.token_index(layer)
        if m is not None:
            token = _per_row(run.tokens[:, m], len(hidden)).to(hidden.dtype)[:, None]
            rest = hidden if layer == self.injection.start else hidden[:, 1:]
            hidden = torch.cat([token, rest], dim=1)
        visual = run.tokens is not None and layer >= self.injection.start
        kwargs = {**kwargs, "attention_mask": self._mask(visual, hidden.dtype)}
        if run.cache is not None and self._refreshes_token() and layer >= self.injection.end:
            if layer == self.injection.end:  # keep the inputs of layer e (after the token) for the steps
                self._inputs_after_end(run.cache).update(hidden[:, None, 1:], hidden[:, None, 1:, :0])
            kwargs[self._cache_key(kwargs)] = None  # layers >= e are re-run over the whole sequence
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _inputs_after_end(self, cache):
        """The cache layer (one past the LM's) that holds layer e's inputs (B, 1, N - 1, D) after
        the token, reordered by beam search with the rest of the cache."""
        from transformers.cache_utils import DynamicLayer

        n = len(self.decoder.layers)
        while len(cache.layers) <= n:
            cache.layers.append(DynamicLayer())
        return cache.layers[n]

    def _cached_layer_pre_hook(self, layer: int, hidden: torch.Tensor, args, kwargs):
        """A step after the prefill: ``hidden`` holds only the new text; the prompt and the token
        are in the cache. Gives each layer its rows of the uncached mask (and see the module doc
        for ``"full"`` with e < the number of layers)."""
        run = self._run
        visual = run.tokens is not None and layer >= self.injection.start
        full = self._mask(visual, hidden.dtype)
        mask = full[:, :, -run.n_new:]
        key = self._cache_key(kwargs)
        if self._refreshes_token():
            end = self.injection.end
            if layer == end - 1:  # re-query the token (its keys/values are cached) with the new text
                token = _per_row(run.tokens[:, self.injection.token_index(layer)], len(hidden)).to(hidden.dtype)
                hidden = torch.cat([token[:, None], hidden], dim=1)
                mask = torch.cat([full[:, :, :1], mask], dim=2)
                kwargs = {**kwargs, key: _StoreAfterToken(kwargs[key])}
            elif layer == end:  # [token; new text] from layer e - 1 → the whole sequence
                stored = self._inputs_after_end(run.cache)
                rest, _ = stored.update(hidden[:, None, 1:], hidden[:, None, 1:, :0])
                hidden, mask = torch.cat([hidden[:, :1], rest[:, 0]], dim=1), full
                kwargs = {**kwargs, key: None}
            elif layer > end:
                mask = full
                kwargs = {**kwargs, key: None}
        kwargs = {**kwargs, "attention_mask": mask}
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    # --- training and inference ----------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, perception: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None):
        """LM output over ``[visual][prompt][text]``: ``logits`` has :attr:`n_prefix` extra positions
        in front; logits at text position t predict text token t + 1."""
        tokens = None if self.connector is None else self.perceptual_tokens(perception, pixel_values)
        with self._injecting(tokens):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, perception: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, use_cache: bool = True, **gen_kwargs) -> torch.Tensor:
        """``OPTForCausalLM.generate`` (greedy or beam search) under injection; returns only the new
        tokens. Prompts must be left-padded (the last position is the last text token).

        ``use_cache=True`` decodes with transformers' KV cache, ``False`` re-runs the whole sequence
        at every step (the reference); both compute the same (see the module doc)."""
        if attention_mask[:, -1].eq(0).any():
            raise ValueError("eP-ALM generation needs left-padded prompts (a right pad would be read as the last token)")
        tokens = None if self.connector is None else self.perceptual_tokens(perception, pixel_values)
        with self._injecting(tokens, kv_cache=use_cache):
            out = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                                   **gen_kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        new = sequences[:, input_ids.shape[1]:]
        if isinstance(out, torch.Tensor):
            return new
        out.sequences = new
        return out


def _per_row(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` (B, ...) repeated for ``rows`` = B × k rows, as generate expands a batch for k beams."""
    if len(x) == rows:
        return x
    if rows % len(x):
        raise ValueError(f"cannot spread {len(x)} perceptual tokens over {rows} sequences")
    return x.repeat_interleave(rows // len(x), dim=0)


def text_logits(model: EPALM, output) -> torch.Tensor:
    """The logits at the text positions (drops the perceptual token and prompt positions)."""
    return output.logits[:, model.n_prefix:]
