"""RegMean: the merged Linear weight that best reproduces every input's outputs on its own inputs.

Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023
(https://arxiv.org/abs/2212.09849; bloomberg/dataless-model-merging), as the modality-merging
paper applies it to the experts of a layer. With input activations X_m (n_m rows) of input m and
its Gram G_m = X_mᵀ X_m / n_m, the per-row mean the official code keeps (``vltune.merge.grams``
writes it so), in PyTorch layout W ∈ R^{out×in}:

    min_W Σ_m ‖X_m Wᵀ − X_m W_mᵀ‖² / n_m   ⇒   W* = (Σ_m W_m G_m)(Σ_m G_m)^{-1}

``alpha`` scales the off-diagonal part of every Gram, G̃_m = α G_m + (1 − α) diag(G_m) (α = 1 is
the exact least-squares solution above; α < 1 pulls it toward a per-input-feature average and makes
the sum better conditioned), the official ``reduce_non_diag``. Tensors without Grams (biases,
LayerNorms, embeddings) get the plain mean, as in the official ``regmean_mean_params``. Computed in
float64.

Singular Gram sums (an input feature no input ever activates, fewer tokens than features) have no
unique solution. They raise :class:`MergeError` naming the tensor, unless ``ridge`` > 0: then
``ridge · mean(diag(Σ G̃))`` is added to the diagonal of the sum, the documented regularisation
(it shrinks the solution toward zero along directions no input excites).
"""

from __future__ import annotations

import torch

from .base import MergeError, check_inputs, register, stack_float

# A Cholesky pivot² below this share of the largest diagonal entry means the sum is singular to
# working precision (condition number ≳ 1e12): the solve would amplify rounding noise, not data.
SINGULAR_RTOL = 1e-12


def regularised_grams(grams: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    out = []
    for g in grams:
        g = g.to(torch.float64)
        out.append(alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g)))
    return out


def regmean_weight(weights: list[torch.Tensor], grams: list[torch.Tensor], alpha: float = 1.0,
                   ridge: float = 0.0, key: str = "") -> torch.Tensor:
    """``(Σ_m W_m G̃_m)(Σ_m G̃_m)^{-1}`` in float64, returned in the weights' dtype."""
    if len(grams) != len(weights):
        raise MergeError(f"{key}: {len(weights)} weights but {len(grams)} Gram matrices")
    d_in = weights[0].shape[-1]
    for i, g in enumerate(grams):
        if tuple(g.shape) != (d_in, d_in):
            raise MergeError(f"{key}: Gram {i} has shape {tuple(g.shape)}, expected ({d_in}, {d_in}) "
                             f"for a weight of shape {tuple(weights[0].shape)}")
    g = regularised_grams(grams, alpha)
    total = torch.stack(g).sum(0)
    if ridge > 0:
        total = total + ridge * torch.diagonal(total).mean() * torch.eye(d_in, dtype=torch.float64)
    w = [x.to(torch.float64) for x in weights]
    rhs = torch.stack([wm @ gm for wm, gm in zip(w, g)]).sum(0)  # (out, in)
    chol, info = torch.linalg.cholesky_ex(total)
    scale = torch.diagonal(total).abs().max()
    if int(info) != 0 or not torch.isfinite(chol).all() or scale <= 0 or \
            torch.diagonal(chol).min() ** 2 <= SINGULAR_RTOL * scale:
        raise MergeError(
            f"{key}: the sum of the inputs' Gram matrices is singular (an input feature is never "
            f"activated, or fewer tokens than features); RegMean has no unique solution. Set the "
            f"regmean parameter ridge > 0 (documented regularisation) or alpha < 1")
    # W* = rhs · total⁻¹  ⇔  total · W*ᵀ = rhsᵀ (total is symmetric)
    out = torch.cholesky_solve(rhs.T.contiguous(), chol).T
    if not torch.isfinite(out).all():
        raise MergeError(f"{key}: RegMean produced non-finite values (inputs hold inf/NaN?)")
    return out.to(weights[0].dtype)


@register("regmean", params={"alpha": 1.0, "ridge": 0.0}, pretty_name="RegMean",
          reference_url="https://arxiv.org/abs/2212.09849")
def regmean(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """Linear weights with Grams: the RegMean solution; anything else: the plain mean."""
    check_inputs(tensors, key)
    alpha, ridge = params["alpha"], params["ridge"]
    if not 0.0 <= alpha <= 1.0:
        raise MergeError(f"regmean: alpha must be in [0, 1], got {alpha}")
    if ridge < 0:
        raise MergeError(f"regmean: ridge must be >= 0, got {ridge}")
    if grams is None:
        return stack_float(tensors).mean(0).to(tensors[0].dtype)
    if tensors[0].ndim != 2:
        raise MergeError(f"{key}: Gram matrices given for a {tensors[0].ndim}-D tensor (only Linear weights)")
    return regmean_weight(list(tensors), list(grams), alpha, ridge, key)
