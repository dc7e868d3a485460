"""Task data for the encoder-decoder VL models: examples from the canonical tables + feature store,
and single-task batches (VL-PET, arXiv 2308.09804 "Multi-task data loading").

Each task is text generation: a task prompt before the question/statement (``vqa:``, ``gqa:``,
``nlvr:``, ``caption:``; the reference code's ``gpa:`` typo for GQA is not kept), visual tokens =
the image's grid tokens (max-pooled when ``features.tokens.grid_pool`` says) + its [CLS]
(when ``features.tokens.cls``) (two images side by side for NLVR2, told apart by the
image-order embedding). VQA targets are sampled ∝ their soft score and the loss is weighted by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from ...data.answers import soft_scores
from ...data.tables import read_table, table_path
from ...errors import UserError
from ...features.store import FeatureStore
from ...utils.tensors import pad_sequences

TASKS = ("vqa", "gqa", "nlvr2", "caption")
PROMPTS = {"vqa": "vqa:", "gqa": "gqa:", "nlvr2": "nlvr:", "caption": "caption:"}


@dataclass
class TaskExamples:
    """Tokenised examples of one task and split. ``targets[i]`` lists (token ids, weight) choices."""

    task: str
    input_ids: list[list[int]]
    images: list[tuple[str, ...]]
    targets: list[list[tuple[list[int], float]]]
    refs: list = field(default_factory=list)  # what the metric needs: 10 answers, gold, label, captions
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int) -> "TaskExamples":
        """The first ``n`` examples (all of them if there are fewer)."""
        return TaskExamples(self.task, self.input_ids[:n], self.images[:n], self.targets[:n],
                            list(self.refs[:n]), list(self.ids[:n]))


@dataclass(frozen=True)
class VisualTokens:
    """How an image becomes visual tokens: its grid, max-pooled to ``grid_pool`` × ``grid_pool``
    cells (``None``: as extracted), then its one summary vector (``cls``: a ViT's [CLS], a CNN's
    attention-pool output) when ``cls`` is set. The released code of VL-Adapter
    (https://arxiv.org/abs/2112.06825) and VL-PET (https://arxiv.org/abs/2308.09804) max-pools CLIP
    RN101's 7 × 7 grid to 6 × 6 and adds no summary vector: 36 tokens per image, 72 for a pair."""

    grid_pool: int | None = None
    cls: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "VisualTokens":
        d = dict(d or {})
        unknown = set(d) - {"grid_pool", "cls"}
        if unknown:
            raise UserError(f"features.tokens: unknown key {sorted(unknown)[0]!r} (known: cls, grid_pool)")
        grid_pool = d.get("grid_pool")
        if grid_pool is not None and (not isinstance(grid_pool, int) or grid_pool < 1):
            raise UserError(f"features.tokens.grid_pool must be a positive integer or null, got {grid_pool!r}")
        return cls(grid_pool, bool(d.get("cls", True)))

    def to_dict(self) -> dict:
        return {"grid_pool": self.grid_pool, "cls": self.cls}


def pool_grid(grid: torch.Tensor, size: int, where: str = "the feature store") -> torch.Tensor:
    """(N, H·W, C) square grids → (N, size², C) by adaptive max pooling (VL-PET's ``Downsample``)."""
    n, cells, dim = grid.shape
    side = int(round(cells ** 0.5))
    if side * side != cells:
        raise UserError(f"{where}: grid of {cells} cells is not square; features.tokens.grid_pool needs a square grid")
    if size > side:
        raise UserError(f"features.tokens.grid_pool {size} is larger than the {side}×{side} grid of {where}")
    if size == side:
        return grid
    maps = grid.transpose(1, 2).reshape(n, dim, side, side)
    return torch.nn.functional.adaptive_max_pool2d(maps, size).flatten(2).transpose(1, 2)


class VisualBank:
    """All images' visual tokens in memory, float32: ``[grid ; cls]`` per image as ``visual`` says."""

    def __init__(self, store: FeatureStore, visual: VisualTokens | None = None):
        visual = visual or VisualTokens()
        if "grid" not in store.keys:
            raise UserError(f"{store.root}: the feature store has no 'grid' feature (has {sorted(store.keys)})")
        if visual.cls and "cls" not in store.keys:
            raise UserError(f"{store.root}: the feature store has no 'cls' feature (has {sorted(store.keys)}); "
                            "set features.tokens.cls: false to use the grid alone")
        ids, grid = store.all("grid")
        parts = [grid.float() if visual.grid_pool is None else pool_grid(grid.float(), visual.grid_pool, str(store.root))]
        if visual.cls:
            parts.append(store.all("cls")[1].float().unsqueeze(1))
        self.visual = visual
        self.tokens = torch.cat(parts, dim=1)
        self.index = {iid: i for i, iid in enumerate(ids)}
        self.tokens_per_image, self.dim = self.tokens.shape[1], self.tokens.shape[2]

    def gather(self, images: list[tuple[str, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        n_img = len(images[0])
        rows = torch.tensor([[self.index[i] for i in group] for group in images])
        feats = self.tokens[rows].flatten(1, 2)  # (B, n_img * T, D)
        order = torch.arange(n_img).repeat_interleave(self.tokens_per_image).expand(len(images), -1)
        return feats, order


def load_task(data_dir: str | Path, task: str, split: str, tokenizer, max_input_len: int = 32,
              max_target_len: int = 32) -> TaskExamples:
    kind = "captions" if task == "caption" else task
    t = read_table(table_path(data_dir, kind), kind)
    t = t.filter(pc.equal(t["split"], split)).to_pydict()

    def tok(texts: list[str], max_len: int) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]

    p = PROMPTS[task]
    if task == "vqa":
        inputs = tok([f"{p} {q}" for q in t["question"]], max_input_len)
        scored = [sorted((s, a) for a, s in soft_scores(answers).items() if s > 0) for answers in t["answers"]]
        vocab = sorted({a for choices in scored for _, a in choices})  # tokenise each answer once
        ids = dict(zip(vocab, tok(vocab, max_target_len)))
        targets = [[(ids[a], s) for s, a in choices] for choices in scored]
        return TaskExamples(task, inputs, [(i,) for i in t["image_id"]], targets, t["answers"], t["question_id"])
    if task == "gqa":
        inputs = tok([f"{p} {q}" for q in t["question"]], max_input_len)
        targets = [[(i, 1.0)] for i in tok(t["answer"], max_target_len)]
        return TaskExamples(task, inputs, [(i,) for i in t["image_id"]], targets, t["answer"], t["question_id"])
    if task == "nlvr2":
        inputs = tok([f"{p} {s}" for s in t["statement"]], max_input_len)
        true_ids, false_ids = tok(["true", "false"], max_target_len)
        targets = [[(true_ids if y else false_ids, 1.0)] for y in t["label"]]
        images = list(zip(t["left_image_id"], t["right_image_id"]))
        return TaskExamples(task, inputs, images, targets, t["label"], t["pair_id"])
    if task == "caption":
        prompt_ids = tok([p], max_input_len)[0]
        flat = tok([c for caps in t["captions"] for c in caps], max_target_len)  # one tokeniser call
        ends = np.cumsum([len(caps) for caps in t["captions"]])
        targets = [[(i, 1.0) for i in flat[e - len(caps):e]] for caps, e in zip(t["captions"], ends)]
        return TaskExamples(task, [prompt_ids] * len(targets), [(i,) for i in t["image_id"]], targets,
                            t["captions"], t["image_id"])
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def make_batch(ex: TaskExamples, idx, bank: VisualBank, pad_id: int, rng: np.random.Generator | None) -> dict:
    """Batch of examples ``idx``. With ``rng``, one target is sampled per example (∝ weight for
    VQA, uniformly among the references for captions) and ``weights`` carries its soft score."""
    idx = list(idx)
    feats, order = bank.gather([ex.images[i] for i in idx])
    inputs = [ex.input_ids[i] for i in idx]
    input_ids = pad_sequences(inputs, pad_id)
    batch = {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(),
             "vis_feats": feats, "vis_order": order}
    if rng is not None:
        labels, weights = [], []
        for i in idx:
            choices = ex.targets[i]
            w = np.array([c[1] for c in choices], dtype=float)
            k = rng.choice(len(choices), p=w / w.sum()) if ex.task == "vqa" else rng.integers(len(choices))
            labels.append(choices[k][0])
            weights.append(choices[k][1] if ex.task == "vqa" else 1.0)
        batch["labels"] = pad_sequences(labels, -100)
        batch["weights"] = torch.tensor(weights, dtype=torch.float32)
    return batch


def task_schedule(task_weights: dict[str, int], seed: int, step: int) -> str:
    """Round-robin over tasks: a round holds each task ``weight`` times, shuffled per round."""
    rnd = [t for t in sorted(task_weights) for _ in range(task_weights[t])]
    r, pos = divmod(step, len(rnd))
    order = np.random.default_rng([seed, r, 99]).permutation(len(rnd))
    return rnd[order[pos]]
