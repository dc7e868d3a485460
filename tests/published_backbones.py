"""Published backbones with random weights, saved as vltune saves them after fetching.

:func:`write_backbone` writes a local folder holding the *published* architecture of one of the
seeds' backbones (its config's published values, its tokenizer's real vocabulary size and
special-token ids) with seeded random weights, in the layout the Hub gives after
``save_pretrained`` (transformers: ``config.json``, ``generation_config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) or timm's ``save_for_hf``
(``config.json``, ``model.safetensors``). Such a folder is what a ``published: {source: <folder>}``
entry of the pipeline points at, so the real loading path runs without the network.

The tokenizers are trained here on a small fixed English text (so words tokenize into sensible
pieces) and padded with unreachable filler entries up to the published vocabulary size, with the
special tokens at their published ids:

- BART / OPT: byte-level BPE, 50265 entries, ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3,
  ``<mask>`` 50264 (BART's RobertaTokenizer; OPT's GPT2Tokenizer, whose bos, eos and unk are all
  ``</s>`` and which prepends it, as facebook/opt-125m's tokenizer_config says). Fillers
  ``madeupwordNNNNN`` (as fairseq's dictionaries pad theirs) have no merge producing them.
- T5: a Unigram over Metaspace pieces, 32000 pieces (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) then
  ``<extra_id_99>`` … ``<extra_id_0>`` at 32000 … 32099, as google-t5/t5-base. Fillers are pieces
  of private-use characters (never in text) with a very low score. Unlike the real one it has no
  precompiled NFKC normalizer. (The corpus yields a few hundred learned pieces in either model.)

bart-base's generation settings from its published config.json (forced_bos_token_id 0, 4 beams,
no_repeat_ngram_size 3, early_stopping) go to generation_config.json, where transformers 5 puts
them when it loads the real one. In tests: the ``published_backbones`` / ``published_backbones_full``
fixtures of tests/conftest.py.

``layers`` cuts the depth (BART/T5 encoder and decoder layers, OPT's decoder layers, the ViT's
blocks); width, heads, vocabulary, special tokens, positions, image size and patch stay as
published. The ResNet (clip-rn101) keeps its layout always.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

SEED = 0

LANGUAGE = ("bart-base", "t5-base", "opt-125m")
IMAGE = ("vit-b16", "clip-rn101")
NAMES = LANGUAGE + IMAGE

# vltune's loader kind per backbone (fetch_backbone's ``kind``)
KIND = {"bart-base": "seq2seq", "t5-base": "seq2seq", "opt-125m": "causal", "vit-b16": "image", "clip-rn101": "image"}

# the published models' parameter counts at full depth, as transformers / timm count them (tied
# embeddings once; timm's with num_classes=0, i.e. no classifier)
PARAMETERS = {"bart-base": 139_420_416, "t5-base": 222_903_552, "opt-125m": 125_239_296,
              "vit-b16": 85_798_656}

TIMM_NAME = {"vit-b16": "vit_base_patch16_224.augreg2_in21k_ft_in1k", "clip-rn101": "resnet101_clip.openai"}

BPE_VOCAB = 50265   # facebook/bart-base and facebook/opt-125m tokenizers (GPT-2's BPE, fairseq ids)
T5_PIECES = 32000   # google-t5/t5-base's sentencepiece model; + 100 <extra_id_k> = 32100
T5_EXTRA_IDS = 100

CORPUS = """\
The quick brown fox jumps over the lazy dog. A picture of a red circle to the left of a blue square.
An image of two green triangles and a yellow cross in the top right corner of the picture.
How many circles are there? There are three circles. Is there a purple square? No, there is not.
What color is the shape to the right of the triangle? It is orange. What shape is in the center?
Is the left image showing more shapes than the right image? Yes. The statement is true or false.
A small white dog is sitting on a wooden bench in the park, next to a woman reading a book.
Two people are walking along the beach at sunset while the waves roll onto the sand.
A man riding a bicycle down a busy city street past tall buildings and parked cars.
A plate of food with rice, vegetables and a piece of chicken on a table in a restaurant.
A group of children playing football on a green field under a clear blue sky.
The cat is sleeping on the sofa near the window, and the sun is shining through the glass.
Question: what is the man holding in his hand? Answer: an umbrella. Question: where is the bus?
The train arrives at the station at nine o'clock in the morning and leaves again at noon.
She said that the weather would be cold tomorrow, so we should bring our coats and hats.
This is a sentence about language models, vision, images, questions, answers and captions.
In the beginning of the year, the company announced new products for their customers.
People often talk about the history of the country, its government, its music and its art.
He looked at the large black horse standing in the middle of the road and did not move.
Their house has four rooms, a kitchen, a garden with flowers and a small swimming pool.
We went to the market to buy apples, bananas, oranges, bread, milk, cheese and some water.
Please describe the image in one sentence. Find the object that matches the description.
Which one is bigger, the circle or the square? The square is bigger than the circle.
Every shape has a color, a size and a position: top, bottom, left, right or center.
A few birds are flying over the mountains, and a river runs through the valley below.
The students were reading, writing and learning new words in the classroom all afternoon.
"""


def _corpus() -> list[str]:
    lines = CORPUS.splitlines()
    # each line a few times, also lowercased and without punctuation, so frequent words merge
    out = []
    for line in lines:
        out += [line] * 3 + [line.lower(), line.replace(".", "").replace(",", "").replace("?", "")]
    return out


# --- tokenizers -------------------------------------------------------------------------------


@functools.cache
def _bpe_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE with fairseq's ids: 0-3 specials, learned tokens, fillers, ``<mask>`` last."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    with _serial_tokenizers():
        tok.train_from_iterator(_corpus(), trainer)
    import json

    model = json.loads(tok.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    assert [t for t, _ in learned[:4]] == specials
    vocab = {t: i for i, (t, _) in enumerate(learned)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    k = 0
    while len(vocab) < BPE_VOCAB - 1:
        filler = f"madeupword{k:05d}"
        k += 1
        if filler not in vocab:
            vocab[filler] = len(vocab)
    vocab["<mask>"] = BPE_VOCAB - 1
    return vocab, merges


def bart_tokenizer():
    """facebook/bart-base's tokenizer class (RobertaTokenizer in transformers 5) with 50265 entries."""
    from transformers import BartTokenizerFast

    vocab, merges = _bpe_vocab_merges()
    vocab, merges = dict(vocab), list(merges)
    return BartTokenizerFast(vocab=vocab, merges=merges, model_max_length=1024)


