"""Tiny OPT (transformers ``OPTForCausalLM``), pretrained by the pipeline as a causal LM on the
world's text: the frozen language model of eP-ALM.

Paper: Zhang et al., "OPT: Open Pre-trained Transformer Language Models"
(https://arxiv.org/abs/2205.01068). The architecture is transformers' unchanged (pre-LN decoder,
learned positions with OPT's offset of 2, ``lm_head`` tied to the token embedding); only the sizes
are small, so a published OPT (``facebook/opt-*``, from the local HF cache or a folder) goes through
the same eP-ALM code.

Tokenizer: the shared BPE tokenizer (BART-style ``<s> text </s>``) is copied, not changed, into an
OPT flavour saved with this backbone: same ids, OPT's template ``</s> text`` (OPT's tokenizer has
BOS = EOS = ``</s>`` and adds no EOS) and eP-ALM's answer marker ``</a>`` (eP-ALM, arXiv 2303.11403),
which the LM never sees while pretraining, like the unused embedding row 50265 of a published OPT.

Corpus: every text of the train split, one document each, with repeats (the world's frequencies
are the LM's prior): captions, NLVR2 statements, and each VQA/GQA question followed by ``</a>`` and
its answer. A web-scale OPT has seen enough question–answer text to continue eP-ALM's
``question?</a>`` with an answer although ``</a>`` is an untrained row of its table; a tiny LM
trained on the world's few sentence shapes has not, and with ``</a>`` unseen it ends every answer
at once (measured: the frozen tiny LM and a trained prompt still emit ``</s>`` after ``</a>``). So
the world's text writes its questions and answers with that marker, as a corpus writes "Q: … A: …".
A frozen LM pretrained this way knows the answer *types* of the world's questions (the language
prior) but nothing about any image.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from ..data.tables import read_table, table_path
from ..data.answers import normalize_answer
from ..train.loop import TrainConfig, train
from ..utils.tensors import pad_sequences
from .tokenizer import load_tokenizer

ANSWER_TOKEN = "</a>"  # eP-ALM's ``special_answer_token``


def load_opt_tokenizer(tokenizer_dir: str | Path):
    """The shared tokenizer in its OPT flavour (``</s> text``, BOS = EOS = ``</s>``, plus ``</a>``).

    A folder that already holds an OPT-flavoured tokenizer (a saved tiny OPT, or a published OPT's
    GPT-2 tokenizer) is returned as it is, with ``</a>`` added when it lacks it.
    """
    from tokenizers import processors

    tok = load_tokenizer(tokenizer_dir)
    if tok.bos_token != tok.eos_token:  # the shared BART-style tokenizer: make the OPT flavour
        eos = tok.eos_token
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{eos} $A", pair=f"{eos} $A {eos} $B", special_tokens=[(eos, tok.eos_token_id)]
        )
        tok.bos_token = eos
    if tok.convert_tokens_to_ids(ANSWER_TOKEN) in (None, tok.unk_token_id):
        tok.add_tokens([ANSWER_TOKEN], special_tokens=True)  # never split, skipped when decoding
    return tok


def build_tiny_opt(tokenizer, hidden: int, layers: int, heads: int, ffn: int, max_positions: int,
                   dropout: float = 0.1):
    """A small pre-LN OPT (as OPT-125m … 66b; not OPT-350m's post-LN) over ``tokenizer``'s vocabulary.

    The vocabulary is rounded up to a multiple of 8, as OPT's 50,272 rows for 50,265 tokens.
    """
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(
        vocab_size=-(-len(tokenizer) // 8) * 8, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, ffn_dim=ffn, max_position_embeddings=max_positions,
        word_embed_proj_dim=hidden, do_layer_norm_before=True, dropout=dropout, attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return OPTForCausalLM(cfg)


def lm_corpus(data_dir: str | Path, split: str = "train") -> list[str]:
    """The world's text of one split as LM documents (see the module docstring), in table order."""
    docs: list[str] = []
    caps = read_table(table_path(data_dir, "captions"), "captions")
    for row in caps.filter(pc.equal(caps["split"], split))["captions"].to_pylist():
        docs.extend(row)
    vqa = read_table(table_path(data_dir, "vqa"), "vqa")
    vqa = vqa.filter(pc.equal(vqa["split"], split)).to_pydict()
    for q, answers in zip(vqa["question"], vqa["answers"]):
        counts = Counter(normalize_answer(a) for a in answers)
        docs.append(f"{q}{ANSWER_TOKEN}{min(counts, key=lambda a: (-counts[a], a))}")  # the annotators' majority
    gqa = read_table(table_path(data_dir, "gqa"), "gqa")
    gqa = gqa.filter(pc.equal(gqa["split"], split)).to_pydict()
    docs.extend(f"{q}{ANSWER_TOKEN}{a}" for q, a in zip(gqa["question"], gqa["answer"]))
    nlvr2 = read_table(table_path(data_dir, "nlvr2"), "nlvr2")
    docs.extend(nlvr2.filter(pc.equal(nlvr2["split"], split))["statement"].to_pylist())
    return docs


def pretrain_opt(data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, arch: dict,
                 train_cfg: TrainConfig, batch_size: int, resume_dir: str | Path | None = None) -> dict:
    """Build a tiny OPT from ``arch``, train it as a causal LM (``</s> text </s>``) on
    :func:`lm_corpus`, ``save_pretrained`` it with its OPT-flavoured tokenizer; return the summary."""
    tok = load_opt_tokenizer(tokenizer_dir)
    docs = lm_corpus(data_dir, "train")
    if not docs:
        raise ValueError(f"{data_dir}: no training text for the OPT language model")
    max_len = arch["max_positions"]
    encoded = [ids[: max_len - 1] + [tok.eos_token_id]
               for ids in tok(docs, truncation=True, max_length=max_len - 1)["input_ids"]]
    torch.manual_seed(train_cfg.seed)  # initialisation depends on the config's seed only
    model = build_tiny_opt(tok, **arch)
    pad = tok.pad_token_id

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)
        seqs = [encoded[i] for i in idx]
        input_ids = pad_sequences(seqs, pad)
        # The leading </s> is the BOS: no loss on predicting it (it is never predicted).
        labels = pad_sequences([[-100, *s[1:]] for s in seqs], -100)
        return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": labels}

    def loss_fn(m, b):
        return m(**b).loss

    result = train(model, batch_fn, loss_fn, train_cfg, resume_dir=resume_dir, desc="pretrain_opt")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return result


