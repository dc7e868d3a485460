"""Local GPU claims (vltune.gpus) on a machine with a fake GPU count: concurrent jobs get disjoint
devices, a job waits while too few are free, a killed job's GPUs come free, and a scheduler's
CUDA_VISIBLE_DEVICES is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vltune.errors import UserError
from vltune.gpus import claim_gpus

HOLDER = """
import os, sys
from vltune.gpus import claim_gpus
with claim_gpus(int(sys.argv[1]), poll_s=0.05):
    print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.readline()  # holds its GPUs until told (a line, or its stdin closed)
"""


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("VLTUNE_LOCAL_GPUS", "3")
    monkeypatch.setenv("VLTUNE_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def hold(n: int) -> tuple[subprocess.Popen, str]:
    """A job holding ``n`` GPUs until a line is written to its stdin; returns it with the devices
    it was given."""
    job = subprocess.Popen([sys.executable, "-c", HOLDER, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return job, job.stdout.readline().strip()


def test_concurrent_jobs_get_disjoint_gpus_and_a_third_waits(fake_gpus):
    a, devices_a = hold(2)
    b, devices_b = hold(1)
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
    """A claim of all 3 GPUs waits while a job holds 2 of them and gets them once it lets go."""
    import threading

    a, devices_a = hold(2)
    got, claimed = [], threading.Event()

    def claim_all():
        with claim_gpus(3, poll_s=0.05, timeout_s=60) as ids:
            got.append(ids)
            claimed.set()

    waiter = threading.Thread(target=claim_all)
    try:
        waiter.start()
        assert not claimed.wait(1.0), "claimed 3 GPUs while another job held 2 of them"
        a.stdin.write("release\n")
        a.stdin.flush()
        assert a.wait(timeout=60) == 0
        waiter.join(timeout=60)
        assert got == [[0, 1, 2]]
    finally:
        a.kill()
        a.wait()
        waiter.join(timeout=60)


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