def opt_tokenizer():
    """facebook/opt-125m's tokenizer: GPT-2's byte-level BPE with fairseq ids; bos = eos = unk =
    ``</s>`` (id 2), pad ``<pad>`` (1), and the bos prepended to every text."""
    from transformers import GPT2TokenizerFast

    vocab, merges = _bpe_vocab_merges()
    vocab, merges = dict(vocab), list(merges)
    return GPT2TokenizerFast(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>",
                             pad_token="<pad>", add_bos_token=True)


@contextlib.contextmanager
def _serial_tokenizers():
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


@functools.cache
def _t5_pieces() -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    trainer = trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    with _serial_tokenizers():  # EM's sums over threads differ in the last bits between runs
        tok.train_from_iterator(_corpus(), trainer)
    import json

    pieces = [(p, float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    assert [p for p, _ in pieces[:3]] == specials
    # The trainer adds the corpus' characters it did not keep below every piece it kept, each 1e-4
    # below the last, in hash order: give them those scores in character order. Then canonical
    # order and rounded scores, so the same pieces always give the same file.
    lowest_kept = min(sc for p, sc in pieces[3:] if len(p) > 1)
    singles = {p: sc for p, sc in pieces[3:] if len(p) == 1}
    run = [p for p, sc in singles.items() if sc < lowest_kept]
    rescored = dict(zip(sorted(run), sorted((singles[p] for p in run), reverse=True)))
    pieces = [(p, rescored.get(p, sc)) for p, sc in pieces]
    pieces = pieces[:3] + sorted(((p, round(s, 6)) for p, s in pieces[3:]), key=lambda ps: (-ps[1], ps[0]))
    floor = min(s for _, s in pieces[3:]) - 100.0
    seen = {p for p, _ in pieces}
    k = 0
    while len(pieces) < T5_PIECES:
        filler = chr(0xF0000 + k)  # supplementary private-use area: never in text
        k += 1
        if filler not in seen:
            pieces.append((filler, floor))
    return pieces + [(f"<extra_id_{i}>", 0.0) for i in range(T5_EXTRA_IDS - 1, -1, -1)]


def t5_tokenizer():
    """google-t5/t5-base's tokenizer class (T5Tokenizer in transformers 5): 32000 pieces + 100
    sentinels, ``<extra_id_0>`` = 32099."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=list(_t5_pieces()), extra_ids=T5_EXTRA_IDS, model_max_length=512)


# --- configs ----------------------------------------------------------------------------------


def bart_config(layers: int | None = None):
    """facebook/bart-base's config.json."""
    from transformers import BartConfig

    n = 6 if layers is None else layers
    return BartConfig(
        vocab_size=50265, d_model=768, encoder_layers=n, decoder_layers=n, encoder_attention_heads=12,
        decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
        activation_function="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
        classifier_dropout=0.0, init_std=0.02, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        scale_embedding=False, use_cache=True, num_labels=3, is_encoder_decoder=True,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
        forced_bos_token_id=0, forced_eos_token_id=2, architectures=["BartModel"])


def t5_config(layers: int | None = None):
    """google-t5/t5-base's config.json."""
    from transformers import T5Config

    n = 12 if layers is None else layers
    return T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=n, num_decoder_layers=n, num_heads=12,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
        layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="relu", is_encoder_decoder=True,
        use_cache=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, n_positions=512,
        tie_word_embeddings=True, architectures=["T5ForConditionalGeneration"])


def opt_config(layers: int | None = None):
    """facebook/opt-125m's config.json."""
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=50272, hidden_size=768, num_hidden_layers=12 if layers is None else layers, ffn_dim=3072,
        num_attention_heads=12, max_position_embeddings=2048, word_embed_proj_dim=768,
        do_layer_norm_before=True, _remove_final_layer_norm=False, activation_function="relu",
        dropout=0.1, attention_dropout=0.0, layerdrop=0.0, init_std=0.02, enable_bias=True, use_cache=True,
        bos_token_id=2, eos_token_id=2, pad_token_id=1, prefix="</s>", architectures=["OPTForCausalLM"])


