"""Train a byte-level BPE tokenizer on the world's text (HF ``tokenizers``) and save it as a
``PreTrainedTokenizerFast``, BART-style (``<s> text </s>``).

The special-token order is chosen so that ``</s>`` is not id 2: transformers' CLIP text tower
treats ``eos_token_id == 2`` as a legacy config and pools at the *largest* token id instead of
the first ``</s>``, which would silently break the tiny CLIP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "</s>", "<mask>"]
# One learned "which visual token am I" embedding per visual position of an image (VL-T5's
# <vis_extra_id_k>): the tokenizer trained here holds 40 (the tiny CLIP's grid + [CLS] is 17); a
# published LM gets VL-T5's 100 when it is fetched (RN101's 7 × 7 grid is 49, pooled 36).
N_VIS_EXTRA_IDS = 40
N_VIS_EXTRA_IDS_PUBLISHED = 100


def vis_extra_ids(n: int) -> list[str]:
    return [f"<vis_extra_id_{k}>" for k in range(n)]


VIS_EXTRA_IDS = vis_extra_ids(N_VIS_EXTRA_IDS)


def vis_token_ids(tokenizer) -> list[int]:
    """Ids of ``<vis_extra_id_0>``, ``<vis_extra_id_1>``, … as far as ``tokenizer`` has them in a row."""
    vocab, ids = tokenizer.get_vocab(), []
    while (token := f"<vis_extra_id_{len(ids)}>") in vocab:
        ids.append(vocab[token])
    return ids


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path, max_length: int = 64):
    """Train byte-level BPE on ``texts`` and ``save_pretrained`` it into ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
    fast.add_special_tokens({"additional_special_tokens": VIS_EXTRA_IDS})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved by :func:`train_tokenizer` (or any HF tokenizer folder / hub id)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{path}: no tokenizer.json / tokenizer_config.json (run the train_tokenizer rule)")
    return AutoTokenizer.from_pretrained(str(path))


def world_texts(data_dir: str | Path, split: str = "train") -> list[str]:
    """All text of one split of the world: captions, questions, answers, statements, task words."""
    import pyarrow.compute as pc

    from ..data.tables import read_table, table_path

    texts: list[str] = ["vqa:", "gqa:", "nlvr:", "caption:", "true", "false", "yes", "no"]
    caps = read_table(table_path(data_dir, "captions"), "captions")
    caps = caps.filter(pc.equal(caps["split"], split))
    for row in caps["captions"].to_pylist():
        texts.extend(row)
    for kind, cols in (("vqa", ("question", "answers")), ("gqa", ("question", "answer")), ("nlvr2", ("statement",))):
        t = read_table(table_path(data_dir, kind), kind)
        t = t.filter(pc.equal(t["split"], split))
        for col in cols:
            for v in t[col].to_pylist():
                texts.extend(v if isinstance(v, list) else [v])
        if kind == "nlvr2":  # the NLVR2 targets, so "true"/"false" become single tokens
            texts.extend("true" if y else "false" for y in t["label"].to_pylist())
    return texts
