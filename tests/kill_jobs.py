"""Killing training jobs with SIGKILL and comparing what their re-runs write (tests/faults).

Two ways to kill: a real ``vltune`` process killed from outside once its first resume checkpoint
exists (:func:`killed_after_first_checkpoint`), and a forked copy of this process running the
command that kills itself at a chosen point (:func:`killed`): at the start of an optimisation
step, or inside the checkpoint writer (a file half written in the temporary folder, or the
folder renamed but the ``latest`` pointer not yet moved). The fork skips the interpreter's and
torch's start-up, so many kill points stay cheap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file



def _by_design(key: str) -> bool:
    """What differs between two runs of the same job by design: how long they took (``*wall_s``),
    where they resumed."""
    return key.endswith("wall_s") or key == "resumed_from"


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def killed_after_first_checkpoint(cmd: list[str], resume: Path) -> None:
    """Start ``cmd`` and SIGKILL it as soon as ``resume/latest`` exists."""
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (resume / "latest").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL, "the job finished before it could be killed"


def run_in_process(argv: list[str]) -> None:
    from vltune.cli import main

    assert main(argv) in (0, None)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(step: int):
    """Kill point: the start of optimisation step ``step`` (0-based), before its batch is drawn."""

    def install():
        from vltune.train import loop

        real = loop.step_seed

        def step_seed(seed, t):
            if t == step:
                _die()
            return real(seed, t)

        loop.step_seed = step_seed

    return install


def in_checkpoint_write(checkpoint: int, stage: str):
    """Kill point inside the writer of the ``checkpoint``-th resume checkpoint (1-based): ``model``
    or ``optimizer`` (that safetensors file half written in the temporary folder) or ``pointer``
    (the folder renamed to its final name, ``latest`` still naming the previous one)."""

    def install():
        from vltune.train import checkpoint as ckpt

        real_save, real_pointer = ckpt.save_file, ckpt.write_bytes_atomic
        calls = {"save": 0, "pointer": 0}

        def save_file(tensors, filename, *args, **kwargs):
            real_save(tensors, filename, *args, **kwargs)
            calls["save"] += 1
            if calls["save"] == 2 * (checkpoint - 1) + (1 if stage == "model" else 2) and stage != "pointer":
                path = Path(filename)
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                _die()

        def write_bytes_atomic(path, data, *args, **kwargs):
            calls["pointer"] += 1
            if stage == "pointer" and calls["pointer"] == checkpoint:
                _die()
            return real_pointer(path, data, *args, **kwargs)

        ckpt.save_file, ckpt.write_bytes_atomic = save_file, write_bytes_atomic

    return install


def killed(argv: list[str], kill_point) -> None:
    """Run ``vltune argv`` in a forked child that installs ``kill_point`` first; the child must die
    of SIGKILL (a job that finished instead fails the test)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            kill_point()
            from vltune.cli import main

            main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the job was not killed (status {status}): the kill point was never reached"


def _strip_timing(value):
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if not _by_design(k)}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def outputs(folder: Path) -> dict[str, object]:
    """Every file under ``folder``: safetensors as their tensors, JSON without its timing keys,
    anything else as bytes."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".safetensors":
            out[rel] = load_file(str(path))
        elif path.suffix == ".json":
            out[rel] = _strip_timing(json.loads(path.read_text()))
        else:
            out[rel] = path.read_bytes()
    return out


def assert_same_outputs(reference: dict[str, object], got: dict[str, object]) -> None:
    """Bit for bit: the same files, equal tensors (dtype, shape and every bit), equal records."""
    assert sorted(got) == sorted(reference)
    for name, ref in reference.items():
        if isinstance(ref, dict) and ref and all(torch.is_tensor(v) for v in ref.values()):
            assert sorted(got[name]) == sorted(ref), name
            for key, tensor in ref.items():
                other = got[name][key]
                assert other.dtype == tensor.dtype and other.shape == tensor.shape, f"{name}:{key}"
                assert torch.equal(other.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), \
                    f"{name}:{key}"
        else:
            assert got[name] == ref, f"{name}: {got[name]} != {ref}"
