"""The merge driver: lazy (file, streamed) == eager (in memory) bit for bit, expert merges of a
modality-specific model, and bad input caught before any tensor is merged, naming file and key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from vltune.merge.grams import GRAM_KIND
from vltune.merge import (MergeError, StreamWriter, merge_experts, merge_files, merge_state_dicts, method_names,
                          split_expert_key)


def model(seed: int, d: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(11, d, generator=g),
        "blocks.0.fc1.weight": torch.randn(2 * d, d, generator=g),
        "blocks.0.fc1.bias": torch.randn(2 * d, generator=g),
        "blocks.0.fc2.weight": torch.randn(d, 2 * d, generator=g),
        "blocks.0.norm.weight": torch.randn(d, generator=g),
        "head.weight": torch.randn(3, d, generator=g).to(torch.bfloat16),
    }


def grams(seed: int, d: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(50, d, generator=g, dtype=torch.float64), torch.randn(50, 2 * d, generator=g, dtype=torch.float64)
    return {"blocks.0.fc1": x1.T @ x1, "blocks.0.fc2": x2.T @ x2}


GRAM_META = {"gram": GRAM_KIND}  # what collect-grams writes (per-row means)

PARAMS = {"average": {}, "interpolation": {"ratio": 0.3}, "arithmetic": {"lambda": 0.6},
          "ties": {"density": 0.4}, "dare": {"density": 0.5, "seed": 3}, "regmean": {"alpha": 0.9}}


@pytest.fixture()
def files(tmp_path):
    paths = {}
    for name, sd in {"a": model(1), "b": model(2), "c": model(3), "base": model(4)}.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file(sd, str(paths[name]))
    for name, seed in (("ga", 5), ("gb", 6), ("gc", 7)):
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file(grams(seed), str(paths[name]), metadata=GRAM_META)
    return paths


@pytest.mark.parametrize("method", sorted(PARAMS))
def test_lazy_merge_equals_eager_merge_bit_for_bit(tmp_path, files, method):
    assert set(PARAMS) == set(method_names())
    uses_base = method in ("arithmetic", "ties", "dare")
    uses_grams = method == "regmean"
    inputs = [files["a"], files["b"], files["c"]]
    out = tmp_path / "out.safetensors"
    merge_files(method, inputs, out, base=files["base"] if uses_base else None,
                grams=[files["ga"], files["gb"], files["gc"]] if uses_grams else None, params=PARAMS[method])
    lazy = load_file(str(out))
    eager = merge_state_dicts(method, [load_file(str(p)) for p in inputs],
                              base=load_file(str(files["base"])) if uses_base else None,
                              grams=[load_file(str(files[g])) for g in ("ga", "gb", "gc")] if uses_grams else None,
                              params=PARAMS[method])
    assert set(lazy) == set(eager) == set(model(0))
    for k in eager:
        assert lazy[k].dtype == eager[k].dtype == model(0)[k].dtype
        assert torch.equal(lazy[k].view(torch.uint8), eager[k].view(torch.uint8)), k


def test_regmean_uses_grams_only_for_linear_weights(files, tmp_path):
    out = tmp_path / "o.safetensors"
    merge_files("regmean", [files["a"], files["b"]], out, grams=[files["ga"], files["gb"]])
    merged, a, b = load_file(str(out)), load_file(str(files["a"])), load_file(str(files["b"]))
    for k in ("embed.weight", "blocks.0.fc1.bias", "blocks.0.norm.weight"):  # no Gram: plain mean
        torch.testing.assert_close(merged[k], (a[k] + b[k]) / 2)
    assert not torch.allclose(merged["blocks.0.fc1.weight"], (a["blocks.0.fc1.weight"] + b["blocks.0.fc1.weight"]) / 2)


# --- bad input -----------------------------------------------------------------------------------------

def test_mismatched_names_name_the_file_and_tensor(tmp_path, files):
    odd = model(9)
    odd["blocks.0.fc3.weight"] = odd.pop("blocks.0.fc2.weight")
    save_file(odd, str(tmp_path / "odd.safetensors"))
    with pytest.raises(MergeError, match=r"odd\.safetensors: has no tensor 'blocks\.0\.fc2\.weight' \(present in .*a\.safetensors\)"):
        merge_files("average", [files["a"], tmp_path / "odd.safetensors"], tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_mismatched_shapes_name_the_tensor_and_both_files(tmp_path, files):
    odd = model(9)
    odd["blocks.0.norm.weight"] = torch.zeros(7)
    save_file(odd, str(tmp_path / "odd.safetensors"))
    with pytest.raises(MergeError, match=r"blocks\.0\.norm\.weight: float32 \(6,\) in .*a\.safetensors but float32 \(7,\) in .*odd"):
        merge_files("average", [files["a"], tmp_path / "odd.safetensors"], tmp_path / "o.safetensors")


def test_base_problems_are_named(tmp_path, files):
    with pytest.raises(MergeError, match="needs the base"):
        merge_files("arithmetic", [files["a"], files["b"]], tmp_path / "o.safetensors")
    with pytest.raises(MergeError, match="does not use a base"):
        merge_files("average", [files["a"], files["b"]], tmp_path / "o.safetensors", base=files["base"])
    short = model(4)
    del short["head.weight"]
    save_file(short, str(tmp_path / "short.safetensors"))
    with pytest.raises(MergeError, match=r"short\.safetensors: the base model has no tensor 'head\.weight'"):
        merge_files("ties", [files["a"], files["b"]], tmp_path / "o.safetensors", base=tmp_path / "short.safetensors")


def test_gram_problems_are_named(tmp_path, files):
    out = tmp_path / "o.safetensors"
    with pytest.raises(MergeError, match="needs Gram matrices"):
        merge_files("regmean", [files["a"], files["b"]], out)
    with pytest.raises(MergeError, match="one per input"):
        merge_files("regmean", [files["a"], files["b"]], out, grams=[files["ga"]])
    missing = grams(8)
    del missing["blocks.0.fc2"]
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=GRAM_META)
    with pytest.raises(MergeError, match=r"missing\.safetensors: no Gram for module 'blocks\.0\.fc2' \(present in .*ga\.safetensors\)"):
        merge_files("regmean", [files["a"], files["b"]], out, grams=[files["ga"], tmp_path / "missing.safetensors"])
    stale = {**grams(8), "blocks.9.fc1": torch.eye(6, dtype=torch.float64)}
    save_file(stale, str(tmp_path / "stale.safetensors"), metadata=GRAM_META)
    with pytest.raises(MergeError, match=r"stale\.safetensors: Gram 'blocks\.9\.fc1' names no 2-D weight"):
        merge_files("regmean", [files["a"], files["b"]], out, grams=[tmp_path / "stale.safetensors"] * 2)
    wrong = {**grams(8), "blocks.0.fc1": torch.eye(4, dtype=torch.float64)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=GRAM_META)
    with pytest.raises(MergeError, match=r"wrong\.safetensors: Gram 'blocks\.0\.fc1' has shape \(4, 4\), expected \(6, 6\)"):
        merge_files("regmean", [files["a"], files["b"]], out, grams=[tmp_path / "wrong.safetensors"] * 2)
    save_file(grams(8), str(tmp_path / "sums.safetensors"))  # no 'gram' record: summed, not per-row means
    with pytest.raises(MergeError, match=r"sums\.safetensors: not a Gram file of per-row means .*collect-grams"):
        merge_files("regmean", [files["a"], files["b"]], out, grams=[files["ga"], tmp_path / "sums.safetensors"])
    assert not out.exists()


def test_unreadable_or_missing_files_are_named(tmp_path, files):
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file at all")
    with pytest.raises(MergeError, match=r"junk\.safetensors: not a readable safetensors file"):
        merge_files("average", [files["a"], tmp_path / "junk.safetensors"], tmp_path / "o.safetensors")
    with pytest.raises(MergeError, match=r"nope\.safetensors: file not found"):
        merge_files("average", [files["a"], tmp_path / "nope.safetensors"], tmp_path / "o.safetensors")


def test_cli_merges_and_reports_bad_input_in_one_line(tmp_path, files):
    out = tmp_path / "cli.safetensors"
    ok = subprocess.run([sys.executable, "-m", "vltune.cli", "merge", "--method", "interpolation", "--inputs",
                         str(files["a"]), str(files["b"]), "--param", "ratio=1", "--out", str(out)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    a, merged = load_file(str(files["a"])), load_file(str(out))
    assert all(torch.equal(merged[k], a[k]) for k in a)
    bad = subprocess.run([sys.executable, "-m", "vltune.cli", "merge", "--method", "ties", "--inputs",
                          str(files["a"]), str(files["b"]), "--base", str(files["base"]), "--param", "ratio=0.5",
                          "--out", str(tmp_path / "bad.safetensors")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no parameter 'ratio'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.safetensors").exists()


# --- experts of a modality-specific model ----------------------------------------------------------------

def specific_model(seed: int = 0, d: int = 4) -> dict[str, torch.Tensor]:
    """Layer 0 has experts v, l; layer 1 has v, l, vl (as VLMo's top layers); plus shared tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": torch.randn(9, d, generator=g), "blocks.0.gamma1": torch.randn(d, generator=g),
          "blocks.1.gamma1": torch.randn(d, generator=g)}
    for layer, experts in ((0, ("v", "l")), (1, ("v", "l", "vl"))):
        for e in experts:
            sd[f"blocks.{layer}.attn.{e}.qkv.weight"] = torch.randn(3 * d, d, generator=g)
            sd[f"blocks.{layer}.attn.{e}.qkv.bias"] = torch.randn(3 * d, generator=g)
            sd[f"blocks.{layer}.norm1.{e}.weight"] = torch.randn(d, generator=g)
            sd[f"blocks.{layer}.mlp.{e}.fc1.weight"] = torch.randn(2 * d, d, generator=g)
    return sd


