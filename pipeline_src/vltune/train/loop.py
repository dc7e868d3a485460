"""The one training loop (accelerate): pretraining of the tiny backbones and every fine-tuning run.

Read top to bottom: setup → resume → loop (lr schedule → micro-step → clip → step → log →
checkpoint) → return. Budgeted in optimisation steps, never in wall time, so results do not
depend on the machine's speed.

Determinism and exact resume: the batch of step ``t`` is a pure function of ``(seed, t)``
(``batch_fn`` builds it from its own generator) and the torch RNG is re-seeded from
``(seed, t)`` before every step (dropout), so a run resumed from a checkpoint at step ``k``
continues exactly as the uninterrupted run would.

Data parallel (``accelerate launch``, one process per GPU, or CPU processes with gloo): every
process builds the same global batch and trains on its slice (train/distributed.py); ``loss_fn``
then returns ``(sum, count)`` so the loss is normalised by the global count and W processes take
the step one process would take on the whole batch. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError
from .checkpoint import clear_checkpoints, latest_extra, load_latest, save_checkpoint
from .distributed import all_sum, shard_batch

log = logging.getLogger(__name__)


NO_DECAY_RULES = {
    "bias_and_norm": lambda name, p: p.ndim < 2,
    "name": lambda name, p: "bias" in name or "LayerNorm.weight" in name,
}


@dataclass
class TrainConfig:
    # budget
    steps: int = 1000  # optimisation steps
    # optimiser (AdamW, linear warm-up then linear decay to 0, as in VL-Adapter/VL-PET)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of `steps`
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_clip: float = 5.0  # global norm; 0 disables
    # reproducibility / bookkeeping
    seed: int = 0
    checkpoint_every: int = 0  # steps between resume checkpoints; 0 = none
    log_every: int = 50  # steps between loss log lines
    mixed_precision: str = "auto"  # "auto" = bf16 on CUDA, fp32 on CPU; or "no" / "bf16"
    # Which parameters AdamW does not decay: "bias_and_norm" (every 1-D tensor: biases and norm
    # weights, standard practice) or "name" (the VL-Adapter/VL-PET code's name filter: names holding
    # "bias" or "LayerNorm.weight"; BART's `*_layer_norm.weight` and VL-PET's middleY z are decayed).
    no_decay: str = "bias_and_norm"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"mixed_precision must be auto|no|bf16, got {self.mixed_precision!r}")
        if self.no_decay not in NO_DECAY_RULES:
            raise ValueError(f"no_decay must be one of {sorted(NO_DECAY_RULES)}, got {self.no_decay!r}")
        self.betas = tuple(self.betas)


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops before that step's update (a too-high
    learning rate, an unscaled loss weight, bad input values)."""


