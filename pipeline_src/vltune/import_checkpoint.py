"""Import the authors' released checkpoints as vltune checkpoints, so the evaluation rules score them.

A released checkpoint is a pickled PyTorch state dict (``.pth`` / ``.bin``). Its parameter names
are the official code's; each source below maps them onto the names of the vltune model built
from the given backbone(s) and method config, then writes the folder vltune's fine-tuning writes:

* ``vlpet`` — VL-PET (Hu et al., "VL-PET: Vision-and-Language Parameter-Efficient Tuning via
  Granularity Control", https://arxiv.org/abs/2308.09804), VL-BART or VL-T5: ``torch.save(model.state_dict())``
  of the whole model (backbone, visual embedding, encoder modules of the gate granularity,
  decoder value parallel adapters), keys optionally under DDP's ``module.``. Written as a
  VL-PET checkpoint (``vl_model.json`` + ``adapter/``) whose backbone is the released model's own
  LM, saved in ``backbone/`` or a folder given (its frozen weights are the released ones, not a
  re-fetched copy).
  The decoder value adapter is one module listed under every task name (``adapters.<task>.``);
  those copies must be equal, since vltune has one adapter shared by all tasks. The released
  vocabulary holds the tokens VL-PET adds (``<vis_extra_id_k>``, for BART ``<extra_id_k>`` too)
  at its own ids; each token row moves to the id the token has in vltune's tokenizer
  (:func:`released_vocabulary`), which gets the added tokens it lacks.
* ``epalm`` — eP-ALM (Shukor et al., "eP-ALM: Efficient Perceptual Augmentation of Language
  Models", https://arxiv.org/abs/2303.11403): the ``model`` entry of its ``checkpoint_*.pth``,
  which holds only the trained connection (``connector.<m>.``) and soft prompt
  (``prompt_module.prefix_embedding.<i>.``); the frozen OPT and ViT are the given backbones.
  Written as an eP-ALM checkpoint of one task (``epalm.json`` + ``adapter/``).
* ``vl-merging`` (Sung et al., "An Empirical Study of Multimodal Model Merging",
  https://arxiv.org/abs/2304.14933) is refused: its VLMo encodes positions with a relative
  position bias table per block, which vltune's VLMo (learned absolute position embeddings)
  has no tensor for, so no mapping would give the released model's outputs.

Every official name must map to a tensor of the vltune model, and every tensor the vltune
checkpoint holds must come from the file, with the same shape; otherwise the import fails with
one line naming the names (a few, then a count) and nothing is written. What a state dict does
not hold comes from the method config and must be set as the released run used it: VL-T5's
sub-layer scaling ``s`` (VL-PET's ``--encoder_gating_scaling_factor``) and eP-ALM's injection
layers (its ``start_layer_idx`` / ``end_layer_idx``). The written folder's
``import.json`` (also inside the checkpoint's JSON as ``imported``) records the source path and
the file's sha256.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from .errors import UserError
from .utils.io import sha256_file, write_json

IMPORT_JSON = "import.json"
VLPET_FAMILIES = {"bart": "VL-BART", "t5": "VL-T5"}
SOURCES = ("vlpet", "epalm", "vl-merging")
LISTED = 5  # names shown in an error line before "(+N more)"


# --- reading and checking ------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint: a state dict, or a training checkpoint's ``model``
    entry; DDP's ``module.`` prefix removed. Unpickled with ``weights_only`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another format, or a pickle that needs code
        raise UserError(f"{path}: not a PyTorch checkpoint that loads with weights_only ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path}: expected a state dict (name → tensor) or a dict with a 'model' state dict, "
                        f"got {type(obj).__name__}")
    bad = sorted(str(k) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v)))
    if bad:
        raise UserError(f"{path}: entries that are not name → tensor: {listing(bad)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def listing(names) -> str:
    """Up to :data:`LISTED` names, then how many more."""
    names = sorted(names)
    shown = ", ".join(names[:LISTED])
    return shown + (f" (+{len(names) - LISTED} more)" if len(names) > LISTED else "")


def map_names(path: Path, official: dict[str, torch.Tensor], rules: list[tuple[re.Pattern, str]],
              expected: dict[str, torch.Size], what: str) -> dict[str, torch.Tensor]:
    """Rename ``official`` by the first matching ``(pattern, template)`` rule and check the result
    against ``expected`` (vltune name → shape): no unknown, missing or mis-shaped name, and names
    that land on the same vltune tensor (copies) hold equal values."""
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unknown = []
    for name, tensor in official.items():
        target = next((m.expand(t) for p, t in rules if (m := p.fullmatch(name))), None)
        if target is None or target not in expected:
            unknown.append(name)
            continue
        if target in mapped:
            if mapped[target].shape != tensor.shape or not torch.equal(mapped[target], tensor):
                raise UserError(f"{path}: {origin[target]} and {name} both map to vltune's {target} but differ "
                                f"(vltune's {what} has one tensor there)")
            continue
        mapped[target], origin[target] = tensor, name
    missing = sorted(set(expected) - set(mapped))
    if unknown or missing:
        parts = ([f"{len(unknown)} official names have no counterpart in vltune's {what}: {listing(unknown)}"]
                 if unknown else [])
        if missing:
            parts.append(f"{len(missing)} tensors of vltune's {what} are not in the file: {listing(missing)}")
        raise UserError(f"{path}: " + "; ".join(parts))
    wrong = sorted(f"{origin[k]} {tuple(v.shape)} (vltune {k} {tuple(expected[k])})"
                   for k, v in mapped.items() if v.shape != expected[k])
    if wrong:
        raise UserError(f"{path}: shapes differ from vltune's {what}: {listing(wrong)}")
    return mapped


def load_checked(path: Path, model: torch.nn.Module, mapped: dict[str, torch.Tensor], what: str, strict: bool) -> None:
    """Load ``mapped`` into ``model`` and check every tensor holds its source: names the model ties
    (one parameter, e.g. BART's shared embedding and LM head) must have equal values in the file."""
    model.load_state_dict(mapped, strict=strict)
    state = model.state_dict()
    differ = [k for k, v in mapped.items() if not torch.equal(state[k], v.to(state[k].dtype))]
    if differ:  # name the whole tied group, the tensor loaded last included
        ptrs = {state[k].data_ptr() for k in differ}
        differ = [k for k in mapped if state[k].data_ptr() in ptrs]
        raise UserError(f"{path}: tensors that are one tied tensor in vltune's {what} differ in the file: "
                        f"{listing(differ)}")


def source_record(source: str, path: Path, n_tensors: int) -> dict:
    return {"from": source, "source": str(path.resolve()), "sha256": sha256_file(path), "tensors": n_tensors}


def _rules(pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(p), t) for p, t in pairs]


