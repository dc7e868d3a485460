"""Tiny T5 (transformers ``T5ForConditionalGeneration``), pretrained by the pipeline as a
span-corruption denoiser on the world's text.

Paper: Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (https://arxiv.org/abs/1910.10683): about 15% of the tokens are dropped in spans of
mean length 3; each span becomes one unique sentinel in the input, and the target lists the
sentinels, each followed by the tokens it replaced.

Tokenizer: the shared BPE tokenizer (BART-style ``<s> text </s>``) is copied, not changed, into a
T5 flavour saved with this backbone: same ids, T5's ``text </s>`` template (no BOS) and
``<extra_id_k>`` sentinels appended after the ``<vis_extra_id_k>`` rows. The shared tokenizer, and
so BART and CLIP, keep their vocabulary; fine-tuning and evaluation load the tokenizer of the
backbone they use, so T5 inputs and targets never carry a BOS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..train.distributed import is_main_process
from ..train.loop import TrainConfig, train
from ..train.objectives import token_ce_terms
from ..utils.tensors import pad_sequences
from .tokenizer import load_tokenizer, world_texts

# Sentinels per sequence. World sentences are < 40 tokens, so 15% noise in spans of 3 needs at
# most 2-3; 16 leaves room for longer texts (beyond that a text gets fewer, longer spans).
N_SENTINELS = 16
SENTINELS = [f"<extra_id_{k}>" for k in range(N_SENTINELS)]


def load_t5_tokenizer(tokenizer_dir: str | Path):
    """The shared tokenizer in its T5 flavour (``text </s>``, plus :data:`SENTINELS`)."""
    from tokenizers import processors

    tok = load_tokenizer(tokenizer_dir)
    if tok.convert_tokens_to_ids(SENTINELS[0]) != tok.unk_token_id:
        return tok  # already a T5 flavour (a saved T5 backbone or checkpoint)
    eos = tok.eos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tok.eos_token_id)]
    )
    tok.add_tokens(SENTINELS, special_tokens=True)  # never split, skipped when decoding
    return tok


def build_tiny_t5(tokenizer, d_model: int, d_ff: int, d_kv: int, layers: int, heads: int,
                  relative_buckets: int = 32, relative_max_distance: int = 128, dropout: float = 0.1):
    """A small T5 v1.0 (ReLU FFN, tied embeddings) over ``tokenizer``'s vocabulary.

    As in T5 the decoder starts from ``<pad>``; there is no BOS token.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, relative_attention_num_buckets=relative_buckets,
        relative_attention_max_distance=relative_max_distance, dropout_rate=dropout, feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(cfg)


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """A uniformly random composition of ``total`` into ``parts`` positive integers."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else []
    bounds = [0, *map(int, cuts), total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def span_corrupt(ids: list[int], sentinel_ids: list[int], rng: np.random.Generator, density: float = 0.15,
                 mean_span: float = 3.0) -> tuple[list[int], list[int]]:
    """T5 span corruption of one ``w1 .. wn </s>`` sequence; returns ``(input, target)``.

    The body alternates kept and noise spans, starting with a kept one (as T5's
    ``random_spans_noise_mask``): input ``keep_0 <s_0> keep_1 <s_1> .. </s>``, target
    ``<s_0> noise_0 <s_1> noise_1 .. </s>``. At least one token is noise and one is kept when the
    body has two or more tokens.
    """
    body, eos = ids[:-1], ids[-1]
    n = len(body)
    if n < 2:  # nothing to keep: the whole body is the one noise span
        return [sentinel_ids[0], eos], [sentinel_ids[0], *body, eos]
    n_noise = min(max(int(round(density * n)), 1), n - 1)
    n_spans = min(max(int(round(n_noise / mean_span)), 1), n_noise, n - n_noise, len(sentinel_ids))
    noise_lens, keep_lens = _split(n_noise, n_spans, rng), _split(n - n_noise, n_spans, rng)
    src, tgt, i = [], [], 0
    for k, (keep, noise) in enumerate(zip(keep_lens, noise_lens)):
        src += [*body[i:i + keep], sentinel_ids[k]]
        tgt += [sentinel_ids[k], *body[i + keep:i + keep + noise]]
        i += keep + noise
    return [*src, eos], [*tgt, eos]


def pretrain_t5(data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, arch: dict,
                train_cfg: TrainConfig, batch_size: int, resume_dir: str | Path | None = None) -> dict:
    """Build a tiny T5 from ``arch``, pretrain it on span corruption, ``save_pretrained`` it (with its
    T5-flavoured tokenizer) into ``out_dir``; return the training summary."""
    tok = load_t5_tokenizer(tokenizer_dir)
    sentinel_ids = tok.convert_tokens_to_ids(SENTINELS)
    texts = sorted(set(world_texts(data_dir, "train")))
    encoded = tok(texts, truncation=True)["input_ids"]  # the tokenizer's model_max_length
    torch.manual_seed(train_cfg.seed)  # initialisation depends on the config's seed only
    model = build_tiny_t5(tok, **arch)
    pad = tok.pad_token_id

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)
        src, tgt = zip(*(span_corrupt(encoded[i], sentinel_ids, rng) for i in idx))
        input_ids = pad_sequences(list(src), pad)
        return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(),
                "labels": pad_sequences(list(tgt), -100)}

    result = train(model, batch_fn, token_ce_terms, train_cfg, resume_dir=resume_dir, desc="pretrain_t5")
    if not is_main_process():  # rank 0 writes the backbone
        return result
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return result
