"""Released checkpoints in the DAG (snakemake dry run): with vlpet.init_from / epalm.init_from set,
the method is imported instead of trained, the evaluation rules read the imported folders and the
report gets their metrics (as experiments of their own) and the import jobs' ledger records."""

from __future__ import annotations

import re

import pytest
import yaml
from dry_runs import ROOT, shell_commands, snakemake_dry_run


def test_init_from_imports_the_released_checkpoints_and_evaluates_them_instead_of_training(tmp_path):
    (tmp_path / "LAST.pth").write_bytes(b"")  # a dry run only needs the files to exist
    (tmp_path / "checkpoint_best.pth").write_bytes(b"")
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["vlpet"].update(families=["bart", "t5"], init_from={"bart": {"vlpet-large": str(tmp_path / "LAST.pth")},
                                                           "t5": {"vlpet-large": str(tmp_path / "LAST.pth")}})
    cfg["epalm"]["init_from"] = {"epalm-prompt": {"vqa": str(tmp_path / "checkpoint_best.pth")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake_dry_run(tmp_path, tmp_path / "config.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shell = shell_commands(proc.stdout)

    finetuned = {c.split("--out ")[1].split()[0] for c in shell if "finetune-vlbart" in c}
    # vlpet-large is not trained for either family
    assert finetuned == {f"results/vlpet/{f}/full/steps10/seed1/checkpoint" for f in ("bart", "t5")}
    for family in ("bart", "t5"):
        (imp,) = [c for c in shell if "import-checkpoint --from vlpet" in c and f"--family {family}" in c]
        assert f"--from vlpet {tmp_path / 'LAST.pth'} --family {family} --out results/vlpet/{family}/vlpet-large/imported/checkpoint" in imp
        assert f"--backbone-out results/vlpet/{family}/vlpet-large/imported/backbone --method vlpet-large" in imp
        assert f"--backbone resources/backbones/tiny-{family}" in imp
        assert '"adapter_dim": ' + str(cfg["vlpet"]["method_configs"]["vlpet-large"]["adapter_dim"]) in imp
        (ev,) = [c for c in shell if "evaluate-vlbart" in c and f"/{family}/vlpet-large/imported/" in c]
        assert (f"--checkpoint results/vlpet/{family}/vlpet-large/imported/checkpoint "
                f"--backbone results/vlpet/{family}/vlpet-large/imported/backbone") in ev
        assert f"--experiment vlpet-{family}-imported" in ev

    assert not any("finetune-epalm" in c and "epalm-prompt" in c for c in shell)
    (imp,) = [c for c in shell if "import-checkpoint --from epalm" in c]
    assert "--out results/epalm/epalm-prompt/imported/vqa/checkpoint --method epalm-prompt" in imp and "--task vqa" in imp
    (ev,) = [c for c in shell if "evaluate-epalm" in c and "epalm-prompt" in c]
    assert "--checkpoints vqa=results/epalm/epalm-prompt/imported/vqa/checkpoint --data" in ev
    assert "--experiment epalm-imported" in ev
    (trained,) = [c for c in shell if "evaluate-epalm" in c and "epalm-linear" in c]  # the other method trains
    assert "vqa=results/epalm/epalm-linear/seed1/vqa/checkpoint" in trained and "--experiment epalm " in trained

    report = next(c for c in shell if "vltune report" in c)
    assert {"results/vlpet/bart/vlpet-large/imported/metrics.json", "results/vlpet/t5/vlpet-large/imported/metrics.json",
            "results/epalm/epalm-prompt/imported/metrics.json"} \
        <= set(report.split("--metrics ")[1].split(" --ledgers")[0].split())
    written = {c.split("--ledger ")[1].split()[0] for c in shell if "--ledger " in c}
    assert written == set(report.split("--ledgers ")[1].split(" --out-dir")[0].split())
    assert {"results/ledger/import_vlbart/bart/vlpet-large/imported.json",
            "results/ledger/import_vlbart/t5/vlpet-large/imported.json",
            "results/ledger/import_epalm/epalm-prompt/imported/vqa.json"} <= written


@pytest.mark.parametrize("study, value, expected", [
    ("vlpet", {"bart": {"full": "LAST.pth"}}, r"'full' is not one of \['vlpet-small', 'vlpet-middlex', 'vlpet-middley', 'vlpet-large'\]"),
    ("vlpet", {"bart": {"vlpet-large": ""}}, r"'' should be non-empty|'' is too short"),
    ("vlpet", {"vl-t5": {"vlpet-large": "LAST.pth"}}, r"'vl-t5' is not one of \['bart', 't5'\]"),
    ("epalm", {"epalm-prompt": {"nlvr2": "x.pth"}}, r"'nlvr2' is not one of \['vqa', 'gqa', 'caption'\]"),
    ("epalm", {"epalm-prompt": {}}, r"should be non-empty|does not have enough properties"),
])
def test_init_from_of_a_method_or_task_that_cannot_be_imported_is_rejected_naming_the_key(study, value, expected):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg[study]["init_from"] = value
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    assert re.search(expected, str(err.value)) and f"On instance['{study}']['init_from']" in str(err.value)