class _Staging:
    """Write each folder into ``<folder>.importing`` and rename them onto their names only when
    everything is written (an existing folder stays as it was if anything fails)."""

    def __init__(self, *out_dirs: str | Path):
        self.pairs = [(Path(o), Path(o).with_name(Path(o).name + ".importing")) for o in out_dirs]

    def __enter__(self) -> list[Path]:
        for _, tmp in self.pairs:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        return [tmp for _, tmp in self.pairs]

    def __exit__(self, exc_type, exc, tb) -> None:
        for out, tmp in self.pairs:
            if exc_type is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)


def _method_error(command: str, e: Exception) -> UserError:
    return UserError(f"{command}: {e}")


# --- VL-PET (VL-BART, VL-T5) ---------------------------------------------------------------------

_P = r"\.(?P<p>weight|bias)"


def _vlpet_rules(family: str) -> list[tuple[re.Pattern, str]]:
    """Official VL-PET name → vltune name, for the ``family``'s layout: the encoder sub-layer whose
    output VL-PET modifies (attn / ff), the decoder cross-attention value projection, the visual
    embedding, and the rest under the HF model's attribute (``bart.`` / ``t5.``)."""
    if family == "bart":  # the official VLBart is a BartForConditionalGeneration: model.encoder.layers.N
        enc, venc = r"model\.encoder\.layers\.(?P<i>\d+)\.", "bart.model.encoder.layers.\\g<i>."
        sites = {"attn": ("", "self_attn"), "ff": ("", "fc2")}
        vpa = (r"model\.decoder\.layers\.(?P<i>\d+)\.encoder_attn\.", "bart.model.decoder.layers.\\g<i>.encoder_attn.v_proj")
        visual, shared = r"model\.encoder\.visual_embedding\.", "bart.model.shared.weight"
        rest = r"(?P<n>(?:model\.(?:shared|encoder|decoder)\.|lm_head\.|final_logits_bias).*)"
    else:  # the official VLT5 is a T5ForConditionalGeneration: encoder.block.N.layer.{0: attention, 1: FFN}
        enc, venc = r"encoder\.block\.(?P<i>\d+)\.", "t5.encoder.block.\\g<i>."
        sites = {"attn": ("layer\\.0\\.", "layer.0.SelfAttention"), "ff": ("layer\\.1\\.", "layer.1.DenseReluDense")}
        vpa = (r"decoder\.block\.(?P<i>\d+)\.layer\.1\.EncDecAttention\.", "t5.decoder.block.\\g<i>.layer.1.EncDecAttention.v")
        visual, shared = r"encoder\.visual_embedding\.", "t5.shared.weight"
        rest = r"(?P<n>(?:shared|encoder|decoder|lm_head)\..*)"
    out = []
    for site, (where, mod) in sites.items():
        e, v = enc + where, f"{venc}{mod}.vlpet"
        out += [
            # multi-head down-projection adapter: heads Linear(d → r/heads), one Linear(r → d)
            (rf"{e}{site}_adapter_multihead_down\.(?P<h>\d+){_P}", f"{v}.adapter.down.\\g<h>.\\g<p>"),
            (rf"{e}{site}_adapter_multihead_up{_P}", f"{v}.adapter.up.\\g<p>"),
            # the four gates: large (low-rank MLP), middleX (x + h'), small (cat[x, h']), middleY (1 + z)
            (rf"{e}encoder_{site}_adapter_gating_large_x_(?P<w>down|up){_P}", f"{v}.gate.\\g<w>.\\g<p>"),
            (rf"{e}encoder_{site}_adapter_gating_middle_xy_add{_P}", f"{v}.gate.proj.\\g<p>"),
            (rf"{e}encoder_{site}_adapter_gating_small_xy_cat{_P}", f"{v}.gate.proj.\\g<p>"),
            (rf"{e}encoder_{site}_adapter_gating_middle_ia3_add", f"{v}.gate.z"),
        ]
    out += [
        # decoder cross-attention value parallel adapter, listed once per task
        (rf"{vpa[0]}attn_value_parallel_adapter\.adapters\.[^.]+\.down_sampler{_P}", f"{vpa[1]}.vpa.down.0.\\g<p>"),
        (rf"{vpa[0]}attn_value_parallel_adapter\.adapters\.[^.]+\.up_sampler{_P}", f"{vpa[1]}.vpa.up.\\g<p>"),
        # visual embedding: individual norms after the feature and box projections
        (rf"{visual}feat_embedding\.0{_P}", "visual_embedding.feat_proj.\\g<p>"),
        (rf"{visual}feat_embedding\.1{_P}", "visual_embedding.feat_norm.\\g<p>"),
        (rf"{visual}absolute_vis_pos_embedding\.0{_P}", "visual_embedding.box_proj.\\g<p>"),
        (rf"{visual}absolute_vis_pos_embedding\.1{_P}", "visual_embedding.box_norm.\\g<p>"),
        (rf"{visual}img_order_embedding\.weight", "visual_embedding.img_order.weight"),
        # the object-order embedding is the shared token embedding (a copy of it in the state dict)
        (rf"{visual}obj_order_embedding\.weight", shared),
        # everything else is the HF model's own
        (rest, f"{family}.\\g<n>"),
    ]
    return _rules(out)


