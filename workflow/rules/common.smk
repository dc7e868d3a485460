# Config validation, wildcard constraints and every helper the rules use (no logic in rules).
import json
import os

from snakemake.utils import validate


# Rejects unknown keys and wrong types before any job starts, and fills the schema's defaults.
validate(config, schema="../schemas/config.schema.yaml")



def check_method_configs():
    """Each method's hyper-parameters through its config dataclass now, so a typo in
    `vlpet.method_configs` stops the workflow before any job (the schema cannot know the keys)."""
    from vltune.pet import resolve_config

    for method, overrides in config["vlpet"]["method_configs"].items():
        try:
            resolve_config({**overrides, "method": method})
        except ValueError as e:
            raise ValueError(f"config key vlpet.method_configs.{method}: {e}") from None


check_method_configs()

# Lets `--sdm conda` install this package into the rules' environment (see envs/vltune.yaml).
os.environ.setdefault("VLTUNE_ROOT", workflow.basedir)

DATASET = config["dataset"]
DATA = f"resources/data/{DATASET}"
CLIP = config["backbones"]["clip"]["name"]
BART = config["backbones"]["bart"]["name"]
T5 = config["backbones"]["t5"]["name"]
FEATURES = f"resources/features/{CLIP}/{DATASET}"
TABLES = ["images", "captions", "vqa", "gqa", "nlvr2"]


wildcard_constraints:
    family="bart|t5",
    method="[a-z0-9_-]+",
    seed=r"\d+",
    steps=r"\d+",
    backbone=r"[A-Za-z0-9._-]+",


def as_json(obj):
    """One JSON argument for `vltune --params` (quoted with :q in the rules)."""
    return json.dumps(obj, sort_keys=True)


def world_params():
    return as_json(config["world"])


def backbone_params(name):
    b = config["backbones"][name]
    return as_json({"arch": b["arch"], "train": b["train"], "batch_size": b["batch_size"]})


def family_backbone(wildcards):
    """The pretrained LM a VL-PET run of this family fine-tunes (backbones.<family>)."""
    return f"resources/backbones/{config['backbones'][wildcards.family]['name']}"


def finetune_params(wildcards):
    v = config["vlpet"]
    keys = ("batch_size", "task_weights", "dropout")
    return as_json({**{k: v[k] for k in keys}, "train": {**v["train"], "steps": int(wildcards.steps)},
                    "method_config": v["method_configs"].get(wildcards.method, {})})


def main_budget_first(wildcards):
    """Scheduling priority: a main-budget run is the DAG's longest job, so it starts first and the
    short runs fill the other cores around it."""
    return 1 if int(wildcards.steps) == config["vlpet"]["train"]["steps"] else 0


def vlpet_experiment(wildcards):
    """`vlpet-<family>` at the main budget; runs at another budget form their own experiment
    (`vlpet-<family>-<steps>steps`), so the report never compares runs of unequal length."""
    main = int(wildcards.steps) == config["vlpet"]["train"]["steps"]
    return f"vlpet-{wildcards.family}" + ("" if main else f"-{wildcards.steps}steps")


def evaluate_params(wildcards):
    return as_json({**config["evaluate"], "tasks": sorted(config["vlpet"]["task_weights"])})


def vlpet_budgets():
    """(steps, methods) pairs: the main budget (vlpet.train.steps, vlpet.methods) and, when it lists
    methods, the short one (vlpet.short)."""
    v = config["vlpet"]
    budgets = [(v["train"]["steps"], v["methods"])]
    if v["short"]["methods"]:
        budgets.append((v["short"]["steps"], v["short"]["methods"]))
    return budgets


def vlpet_metrics():
    v = config["vlpet"]
    paths = [
        path
        for steps, methods in vlpet_budgets()
        for path in expand(
            "results/vlpet/{family}/{method}/steps{steps}/seed{seed}/metrics.json",
            family=v["families"],
            method=methods,
            steps=steps,
            seed=v["seeds"],
        )
    ]
    return list(dict.fromkeys(paths))  # a short budget equal to the main one adds nothing


def report_inputs():
    return vlpet_metrics() + [f"results/baselines/{DATASET}/metrics.json"]


def get_final_outputs():
    return [
        "results/report/summary.csv",
        "results/report/summary.md",
        "results/report/scores.png",
        "results/report/pareto.png",
    ] + das_report_outputs()


# Folder arguments derived from the declared files (not hard-coded prefixes: see `snakemake --lint`).
def tables_dir(wildcards, input):
    return os.path.dirname(input.tables[0])


def world_dir(wildcards, output):
    return os.path.dirname(output.info)


def report_dir(wildcards, output):
    return os.path.dirname(output.csv)


# --- DAS study (workflow/rules/das.smk) ---
import shlex


wildcard_constraints:
    task="vqa|gqa|nlvr2|caption",
    k=r"\d+",


def das_config():
    return config.get("das") or {"tasks": []}


def check_das_method_config():
    """das.method_config through the das config dataclass now (a typo stops the workflow before
    any job); `skip` is the search's result, never a config value."""
    from vltune.pet import resolve_config

    overrides = das_config().get("method_config", {})
    if "skip" in overrides:
        raise ValueError("config key das.method_config.skip: the skip set comes from das_search's skip.json")
    try:
        resolve_config({**overrides, "method": "das"})
    except ValueError as e:
        raise ValueError(f"config key das.method_config: {e}") from None


check_das_method_config()


def _das_common():
    d = das_config()
    return {"batch_size": d["batch_size"], "dropout": d["dropout"], "method_config": d["method_config"]}


def das_search_params(wildcards):
    d = das_config()
    search = dict(d["search"])
    train = {**d["train"], "steps": search.pop("steps")}
    return as_json({**_das_common(), "train": train, "search": search})


def das_finetune_params(wildcards):
    return as_json({**_das_common(), "train": das_config()["train"]})


def das_evaluate_params(wildcards):
    e = config["evaluate"]
    keys = ("split", "batch_size", "caption_beams", "caption_max_len", "answer_max_len")
    return as_json({**{k: e[k] for k in keys}, "latency": das_config()["latency"]})


def das_skip_file(wildcards):
    """k > 0 fine-tunes the blocks its search chose; k = 0 needs no search."""
    if int(wildcards.k) == 0:
        return {}
    return {"skip": f"results/das/{wildcards.family}/{wildcards.task}/k{wildcards.k}/seed{wildcards.seed}/skip.json"}


def das_skip_arg(wildcards, input):
    return f"--skip {shlex.quote(input.skip)}" if "skip" in input.keys() else ""


def das_metrics():
    d = das_config()
    return expand("results/das/bart/{task}/k{k}/seed{seed}/metrics.json", task=d["tasks"], k=d.get("k", []),
                  seed=d.get("seeds", []))


def das_skips():
    d = das_config()
    return expand("results/das/bart/{task}/k{k}/seed{seed}/skip.json", task=d["tasks"],
                  k=[k for k in d.get("k", []) if k > 0], seed=d.get("seeds", []))


def das_report_outputs():
    if not das_metrics():
        return []
    return [f"results/report/das/{name}" for name in ("das.csv", "das.md", "das_latency.png", "das_search.png")]