def step_seed(seed: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, step)."""
    return (seed * 1_000_003 + step * 7919 + 17) % (2**63 - 1)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    exempt = NO_DECAY_RULES[cfg.no_decay]
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if exempt(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def make_scheduler(optimizer, cfg: TrainConfig):
    warmup = max(1, int(round(cfg.warmup_ratio * cfg.steps)))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def make_accelerator(mixed_precision: str = "auto"):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda else "no"
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision)


# The running job's identity (vltune.train.identity), set by the command layer around a job; a
# resume checkpoint records it and is continued only by the same run. None: a library call, which
# compares the training settings alone.
_JOB_IDENTITY = None


@contextlib.contextmanager
def job_identity(identity):
    """Within the block, checkpoints record ``identity`` (a :class:`RunIdentity`) and resume only
    when it matches."""
    global _JOB_IDENTITY
    previous, _JOB_IDENTITY = _JOB_IDENTITY, identity
    try:
        yield
    finally:
        _JOB_IDENTITY = previous


def _check_resume(desc: str, resume_dir, extra: dict, run_config: dict) -> None:
    """A checkpoint of another run (other settings, other inputs) must not be continued."""
    from .identity import differences

    if extra.get("config") != run_config:
        changed = ", ".join(differences(extra.get("config") or {}, run_config))
        raise UserError(f"{desc}: resume checkpoint in {resume_dir} was written with other training settings "
                        f"({changed}); restore them, or delete {resume_dir} to start over")
    if _JOB_IDENTITY is not None and extra.get("identity") != _JOB_IDENTITY.value:
        changed = ", ".join(differences(extra.get("identity") or {}, _JOB_IDENTITY.value)) or "no record of its run"
        raise UserError(f"{desc}: resume checkpoint in {resume_dir} belongs to another run (changed: {changed}); "
                        f"restore those settings and inputs, or delete {resume_dir} to start over")


def train(
    model: torch.nn.Module,
    batch_fn: Callable[[int], dict],
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    cfg: TrainConfig,
    resume_dir: str | Path | None = None,
    desc: str = "train",
) -> dict:
    """Train ``model`` for ``cfg.steps`` steps; return ``{"history": [...], "wall_s": ..., ...}``.

    ``batch_fn(step)`` returns the global batch of that step: a dict of CPU tensors sharing dim 0
    (and any metadata). ``loss_fn(model, batch)`` returns ``(loss_sum, count)`` over the batch it
    is given (the loss is ``Σ loss_sum / Σ count`` over processes), or a scalar mean, which is
    accepted in a single process only. Only parameters with ``requires_grad`` are optimised and
    checkpointed.
    """
    from tqdm.auto import tqdm

    accelerator = make_accelerator(cfg.mixed_precision)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    run_config = json.loads(json.dumps(asdict(cfg)))
    recorded = None if resume_dir is None else latest_extra(resume_dir)
    if recorded is not None:  # before any weight is loaded: another run's tensors may not even fit
        _check_resume(desc, resume_dir, recorded, run_config)
    start, extra = (0, {}) if resume_dir is None else load_latest(resume_dir, model, optimizer, scheduler)
    history: list[dict] = extra.get("history", [])
    if start:
        log.info("%s: resuming from step %d (%s)", desc, start, resume_dir)
    # The scheduler stays unprepared: accelerate would step it once per process per step, which is
    # right when each process adds batches, wrong here, where W processes share one global batch.
    model, optimizer = accelerator.prepare(model, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    t0, running, n_running = time.perf_counter(), 0.0, 0
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, mininterval=5, disable=None if rank == 0 else True)
    for step in range(start, cfg.steps):
        torch.manual_seed(step_seed(cfg.seed, step) + rank)  # rank 0 draws what a single process draws
        batch = _to_device(shard_batch(batch_fn(step), rank, world), accelerator.device)
        with accelerator.autocast():
            loss_sum, count = _loss_terms(loss_fn(model, batch), world, desc)
        total = all_sum(count)
        # DDP averages gradients over processes, hence × world: the result is d(Σ loss_sum / Σ count).
        loss = loss_sum * (world / total)
        global_loss = all_sum(loss_sum.detach()) / total
        if not torch.isfinite(global_loss):  # before backward: no update, no checkpoint of this state
            raise NonFiniteLoss(_non_finite_message(desc, global_loss.item(), step, cfg, resume_dir))
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running, n_running = running + global_loss.item(), n_running + 1
        bar.update(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            entry = {"step": step + 1, "loss": running / n_running, "lr": scheduler.get_last_lr()[0]}
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            log.info("%s step %d loss %.4f lr %.2e", desc, entry["step"], entry["loss"], entry["lr"])
            running, n_running = 0.0, 0
        if resume_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            if accelerator.is_main_process:  # the ranks hold identical weights and optimiser state
                save_checkpoint(resume_dir, step + 1, accelerator.unwrap_model(model), optimizer, scheduler,
                                {"history": history, "config": run_config,
                                 **({"identity": _JOB_IDENTITY.value} if _JOB_IDENTITY is not None else {})})
            accelerator.wait_for_everyone()
    bar.close()
    accelerator.wait_for_everyone()
    if resume_dir is not None and accelerator.is_main_process and _JOB_IDENTITY is None:
        # finished: resume state is not a result. Inside a job the command layer clears it once the
        # job's outputs are saved, so a failure while saving them does not cost the training.
        clear_checkpoints(resume_dir)
    model = accelerator.unwrap_model(model)
    model.eval()
    final_loss = history[-1]["loss"] if history else math.nan
    return {"history": history, "wall_s": time.perf_counter() - t0, "resumed_from": start, "final_loss": final_loss}


def _non_finite_message(desc: str, value: float, step: int, cfg: TrainConfig, resume_dir) -> str:
    pointer = None if resume_dir is None else Path(resume_dir) / "latest"
    kept = (f"resume checkpoint {pointer.parent / pointer.read_text().strip()} kept"
            if pointer is not None and pointer.exists() else "no resume checkpoint")
    return (f"{desc}: loss is {value} at step {step + 1} of {cfg.steps} (lr {cfg.lr:g}); training stopped "
            f"before that update, nothing saved ({kept}); lower train.lr or check the inputs")


def _loss_terms(out, world: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_sum, count)`` from what ``loss_fn`` returned; a bare scalar is a mean over the
    batch, which is only unambiguous in a single process (count 1)."""
    if isinstance(out, tuple):
        loss_sum, count = out
        count = torch.as_tensor(count, dtype=torch.float32, device=loss_sum.device)
        return loss_sum.float(), count
    if world > 1:
        raise TypeError(f"{desc}: with {world} processes loss_fn must return (loss_sum, count), not a mean")
    return out, torch.ones((), device=out.device)


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