CONFIG = {"bart-base": bart_config, "t5-base": t5_config, "opt-125m": opt_config}

# Generation settings in the published config.json that transformers 5 keeps out of the model
# config: from_pretrained moves them into the generation config, so a fetched facebook/bart-base
# saves them in generation_config.json (and generate() uses them unless told otherwise).
GENERATION = {"bart-base": dict(forced_bos_token_id=0, num_beams=4, no_repeat_ngram_size=3, early_stopping=True)}
TOKENIZER = {"bart-base": bart_tokenizer, "t5-base": t5_tokenizer, "opt-125m": opt_tokenizer}


# --- models -----------------------------------------------------------------------------------


def build_model(name: str, layers: int | None = None, device: str | None = None):
    """The model of ``name`` (random weights, seeded), as vltune's loader builds it after fetching:
    BART / T5 with their LM head, OPT causal, timm with ``num_classes=0``. ``device="meta"``
    builds it without memory (for counting parameters)."""
    import torch

    if name not in NAMES:
        raise KeyError(f"{name!r}: not one of {', '.join(NAMES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        ctx = torch.device(device) if device else torch.device("cpu")
        with ctx:
            if name in TIMM_NAME:
                import timm

                kwargs = {}
                if layers is not None:
                    if name == "clip-rn101":
                        raise ValueError("clip-rn101 keeps its published layout (no depth cut)")
                    kwargs["depth"] = layers
                return timm.create_model(TIMM_NAME[name], pretrained=False, num_classes=0, **kwargs).eval()
            from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

            auto = AutoModelForCausalLM if KIND[name] == "causal" else AutoModelForSeq2SeqLM
            model = auto.from_config(CONFIG[name](layers)).eval()
            for key, value in GENERATION.get(name, {}).items():
                setattr(model.generation_config, key, value)
            return model


def parameter_count(name: str, layers: int | None = None) -> int:
    """Parameters of ``name`` (tied ones once), built on the meta device: no memory, no files."""
    return sum(p.numel() for p in build_model(name, layers, device="meta").parameters())


def write_backbone(name: str, out_dir: str | os.PathLike, layers: int | None = None) -> Path:
    """Write ``name``'s published architecture with random weights (seed :data:`SEED`) to
    ``out_dir``, as the Hub's folder after ``save_pretrained`` (transformers: model +
    tokenizer) or timm's ``save_for_hf``; returns ``out_dir``.

    ``layers`` cuts the depth (not for clip-rn101). The folder is built next to ``out_dir`` and
    renamed into place, so a reader never sees half of it; ``out_dir`` must not exist or be empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = build_model(name, layers)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if name in TIMM_NAME:
            from timm.models import save_for_hf

            save_for_hf(model, tmp, safe_serialization=True)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            TOKENIZER[name]().save_pretrained(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_backbones(root: str | os.PathLike, names=NAMES, layers: int | None = None) -> dict[str, Path]:
    """:func:`write_backbone` for each of ``names`` into ``root/<name>``; ``layers`` applies to
    all but clip-rn101, which is always whole."""
    root = Path(root)
    return {n: write_backbone(n, root / n, None if n == "clip-rn101" else layers) for n in names}


class BackboneFolders(Mapping):
    """name → folder under ``root``, each written on first access (so a test that needs one
    backbone does not pay for all). ``layers`` as in :func:`write_backbones`."""

    def __init__(self, root: str | os.PathLike, layers: int | None = None, names=NAMES):
        self.root, self.layers, self.names = Path(root), layers, tuple(names)
        self._done: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.names:
            raise KeyError(name)
        if name not in self._done:
            layers = None if name == "clip-rn101" else self.layers
            self._done[name] = write_backbone(name, self.root / name, layers)
        return self._done[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
