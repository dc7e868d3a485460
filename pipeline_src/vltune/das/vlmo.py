"""DAS on the VLMo (arXiv 2309.01479, on the paper's kind of backbone: a single-stream ViLT/VLMo
transformer): search, fine-tuning and evaluation of one merging-study task (vqa, nlvr2,
retrieval) on a frozen, modality-agnostic pretrained VLMo.

The model is the merging study's task model (:class:`vltune.recipes.vlmo.tasks.TaskModel`: the VLMo
and the task's head) with the ``das`` PET method applied through the ``vlmo`` entry of the family
table: parallel adapters on every block's attention and FFN, and each skipped block replaced in the
block list by one adapter of width r'. Every stream runs through the same block list (text and
image below the vision-language layers, the joint sequence in them, the dual encoder for
retrieval), so a skipped block is gone from all of them. What trains: the adapters and the task's
head (the answer / pair classifier; the ITC projections for retrieval), as DAS trains adapters and
the classifier.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..backbones.tokenizer import load_tokenizer
from ..errors import UserError
from ..pet import apply_pet, count_parameters, load_pet, save_pet
from ..train.loop import TrainConfig, train
from ..recipes.vlmo.data import TASKS, ImageBank, load_task
from ..recipes.vlmo.pretrain import load_vlmo
from ..recipes.encdec.finetune import PET_SUBDIR
from ..recipes.vlmo.tasks import TaskModel, evaluate_task, make_batch, retrieval_rows, sample_batch, task_loss
from ..utils.io import read_json, write_json
from .search import SearchConfig, run_search
from .supernet import build_supernet

CHECKPOINT_JSON = "das_vlmo.json"
# The trained heads of each task (module-name suffixes, PetConfig.modules_to_save).
TASK_HEADS = {"vqa": ["head"], "nlvr2": ["head"], "retrieval": ["itc_text_proj", "itc_image_proj"]}


def forward_call(model: TaskModel, batch: dict):
    """The measured inference call of a VLMo task model (vltune.evaluate.cost): its forward."""
    return model(batch)


class VLMoTask:
    """One task's data on a VLMo init: the tokenizer, the train and evaluation examples, the image
    bank; batches are drawn from (seed, step) as in the merging study's fine-tuning."""

    def __init__(self, init_dir, data_dir, tokenizer_dir, task: str, splits=("train", "val"),
                 answers: list[str] | None = None):
        if task not in TASKS:
            raise UserError(f"das on the VLMo: unknown task {task!r}; expected one of {', '.join(TASKS)}")
        self.task = task
        self.tok = load_tokenizer(tokenizer_dir)
        self.backbone, _ = load_vlmo(init_dir)
        if self.backbone.cfg.mode != "agnostic":
            raise UserError(f"{init_dir}: DAS needs a modality-agnostic VLMo (one set of blocks to skip), "
                            f"this one is {self.backbone.cfg.mode!r}")
        max_len = self.backbone.cfg.max_text_len
        # VQA's answer vocabulary: the train split's answers (what load_task reads without one), or
        # the one a checkpoint was trained with.
        self.data = {split: load_task(data_dir, task, split, self.tok, max_len, answers=answers) for split in splits}
        self.answers = answers if answers is not None else self.data[splits[0]].answers
        self.bank = ImageBank(data_dir, tuple(splits), self.backbone.cfg.preprocessing)

    def model(self, method_config: dict | None, seed: int) -> TaskModel:
        """The task model with ``das`` applied (``method_config``: DasConfig fields)."""
        torch.manual_seed(seed)  # the head's and the adapters' init depend on the run seed only
        model = TaskModel(self.backbone, self.task, len(self.answers))
        config = {**(method_config or {}), "method": "das"}
        config.setdefault("modules_to_save", TASK_HEADS[self.task])
        return apply_pet(model, config)

    def batch(self, split: str, size: int, rng: np.random.Generator) -> dict:
        return sample_batch(self.data[split], self.bank, self.tok.pad_token_id, size, rng)


