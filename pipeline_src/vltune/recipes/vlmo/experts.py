"""The merging study on a VLMo-style model (Sung et al., "An Empirical Study of Multimodal Model
Merging", https://arxiv.org/abs/2304.14933): merge a modality-specific model's experts into one
modality-agnostic weight set, and fine-tune + evaluate an init on every task."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ...errors import UserError
from ...utils.io import read_json, write_json

log = logging.getLogger("vltune")

TASK_METRIC_PREFIXES = ("vqa_", "nlvr2_", "retrieval_")


def merge_experts(method: str, specific: str, out: str | Path, base: str | None = None, seed: str | None = None,
                  grams: str | None = None, params: dict | None = None) -> tuple[dict, dict]:
    """Merge the experts of the modality-specific VLMo folder ``specific`` with ``method`` into the
    modality-agnostic VLMo folder ``out`` (model.safetensors, vlmo.json, diagnostics.json).
    ``base``: central weights of task-vector merges (a VLMo folder); ``seed``: the VLMo folder the
    diagnostics' task vectors are taken from; ``grams``: RegMean's Gram file. Returns the merge
    summary and the diagnostics."""
    from ...merge import merge_experts as run
    from ...merge.diagnostics import expert_diagnostics
    from ...merge.io import SafetensorsSource
    from .pretrain import CONFIG_JSON, WEIGHTS, read_vlmo_config

    cfg, meta = read_vlmo_config(specific)
    if cfg.mode != "specific":
        raise UserError(f"{specific}: a {cfg.mode} model has no experts to merge")
    if base is not None:
        base_cfg, _ = read_vlmo_config(base)
        if {**base_cfg.to_dict(), "mode": "specific"} != cfg.to_dict():
            raise UserError(f"{base}: the base's architecture differs from {specific}'s")
    out = Path(out)
    base_weights = Path(base) / WEIGHTS if base else None
    t0 = time.perf_counter()
    summary = run(method, Path(specific) / WEIGHTS, out / WEIGHTS, base=base_weights, grams=grams, params=params)
    merge_s = time.perf_counter() - t0
    write_json(out / CONFIG_JSON, {"arch": {**cfg.to_dict(), "mode": "agnostic"}, "stage": "merged",
                                   "merge": {**summary, "specific": specific, "base": base, "grams": grams,
                                             "wall_s": merge_s}})
    seed_source = SafetensorsSource(Path(seed) / WEIGHTS) if seed else None
    diag = expert_diagnostics(SafetensorsSource(Path(specific) / WEIGHTS), seed_source, SafetensorsSource(out / WEIGHTS))
    write_json(out / "diagnostics.json", diag)
    log.info("merged %s with %s %s in %.2f s; diagnostics %s", specific, method, summary["params"], merge_s,
             diag["summary"])
    return summary, diag


def finetune_inits(inits: list[str], tasks: list[str], data: str, tokenizer: str, train_cfg, batch_size: int,
                   out: str | Path, eval_split: str, eval_batch_size: int, resume_dir: str | None = None) -> dict:
    """Fine-tune ``inits[i]`` on ``tasks[i]`` and evaluate it, for every task (checkpoints under
    ``out/checkpoints/<task>``). Returns the task metrics, the per-task wall times and final losses
    (``tasks``), the merge diagnostics of the inits averaged over the tasks (``merge_*``), and the
    backbone's parameter count."""
    from .tasks import finetune_vlmo as run

    out = Path(out)
    metrics: dict = {}
    diag: dict[str, list[float]] = {}
    walls = {}
    for task, init in zip(tasks, inits):
        r = run(init, data, tokenizer, task, train_cfg, batch_size, out_dir=out / "checkpoints" / task,
                eval_split=eval_split, eval_batch_size=eval_batch_size,
                resume_dir=f"{resume_dir}/{task}" if resume_dir else None)
        metrics.update({k: v for k, v in r.items() if k.startswith(TASK_METRIC_PREFIXES)})
        walls[task] = {"train_wall_s": r["train_wall_s"], "eval_wall_s": r["eval_wall_s"],
                       "train_final_loss": r["train_final_loss"]}
        d = Path(init) / "diagnostics.json"
        if d.exists():
            for k, v in read_json(d)["summary"].items():
                diag.setdefault(k, []).append(v)
    return {"metrics": metrics, "tasks": walls, "backbone_params": r["backbone_params"],
            "diagnostics": {f"merge_{k.removeprefix('merge_')}": sum(v) / len(v) for k, v in diag.items()}}
