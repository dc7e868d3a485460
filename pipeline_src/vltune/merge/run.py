"""The one merge driver: check the inputs, then merge tensor by tensor and stream the result out.

Two ways in, one executor:

* :func:`merge_files` / :func:`merge_state_dicts` — N state dicts with the same names (optionally a
  base and one Gram file per input), as ``vltune merge`` exposes them;
* :func:`merge_experts` — the experts of one modality-specific model (``blocks.{i}.{part}.{v|l|vl}.…``)
  merged into a modality-agnostic one: each expert is a view under the shared names, layers with a
  vision-language expert merge three inputs, everything outside the experts is copied.

Gram files map a Linear's module name (its weight name without ``.weight``) to ``Xᵀ X`` of that
Linear's inputs. Every check runs on the headers before any tensor is read, and every error names
the file and the tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from .base import MergeError, MergeMethod, get_method
from .grams import GRAM_KIND
from .io import EXPERTS, DictSource, ExpertView, SafetensorsSource, Source, Spec, StreamWriter, open_source, split_expert_key

Ref = tuple[Source, str]


@dataclass
class Item:
    """One output tensor: where its inputs, base and Grams come from (``copy``: taken as is)."""

    key: str
    inputs: list[Ref]
    base: Ref | None = None
    grams: list[Ref] | None = None
    copy: bool = False


# --- checks ------------------------------------------------------------------------------------------

def _check_method_inputs(method: MergeMethod, base, grams) -> None:
    if method.base == "required" and base is None:
        raise MergeError(f"merge method {method.name!r} needs the base (central) model: pass --base")
    if method.base == "none" and base is not None:
        raise MergeError(f"merge method {method.name!r} does not use a base model; drop --base")
    if method.uses_grams and not grams:
        raise MergeError(f"merge method {method.name!r} needs Gram matrices: pass --grams (one file per input)")
    if not method.uses_grams and grams:
        raise MergeError(f"merge method {method.name!r} does not use Gram matrices; drop --grams")


def _check_same_tensors(sources: Sequence[Source]) -> list[str]:
    first = sources[0]
    keys = first.keys()
    for src in sources[1:]:
        other = src.keys()
        missing, extra = sorted(set(keys) - set(other)), sorted(set(other) - set(keys))
        if missing:
            raise MergeError(f"{src.name}: has no tensor {missing[0]!r} (present in {first.name}); "
                             f"{len(missing)} name(s) missing")
        if extra:
            raise MergeError(f"{src.name}: tensor {extra[0]!r} is not in {first.name}; {len(extra)} extra name(s)")
        for k in keys:
            if src.spec(k) != first.spec(k):
                raise MergeError(f"{k}: {_fmt(first.spec(k))} in {first.name} but {_fmt(src.spec(k))} in {src.name}")
    return keys


def _check_base(base: Source, key: str, spec: Spec) -> None:
    if key not in base:
        raise MergeError(f"{base.name}: the base model has no tensor {key!r}")
    if tuple(base.spec(key)[1]) != tuple(spec[1]):
        raise MergeError(f"{key}: shape {tuple(spec[1])} in the inputs but {tuple(base.spec(key)[1])} in the base {base.name}")


def _check_gram(gram: Source, module: str, weight_spec: Spec | None) -> None:
    if weight_spec is None:
        raise MergeError(f"{gram.name}: Gram {module!r} names no 2-D weight {module + '.weight'!r} of the inputs")
    shape = tuple(gram.spec(module)[1])
    d_in = weight_spec[1][-1]
    if len(weight_spec[1]) != 2 or shape != (d_in, d_in):
        raise MergeError(f"{gram.name}: Gram {module!r} has shape {shape}, expected ({d_in}, {d_in}) for the "
                         f"weight of shape {tuple(weight_spec[1])}")


def _fmt(spec: Spec) -> str:
    return f"{str(spec[0]).removeprefix('torch.')} {tuple(spec[1])}"


# --- plans ---------------------------------------------------------------------------------------------

def plan_merge(inputs: Sequence[Source], base: Source | None = None, grams: Sequence[Source] | None = None) -> list[Item]:
    """Items for N inputs with identical names: every tensor merged from all N (Grams for Linear weights)."""
    if len(inputs) < 1:
        raise MergeError("nothing to merge: give at least one input")
    keys = _check_same_tensors(inputs)
    spec = {k: inputs[0].spec(k) for k in keys}
    if base is not None:
        for k in keys:
            _check_base(base, k, spec[k])
    modules: set[str] = set()
    if grams:
        if len(grams) != len(inputs):
            raise MergeError(f"{len(inputs)} inputs but {len(grams)} Gram files: give one per input, in the same order")
        for g in grams:
            # in-memory Grams (a library call) are the caller's; a file says what it holds
            kind = g.metadata.get("gram") if isinstance(g, SafetensorsSource) else GRAM_KIND
            if kind != GRAM_KIND:
                raise MergeError(f"{g.name}: not a Gram file of per-row means (metadata 'gram' is {kind!r}, "
                                 f"expected {GRAM_KIND!r}); collect it again with `vltune collect-grams`")
        modules = set(grams[0].keys())
        for g in grams:
            other = set(g.keys())
            if other != modules:
                diff = sorted(modules - other) or sorted(other - modules)
                where = grams[0].name if diff[0] in modules else g.name
                lacking = g.name if diff[0] in modules else grams[0].name
                raise MergeError(f"{lacking}: no Gram for module {diff[0]!r} (present in {where})")
            for m in sorted(other):
                w = spec.get(m + ".weight")
                _check_gram(g, m, w if w is not None and len(w[1]) == 2 else None)
        if not modules:
            raise MergeError(f"{grams[0].name}: holds no Gram matrix")
    items = []
    for k in keys:
        module = k.removesuffix(".weight") if k.endswith(".weight") else None
        g = [(src, module) for src in grams] if grams and module in modules else None
        items.append(Item(k, [(src, k) for src in inputs], (base, k) if base is not None else None, g))
    return items


def plan_experts(specific: Source, base: Source | None = None, grams: Source | None = None) -> list[Item]:
    """Items merging the experts of a modality-specific model into modality-agnostic names.

    Without Grams every layer merges all its experts (v, l, and vl where the layer has one). With
    Grams (RegMean) a layer merges the experts that have Grams, i.e. the experts the target task ran
    through it when the Grams were collected (Sung et al., arXiv 2304.14933: VQA → vl in the deep layers,
    retrieval → v and l); a layer none of whose experts has a Gram is an error.
    """
    views = {e: ExpertView(specific, e) for e in EXPERTS}
    shared: dict[str, list[str]] = {}
    layer_of: dict[str, int] = {}
    copies = []
    for k in specific.keys():
        parsed = split_expert_key(k)
        if parsed is None:
            copies.append(k)
            continue
        name, expert, layer = parsed
        shared.setdefault(name, []).append(expert)
        layer_of[name] = layer
    if not shared:
        raise MergeError(f"{specific.name}: no expert tensors (blocks.<i>.<attn|mlp|norm1|norm2>.<v|l|vl>.*): "
                         "is this a modality-specific model?")
    clash = sorted(set(copies) & set(shared))
    if clash:
        raise MergeError(f"{specific.name}: {clash[0]!r} is both a shared tensor and an expert's")
    used: dict[int, set[str]] | None = None
    if grams is not None:
        used = {}
        for module in grams.keys():
            parsed = split_expert_key(module + ".weight")
            if parsed is None or module + ".weight" not in specific:
                raise MergeError(f"{grams.name}: Gram {module!r} names no expert Linear weight of {specific.name}")
            _check_gram(grams, module, specific.spec(module + ".weight"))
            used.setdefault(parsed[2], set()).add(parsed[1])
    items = [Item(k, [(specific, k)], copy=True) for k in copies]
    for name in sorted(shared):
        experts = [e for e in EXPERTS if e in shared[name]]
        layer = layer_of[name]
        specs = {views[e].spec(name) for e in experts}
        if len(specs) > 1:
            raise MergeError(f"{specific.name}: the experts of {name!r} differ in shape: "
                             + ", ".join(f"{e} {_fmt(views[e].spec(name))}" for e in experts))
        g = None
        if used is not None:
            if layer not in used:
                raise MergeError(f"{grams.name}: no Gram for any expert of layer {layer} ({name!r})")
            experts = [e for e in experts if e in used[layer]]
            if name.endswith(".weight") and len(views[experts[0]].spec(name)[1]) == 2:
                g = []
                for e in experts:
                    source_module = views[e].source_key(name).removesuffix(".weight")
                    if source_module not in grams:
                        raise MergeError(f"{grams.name}: no Gram for {source_module!r} (expert {e} is used in "
                                         f"layer {layer}: other modules of it have Grams)")
                    g.append((grams, source_module))
        if base is not None:
            _check_base(base, name, views[experts[0]].spec(name))
        items.append(Item(name, [(views[e], name) for e in experts], (base, name) if base is not None else None, g))
    return items


# --- execution ----------------------------------------------------------------------------------------

def run_items(items: Sequence[Item], method: MergeMethod, params: Mapping) -> Iterator[tuple[str, torch.Tensor]]:
    """Merged tensors in sorted-name order, loading each input tensor only when its item is merged."""
    for item in sorted(items, key=lambda it: it.key):
        tensors = [src.get(k) for src, k in item.inputs]
        if item.copy:
            yield item.key, tensors[0]
            continue
        base = item.base[0].get(item.base[1]) if item.base is not None else None
        grams = [src.get(k) for src, k in item.grams] if item.grams is not None else None
        if not tensors[0].is_floating_point():  # integer buffers (e.g. position ids) must agree
            for (src, _), t in zip(item.inputs[1:], tensors[1:]):
                if not torch.equal(t, tensors[0]):
                    raise MergeError(f"{item.key}: non-float tensor differs between {item.inputs[0][0].name} and {src.name}")
            yield item.key, tensors[0]
            continue
        out = method.fn(tensors, base=base, grams=grams, key=item.key, params=params)
        yield item.key, out


def _prepare(method: str, params: Mapping | None):
    m = get_method(method)
    return m, m.resolve(params)


def _write(items: Sequence[Item], m: MergeMethod, params: Mapping, out: str | Path, metadata: Mapping) -> dict:
    specs = {it.key: it.inputs[0][0].spec(it.inputs[0][1]) for it in items}
    meta = {"merge_method": m.name, "merge_params": json.dumps(dict(params), sort_keys=True),
            **{k: str(v) for k, v in metadata.items()}}
    with StreamWriter(out, specs, meta) as w:
        for key, tensor in run_items(items, m, params):
            w.write(key, tensor)
    return {"method": m.name, "params": dict(params), "tensors": len(items),
            "merged": sum(not it.copy for it in items), "copied": sum(it.copy for it in items)}


def merge_files(method: str, inputs: Sequence[str | Path], out: str | Path, base: str | Path | None = None,
                grams: Sequence[str | Path] | None = None, params: Mapping | None = None) -> dict:
    """Merge N safetensors state dicts into ``out`` (streamed: near one tensor per input in memory)."""
    m, p = _prepare(method, params)
    _check_method_inputs(m, base, grams)
    srcs = [open_source(Path(x)) for x in inputs]
    items = plan_merge(srcs, open_source(Path(base)) if base else None,
                       [open_source(Path(g)) for g in grams] if grams else None)
    return _write(items, m, p, out, {"inputs": json.dumps([str(x) for x in inputs]), "base": str(base or "")})


def merge_state_dicts(method: str, state_dicts: Sequence[Mapping[str, torch.Tensor]],
                      base: Mapping[str, torch.Tensor] | None = None,
                      grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
                      params: Mapping | None = None) -> dict[str, torch.Tensor]:
    """The eager twin of :func:`merge_files` over in-memory state dicts (same checks, same result)."""
    m, p = _prepare(method, params)
    _check_method_inputs(m, base, grams)
    srcs = [DictSource(sd, f"input {i}") for i, sd in enumerate(state_dicts)]
    items = plan_merge(srcs, DictSource(base, "base") if base is not None else None,
                       [DictSource(g, f"grams {i}") for i, g in enumerate(grams)] if grams else None)
    return dict(run_items(items, m, p))


def merge_experts(method: str, specific: str | Path | Mapping, out: str | Path | None = None,
                  base: str | Path | Mapping | None = None, grams: str | Path | Mapping | None = None,
                  params: Mapping | None = None):
    """Merge the experts of a modality-specific model into one modality-agnostic state dict.

    ``out`` given: streamed to that safetensors file, returns a summary; ``out`` None: returns the
    merged state dict (eager).
    """
    m, p = _prepare(method, params)
    _check_method_inputs(m, base, [grams] if grams is not None else None)
    spec_src = open_source(specific if isinstance(specific, Mapping) else Path(specific))
    base_src = open_source(base if isinstance(base, Mapping) or base is None else Path(base)) if base is not None else None
    gram_src = open_source(grams if isinstance(grams, Mapping) else Path(grams)) if grams is not None else None
    items = plan_experts(spec_src, base_src, gram_src)
    if out is None:
        return dict(run_items(items, m, p))
    return _write(items, m, p, out, {"specific": str(specific if not isinstance(specific, Mapping) else "<memory>"),
                                     "base": str(base or "") if not isinstance(base, Mapping) else "<memory>",
                                     "grams": str(grams or "") if not isinstance(grams, Mapping) else "<memory>"})
