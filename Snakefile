# vltune: dataset → tiny backbones → CLIP features → VL-BART multitask → evaluation → report.
# All logic lives in the `vltune` package; the rules below only wire files together.
from snakemake.utils import min_version

min_version("9.19.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/vlpet.smk"
include: "workflow/rules/merging.smk"
include: "workflow/rules/epalm.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/das.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