# Tokens VL-PET's code adds after the LM's own vocabulary, in the order of their ids: VL-BART adds
# <extra_id_99> … <extra_id_0> then <vis_extra_id_99> … <vis_extra_id_0> to BART's tokenizer;
# VL-T5's tokenizer is T5's (its sentinels <extra_id_k> included) followed by <vis_extra_id_99> … _0.
# Object k of an image reads the row of <vis_extra_id_k> (the official ``obj_order_embedding``).
VLPET_ADDED = {
    "bart": [f"<extra_id_{k}>" for k in range(99, -1, -1)] + [f"<vis_extra_id_{k}>" for k in range(99, -1, -1)],
    "t5": [f"<vis_extra_id_{k}>" for k in range(99, -1, -1)],
}
# official tensors with one row (final_logits_bias: one column) per token id
_VOCAB_ROWS = {
    "bart": ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
             "lm_head.weight", "model.encoder.visual_embedding.obj_order_embedding.weight"),
    "t5": ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight",
           "encoder.visual_embedding.obj_order_embedding.weight"),
}


def released_vocabulary(path: Path, official: dict[str, torch.Tensor], tok, family: str, backbone_dir) -> dict:
    """Put the released model's token rows at the ids of ``tok`` (the backbone's tokenizer), which
    gets the tokens of VL-PET's layout it lacks; returns the re-indexed state dict.

    The released vocabulary is the backbone tokenizer's own tokens (those VL-PET adds left out) in
    id order, then :data:`VLPET_ADDED`; each row moves to the id its token has in ``tok``.
    """
    added = VLPET_ADDED[family]
    shared = _VOCAB_ROWS[family][0]
    if shared not in official:
        return official  # map_names names it as missing
    drop = set(added)
    released = [t for t in tok.convert_ids_to_tokens(range(len(tok))) if t not in drop] + added
    rows = official[shared].shape[0]
    if rows != len(released):
        raise UserError(f"{path}: {shared} has {rows} rows, but VL-PET's {VLPET_FAMILIES[family]} vocabulary on the "
                        f"tokenizer of {backbone_dir} has {len(released)} tokens (its own "
                        f"{len(released) - len(added)} + {len(added)} added by VL-PET)")
    tok.add_tokens([t for t in added if t not in tok.get_vocab()], special_tokens=True)
    ids = torch.tensor(tok.convert_tokens_to_ids(released))
    if len(tok) != rows or sorted(ids.tolist()) != list(range(rows)):
        raise UserError(f"{path}: the tokenizer of {backbone_dir} holds tokens the released "
                        f"{VLPET_FAMILIES[family]} vocabulary does not have ({len(tok)} ids for {rows} rows)")
    out = dict(official)
    for name in _VOCAB_ROWS[family]:
        if name in out and out[name].shape[0] == rows:
            moved = torch.empty_like(out[name])
            moved[ids] = out[name]
            out[name] = moved
    if family == "bart" and "final_logits_bias" in out and out["final_logits_bias"].shape[-1] == rows:
        moved = torch.empty_like(out["final_logits_bias"])
        moved[..., ids] = out["final_logits_bias"]
        out["final_logits_bias"] = moved
    return out


