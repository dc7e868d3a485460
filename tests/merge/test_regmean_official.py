"""RegMean end to end (Grams collected by vltune's hooks, saved, merged from files) against an
independent re-derivation of the official algorithm (bloomberg/dataless-model-merging,
``src/model_merge/local_trainer.py: compute_grams`` and ``avg_merger.py: regmean_mean_params``),
on two fine-tuned copies of a tiny two-block model.

The official algorithm, restated:

* each model's Gram of a Linear is the running mean ``Xᵀ X / n`` over the n input rows it saw;
* off-diagonals are scaled by ``reduce_non_diagonal_ratio`` α (the Gram is multiplied entrywise by a
  matrix with 1 on the diagonal and α elsewhere);
* ``W = ((Σ G_i)⁻¹ Σ G_i W_iᵀ)ᵀ`` for every ``<module>.weight`` whose module has a Gram;
* every other tensor (biases, LayerNorm weights and biases, embeddings) is the plain mean.

Conventions checked here: vltune stores weights as (out, in) and solves ``W (Σ G) = Σ W_i G_i``,
the transpose of the official solve; α is applied to each model's Gram before the sum, as
officially. Summed Grams ``Xᵀ X`` would weigh a model by its token count;
``test_grams_are_per_row_means_so_data_size_does_not_weigh_a_model`` pins the official mean.
vltune leaves padding rows out of a Gram (the official hook keeps them); the data here has none.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vltune.errors import UserError
from vltune.merge import merge_files
from vltune.merge.grams import collect, linear_modules, save_grams

D, H, VOCAB = 6, 8, 11


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.ln = nn.Linear(D, H), nn.Linear(H, D), nn.LayerNorm(D)

    def forward(self, x):
        return self.ln(x + self.fc2(torch.tanh(self.fc1(x))))


class Tiny(nn.Module):
    """Embedding, two blocks (Linear, tanh, Linear, residual, LayerNorm), final LayerNorm."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(D)

    def forward(self, ids):
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


def _finetuned(seed):
    torch.manual_seed(seed)
    m = Tiny().double()
    with torch.no_grad():  # LayerNorms away from their init, so every tensor differs between models
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def _official_inputs(model, ids):
    """Input rows of every block Linear, by running the layers by hand (no hooks)."""
    rows = {}
    x = model.embed(ids).reshape(-1, D)
    for i, b in enumerate(model.blocks):
        rows[f"blocks.{i}.fc1"] = x
        h = torch.tanh(b.fc1(x))
        rows[f"blocks.{i}.fc2"] = h
        x = b.ln(x + b.fc2(h))
    return rows


def _official_regmean(models, grams, alpha):
    merged = {}
    states = [dict(m.named_parameters()) for m in models]
    for name in states[0]:
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module is not None and module in grams[0]:
            reduced = []
            for g in grams:
                d = g[module].shape[0]
                weight = torch.full((d, d), alpha, dtype=g[module].dtype)
                weight.fill_diagonal_(1.0)
                reduced.append(g[module] * weight)
            rhs = sum(gr @ s[name].T for gr, s in zip(reduced, states))
            merged[name] = (torch.inverse(sum(reduced)) @ rhs).T
        else:
            merged[name] = torch.stack([s[name] for s in states]).mean(0)
    return {k: v.detach() for k, v in merged.items()}


def _vltune_regmean(tmp_path, models, data, alpha):
    model_files, gram_files = [], []
    for i, (m, ids) in enumerate(zip(models, data)):
        grams, counts = collect(m, lambda m=m, ids=ids: m(ids), linear_modules(m))
        gram_files.append(tmp_path / f"grams{i}.safetensors")
        save_grams(grams, counts, gram_files[-1])
        model_files.append(tmp_path / f"model{i}.safetensors")
        save_file({k: v.detach().contiguous() for k, v in m.state_dict().items()}, str(model_files[-1]))
    out = tmp_path / f"merged_{alpha}.safetensors"
    merge_files("regmean", model_files, out, grams=gram_files, params={"alpha": alpha})
    return load_file(str(out)), [load_file(str(g)) for g in gram_files]


# different amounts of data per model (40 and 18 tokens), so how Grams are normalised matters
_DATA = [torch.randint(0, VOCAB, (8, 5), generator=torch.Generator().manual_seed(1)),
         torch.randint(0, VOCAB, (3, 6), generator=torch.Generator().manual_seed(2))]


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.1])
@torch.no_grad()
def test_regmean_of_two_models_equals_the_official_algorithm(tmp_path, alpha):
    models = [_finetuned(0), _finetuned(1)]
    ours, _ = _vltune_regmean(tmp_path, models, _DATA, alpha)
    grams = [{k: x.T @ x / x.shape[0] for k, x in _official_inputs(m, ids).items()} for m, ids in zip(models, _DATA)]
    expected = _official_regmean(models, grams, alpha)
    assert set(ours) == set(expected)
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-9, atol=1e-10, msg=name)
    # the Linear weights are RegMean's, not the average (the check can tell them apart)
    avg = (models[0].blocks[1].fc1.weight + models[1].blocks[1].fc1.weight) / 2
    assert not torch.allclose(ours["blocks.1.fc1.weight"], avg, atol=1e-3)


@torch.no_grad()
def test_grams_are_per_row_means_so_data_size_does_not_weigh_a_model(tmp_path):
    models = [_finetuned(0), _finetuned(1)]
    ours, saved = _vltune_regmean(tmp_path, models, _DATA, 1.0)
    for m, ids, g in zip(models, _DATA, saved):
        x = _official_inputs(m, ids)["blocks.0.fc1"]
        torch.testing.assert_close(g["blocks.0.fc1"], x.T @ x / ids.numel(), rtol=1e-12, atol=1e-12)
    # with summed Grams (not the official rule) the 40-token model would weigh more: another answer
    sums = [{k: x.T @ x for k, x in _official_inputs(m, ids).items()} for m, ids in zip(models, _DATA)]
    summed = _official_regmean(models, sums, 1.0)["blocks.0.fc1.weight"]
    assert not torch.allclose(ours["blocks.0.fc1.weight"], summed, atol=1e-4)


def test_gram_of_no_rows_is_one_named_error_and_writes_nothing(tmp_path):
    out = tmp_path / "grams.safetensors"
    with pytest.raises(UserError, match=r"grams\.safetensors: Gram 'blocks\.0\.fc1' summed no rows"):
        save_grams({"blocks.0.fc1": torch.zeros(D, D, dtype=torch.float64)}, {"blocks.0.fc1": 0}, out)
    assert not out.exists()
