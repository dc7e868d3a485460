"""Data for the VLMo model (pixels + text; no feature store): decoded images, tokenised text with
word boundaries, whole-word masking, and the examples of each merging-study task.

Tasks (Sung et al., arXiv 2304.14933): ``vqa`` (joint pass → answer classifier over the train answers, soft
scores), ``nlvr2`` (two joint passes, left image as type 1 and right as type 2 → true/false),
``retrieval`` (dual encoder over image–caption pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ...data.answers import soft_scores
from ...data.images import decode_images
from ...data.tables import read_table, table_path
from ...utils.tensors import pad_sequences

TASKS = ("vqa", "nlvr2", "retrieval")


class ImageBank:
    """Every image of the given splits, decoded once (float16 in memory, float32 per batch) with
    ``preprocessing`` (``VLMoConfig.preprocessing``: side, interpolation, mean/std)."""

    def __init__(self, data_dir: str | Path, splits: tuple[str, ...], preprocessing: dict):
        t = read_table(table_path(data_dir, "images"), "images")
        t = t.filter(pc.is_in(t["split"], value_set=pa.array(list(splits))))
        ids = t["image_id"].to_pylist()
        blobs = t["image"].to_pylist()
        image_size = int(preprocessing["resize"])
        chunks = [decode_images(blobs[i:i + 1024], image_size, preprocessing["mean"], preprocessing["std"],
                                preprocessing["interpolation"]).half() for i in range(0, len(blobs), 1024)]
        self.pixels = torch.cat(chunks) if chunks else torch.empty(0, 3, image_size, image_size, dtype=torch.half)
        self.index = {iid: i for i, iid in enumerate(ids)}
        self.preprocessing = dict(preprocessing)

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, image_ids) -> torch.Tensor:
        return self.pixels[[self.index[i] for i in image_ids]].float()


@dataclass
class Texts:
    """Tokenised texts: ids (with <s> … </s>) and each token's word index (None for specials)."""

    ids: list[list[int]]
    words: list[list[int | None]]


def tokenize(tok, texts: list[str], max_len: int) -> Texts:
    enc = tok(texts, truncation=True, max_length=max_len)
    return Texts(enc["input_ids"], [enc.word_ids(i) for i in range(len(texts))])


def text_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = pad_sequences(ids, pad_id)
    return x, x != pad_id


def whole_word_mask(ids: list[int], words: list[int | None], prob: float, rng: np.random.Generator,
                    mask_id: int, vocab: tuple[int, int]) -> tuple[list[int], list[int]]:
    """BERT-style whole-word masking: pick words with probability ``prob``; each token of a picked
    word becomes <mask> (80 %), a random token (10 %) or stays (10 %); labels are -100 elsewhere."""
    word_ids = sorted({w for w in words if w is not None})
    picked = {w for w in word_ids if rng.random() < prob}
    if not picked and word_ids:  # every caption contributes at least one prediction
        picked = {word_ids[rng.integers(len(word_ids))]}
    out, labels = list(ids), [-100] * len(ids)
    for i, w in enumerate(words):
        if w in picked:
            labels[i] = ids[i]
            r = rng.random()
            if r < 0.8:
                out[i] = mask_id
            elif r < 0.9:
                out[i] = int(rng.integers(*vocab))
    return out, labels


def captions(data_dir: str | Path, split: str) -> tuple[list[str], list[list[str]]]:
    t = read_table(table_path(data_dir, "captions"), "captions")
    t = t.filter(pc.equal(t["split"], split))
    return t["image_id"].to_pylist(), t["captions"].to_pylist()


@dataclass
class TaskData:
    """One task's examples on one split (texts tokenised, images by id)."""

    task: str
    texts: Texts
    images: list[tuple[str, ...]]  # one image id (vqa, retrieval) or two (nlvr2) per example
    targets: torch.Tensor | None = None  # vqa: (N, n_answers) soft scores; nlvr2: (N,) labels
    refs: list = field(default_factory=list)  # vqa: 10 answers; nlvr2: label; retrieval: image index per caption
    answers: list[str] = field(default_factory=list)  # vqa: the answer vocabulary
    image_list: list[str] = field(default_factory=list)  # retrieval: the split's images, in refs' order
    ids: list[str] = field(default_factory=list)  # nlvr2: each example's identifier (consistency groups them)

    def __len__(self) -> int:
        return len(self.texts.ids)


def answer_vocab(data_dir: str | Path) -> list[str]:
    """Every normalised answer with a positive soft score on the train split (sorted)."""
    t = read_table(table_path(data_dir, "vqa"), "vqa")
    t = t.filter(pc.equal(t["split"], "train"))
    return sorted({a for answers in t["answers"].to_pylist() for a in soft_scores(answers)})


def load_task(data_dir: str | Path, task: str, split: str, tok, max_len: int,
              answers: list[str] | None = None) -> TaskData:
    if task == "vqa":
        t = read_table(table_path(data_dir, "vqa"), "vqa")
        t = t.filter(pc.equal(t["split"], split)).to_pydict()
        answers = answers if answers is not None else answer_vocab(data_dir)
        index = {a: i for i, a in enumerate(answers)}
        targets = torch.zeros(len(t["question"]), len(answers))
        for row, ans in enumerate(t["answers"]):
            for a, s in soft_scores(ans).items():
                if a in index:  # answers never seen in training cannot be predicted
                    targets[row, index[a]] = s
        return TaskData(task, tokenize(tok, t["question"], max_len), [(i,) for i in t["image_id"]], targets,
                        t["answers"], answers)
    if task == "nlvr2":
        t = read_table(table_path(data_dir, "nlvr2"), "nlvr2")
        t = t.filter(pc.equal(t["split"], split)).to_pydict()
        labels = torch.tensor([int(y) for y in t["label"]])
        return TaskData(task, tokenize(tok, t["statement"], max_len),
                        list(zip(t["left_image_id"], t["right_image_id"])), labels, t["label"], ids=t["pair_id"])
    if task == "retrieval":
        ids, caps = captions(data_dir, split)
        flat = [c for cs in caps for c in cs]
        owner = [i for i, cs in enumerate(caps) for _ in cs]
        # images[k] is the image of caption k; refs[k] its row in the split's image list (for R@K)
        return TaskData(task, tokenize(tok, flat, max_len), [(ids[i],) for i in owner], None, owner,
                        image_list=list(ids))
    raise ValueError(f"unknown merging-study task {task!r}; expected one of {TASKS}")