def test_expert_key_names():
    assert split_expert_key("blocks.3.attn.vl.qkv.weight") == ("blocks.3.attn.qkv.weight", "vl", 3)
    assert split_expert_key("blocks.3.norm2.l.bias") == ("blocks.3.norm2.bias", "l", 3)
    assert split_expert_key("blocks.3.gamma1") is None and split_expert_key("text_embed.weight") is None


def test_expert_interpolation_follows_the_paper_and_copies_shared_tensors():
    sd = specific_model()
    out = merge_experts("interpolation", sd, params={"ratio": 0.2})
    assert set(out) == {"embed.weight", "blocks.0.gamma1", "blocks.1.gamma1"} | {
        f"blocks.{i}.{p}" for i in (0, 1) for p in ("attn.qkv.weight", "attn.qkv.bias", "norm1.weight", "mlp.fc1.weight")}
    assert torch.equal(out["embed.weight"], sd["embed.weight"]) and torch.equal(out["blocks.1.gamma1"], sd["blocks.1.gamma1"])
    k = "attn.qkv.weight"
    torch.testing.assert_close(out[f"blocks.0.{k}"], 0.2 * sd["blocks.0.attn.v.qkv.weight"] + 0.8 * sd["blocks.0.attn.l.qkv.weight"])
    deep = (2 * 0.2 / 3) * sd["blocks.1.attn.v.qkv.weight"] + (2 * 0.8 / 3) * sd["blocks.1.attn.l.qkv.weight"] \
        + sd["blocks.1.attn.vl.qkv.weight"] / 3
    torch.testing.assert_close(out[f"blocks.1.{k}"], deep)


