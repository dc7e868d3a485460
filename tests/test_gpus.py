"""Local GPU claims (vltune.gpus) on a machine with a fake GPU count: concurrent jobs get disjoint
devices, a job waits while too few are free, a killed job's GPUs come free, and a scheduler's
CUDA_VISIBLE_DEVICES is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vltune.errors import UserError
from vltune.gpus import claim_gpus

HOLDER = """
import os, sys, time
from vltune.gpus import claim_gpus
with claim_gpus(int(sys.argv[1]), poll_s=0.05):
    print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VLTUNE_LOCAL_GPUS", "3")
    monkeypatch.setenv("VLTUNE_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def hold(n: int, seconds: float) -> tuple[subprocess.Popen, str]:
    """A job holding ``n`` GPUs for ``seconds``; returns it with the devices it was given."""
    job = subprocess.Popen([sys.executable, "-c", HOLDER, str(n), str(seconds)], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return job, job.stdout.readline().strip()


def test_concurrent_jobs_get_disjoint_gpus_and_a_third_waits(fake_gpus):
    a, devices_a = hold(2, 30)
    b, devices_b = hold(1, 30)
    try:
        ids_a, ids_b = set(devices_a.split(",")), set(devices_b.split(","))
        assert len(ids_a) == 2 and len(ids_b) == 1 and not ids_a & ids_b and ids_a | ids_b == {"0", "1", "2"}
        with pytest.raises(TimeoutError, match="no 1 free GPUs of 3"):
            with claim_gpus(1, poll_s=0.05, timeout_s=0.5):
                pass
        b.send_signal(signal.SIGKILL)  # the kernel drops a killed job's locks
        b.wait()
        with claim_gpus(1, poll_s=0.05, timeout_s=10) as ids:
            assert ids == [int(devices_b)] and os.environ["CUDA_VISIBLE_DEVICES"] == devices_b
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    finally:
        for job in (a, b):
            job.kill()
            job.wait()


def test_a_job_waiting_for_two_gpus_starts_when_they_come_free(fake_gpus):
    a, devices_a = hold(2, 1.0)
    t0 = time.monotonic()
    with claim_gpus(3, poll_s=0.05, timeout_s=30) as ids:
        assert ids == [0, 1, 2] and time.monotonic() - t0 > 0.3
    a.wait()


def test_scheduler_assignment_and_cpu_machines_claim_nothing(fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with claim_gpus(2) as ids:
        assert ids is None and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("VLTUNE_LOCAL_GPUS", "0")
    with claim_gpus(1) as ids:
        assert ids is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    with claim_gpus(0) as ids:
        assert ids is None


def test_asking_for_more_gpus_than_the_machine_has_is_an_error(fake_gpus):
    with pytest.raises(UserError, match="asks for 4 GPUs but this machine has 3"):
        with claim_gpus(4):
            pass
