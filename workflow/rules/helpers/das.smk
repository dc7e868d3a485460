# Helpers of das.smk (included at its top).


def das_config():
    return config.get("das") or {"tasks": []}


def das_search_params(wildcards):
    d = das_config()
    search = dict(d["search"])
    train = {**d["train"], "steps": search.pop("steps")}
    return settings_json("DasSearch", train=train, search=search)


def das_finetune_params(wildcards):
    return settings_json("DasFinetune")


def das_evaluate_params(wildcards):
    return settings_json("DasEvaluate")


def das_skip_file(wildcards):
    """k > 0 fine-tunes the blocks its search chose; k = 0 needs no search."""
    if int(wildcards.k) == 0:
        return {}
    return {"skip": expand(rules.das_search.output.skip, **dict(wildcards.items()))[0]}


def das_skip_arg(wildcards, input):
    return f"--skip {shlex.quote(input.skip)}" if "skip" in input.keys() else ""


def das_runs():
    """(family, task) of every DAS experiment: das.tasks on VL-BART, das.vlmo.tasks on the VLMo."""
    d = das_config()
    return [("bart", t) for t in d.get("tasks", [])] + [("vlmo", t) for t in (d.get("vlmo") or {}).get("tasks", [])]


def das_backbone(family):
    """The frozen backbone DAS adapts: backbones.bart, or the merging study's pretrained VLMo."""
    if family == "vlmo":
        return f"results/merging/pretrain/{das_config()['vlmo']['backbone']}"
    return f"resources/backbones/{BART}"


def das_inputs(wildcards):
    """VL-BART reads CLIP features; the VLMo reads pixels (the tables) and the tokenizer."""
    backbone = {"backbone": das_backbone(wildcards.family)}
    if wildcards.family == "vlmo":
        return {**vlmo_data_inputs(), **backbone}
    return {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "features": FEATURES, **backbone}


def das_input_args(wildcards, input):
    if wildcards.family == "vlmo":
        return f"--tokenizer {shlex.quote(input.tokenizer)}"
    return f"--features {shlex.quote(input.features)}"


def das_jobs(searched_only=False):
    """Wildcards of every DAS run (``searched_only``: the runs with a search, k > 0)."""
    d = das_config()
    return [{"family": family, "task": task, "k": k, "seed": seed} for family, task in das_runs()
            for k in d.get("k", []) if k > 0 or not searched_only for seed in d.get("seeds", [])]


def das_metrics():
    return per_run(rules.das_evaluate.output.metrics, das_jobs())


def das_ledgers():
    """Ledger records of the DAS jobs: a search per k > 0, then fine-tuning and evaluation per k."""
    return [*per_run(rules.das_search.output.ledger, das_jobs(searched_only=True)),
            *(path for run in das_jobs() for job in (rules.das_finetune, rules.das_evaluate)
              for path in per_run(job.output.ledger, [run]))]