def test_expert_arithmetic_uses_the_seed_as_centre():
    sd = specific_model()
    seed = {k: v for k, v in merge_experts("average", specific_model(5)).items()}  # an agnostic model
    out = merge_experts("arithmetic", sd, base=seed, params={"lambda": 0.5})
    k = "blocks.0.mlp.fc1.weight"
    expected = seed[k] + 0.5 * (sd["blocks.0.mlp.v.fc1.weight"] - seed[k] + sd["blocks.0.mlp.l.fc1.weight"] - seed[k])
    torch.testing.assert_close(out[k], expected)


def test_expert_regmean_merges_the_experts_that_have_grams():
    sd = specific_model()
    d = 4
    x = torch.randn(30, d, dtype=torch.float64)
    g = {f"blocks.0.{p}.{e}.{m}": x.T @ x for e in ("v", "l") for p, m in (("attn", "qkv"), ("mlp", "fc1"))}
    g.update({f"blocks.1.{p}.vl.{m}": x.T @ x for p, m in (("attn", "qkv"), ("mlp", "fc1"))})  # VQA: vl only
    out = merge_experts("regmean", sd, grams=g)
    for p in ("attn.qkv.weight", "attn.qkv.bias", "norm1.weight", "mlp.fc1.weight"):
        part, _, rest = p.partition(".")
        torch.testing.assert_close(out[f"blocks.1.{p}"], sd[f"blocks.1.{part}.vl.{rest}"], rtol=1e-5, atol=1e-5)
    # equal Grams for v and l: RegMean of the weights is their mean
    torch.testing.assert_close(out["blocks.0.attn.qkv.weight"],
                               (sd["blocks.0.attn.v.qkv.weight"] + sd["blocks.0.attn.l.qkv.weight"]) / 2, rtol=1e-5, atol=1e-5)
    partial = dict(g)
    del partial["blocks.0.mlp.l.fc1"]
    with pytest.raises(MergeError, match=r"no Gram for 'blocks\.0\.mlp\.l\.fc1' \(expert l is used in layer 0"):
        merge_experts("regmean", sd, grams=partial)
    no_layer = {k: v for k, v in g.items() if not k.startswith("blocks.1.")}
    with pytest.raises(MergeError, match="no Gram for any expert of layer 1"):
        merge_experts("regmean", sd, grams=no_layer)


