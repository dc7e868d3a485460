"""Published backbones by name or path: fetched once into ``resources/backbones/<name>/``.

Language models (BART, T5, OPT) load with transformers' ``from_pretrained``; image encoders (ViT,
CLIP RN101 / ViT-B/32) with timm. timm, because it is the one library installed here that has all
four image towers the seeds use with their published weights: transformers' ``CLIPModel`` has no
ResNet tower (so no RN101 grids), and open_clip is not a dependency. timm's ``resnet101_clip.openai``
is OpenAI's RN101 image tower (56.26 M parameters; ``forward_features`` = the layer-4 grid before
attention pooling) and ``vit_base_patch32_clip_224.openai`` its ViT-B/32.

A source is a local folder (a ``save_pretrained`` / timm ``save_for_hf`` layout) or a Hub id
resolved through the Hugging Face cache. With ``HF_HUB_OFFLINE=1`` nothing is downloaded; a
checkpoint that is not cached fails with :class:`BackboneNotFound` saying where it was looked for.
A mirror of the Hub is used by setting ``HF_ENDPOINT`` (huggingface_hub's own setting).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..utils.io import read_json, write_json

log = logging.getLogger(__name__)

RECORD = "backbone.json"


class BackboneNotFound(UserError):
    """A named or local checkpoint that is not where it was looked for."""


@dataclass(frozen=True)
class Published:
    library: str  # "transformers" or "timm"
    source: str   # Hub id (transformers) or timm model name with its pretrained tag
    kind: str     # seq2seq | causal | image
    layers: int | None = None  # decoder layers of a causal LM (checked before any job, no download)


PUBLISHED: dict[str, Published] = {
    "bart-base": Published("transformers", "facebook/bart-base", "seq2seq"),
    "t5-base": Published("transformers", "google-t5/t5-base", "seq2seq"),
    "opt-350m": Published("transformers", "facebook/opt-350m", "causal", layers=24),
    "opt-2.7b": Published("transformers", "facebook/opt-2.7b", "causal", layers=32),
    "opt-6.7b": Published("transformers", "facebook/opt-6.7b", "causal", layers=32),
    # eP-ALM's encoders: timm `vit_base_patch16_224` / `vit_large_patch16_224` (their default tags)
    "vit-b16": Published("timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "image"),
    "vit-l16": Published("timm", "vit_large_patch16_224.augreg_in21k_ft_in1k", "image"),
    "clip-rn101": Published("timm", "resnet101_clip.openai", "image"),
    "clip-vit-b32": Published("timm", "vit_base_patch32_clip_224.openai", "image"),
}


def known_layers(name: str, source: str | None = None) -> int | None:
    """Layers of the published LM ``name`` without loading it (nor importing torch): a local
    ``source`` folder's ``config.json`` ``num_hidden_layers``, else the shipped entry's; None when
    it is not known before fetching (a Hub id that is not shipped, a folder without the key)."""
    if source:
        config = Path(source).expanduser() / "config.json"
        if not config.is_file():
            return None
        layers = read_json(config).get("num_hidden_layers")
        return int(layers) if isinstance(layers, int) else None
    entry = PUBLISHED.get(name)
    return entry.layers if entry else None


def offline() -> bool:
    """huggingface_hub's own reading of HF_HUB_OFFLINE (taken when it is imported, as every HF
    library does), or the variable itself if it was set later."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def folder_library(path: Path) -> str:
    """transformers or timm, from a saved folder's config.json."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise BackboneNotFound(f"{path}: no config.json (expected a save_pretrained or timm save_for_hf folder)")
    cfg = read_json(cfg_path)
    if "architecture" in cfg and "model_type" not in cfg:
        return "timm"
    return "transformers"


def _not_found(name: str, source: str, cache_dir, err: Exception) -> BackboneNotFound:
    where = f"the Hugging Face cache {_hub_cache(cache_dir)}"
    how = ("HF_HUB_OFFLINE is set, so nothing was downloaded: copy the checkpoint into that cache, "
           "or set backbones.<name>.source to a local folder") if offline() else "check the name and network"
    return BackboneNotFound(f"backbone {name!r}: checkpoint {source!r} not found in {where} ({how}): "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def model_kind(source: str, name: str, cache_dir=None) -> str:
    """seq2seq or causal, from a transformers config (a local folder's config.json or a Hub id's):
    its ``architectures``, or (a config that lists none) what transformers' own auto mappings list
    for its ``model_type`` (an encoder-decoder type such as BART is in both; it loads as seq2seq)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    try:
        cfg = AutoConfig.from_pretrained(source, cache_dir=cache_dir, local_files_only=offline())
    except (OSError, ValueError) as e:
        raise BackboneNotFound(f"backbone {name!r}: cannot read the config of {source!r} to tell its kind "
                               f"(give backbones.<key>.published.kind: seq2seq | causal): {str(e).splitlines()[0]}") from None
    archs = cfg.architectures or []
    for arch in archs:
        if arch.endswith(("ForConditionalGeneration", "Seq2SeqLM")):
            return "seq2seq"
        if arch.endswith("ForCausalLM"):
            return "causal"
    if not archs:  # only then the type decides: transformers' mappings list BERT as causal too
        if cfg.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES or getattr(cfg, "is_encoder_decoder", False):
            return "seq2seq"
        if cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return "causal"
    raise UserError(f"backbone {name!r}: {source!r} is a {cfg.model_type!r} model with architectures "
                    f"{cfg.architectures}, neither a seq2seq nor a causal LM; give backbones.<key>.published.kind")


