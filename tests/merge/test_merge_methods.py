"""Merge methods as pure per-tensor functions: endpoints, identities, hand-computed cases, RegMean
against an independent least-squares solve, singular Grams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vltune.merge import MERGE_METHODS, MergeError, get_method, merge_state_dicts
from vltune.merge.linear import interpolation_weights
from vltune.merge.task_arithmetic import magnitude_mask, random_mask


def run(name, tensors, base=None, grams=None, key="w", **params):
    m = get_method(name)
    return m.fn(tensors, base=base, grams=grams, key=key, params=m.resolve(params))


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- interpolation / average -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_interpolation_endpoints_are_the_inputs_exactly(dtype):
    a, b = rand(5, 7, seed=1, dtype=dtype), rand(5, 7, seed=2, dtype=dtype)
    assert torch.equal(run("interpolation", [a, b], ratio=1.0), a)
    assert torch.equal(run("interpolation", [a, b], ratio=0.0), b)
    assert run("interpolation", [a, b], ratio=0.3).dtype == dtype


def test_interpolation_deep_layer_weights_follow_the_paper():
    # three experts (v, l, vl): 2α/3, 2(1−α)/3, 1/3 (Sung et al., arXiv 2304.14933.1)
    assert interpolation_weights(3, 0.25) == pytest.approx([0.5 / 3, 1.5 / 3, 1 / 3])
    assert interpolation_weights(2, 0.25) == pytest.approx([0.25, 0.75])
    v, l, vl = torch.tensor([3.0]), torch.tensor([6.0]), torch.tensor([9.0])
    out = run("interpolation", [v, l, vl], ratio=0.25)
    assert out.item() == pytest.approx(0.5 / 3 * 3 + 1.5 / 3 * 6 + 9 / 3)
    # α = 0.5 is the plain average for any number of inputs
    torch.testing.assert_close(run("interpolation", [v, l, vl], ratio=0.5), run("average", [v, l, vl]))


def test_interpolation_ratio_outside_unit_interval_is_an_error():
    with pytest.raises(MergeError, match="ratio must be in"):
        run("interpolation", [torch.zeros(2), torch.ones(2)], ratio=1.5)


# --- task arithmetic family -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5])
def test_arithmetic_with_lambda_one_over_n_is_the_plain_average(n):
    xs = [rand(4, 6, seed=s) for s in range(n)]
    base = rand(4, 6, seed=99)
    torch.testing.assert_close(run("arithmetic", xs, base=base, **{"lambda": 1 / n}), run("average", xs),
                               rtol=0, atol=1e-6)


def test_arithmetic_hand_computed():
    base = torch.tensor([1.0, 1.0])
    out = run("arithmetic", [torch.tensor([2.0, 0.0]), torch.tensor([4.0, 1.0])], base=base, **{"lambda": 0.75})
    # 1 + 0.75 * ((2 - 1) + (4 - 1)) = 4 ; 1 + 0.75 * ((0 - 1) + (1 - 1)) = 0.25
    assert out.tolist() == [4.0, 0.25]


def test_ties_hand_computed():
    base = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, 3.0])
    t1 = torch.tensor([1.0, -2.0, 3.0, 0.5, 2.5, 0.1])   # top 3 by |.|: 3, 2.5, -2
    t2 = torch.tensor([-1.0, -1.5, 0.5, 4.0, -2.0, 0.2])  # top 3 by |.|: 4, -2, -1.5
    # trimmed: [0,-2,3,0,2.5,0] and [0,-1.5,0,4,-2,0]; elected signs of the sum [0,-3.5,3,4,.5,0]:
    # 0, -, +, +, +, 0; disjoint mean of the agreeing entries: [0, -1.75, 3, 4, 2.5, 0]
    out = run("ties", [base + t1, base + t2], base=base, density=0.5, **{"lambda": 0.5})
    expected = base + 0.5 * torch.tensor([0.0, -1.75, 3.0, 4.0, 2.5, 0.0])
    torch.testing.assert_close(out, expected)


def test_magnitude_mask_keeps_int_density_n_entries_first_ones_on_ties():
    tv = torch.tensor([[1.0, -1.0, 1.0, 0.5]])
    # int(0.5 * 4) = 2 entries; three tie at |1|: the first two in flattened order are kept
    assert magnitude_mask(tv, 0.5).tolist() == [[True, True, False, False]]
    # int(0.7 * 4) = int(2.8) = 2 (truncated as PEFT and mergekit do, not rounded to 3)
    assert magnitude_mask(tv, 0.7).tolist() == [[True, True, False, False]]
    assert magnitude_mask(tv, 1.0).all() and not magnitude_mask(tv, 0.2).any()  # int(0.8) = 0


def test_dare_is_deterministic_for_a_seed_and_drops_then_rescales():
    base = torch.zeros(1000)
    x = torch.ones(1000)
    a = run("dare", [x], base=base, density=0.3, seed=7, **{"lambda": 1.0})
    b = run("dare", [x], base=base, density=0.3, seed=7, **{"lambda": 1.0})
    c = run("dare", [x], base=base, density=0.3, seed=8, **{"lambda": 1.0})
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every entry is dropped (0) or kept and rescaled by 1/density
    values = torch.unique(a)
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.3)
    kept = (a != 0).float().mean().item()
    assert abs(kept - 0.3) < 4 * (0.3 * 0.7 / 1000) ** 0.5


def test_dare_hand_computed_from_its_masks():
    base = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    t = [torch.tensor([2.0, -2.0, 4.0, 1.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, -1.0, 2.0, 2.0, -2.0])]
    masks = [random_mask(base.shape, 0.5, 11, "layer.w", i) for i in range(2)]
    out = run("dare", [base + t[0], base + t[1]], base=base, key="layer.w", density=0.5, seed=11,
              **{"lambda": 0.5})
    expected = base.clone()
    for i in range(6):
        delta = sum(t[m][i] * masks[m][i].item() / 0.5 for m in range(2))
        expected[i] += 0.5 * delta
    torch.testing.assert_close(out, expected)
    # merging another tensor first draws nothing from this one's masks
    run("dare", [base + t[1], base + t[0]], base=base, key="other.w", density=0.5, seed=11, **{"lambda": 0.5})
    torch.testing.assert_close(run("dare", [base + t[0], base + t[1]], base=base, key="layer.w", density=0.5,
                                   seed=11, **{"lambda": 0.5}), out)


def test_dare_masks_depend_on_the_tensor_name_and_the_input_position():
    """On 4000 entries each (seed, name, position) draws its own Bernoulli(density) mask: the four
    masks of two names × two positions differ pairwise, the same arguments draw the same mask,
    and each keeps close to `density` of the entries (binomial sd 0.008 at 0.5)."""
    shape = torch.Size([40, 100])
    masks = {(key, i): random_mask(shape, 0.5, 11, key, i) for key in ("layer.w", "other.w") for i in range(2)}
    pairs = [(a, b) for a in masks for b in masks if a < b]
    assert len(pairs) == 6 and not any(torch.equal(masks[a], masks[b]) for a, b in pairs)
    assert all(torch.equal(random_mask(shape, 0.5, 11, key, i), m) for (key, i), m in masks.items())
    assert all(0.46 < m.float().mean().item() < 0.54 for m in masks.values())
    assert not torch.equal(random_mask(shape, 0.5, 12, "layer.w", 0), masks["layer.w", 0])


def test_dare_without_rescale_and_full_density_is_arithmetic():
    base, xs = rand(8, seed=1), [rand(8, seed=2), rand(8, seed=3)]
    torch.testing.assert_close(run("dare", xs, base=base, density=1.0, **{"lambda": 0.7}),
                               run("arithmetic", xs, base=base, **{"lambda": 0.7}))


def test_task_vector_methods_need_a_base():
    for name in ("arithmetic", "ties", "dare"):
        with pytest.raises(MergeError, match="needs the base"):
            run(name, [torch.zeros(2), torch.ones(2)])


# --- identity: N copies of one model --------------------------------------------------------------------

N_COPIES = 3
IDENTITY_PARAMS = {  # parameters under which merging N copies must return the copy
    "average": {},
    "interpolation": {"ratio": 0.3},
    "arithmetic": {"lambda": 1 / N_COPIES},
    "ties": {"density": 1.0, "lambda": 1.0},
    "dare": {"density": 1.0, "lambda": 1 / N_COPIES},
    "regmean": {"alpha": 1.0},
}


def test_every_registered_method_has_an_identity_case():
    assert set(IDENTITY_PARAMS) == set(MERGE_METHODS.names())


@pytest.mark.parametrize("name", sorted(IDENTITY_PARAMS))
def test_identity_merge_of_copies_returns_the_copy(name):
    sd = {"lin.weight": rand(6, 5, seed=1), "lin.bias": rand(6, seed=2), "norm.weight": rand(5, seed=3)}
    base = {k: v + rand(*v.shape, seed=4) for k, v in sd.items()}
    m = get_method(name)
    x = rand(40, 5, seed=5, dtype=torch.float64)
    grams = [{"lin": x.T @ x}] * N_COPIES if m.uses_grams else None
    out = merge_state_dicts(name, [sd] * N_COPIES, base=base if m.base != "none" else None, grams=grams,
                            params=IDENTITY_PARAMS[name])
    assert set(out) == set(sd)
    for k in sd:
        torch.testing.assert_close(out[k], sd[k], rtol=1e-6, atol=1e-6)


# --- RegMean ----------------------------------------------------------------------------------------------

def test_regmean_at_alpha_one_is_the_least_squares_solution_of_the_stacked_activations():
    rng = np.random.default_rng(0)
    d_in, d_out = 6, 4
    xs = [rng.normal(size=(n, d_in)) for n in (15, 9, 20)]
    ws = [rng.normal(size=(d_out, d_in)) for _ in xs]
    # independent solution: min_W Σ ‖X_m Wᵀ − X_m W_mᵀ‖² as one least-squares problem
    a = np.vstack(xs)
    b = np.vstack([x @ w.T for x, w in zip(xs, ws)])
    w_lstsq = np.linalg.lstsq(a, b, rcond=None)[0].T
    grams = [torch.from_numpy(x.T @ x) for x in xs]
    out = run("regmean", [torch.from_numpy(w).float() for w in ws], grams=grams, alpha=1.0)
    np.testing.assert_allclose(out.numpy(), w_lstsq, rtol=1e-5, atol=1e-5)
    out64 = run("regmean", [torch.from_numpy(w) for w in ws], grams=grams, alpha=1.0)
    np.testing.assert_allclose(out64.numpy(), w_lstsq, rtol=1e-10, atol=1e-10)


def test_regmean_at_alpha_zero_is_a_per_input_feature_weighted_average():
    # diagonal Grams: column j of W* = Σ_m g_mj W_m[:, j] / Σ_m g_mj
    w1, w2 = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[3.0, 6.0]], dtype=torch.float64)
    g1 = torch.tensor([[1.0, 5.0], [5.0, 3.0]], dtype=torch.float64)
    g2 = torch.tensor([[3.0, -7.0], [-7.0, 1.0]], dtype=torch.float64)
    out = run("regmean", [w1, w2], grams=[g1, g2], alpha=0.0)
    assert out.tolist() == [[pytest.approx((1 * 1 + 3 * 3) / 4), pytest.approx((3 * 2 + 1 * 6) / 4)]]


def test_regmean_averages_tensors_without_grams():
    out = run("regmean", [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])], grams=None)
    assert out.tolist() == [2.0, 4.0]


@pytest.mark.parametrize("case", ["dead_feature", "too_few_tokens"])
def test_singular_gram_sum_is_a_clear_error_or_regularised_never_nan(case):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5)) if case == "dead_feature" else rng.normal(size=(3, 5))
    if case == "dead_feature":
        x[:, 2] = 0.0  # an input feature no token ever activates
    g = torch.from_numpy(x.T @ x)
    ws = [torch.randn(4, 5), torch.randn(4, 5)]
    with pytest.raises(MergeError, match=r"blocks\.0\.attn\.qkv\.weight: .*singular.*ridge"):
        run("regmean", ws, grams=[g, g], key="blocks.0.attn.qkv.weight", alpha=1.0)
    out = run("regmean", ws, grams=[g, g], alpha=1.0, ridge=1e-6)
    assert torch.isfinite(out).all()
    if case == "dead_feature":  # the regularised solution gives an unexcited feature zero weight
        assert out[:, 2].abs().max() < 1e-4


def test_regmean_gram_shape_mismatch_names_the_tensor():
    with pytest.raises(MergeError, match=r"fc1\.weight: Gram 1 has shape \(3, 3\), expected \(5, 5\)"):
        run("regmean", [torch.randn(4, 5)] * 2, grams=[torch.eye(5), torch.eye(3)], key="fc1.weight")


# --- parameters ---------------------------------------------------------------------------------------------

def test_unknown_method_and_parameter_errors_name_the_choices():
    with pytest.raises(MergeError, match="Did you mean 'regmean'"):
        get_method("regmaen")
    with pytest.raises(MergeError, match=r"no parameter 'ratio'.*parameters: density, lambda"):
        get_method("ties").resolve({"ratio": 0.5})
    with pytest.raises(MergeError, match=r"lambda='abc' is not a float"):
        get_method("arithmetic").resolve({"lambda": "abc"})
    assert get_method("dare").resolve({"seed": "3", "rescale": "false"})["rescale"] is False
