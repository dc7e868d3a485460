# Config validation and cross-field checks, constants, wildcard constraints and resource helpers;
# each study's own helpers open its .smk.
import json
import os
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vltune.config_checks import check_data_and_backbones, check_finite, check_method_configs


def number_written_as_text():
    """`1e-4` and `1.0e9` are text to YAML 1.1: the message naming the first such key and the
    spelling YAML reads as a number, or None (the schema read with libyaml, only for a config the
    schema refused)."""
    from vltune.config_numbers import numbers_written_as_text

    with open(os.path.join(workflow.current_basedir, "../schemas/config.schema.yaml")) as f:
        problems = numbers_written_as_text(config, yaml.load(f, Loader=yaml.CSafeLoader))
    return problems[0] if problems else None


check_finite(config)
# Rejects unknown keys and wrong types before any job starts, and fills the schema's defaults; a
# number YAML read as text is named with its fix instead of the schema's type error.
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError:
    problem = number_written_as_text()
    if problem:
        raise ValueError(problem) from None
    raise


check_method_configs(config)

# Lets `--sdm conda` install this package into the rules' environment (see envs/vltune.yaml).
os.environ.setdefault("VLTUNE_ROOT", workflow.basedir)


def set_commit_env():
    """The workflow's own commit for every job's ledger (jobs may run outside the checkout; an
    environment variable, not a param, so a new commit alone does not re-run anything)."""
    from vltune.utils.ledger import COMMIT_ENV, git_commit

    commit = git_commit(workflow.basedir)
    if commit:
        os.environ.setdefault(COMMIT_ENV, commit)


set_commit_env()


check_data_and_backbones(config)

DATASET = config["dataset"]
DATA = f"resources/data/{DATASET}"
TABLES = ["images", "captions", "vqa", "gqa", "nlvr2"]
CLIP, BART, T5, OPT, VIT = (config["backbones"][key]["name"] for key in ("clip", "bart", "t5", "opt", "vit"))
FEATURES = f"resources/features/{CLIP}/{DATASET}"
# Report categories (`snakemake --report`), one per stage of the design; Provenance = rule graph + ledger.
CATEGORY = {"data": "Data", "backbones": "Backbones", "merge": "Merging", "pet": "PET", "das": "DAS",
            "epalm": "eP-ALM", "evaluation": "Evaluation", "provenance": "Provenance"}
# Cluster placement (config `resources`): GPU rules ask for `gpu`, `cpus_per_gpu` and the GPU
# partition, CPU-only rules for the CPU partition ("" = the cluster's default partition).
RES = config["resources"]
TRAIN_GPUS = RES["gpus"]

from vltune.merge_methods import MERGE_METHODS, gram_merges
import vltune.settings as vltune_settings  # the commands' typed --params
from vltune.pet import method_names  # check_method_configs already imported the registry

# Merges swept over one number, written in the init's name: `interpolation-r0.5`, `arithmetic-l0.75`.
SWEPT_MERGES = {"interpolation": "r", "arithmetic": "l"}


wildcard_constraints:
    family="bart|t5",
    # merging: vqa|nlvr2|retrieval; eP-ALM: vqa|gqa|caption; DAS: vqa|gqa|nlvr2|caption
    task="vqa|gqa|nlvr2|caption|retrieval",
    k=r"\d+",
    init=r"[a-z]+(-[rl][0-9.]+)?",
    # the registries' names, so a mistyped target is refused while planning, not in its job
    merge="|".join(f"{m}-(vqa|nlvr2|retrieval)" if m in gram_merges() else
                   f"{m}-{SWEPT_MERGES[m]}[0-9.]+" if m in SWEPT_MERGES else m for m in MERGE_METHODS),
    method="|".join(re.escape(m) for m in method_names(None)),
    seed=r"\d+",
    steps=r"\d+",
    backbone=r"[A-Za-z0-9][A-Za-z0-9._-]*",  # a folder under resources/backbones/, never . or ..


def attempt_runtime(wildcards, attempt):
    """Walltime in minutes: the n-th attempt (profile `retries`) asks n × resources.runtime; a
    retried training job resumes from its last checkpoint, so the extra time finishes it."""
    return RES["runtime"] * attempt


def cpus_per_gpu(gpus):
    """`cpus_per_gpu` for `gpus` GPUs per job = the job's threads spread over them, rounded up."""

    def per_gpu(wildcards, threads):
        return max(1, -(-threads // gpus))

    return per_gpu


def gpu_job(gpus=1):
    """The resources dict of a GPU job, unpacked in the resources directive (`**gpu_job()`): `gpus` GPUs on the GPU partition."""
    return {"mem_mb": RES["mem_mb"], "runtime": attempt_runtime, "gpu": gpus, "cpus_per_gpu": cpus_per_gpu(gpus),
            "gpu_model": RES["gpu_model"], "slurm_partition": RES["gpu_partition"]}


def cpu_job(mem_mb=None, runtime=attempt_runtime):
    """The resources dict of a CPU-only job on the CPU partition (memory: resources.mem_mb unless given)."""
    return {"mem_mb": RES["mem_mb"] if mem_mb is None else mem_mb, "runtime": runtime,
            "slurm_partition": RES["cpu_partition"]}


def as_json(obj):
    """One JSON argument for `vltune --params` (quoted with :q in the rules)."""
    return json.dumps(obj, sort_keys=True)


def settings_json(kind, section=None, **given):
    """A rule's `--params`: its command's typed settings (vltune.settings.<kind>) read off the
    validated config; `given`: what the rule sets itself (a budget from a wildcard, a method's config)."""
    return as_json(getattr(vltune_settings, kind).from_config(config, section, **given).to_dict())


def published(key):
    """backbones.<key>.published: the fetch-backbone params, or None for a backbone pretrained here."""
    return config["backbones"][key].get("published")


# Folder arguments derived from the declared files (not hard-coded prefixes: see `snakemake --lint`).
def tables_dir(wildcards, input):
    return os.path.dirname(input.tables[0])


def get_final_outputs():
    return [*rules.report.output, *rules.rulegraph.output, *(rules.das_report.output if das_metrics() else [])]


def per_run(pattern, runs):
    """`pattern` (a rule's output) filled with each run's wildcards, in order."""
    return expand(pattern, zip, **{k: [r[k] for r in runs] for k in runs[0]}) if runs else []