def _auto_class(kind: str):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}.get(kind, AutoModel)


def load_published(name: str, source: str | None = None, kind: str | None = None, library: str | None = None,
                   cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer or None, Published) for ``name``: its shipped entry, or ``source`` (a local
    folder or a Hub id / timm name) with ``kind`` and ``library`` given or read from the folder."""
    entry = PUBLISHED.get(name)
    source = source or (entry.source if entry else None)
    if source is None:
        raise BackboneNotFound(f"backbone {name!r} is not a published one ({', '.join(PUBLISHED)}); "
                               "give its source (a local folder or a Hub id)")
    local = Path(source).expanduser()
    is_local = local.is_dir() or source.startswith((".", "/", "~"))
    if is_local and not local.is_dir():
        raise BackboneNotFound(f"backbone {name!r}: local folder {local} does not exist")
    library = library or (folder_library(local) if is_local else entry.library if entry else "transformers")
    kind = kind or (entry.kind if entry else "image" if library == "timm" else
                    model_kind(str(local) if is_local else source, name, cache_dir))
    spec = Published(library, str(local) if is_local else source, kind)
    if library == "timm":
        import timm

        model_name = f"local-dir:{local}" if is_local else source
        try:
            # num_classes=0: only the image tower's features are used (no classifier / projection head)
            model = timm.create_model(model_name, pretrained=True, num_classes=0, cache_dir=cache_dir)
        except (OSError, RuntimeError, ValueError) as e:
            if is_local:
                raise BackboneNotFound(f"backbone {name!r}: cannot load timm folder {local}: {e}") from None
            raise _not_found(name, source, cache_dir, e) from None
        return model.eval(), None, spec
    from transformers import AutoTokenizer

    kwargs = dict(cache_dir=cache_dir, local_files_only=offline() and not is_local)
    try:
        model = _auto_class(kind).from_pretrained(spec.source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(spec.source, **kwargs)
    except OSError as e:
        if is_local:
            raise BackboneNotFound(f"backbone {name!r}: cannot load {local}: {e}") from None
        raise _not_found(name, source, cache_dir, e) from None
    return model.eval(), tokenizer, spec


def fetch_backbone(name: str, out_dir: str | os.PathLike, source: str | None = None, kind: str | None = None,
                   library: str | None = None, cache_dir: str | os.PathLike | None = None,
                   add_tokens: Sequence[str] = ()) -> Path:
    """Load a published backbone and save it as ``out_dir`` (safetensors, the library's own
    layout) with ``backbone.json`` recording where it came from; returns ``out_dir``.

    ``add_tokens`` (a transformers backbone): tokens its tokenizer lacks are added and the embedding
    matrix grows to match, as VL-T5 adds ``<vis_extra_id_k>``. Done once here, with a fixed seed, so
    the new rows are part of the saved backbone: a PET checkpoint (which keeps only its trainable
    tensors) then applies to exactly the weights it was trained on.
    """
    model, tokenizer, spec = load_published(name, source, kind, library, cache_dir)
    added = _add_tokens(model, tokenizer, add_tokens) if add_tokens else 0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.library == "timm":
        from timm.models import save_for_hf

        save_for_hf(model, out_dir, safe_serialization=True)
    else:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    write_json(out_dir / RECORD, {"name": name, "library": spec.library, "source": spec.source,
                                  "kind": spec.kind, "parameters": params, "added_tokens": added})
    log.info("backbone %s (%s %s, %.1f M parameters) → %s", name, spec.library, spec.source, params / 1e6, out_dir)
    return out_dir


def _add_tokens(model, tokenizer, tokens: Sequence[str]) -> int:
    """Add the ``tokens`` ``tokenizer`` lacks and resize ``model``'s embeddings; returns how many."""
    if tokenizer is None:
        raise UserError("add_tokens needs a transformers backbone with a tokenizer (timm models have none)")
    import torch

    n = tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)},
                                     replace_extra_special_tokens=False)
    if n:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.resize_token_embeddings(len(tokenizer))
    return n


def load_saved(path: str | os.PathLike, kind: str | None = None):
    """(model, tokenizer or None) from a folder written by :func:`fetch_backbone` (or any
    save_pretrained / save_for_hf folder)."""
    path = Path(path)
    record = read_json(path / RECORD) if (path / RECORD).exists() else {}
    model, tokenizer, _ = load_published(record.get("name", path.name), str(path.resolve()),
                                         kind or record.get("kind"), folder_library(path))
    return model, tokenizer