def check_vlpet_method(method: str) -> None:
    if not method.startswith("vlpet-"):
        raise UserError(f"import-checkpoint --from vlpet: method {method!r} is not a VL-PET variant "
                        "(vlpet-large, vlpet-middlex, vlpet-middley, vlpet-small)")


def import_vlpet(path: str | Path, out_dir: str | Path, backbone_dir: str | Path, feat_dim: int, method: str,
                 method_config: dict | None = None, visual: dict | None = None, features: str | None = None,
                 backbone_out: str | Path | None = None, family: str = "bart") -> dict:
    """Import a released VL-PET state dict of ``family`` (``bart``: VL-BART, ``t5``: VL-T5) as a
    vltune VL-PET checkpoint in ``out_dir``.

    ``backbone_dir``: the BART / T5 folder that gives the architecture and the tokenizer (e.g.
    ``bart-base`` fetched with the ``<vis_extra_id_k>`` tokens); ``feat_dim``: the width of the
    features the checkpoint will read; ``method``/``method_config``: the VL-PET variant and its
    hyper-parameters (ranks, heads), which the file's shapes must match; ``backbone_out``: where
    the released LM is saved (default ``<out_dir>/backbone``). Returns the source record.
    """
    from .backbones.tokenizer import vis_token_ids
    from .pet import count_parameters
    from .recipes.encdec.finetune import apply_method, build_vl_model, save_vl_model

    path = Path(path)
    check_vlpet_method(method)
    if family not in VLPET_FAMILIES:
        raise UserError(f"import-checkpoint --from vlpet: family {family!r} is not one of {', '.join(VLPET_FAMILIES)}")
    official = read_state_dict(path)
    model, tok = build_vl_model(family, backbone_dir, feat_dim)
    official = released_vocabulary(path, official, tok, family, backbone_dir)
    if len(tok) != model.lm.get_input_embeddings().num_embeddings or len(vis_token_ids(tok)) != len(model.vis_token_ids):
        model.lm.resize_token_embeddings(len(tok))  # the rows come from the file
        model = type(model)(model.lm, feat_dim, vis_token_ids(tok))
    try:
        apply_method(model, method, method_config)
    except ValueError as e:
        raise _method_error("import-checkpoint", e) from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    what = f"{method} {VLPET_FAMILIES[family]}"
    mapped = map_names(path, official, _vlpet_rules(family), expected, what)
    load_checked(path, model, mapped, what, strict=True)
    record = source_record("vlpet", path, len(official))
    lm = type(model.lm)(model.lm.config)  # the plain LM: the frozen backbone the adapters apply to
    prefix = f"{model.lm_attr}."
    lm_names = set(lm.state_dict())
    lm.load_state_dict({k[len(prefix):]: v for k, v in mapped.items() if k[len(prefix):] in lm_names}, strict=True)
    backbone_out = Path(out_dir) / "backbone" if backbone_out is None else Path(backbone_out)
    inside = backbone_out.parent == Path(out_dir)
    with _Staging(out_dir, *([] if inside else [backbone_out])) as staged:
        tmp = staged[0]
        lm_tmp = tmp / backbone_out.name if inside else staged[1]
        lm.save_pretrained(lm_tmp)
        tok.save_pretrained(lm_tmp)
        meta = {"method": method, "seed": None, "features": features, "dropout": None,
                "backbone": str(backbone_out), "visual": visual or {}, "imported": record,
                **count_parameters(model)}
        save_vl_model(model, tok, tmp, meta)
        write_json(tmp / IMPORT_JSON, record)
    return record