def load_opt(path: str | Path, dropout: float | None = None):
    """A saved OPT (a tiny one from :func:`pretrain_opt` or a published ``facebook/opt-*`` folder)
    and its tokenizer (OPT flavour, with ``</a>``). ``dropout`` replaces the LM's dropout rate."""
    from transformers import OPTForCausalLM

    from ..errors import UserError
    from ..utils.io import read_json

    path = Path(path)
    model_type = read_json(path / "config.json").get("model_type")
    if model_type != "opt":
        raise UserError(f"{path}: the language model must be an OPT (model_type 'opt'), got {model_type!r}")
    overrides = {} if dropout is None else {"dropout": dropout}
    lm = OPTForCausalLM.from_pretrained(str(path), attn_implementation="sdpa", **overrides)
    tok = load_opt_tokenizer(path)
    answer_id = tok.convert_tokens_to_ids(ANSWER_TOKEN)
    if answer_id >= lm.config.vocab_size:
        # eP-ALM relies on </a> fitting in the embedding table (50265 < 50272 for OPT): a resized
        # table would add a row that must train, which frozen-LM eP-ALM never does.
        raise UserError(f"{path}: {ANSWER_TOKEN} gets id {answer_id}, outside the LM's {lm.config.vocab_size} "
                        "embedding rows; eP-ALM keeps the LM frozen and cannot add a row")
    return lm, tok
