"""Config validation: the schema accepts the shipped configs, fills defaults, and rejects unknown
keys and wrong types with a message naming the key path and what was expected."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def _load(rel):
    return yaml.safe_load((ROOT / rel).read_text())


@pytest.mark.parametrize("rel", ["config/config.yaml", ".test/config/config.yaml"])
def test_shipped_configs_are_valid_and_defaults_are_filled(rel):
    cfg = _load(rel)
    validate(cfg, SCHEMA)
    assert cfg["evaluate"]["caption_beams"] >= 1
    assert cfg["vlpet"]["train"]["grad_clip"] == 5.0
    assert cfg["features"]["shard_size"] == 4096
    assert cfg["world"]["annotator_noise"] == 0.15
    assert cfg["backbones"]["bart"]["arch"]["dropout"] in (0.0, 0.1)
    assert "dropout" in cfg["vlpet"]  # null (keep the backbone's) when left out


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("vlpet", "train", "stepz"), 10, r"'stepz' was unexpected"),
        (("vlpet", "train", "steps"), "many", r"'many' is not of type 'integer'"),
        (("vlpet", "methods"), ["fulll"], r"'fulll' is not one of"),
        (("vlpet", "method_configs"), {"vlpet-huge": {}}, r"'vlpet-huge' is not one of"),
        (("backbones", "clip", "arch", "hidden"), 0, r"0 is less than the minimum of 1"),
        (("evaluate", "split"), "dev", r"'dev' is not one of"),
        (("typo_top_level",), 1, r"'typo_top_level' was unexpected"),
        (("vlpet", "dropout"), 1.5, r"1.5 is not valid under any of the given schemas"),
        (("backbones", "bart", "arch", "dropout"), -0.1, r"-0.1 is less than the minimum of 0"),
        (("vlpet", "families"), ["bart", "gpt2"], r"'gpt2' is not one of \['bart', 't5'\]"),
        (("backbones", "t5", "arch", "d_kv"), 0, r"0 is less than the minimum of 1"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(path, value, expected):
    cfg = copy.deepcopy(_load("config/config.yaml"))
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as err:
        validate(cfg, SCHEMA)
    message = str(err.value)
    assert re.search(expected, message)
    # the key path of the offending value (or of its parent, for an unknown key)
    where = path if "unexpected" not in expected else path[:-1]
    assert "On instance" + "".join(f"[{k!r}]" for k in where) in message


@pytest.mark.parametrize("rel", ["config/config.yaml", ".test/config/config.yaml"])
def test_both_families_are_accepted_and_t5_gets_its_defaults(rel):
    cfg = _load(rel)
    cfg["vlpet"]["families"] = ["bart", "t5"]
    validate(cfg, SCHEMA)
    arch = cfg["backbones"]["t5"]["arch"]
    assert (arch["relative_buckets"], arch["relative_max_distance"], arch["dropout"]) == (32, 128, 0.1)


def _dry_run(config: dict, tmp_path: Path):
    """`snakemake -n` on ``config`` in an empty folder: (return code, stdout + stderr)."""
    import subprocess

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg),
         "-n", "--cores", "1"], capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_snakemake_refuses_to_start_with_a_bad_config(tmp_path):
    bad = _load(".test/config/config.yaml")
    bad["vlpet"]["train"]["steps"] = -1
    rc, out = _dry_run(bad, tmp_path)
    assert rc != 0
    assert "-1 is less than the minimum of 1" in out and "['vlpet']['train']['steps']" in out
    assert not (tmp_path / "resources").exists(), "no job may start on an invalid config"


def test_unknown_pet_hyper_parameter_stops_the_workflow_before_any_job(tmp_path):
    bad = _load(".test/config/config.yaml")
    bad["vlpet"]["method_configs"] = {"vlpet-large": {"adapter_dimm": 8}}
    rc, out = _dry_run(bad, tmp_path)
    assert rc != 0
    assert "vlpet.method_configs.vlpet-large" in out and "'adapter_dimm'" in out and "adapter_dim" in out
    assert not (tmp_path / "resources").exists()


def test_unknown_epalm_hyper_parameter_stops_the_workflow_before_any_job(tmp_path):
    bad = _load(".test/config/config.yaml")
    bad["epalm"]["method_configs"] = {"epalm-prompt": {"prompt_length": 4}}
    rc, out = _dry_run(bad, tmp_path)
    assert rc != 0
    assert "epalm.method_configs.epalm-prompt" in out and "'prompt_length'" in out
    assert not (tmp_path / "resources").exists()