# --- eP-ALM --------------------------------------------------------------------------------------

EPALM_RULES = _rules([
    (r"connector\.(?P<m>\d+)" + _P, "connector.linears.\\g<m>.\\g<p>"),
    # InputPrompts' prefix_embedding: Embedding, Linear, Tanh, Linear (or the Embedding alone)
    (r"prompt_module\.prefix_embedding\.0\.weight", "prompt.embedding.weight"),
    (r"prompt_module\.prefix_embedding\.1" + _P, "prompt.reparam.0.\\g<p>"),
    (r"prompt_module\.prefix_embedding\.3" + _P, "prompt.reparam.2.\\g<p>"),
])


def import_epalm(path: str | Path, out_dir: str | Path, lm_dir: str | Path, vit_dir: str | Path, task: str,
                 method: str, method_config: dict | None = None) -> dict:
    """Import a released eP-ALM checkpoint of one ``task`` as a vltune eP-ALM checkpoint in ``out_dir``.

    ``lm_dir``/``vit_dir``: the frozen OPT and ViT folders it applies to; ``method``/``method_config``:
    ``epalm-linear`` or ``epalm-prompt`` and its config (tokens, injection layers, prompt length),
    which the file's names and shapes must match. Returns the source record.
    """
    from .pet import apply_pet, resolve_config, save_pet
    from .features.perception import perception_preprocessing
    from .recipes.epalm.finetune import CHECKPOINT_JSON, PET_SUBDIR, _check_method, _meta_encoder, build_epalm, epalm_parameter_counts

    path = Path(path)
    _check_method(method)
    official = read_state_dict(path)
    model, _ = build_epalm(lm_dir, vit_dir, cached=True)
    try:
        config = resolve_config({**(method_config or {}), "method": method})
        error = config.window_error(model.config.num_hidden_layers, f"the OPT in {lm_dir}")
        if error:
            raise UserError(error)
        apply_pet(model, config)
    except ValueError as e:
        raise _method_error("import-checkpoint", e) from None
    expected = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    mapped = map_names(path, official, EPALM_RULES, expected, f"{method} eP-ALM")
    load_checked(path, model, mapped, f"{method} eP-ALM", strict=False)
    record = source_record("epalm", path, len(official))
    # the reference runs the encoder on every image with CLIP's mean/std (the input side its own)
    preprocessing = perception_preprocessing(_meta_encoder(vit_dir), "clip")
    meta = {"task": task, "method": method, "seed": None, "lm": str(lm_dir), "encoder": str(vit_dir),
            "perception": "recomputed", "augment": False, "preprocessing": preprocessing, "loss_weight": None,
            "dropout": None,
            "imported": record, **epalm_parameter_counts(model, vit_dir)}
    with _Staging(out_dir) as (tmp,):
        save_pet(model, tmp / PET_SUBDIR)
        write_json(tmp / CHECKPOINT_JSON, meta)
        write_json(tmp / IMPORT_JSON, record)
    return record


def refuse_vl_merging(path: str | Path) -> None:
    raise UserError(f"{path}: import-checkpoint --from vl-merging is not possible: the released VLMo encodes "
                    "positions with a relative position bias table per block, which vltune's VLMo (learned "
                    "absolute position embeddings) has no tensor for")