def search_skips_vlmo(init_dir, data_dir, tokenizer_dir, out_json, task: str, train_cfg: TrainConfig,
                      search_cfg: SearchConfig, batch_size: int, method_config: dict | None = None) -> dict:
    """Search which ``search_cfg.k`` VLMo blocks to skip for ``task`` (supernet batches from its
    train split, reward batches from its val split); writes ``out_json`` (the skip.json format of
    :func:`vltune.das.run.search_skips`)."""
    from .run import SKIP_FORMAT

    setup = VLMoTask(init_dir, data_dir, tokenizer_dir, task)
    model = setup.model({**(method_config or {}), "skip": []}, train_cfg.seed)
    wrappers = build_supernet(model, model.pet_config)
    result = run_search(model, wrappers,
                        lambda step: setup.batch("train", batch_size, np.random.default_rng([train_cfg.seed, step, 5])),
                        lambda step: setup.batch("val", search_cfg.val_batch_size,
                                                 np.random.default_rng([train_cfg.seed, step, 6])),
                        task_loss, train_cfg, search_cfg, desc=f"das_search[vlmo,{task},k={search_cfg.k}]")
    record = {"format": SKIP_FORMAT, "task": task, "family": "vlmo", "backbone": str(init_dir),
              "method_config": model.pet_config.to_dict(), **result}
    write_json(out_json, record)
    return record


def finetune_das_vlmo(init_dir, data_dir, tokenizer_dir, out_dir, task: str, train_cfg: TrainConfig,
                      batch_size: int, method_config: dict, resume_dir=None) -> dict:
    """Fine-tune the skipped VLMo (``method_config["skip"]``: the searched blocks) on ``task``;
    writes the adapters + head (``adapter/``), ``das_vlmo.json`` and ``train_log.json``."""
    setup = VLMoTask(init_dir, data_dir, tokenizer_dir, task, splits=("train",))
    model = setup.model(method_config, train_cfg.seed)
    result = train(model, lambda step: setup.batch("train", batch_size, np.random.default_rng([train_cfg.seed, step, 5])),
                   task_loss, train_cfg, resume_dir=resume_dir, desc=f"das_finetune[vlmo,{task}]")
    params = count_parameters(model)
    out_dir = Path(out_dir)
    save_pet(model, out_dir / PET_SUBDIR)
    write_json(out_dir / "train_log.json", {**result, **params})
    write_json(out_dir / CHECKPOINT_JSON, {"family": "vlmo", "task": task, "backbone": str(init_dir),
                                           "tokenizer": str(tokenizer_dir), "answers": setup.answers,
                                           "seed": train_cfg.seed, **params})
    return {**result, **params}


def load_das_vlmo(ckpt_dir, data_dir, tokenizer_dir, split: str, backbone_dir=None) -> tuple[TaskModel, VLMoTask, dict]:
    """The fine-tuned skipped VLMo of ``ckpt_dir`` on its backbone (default: the one it recorded),
    and ``split`` of its task. The skipped blocks are replaced before the adapters are loaded."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / CHECKPOINT_JSON
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: not found (a das-finetune checkpoint of the VLMo has one)")
    meta = read_json(meta_path)
    backbone = Path(backbone_dir or meta["backbone"])
    if not backbone.is_dir():
        raise UserError(f"{ckpt_dir}: its VLMo backbone folder {str(backbone)!r} was not found")
    setup = VLMoTask(backbone, data_dir, tokenizer_dir, meta["task"], splits=(split,), answers=meta["answers"])
    model = load_pet(TaskModel(setup.backbone, meta["task"], len(meta["answers"])), ckpt_dir / PET_SUBDIR)
    return model.eval(), setup, meta


def evaluate_das_vlmo(ckpt_dir, data_dir, tokenizer_dir, split: str = "test", batch_size: int = 256,
                      latency: dict | None = None, backbone_dir=None) -> tuple[dict, TaskModel, dict]:
    """Task metrics on ``split`` plus the inference cost (FLOPs per sample, median latency) of the
    model's forward on the first ``latency["batch_size"]`` examples; returns (metrics, model, meta)."""
    from ..evaluate.cost import inference_cost

    model, setup, meta = load_das_vlmo(ckpt_dir, data_dir, tokenizer_dir, split, backbone_dir)
    t0 = time.perf_counter()
    metrics = evaluate_task(model, setup.data[split], setup.bank, setup.tok.pad_token_id, batch_size)
    metrics["eval_wall_s"] = time.perf_counter() - t0
    latency = latency or {}
    data = setup.data[split]
    n = min(int(latency.get("batch_size", 64)), len(data))
    rows = retrieval_rows(data, np.random.default_rng(0), n) if setup.task == "retrieval" else range(n)
    batch = make_batch(data, rows, setup.bank, setup.tok.pad_token_id)
    cost = inference_cost(model, batch, repeats=int(latency.get("repeats", 20)), warmup=int(latency.get("warmup", 3)),
                          call=forward_call)
    return {**metrics, **cost}, model, meta
