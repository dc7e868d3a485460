"""The run ledger: `vltune --ledger` records what ran (parameters parsed, resolved training config),
on which commit, packages and device, its wall time and peak memory, and never an environment
secret; a failed command writes none; the report aggregates records into one table."""

from __future__ import annotations

import json

import pytest

from vltune.cli import main
from vltune.report.ledger import ledger_frame


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("VLTUNE_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_logged")


def test_training_command_records_resolved_config_versions_device_memory_and_time(env, tiny_world, tokenizer_dir,
                                                                                    tmp_path):
    params = {"arch": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}, "batch_size": 8,
              "train": {"steps": 2, "lr": 1e-3}}
    path = tmp_path / "ledger/pretrain_bart/tiny.json"
    assert main(["--threads", "1", "--ledger", str(path), "pretrain-bart", "--data", str(tiny_world),
                 "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "bart"), "--params", json.dumps(params)]) == 0
    text = path.read_text()
    record = json.loads(text)
    assert record["command"] == "pretrain-bart" and record["git_commit"] == "0123abc"
    assert record["params"]["params"] == params and record["params"]["out"] == str(tmp_path / "bart")
    # resolved = the defaults the command filled in, not only what was passed
    assert record["resolved"]["train"]["steps"] == 2 and record["resolved"]["train"]["warmup_ratio"] == 0.1
    import torch

    assert torch.__version__.startswith(record["packages"]["torch"])
    assert record["device"].startswith("cpu") and record["gpus"] == 0 and record["processes"] == 1
    assert record["peak_rss_mb"] > 50 and record["wall_s"] > 0
    assert "hf_secret" not in text


def test_failed_command_writes_no_ledger(env, tmp_path):
    path = tmp_path / "ledger.json"
    assert main(["--ledger", str(path), "make-world", "--out", str(tmp_path / "w"),
                 "--params", '{"min_objects": 5, "max_objects": 2}']) == 2
    assert not path.exists()


def test_ledger_frame_has_one_row_per_job_named_by_its_path(tmp_path):
    for job, wall in (("make_world/shapes", 1.5), ("finetune_vlbart/bart/full/steps10/seed1", 9.0)):
        path = tmp_path / "results/ledger" / f"{job}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"command": job.split("/")[0].replace("_", "-"), "wall_s": wall,
                                    "packages": {"torch": "2.4"}, "params": {"seed": 1}, "peak_rss_mb": 100.0}))
    df = ledger_frame(sorted((tmp_path / "results/ledger").glob("**/*.json")))
    assert df.job.tolist() == ["finetune_vlbart/bart/full/steps10/seed1", "make_world/shapes"]
    assert df.wall_s.tolist() == [9.0, 1.5] and (df["pkg:torch"] == "2.4").all()
    assert json.loads(df.params.iloc[0]) == {"seed": 1}
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a ledger record"):
        ledger_frame([bad])
