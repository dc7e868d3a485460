"""DAS's skipped model on a tiny random VL-BART: the supernet and the final model agree, a skipped
block with a zero replacement adapter is the identity, skipped weights are gone, and parameter and
FLOP counts fall by closed forms."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from vltune.das import build_supernet, set_skipped
from vltune.evaluate.cost import count_flops
from vltune.pet import apply_pet, count_parameters, load_pet, save_pet
from vltune.pet.das.layer import DasAdapter, SkippedBlock

from tiny_models import make_batch, make_vlbart, make_vlt5, vl_logits

D, FFN, R, R_SKIP, LAYERS = 32, 64, 4, 8, 3


def das(skip=(), **kw):
    torch.manual_seed(7)  # the adapters' init
    return apply_pet(make_vlbart(layers=LAYERS), {"method": "das", "adapter_dim": R, "skip_dim": R_SKIP,
                                                  "skip": list(skip), **kw})


def adapter_params(r: int) -> int:
    return 2 * D + (D * r + r) + (r * D + D)  # LN + down + up


def block_params() -> int:
    return 4 * (D * D + D) + 2 * D + (D * FFN + FFN) + (FFN * D + D) + 2 * D


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


def test_without_skips_supernet_equals_the_parallel_adapter_model():
    """k = 0: the search's supernet with no block skipped is exactly the unskipped adapter model."""
    plain, sup = das(), das()
    build_supernet(sup, sup.pet_config)
    batch = make_batch(n_images=2)
    assert torch.equal(vl_logits(sup, batch), vl_logits(plain, batch))


@pytest.mark.parametrize("skip", [[0], [1, 2], [0, 2]])
def test_supernet_with_a_skip_set_equals_the_final_skipped_model(skip):
    """What the search scores (supernet + skip set) is the architecture the fine-tuning builds."""
    sup = das()
    build_supernet(sup, sup.pet_config)
    perturb(sup)
    set_skipped([sup.bart.model.encoder.layers[i] for i in range(LAYERS)], skip)
    final = das(skip)
    src = sup.state_dict()
    mapped = {}
    for name in final.state_dict():
        parts = name.split(".")
        if parts[:4] == ["bart", "model", "encoder", "layers"]:
            i = int(parts[4])
            inner = "stand_in" if i in skip else "block"
            name_src = ".".join(parts[:5] + [inner] + parts[5:])
        else:
            name_src = name
        mapped[name] = src[name_src]
    final.load_state_dict(mapped)
    batch = make_batch(n_images=2)
    assert torch.equal(vl_logits(final, batch), vl_logits(sup, batch))


def test_skipped_block_with_zero_up_projection_is_exactly_the_identity():
    skipped = das([1])
    perturb(skipped)
    skipped.bart.model.encoder.layers[1].das_adapter.zero_init_up_()
    # Reference: the same weights with block 1 simply taken out of the encoder.
    ref = copy.deepcopy(skipped)
    del ref.bart.model.encoder.layers[1]
    batch = make_batch(n_images=2)
    assert torch.equal(vl_logits(skipped, batch), vl_logits(ref, batch))
    x = torch.randn(2, 5, D)
    assert torch.equal(skipped.bart.model.encoder.layers[1](x, None), x)


def test_identity_zero_init_keeps_base_outputs_with_blocks_skipped_only_through_adapters():
    """With every adapter zero and no skip, DAS leaves VL-BART's outputs unchanged (registry check),
    and skipping changes them: the skipped block really is not run."""
    base = make_vlbart(layers=LAYERS)
    batch = make_batch()
    assert torch.equal(vl_logits(das(zero_init_up=True), batch), vl_logits(base, batch))
    assert not torch.allclose(vl_logits(das([2], zero_init_up=True), batch), vl_logits(base, batch))


@pytest.mark.parametrize("skip", [[], [1], [0, 2], [0, 1, 2]])
def test_parameters_follow_the_closed_form(skip):
    """A skipped block loses its weights and its two parallel adapters and gains one adapter of
    width r'; the decoder (3 adapters per layer) and the visual embedding are unchanged."""
    base = count_parameters(make_vlbart(layers=LAYERS))["total_params"]
    model = das(skip)
    k, n = len(skip), LAYERS
    visual = sum(p.numel() for p in model.visual_embedding.parameters())
    trainable = (2 * (n - k) + 3 * n) * adapter_params(R) + k * adapter_params(R_SKIP) + visual
    counts = count_parameters(model)
    assert counts["trainable_params"] == trainable
    assert counts["total_params"] == base - k * block_params() + trainable - visual
    blocks = model.bart.model.encoder.layers
    assert [i for i, b in enumerate(blocks) if isinstance(b, SkippedBlock)] == skip
    # the removed blocks' weights are not in the model (nor in any checkpoint of it)
    assert not [n for n in model.state_dict() for i in skip if n.startswith(f"bart.model.encoder.layers.{i}.self_attn.")]
    assert sum(isinstance(m, DasAdapter) for m in blocks.modules()) == 2 * (n - k) + k


def test_flops_fall_by_the_skipped_blocks_exact_count():
    """Matmul FLOPs (what torch's counter counts; norms and activations are not) of an encoder
    block on L tokens: 8·L·d² (q, k, v, o) + 4·L²·d (scores, weighted sum) + 4·L·d·f (FFN), its two
    parallel adapters 2·4·L·d·r; its stand-in costs 4·L·d·r'."""
    batch = make_batch(n_images=2)
    B, L = batch["input_ids"].shape[0], batch["input_ids"].shape[1] + batch["vis_feats"].shape[1]
    block = 8 * L * D * D + 4 * L * L * D + 4 * L * D * FFN
    full = count_flops(das(), batch)
    for skip in ([1], [0, 2], [0, 1, 2]):
        saved = B * len(skip) * (block + 2 * 4 * L * D * R - 4 * L * D * R_SKIP)
        assert full - count_flops(das(skip), batch) == saved


def test_skipped_model_round_trips_through_its_pet_checkpoint(tmp_path):
    model = das([0, 2])
    perturb(model)
    save_pet(model, tmp_path)
    fresh = load_pet(make_vlbart(layers=LAYERS), tmp_path)
    assert fresh.pet_config.skip == [0, 2]
    batch = make_batch(n_images=2)
    assert torch.equal(vl_logits(fresh, batch), vl_logits(model, batch))


@pytest.mark.parametrize("spec, message", [
    ({"skip": [3]}, "skip lists block(s) [3] but the encoder has 3 blocks"),
    ({"skip": [1, 1]}, "skip must be a list of distinct block indices"),
    ({"skip": [-1]}, "skip must be a list of distinct block indices"),
    ({"skip_dim": 0}, "skip_dim must be an int > 0"),
])
def test_bad_skip_config_raises_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        das(**{"skip": [], **spec})


def test_t5_gets_parallel_adapters_but_refuses_skipping():
    model = apply_pet(make_vlt5(), {"method": "das", "adapter_dim": R})
    assert sum(isinstance(m, DasAdapter) for m in model.modules()) == 2 * 2 + 3 * 2
    with pytest.raises(ValueError, match="not supported for the 't5' family"):
        apply_pet(make_vlt5(), {"method": "das", "skip": [1]})
