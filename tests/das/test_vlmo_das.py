"""DAS on the VLMo: the parallel adapters sit where ViLT's do and change nothing at zero, a skipped
block is gone from every stream (and exactly the identity with a zero replacement adapter), FLOPs
fall by the block's exact count, and skip.json flows from das-search through das-finetune into
das-evaluate with no manual step."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vltune.cli import main
from vltune.das import build_supernet, set_skipped
from vltune.das.vlmo import forward_call
from vltune.evaluate.cost import count_flops
from vltune.models.vlmo import VLMo, VLMoConfig
from vltune.pet import apply_pet, count_parameters
from vltune.pet.das.layer import DasAdapter, SkippedBlock
from vltune.recipes.vlmo.tasks import TaskModel

D, LAYERS, R, R_SKIP, N_ANSWERS = 16, 3, 4, 8, 5


def task_model(task="vqa", mode="agnostic") -> TaskModel:
    torch.manual_seed(0)
    cfg = VLMoConfig(vocab_size=50, d_model=D, layers=LAYERS, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12,
                     image_size=32, patch_size=16, mode=mode)
    return TaskModel(VLMo(cfg).eval(), task, N_ANSWERS).eval()


def das(model, skip=(), **kw):
    torch.manual_seed(1)
    return apply_pet(model, {"method": "das", "adapter_dim": R, "skip_dim": R_SKIP, "skip": list(skip),
                             "modules_to_save": ["head"], **kw}).eval()


def batch(n=3):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 50, (n, 7), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 5:] = False
    return {"input_ids": ids, "attention_mask": mask, "pixels": torch.randn(n, 3, 32, 32, generator=g),
            "pixels2": torch.randn(n, 3, 32, 32, generator=g)}


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("task", ["vqa", "nlvr2", "retrieval"])
def test_zero_adapters_leave_every_stream_unchanged_and_trained_ones_change_it(task):
    b = batch()
    base = task_model(task)(b)
    model = das(task_model(task), zero_init_up=True)
    assert torch.equal(model(b), base)
    # 2 adapters per block, on attention and FFN, reached by the joint and unimodal passes alike
    assert sum(isinstance(m, DasAdapter) for m in model.modules()) == 2 * LAYERS
    perturb(model)
    assert not torch.allclose(model(b), base)


def test_adapter_is_parallel_to_the_sublayer_on_the_residual_stream():
    """x + γ ⊙ (Attn(LN x) + A(x)): the adapter reads the block's input, not the normalised one."""
    model = das(task_model())
    block = model.backbone.blocks[0]
    perturb(model)
    x = torch.randn(2, 4, D)
    raw = lambda m, *a: type(m).forward(m, *a)  # noqa: E731  (the module without the DAS hooks)
    h = x + block.gamma1 * (raw(block.attn, raw(block.norm1, x), None) + block.attn.das_adapter(x))
    expected = h + block.gamma2 * (raw(block.mlp, raw(block.norm2, h)) + block.mlp.das_adapter(h))
    assert torch.allclose(block(x, None, "v"), expected, atol=1e-6)


@pytest.mark.parametrize("skip", [[0], [2], [0, 1]])
def test_skipped_block_with_zero_up_projection_is_the_identity_in_every_stream(skip):
    b = batch()
    model = das(task_model("nlvr2"), skip)
    perturb(model)
    for i in skip:
        assert isinstance(model.backbone.blocks[i], SkippedBlock)
        model.backbone.blocks[i].das_adapter.zero_init_up_()
    ref = copy.deepcopy(model)
    for i in skip:  # the same weights with the blocks simply taken out
        ref.backbone.blocks[i] = _Pass()
    assert torch.equal(model(b), ref(b))
    # the skipped blocks' weights are not in the model, nor in anything saved from it
    assert not [n for n in model.state_dict() for i in skip if n.startswith(f"backbone.blocks.{i}.attn.")]


