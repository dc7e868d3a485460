"""eP-ALM KV-cache decoding (``EPALM.generate(use_cache=True)``) against the uncached path, which
re-runs the whole sequence with the perceptual token re-inserted at every step (the reference's
decoding; eP-ALM, arXiv 2303.11403). Tiny random OPT in float64, so any semantic difference shows
far above rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vltune.models.epalm import EPALM
from vltune.pet import apply_pet

LAYERS = 6  # the tiny OPT of test_epalm_model.py
NEW = 3
IDS = torch.tensor([[1, 1, 5, 9, 4], [2, 7, 8, 9, 3], [1, 1, 1, 6, 4]])  # left padded, unequal lengths
MASK = (IDS != 1).long()


@pytest.fixture(scope="module")
def tiny(load_module):
    module = load_module(Path(__file__).parent / "test_epalm_model.py", "epalm_model_fixtures")
    assert module.LAYERS == LAYERS
    return module


_BUILT: dict = {}


def model_for(tiny, method: dict) -> EPALM:
    """One model per method config for the whole module (generate leaves a model as it found it)."""
    key = repr(sorted(method.items()))
    if key not in _BUILT:
        _BUILT[key] = _build(tiny, method)
    return _BUILT[key]


def _build(tiny, method: dict) -> EPALM:
    model = EPALM(tiny.make_lm(), tiny.make_vit())
    apply_pet(model, method)
    with torch.no_grad():
        for p in model.connector.parameters():
            p.mul_(10)  # a strong visual signal: the token decides the captions
    return model.double()


def both(model: EPALM, ids, mask, num_beams: int):
    pixels = torch.randn(len(ids), 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(num_beams=num_beams, min_new_tokens=NEW, max_new_tokens=NEW, do_sample=False, pad_token_id=1,
              eos_token_id=0, return_dict_in_generate=True, output_scores=True)
    return (model.generate(ids, mask, pixel_values=pixels, use_cache=True, **kw),
            model.generate(ids, mask, pixel_values=pixels, use_cache=False, **kw))


def score_gap(cached, uncached) -> list[float]:
    """Per step, the largest |cached − uncached| score (the forced-away EOS is −inf in both)."""
    gaps = []
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        finite = torch.isfinite(a)
        gaps.append((a[finite] - b[finite]).abs().max().item())
    return gaps


# the token stops before the last layer or reaches it (e = L), starts at layer 0 or later, with and without
# the prompt; scores are float32 (generate's), so "equal to rounding" is below 1e-6
METHODS = {
    "linear-2..4": {"method": "epalm-linear", "n_tokens": 2, "start_layer": 2, "end_layer": 5},
    "linear-0..2": {"method": "epalm-linear", "n_tokens": 2, "start_layer": 0, "end_layer": 3},
    "prompt-0..2": {"method": "epalm-prompt", "n_tokens": 2, "start_layer": 0, "end_layer": 3, "prompt_len": 3},
    "prompt-1..5": {"method": "epalm-prompt", "n_tokens": 3, "start_layer": 1, "end_layer": LAYERS,
                    "prompt_len": 2},
}


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("mask", ["full", "causal"])
@pytest.mark.parametrize("name", list(METHODS))
def test_cached_decoding_with_left_padding_in_a_batch(tiny, name, mask, num_beams):
    """Rows of unequal length, left padded: identical tokens, greedy and beam search (the cache is
    reordered with the beams), and scores equal to rounding — with one exception, the only case in
    which a cached position's state depends on later text: a left pad at a layer with neither the
    prompt nor the token has no key to attend to (every key masked, so its softmax is uniform over
    *all* keys, later text included); with ``full`` the token attends to the pads, and for e < the
    number of layers carries that into every position. Without a cache the pads are recomputed over
    the grown sequence at each step, with a cache they keep their prefill value: of the order 1e-6
    here (float64), tokens unchanged. With the prompt, or with the token from layer 0 (the default
    config's methods), every pad row has a key and the two paths agree."""
    model = model_for(tiny, {**METHODS[name], "mask": mask})
    cached, uncached = both(model, IDS, MASK, num_beams)
    assert torch.equal(cached.sequences, uncached.sequences)
    gaps = score_gap(cached, uncached)
    assert gaps[0] < 1e-6  # the prefill is the uncached forward itself
    method = METHODS[name]
    keyless_pads_reach_token = (mask == "full" and method["end_layer"] < LAYERS and method["start_layer"] > 0
                                and "prompt_len" not in method)
    assert (name == "linear-2..4" and mask == "full") == keyless_pads_reach_token
    assert max(gaps) < (1e-4 if keyless_pads_reach_token else 1e-6)


def test_layers_after_end_are_rerun_for_the_full_mask(tiny):
    """Without re-running layers >= e (the token frozen at its prefill state), ``full`` with e < L
    decodes unpadded rows differently from the uncached path: the re-run is what makes them equal."""
    model = _build(tiny, {**METHODS["linear-2..4"], "mask": "full"})
    ids, attn = IDS[1:2], MASK[1:2]
    exact = max(score_gap(*both(model, ids, attn, 1)))
    model._refreshes_token = lambda: False
    frozen = max(score_gap(*both(model, ids, attn, 1)))
    assert exact < 1e-7 < 1e-6 < frozen  # measured: 0.0 and 4e-6


def test_first_step_scores_are_the_forward_logits(tiny):
    """The cached path's first scores are the logits of ``EPALM.forward`` (checked against a
    layer-by-layer reference in test_epalm_model.py) at the last text position."""
    model = model_for(tiny, {**METHODS["prompt-0..2"], "mask": "full"})
    ids, attn = IDS[1:2], MASK[1:2]
    cached, _ = both(model, ids, attn, 1)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        logits = model(ids, attn, pixel_values=pixels).logits[:, -1]
    first = cached.scores[0]
    finite = torch.isfinite(first)
    torch.testing.assert_close(first[finite], logits[finite].float(), rtol=0, atol=1e-6)


def test_plain_lm_and_tensor_output_unchanged(tiny):
    """Empty slots: ``generate`` is OPT's own cached generate; without ``return_dict_in_generate``
    the result is the tensor of new tokens, as before."""
    lm = tiny.make_lm().double()
    model = EPALM(lm, tiny.make_vit())
    kw = dict(min_new_tokens=3, max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=0)
    got = model.generate(IDS, MASK, **kw)
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, lm.generate(input_ids=IDS, attention_mask=MASK, **kw)[:, IDS.shape[1]:])


def test_forward_with_a_cache_is_refused(tiny):
    model = model_for(tiny, METHODS["linear-2..4"])
    with pytest.raises(NotImplementedError, match=r"only through EPALM.generate\(use_cache=True\)"):
        with model._injecting(model.perceptual_tokens(pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.float64))):
            model.lm(input_ids=IDS[:1], attention_mask=MASK[:1], use_cache=True)