def test_expert_merge_lazy_equals_eager(tmp_path):
    sd = specific_model()
    save_file(sd, str(tmp_path / "specific.safetensors"))
    merge_experts("interpolation", tmp_path / "specific.safetensors", tmp_path / "merged.safetensors", params={"ratio": 0.7})
    eager = merge_experts("interpolation", sd, params={"ratio": 0.7})
    lazy = load_file(str(tmp_path / "merged.safetensors"))
    assert set(lazy) == set(eager) and all(torch.equal(lazy[k], eager[k]) for k in eager)


def test_agnostic_model_is_not_an_expert_merge_input():
    with pytest.raises(MergeError, match="no expert tensors"):
        merge_experts("average", merge_experts("average", specific_model()))


# --- the streaming writer ------------------------------------------------------------------------------------

def test_stream_writer_refuses_wrong_order_and_leaves_no_partial_file(tmp_path):
    specs = {"a": (torch.float32, (2,)), "b": (torch.float32, (3,))}
    with pytest.raises(RuntimeError, match="out of order"):
        with StreamWriter(tmp_path / "x.safetensors", specs) as w:
            w.write("b", torch.zeros(3))
    with pytest.raises(RuntimeError, match="only 1 of 2 tensors"):
        with StreamWriter(tmp_path / "x.safetensors", specs) as w:
            w.write("a", torch.zeros(2))
    with pytest.raises(MergeError, match=r"b: merged tensor is torch.float32 \(2,\), expected"):
        with StreamWriter(tmp_path / "x.safetensors", specs) as w:
            w.write("a", torch.zeros(2))
            w.write("b", torch.zeros(2))
    assert list(tmp_path.iterdir()) == []