class _Pass(torch.nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


def test_supernet_with_a_skip_set_equals_the_final_skipped_model():
    b = batch()
    sup = das(task_model())
    wrappers = build_supernet(sup, sup.pet_config)
    perturb(sup)
    set_skipped(wrappers, [1])
    final = das(task_model(), [1])
    src = sup.state_dict()
    mapped = {}
    for name in final.state_dict():
        parts = name.split(".")
        source = name
        if parts[:2] == ["backbone", "blocks"]:
            inner = "stand_in" if int(parts[2]) == 1 else "block"
            source = ".".join(parts[:3] + [inner] + parts[3:])
        mapped[name] = src[source]
    final.load_state_dict(mapped)
    assert torch.equal(final(b), sup(b))


def test_parameters_and_flops_fall_by_the_skipped_blocks_exact_counts():
    """A block on L tokens costs 2·L·(3d² + d² + 2·d·f) matmul FLOPs + 4·L²·d for attention; its two
    adapters 2·4·L·d·r, its stand-in 4·L·d·r'. A VQA forward runs block i of the shallow layers on
    the text (T tokens) and the image (P + 1) separately, the top block on both joined."""
    b = batch(n=2)
    model = das(task_model())
    T, P, f = b["input_ids"].shape[1], 5, 2 * D
    full = count_flops(model, b, forward_call)
    lin = lambda n: 2 * n * (4 * D * D + 2 * D * f) + 2 * 4 * n * D * R  # noqa: E731
    att = lambda n: 4 * n * n * D  # noqa: E731
    stand_in = lambda n: 4 * n * D * R_SKIP  # noqa: E731
    shallow = lin(T) + att(T) + lin(P) + att(P) - stand_in(T) - stand_in(P)
    top = lin(T + P) + att(T + P) - stand_in(T + P)
    assert full - count_flops(das(task_model(), [0]), b, forward_call) == 2 * shallow
    assert full - count_flops(das(task_model(), [2]), b, forward_call) == 2 * top
    block = sum(p.numel() for p in task_model().backbone.blocks[0].parameters())
    adapter = lambda r: 2 * D + D * r + r + r * D + D  # noqa: E731
    k0, k1 = count_parameters(model), count_parameters(das(task_model(), [0]))
    assert k0["total_params"] - k1["total_params"] == block + 2 * adapter(R) - adapter(R_SKIP)
    assert k0["trainable_params"] - k1["trainable_params"] == 2 * adapter(R) - adapter(R_SKIP)


def test_a_modality_specific_vlmo_is_refused(tiny_world, tokenizer_dir, tmp_path):
    from vltune.das.vlmo import VLMoTask
    from vltune.errors import UserError
    from vltune.recipes.vlmo.pretrain import build_vlmo, save_vlmo
    from vltune.backbones.tokenizer import load_tokenizer

    arch = {"d_model": D, "layers": 2, "vl_layers": 1, "heads": 2, "mlp_ratio": 2}
    save_vlmo(build_vlmo(arch, "specific", load_tokenizer(tokenizer_dir)), tmp_path / "specific")
    with pytest.raises(UserError, match="needs a modality-agnostic VLMo"):
        VLMoTask(tmp_path / "specific", tiny_world, tokenizer_dir, "vqa")


@pytest.mark.parametrize("task", ["vqa", "retrieval"])
def test_skip_json_flows_from_search_to_finetune_and_evaluate(task, tiny_world, tokenizer_dir, tmp_path):
    from vltune.backbones.tokenizer import load_tokenizer
    from vltune.recipes.vlmo.pretrain import build_vlmo, save_vlmo

    torch.manual_seed(0)
    arch = {"d_model": D, "layers": LAYERS, "vl_layers": 1, "heads": 2, "mlp_ratio": 2}
    save_vlmo(build_vlmo(arch, "agnostic", load_tokenizer(tokenizer_dir)), tmp_path / "vlmo")
    common = ["--data", str(tiny_world), "--tokenizer", str(tokenizer_dir), "--backbone", str(tmp_path / "vlmo"),
              "--family", "vlmo", "--task", task, "--seed", "1"]
    hp = {"batch_size": 8, "method_config": {"adapter_dim": R, "skip_dim": R_SKIP},
          "train": {"steps": 6, "lr": 1e-3, "log_every": 3}}
    search = {**hp, "search": {"turn": 2, "warmup_ratio": 0.25, "val_batch_size": 8}}
    runs = {}
    for attempt in range(2):  # the search is deterministic for a seed
        out = tmp_path / f"skip{attempt}.json"
        assert main(["das-search", *common, "--k", "1", "--params", json.dumps(search), "--out", str(out)]) in (0, None)
        runs[attempt] = json.loads(out.read_text())
    assert runs[0]["logits"] == runs[1]["logits"] and runs[0]["skip"] == runs[1]["skip"]
    assert runs[0]["family"] == "vlmo" and runs[0]["n_blocks"] == LAYERS and len(runs[0]["trace"]) > 0
    ckpt = tmp_path / "ckpt"
    assert main(["das-finetune", *common, "--skip", str(tmp_path / "skip0.json"), "--params", json.dumps(hp),
                 "--out", str(ckpt)]) in (0, None)
    metrics = tmp_path / "metrics.json"
    ev = {"split": "test", "batch_size": 64, "latency": {"batch_size": 8, "repeats": 2, "warmup": 1}}
    assert main(["das-evaluate", "--checkpoint", str(ckpt), "--data", str(tiny_world), "--tokenizer", str(tokenizer_dir),
                 "--task", task, "--params", json.dumps(ev), "--out", str(metrics)]) in (0, None)
    record = json.loads(metrics.read_text())
    assert record["skip"] == runs[0]["skip"] and record["k"] == 1 and record["n_blocks"] == LAYERS
    assert record["family"] == "vlmo" and record["flops_per_sample"] > 0 and record["latency_ms"] > 0
    assert record[score_key(task)] == pytest.approx(_score_by_hand(ckpt, tiny_world, tokenizer_dir, task))


def score_key(task):
    return "vqa_accuracy" if task == "vqa" else "retrieval_ir_r1"


# The official VQA answer normalisation's number words (https://visualqa.org/evaluation.html,
# processDigitArticle); the synthetic world's other answers are single lower-case words it keeps.
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def _score_by_hand(ckpt, data_dir, tokenizer_dir, task):
    """The test split's score of the saved DAS model, from its outputs: VQA accuracy by the
    official rule (mean over the ten leave-one-out subsets of min(1, matches / 3)); IR@1 as the
    share of captions whose image scores strictly above every other image."""
    import numpy as np

    from vltune.das.vlmo import load_das_vlmo
    from vltune.recipes.vlmo.data import text_batch
    from vltune.recipes.vlmo.tasks import make_batch

    model, setup, _ = load_das_vlmo(ckpt, data_dir, tokenizer_dir, "test")
    data, pad = setup.data["test"], setup.tok.pad_token_id
    with torch.no_grad():
        if task == "retrieval":
            m = model.backbone
            sim = (m.image_features(setup.bank.gather(data.image_list))
                   @ m.text_features(*text_batch(data.texts.ids, pad)).T).numpy()
            return 100 * np.mean([sim[i, c] > np.delete(sim[:, c], i).max() for c, i in enumerate(data.refs)])
        preds = model(make_batch(data, range(len(data)), setup.bank, pad)).argmax(-1).tolist()
    norm = lambda a: NUMBER_WORDS.get(a, a)  # noqa: E731
    scores = []
    for p, answers in zip(preds, data.refs):
        pred, answers = norm(data.answers[p]), [norm(a) for a in answers]
        scores.append(np.mean([min(1.0, sum(a == pred for a in answers[:i] + answers[i + 1:]) / 3)
                               for i in range(len(answers))]))
    return 100 * np.mean(scores)


def test_vlmo_family_needs_the_tokenizer(tiny_world, tmp_path, capsys):
    rc = main(["das-search", "--data", str(tiny_world), "--backbone", str(tmp_path), "--family", "vlmo", "--task", "vqa",
               "--k", "1", "--seed", "0", "--params", "{}", "--out", str(tmp_path / "s.json")])
    assert rc not in (0, None)
    assert "--tokenizer is required for the 'vlmo' family" in capsys.readouterr().err
