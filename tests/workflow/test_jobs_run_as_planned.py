"""The command a job runs is the one the plan shows. Snakemake formats a rule's `shell` string when
the job runs, not when the rule is defined, so a rule written in a loop that put the loop variable
into its shell f-string would run the last iteration's command in every job while `snakemake -n -p`
printed the right ones. Here the pretraining jobs (one rule body for the tiny CLIP, BART and T5)
run for real against a stand-in `vltune` that records its arguments."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from dry_runs import ROOT, shell_commands

# A stand-in `vltune`: records argv, creates the --out folder and the --ledger file it is given.
FAKE_VLTUNE = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open({record!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
def value(flag):
    return argv[argv.index(flag) + 1] if flag in argv else None
if value("--out"):
    os.makedirs(value("--out"), exist_ok=True)
if value("--ledger"):
    os.makedirs(os.path.dirname(value("--ledger")), exist_ok=True)
    open(value("--ledger"), "w").write("{{}}")
"""


def test_each_pretraining_job_runs_the_command_the_plan_shows(tmp_path):
    config = tmp_path / "families.yaml"
    config.write_text(yaml.safe_dump({"vlpet": {"families": ["bart", "t5"]}}))
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    names = {kind: default["backbones"][kind]["name"] for kind in ("clip", "bart", "t5")}
    targets = [f"resources/backbones/{name}" for name in names.values()]

    # The jobs' inputs exist already (the world's tables and the tokenizer), so only pretraining runs.
    data = tmp_path / "resources/data" / default["dataset"]
    data.mkdir(parents=True)
    for table in ("images", "captions", "vqa", "gqa", "nlvr2"):
        (data / f"{table}.arrow").write_bytes(b"")
    (tmp_path / "resources/backbones/tokenizer").mkdir(parents=True)

    snakemake = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                 "--configfile", str(ROOT / "config/config.yaml"), str(config), "--cores", "1",
                 "--rerun-triggers=mtime"]
    proc = subprocess.run([*snakemake, "-n", "-p", *targets], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = {}
    for command in shell_commands(proc.stdout):
        words = shlex.split(command)
        argv = words[1:words.index(">")]  # after `vltune`, before the log redirect
        planned[argv[argv.index("--out") + 1]] = argv
    assert sorted(planned) == sorted(targets), planned

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.jsonl"
    fake = bin_dir / "vltune"
    fake.write_text(FAKE_VLTUNE.format(python=sys.executable, record=str(record)))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([*snakemake, *targets], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(ran) == len(targets), ran
    by_out = {argv[argv.index("--out") + 1]: argv for argv in ran}
    for kind, name in names.items():
        target = f"resources/backbones/{name}"
        assert by_out[target] == planned[target], kind
        assert f"pretrain-{kind}" in by_out[target], (kind, by_out[target])
