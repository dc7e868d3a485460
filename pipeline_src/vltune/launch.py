"""How one ``vltune`` command runs: on which GPUs, in how many processes, with which ledger.

- GPUs: ``--gpus N`` (the rule's ``resources.gpu``) claims N free local GPUs when no scheduler
  assigned any (vltune.gpus); under Slurm, ``CUDA_VISIBLE_DEVICES`` is already set.
- Processes: a training command runs as one process per visible GPU (``--processes`` overrides,
  e.g. 2 CPU processes with gloo): the command re-runs itself under ``accelerate launch`` and the
  ranks split every global batch (train/distributed.py). One process is the same code, in-process.
- Ledger: ``--ledger PATH`` writes the job's record (vltune.utils.ledger) from rank 0.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from .gpus import claim_gpus
from .train.distributed import world
from .utils.ledger import recording
from .utils.tensor_files import forget_output_digests
from .verify import record_output_digests

log = logging.getLogger(__name__)


def process_count(args) -> int:
    """Data-parallel processes for this command: 1 unless it registered as multi-process
    (vltune.commands), else ``--processes``, else one per visible GPU (1 on CPU)."""
    from .commands import command_named

    if not command_named(args.command).multiprocess:
        return 1
    if args.processes:
        return args.processes
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def launched() -> bool:
    """True inside a process started by ``accelerate launch`` / torchrun."""
    return "LOCAL_RANK" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(argv: list[str], n: int) -> list[str]:
    """``accelerate launch`` running ``vltune <argv>`` in ``n`` processes on this machine. On CPU the
    torchrun launcher (``--multi_gpu``) is still the one to use: the training loop's Accelerator
    then runs the ranks with gloo."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
            "-m", "vltune.cli", *argv]


def _identity(args):
    """A training job's checkpoints record what run they belong to (vltune.train.identity)."""
    import contextlib

    if getattr(args, "resume_dir", None) is None:
        return contextlib.nullcontext()
    from .train.identity import RunIdentity, run_identity
    from .train.loop import job_identity

    return job_identity(RunIdentity(lambda: run_identity(args)))


def run(args, argv: list[str]) -> int:
    """Run the parsed command ``args`` (``argv``: the command line that produced it)."""
    from .commands.common import setup_runtime

    with claim_gpus(args.gpus):
        n = 1 if launched() else process_count(args)
        if n > 1:
            log.info("%s: %d processes (accelerate launch)", args.command, n)
            # Threads are per process: split the job's threads among its ranks.
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (args.threads or os.cpu_count() or 1) // n))}
            return subprocess.run(launch_command(argv, n), env=env).returncode
        rank, world_size = world()
        threads = max(1, args.threads // world_size) if args.threads else None
        setup_runtime(threads)
        if rank:  # one log per job: the other ranks only report problems
            logging.getLogger().setLevel(logging.WARNING)
        out = getattr(args, "out", None)
        if out and rank == 0:
            forget_output_digests(out)
        with recording(args.ledger, args, rank, world_size), _identity(args):
            args.func(args)
            if out and rank == 0:
                record_output_digests(out)  # before the ledger: a recorded job has its digests
        if getattr(args, "resume_dir", None) and rank == 0:
            from .train.checkpoint import clear_checkpoints

            clear_checkpoints(args.resume_dir, recursive=True)  # the outputs are saved: resume state is not a result
    return 0
