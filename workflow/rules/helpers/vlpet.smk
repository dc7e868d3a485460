# Helpers of vlpet.smk (included at its top).

RUN_LABELS = {"method": "{method}", "seed": "{seed}", "steps": "{steps}"}


def family_backbone(wildcards):
    """The pretrained LM a VL-PET run of this family fine-tunes (backbones.<family>)."""
    return f"resources/backbones/{config['backbones'][wildcards.family]['name']}"


def finetune_params(wildcards):
    v = config["vlpet"]
    return settings_json("VlpetFinetune", train={**v["train"], "steps": int(wildcards.steps)},
                         method_config=v["method_configs"].get(wildcards.method, {}))


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
    v = config["vlpet"]
    short = int(wildcards.steps) != v["train"]["steps"]
    limit = {"max_examples": v["short"]["eval_examples"]} if short and v["short"]["eval_examples"] else {}
    return settings_json("Evaluate", tasks=sorted(v["task_weights"]), **limit)


def vlpet_budgets():
    """(steps, methods) pairs: the main budget (vlpet.train.steps, vlpet.methods) and, when it lists
    methods, the short one (vlpet.short)."""
    v = config["vlpet"]
    budgets = [(v["train"]["steps"], v["methods"])]
    if v["short"]["methods"]:
        budgets.append((v["short"]["steps"], v["short"]["methods"]))
    return budgets


# --- released checkpoints (vlpet.init_from; vltune import-checkpoint) ------------------------------
def vlpet_imports():
    """(family, method) pairs of vlpet.init_from, sorted."""
    return sorted((f, m) for f, methods in config["vlpet"].get("init_from", {}).items() for m in methods)


def imported_vlpet_source(wildcards):
    return config["vlpet"]["init_from"][wildcards.family][wildcards.method]


def imported_vlpet_experiment(wildcards):
    return f"vlpet-{wildcards.family}-imported"


def import_vlpet_params(wildcards):
    return settings_json("ImportCheckpoint", method_config=config["vlpet"]["method_configs"].get(wildcards.method, {}),
                         visual=VISUAL_TOKENS)


def imported_evaluate_params(wildcards):
    return settings_json("Evaluate", tasks=sorted(config["vlpet"]["task_weights"]))


def vlpet_runs():
    """Wildcards of every VL-PET run `all` evaluates: each budget's (family, method, steps, seed), less
    the main-budget runs of an imported method (vlpet.init_from), then the imported (family, method)."""
    v = config["vlpet"]
    imported = vlpet_imports()
    runs = [{"family": f, "method": m, "steps": steps, "seed": s} for steps, methods in vlpet_budgets()
            for f in v["families"] for m in methods for s in v["seeds"]
            if not (steps == v["train"]["steps"] and (f, m) in imported)]
    runs = [dict(r) for r in dict.fromkeys(tuple(r.items()) for r in runs)]  # a short budget equal to the main one adds nothing
    return runs + [{"family": f, "method": m} for f, m in imported]


def vlpet_jobs(run):
    """The rules that make a run: fine-tuning (or the import) and the evaluation."""
    if "steps" in run:
        return rules.finetune_vlbart, rules.evaluate_vlbart
    return rules.import_vlbart, rules.evaluate_imported_vlbart


def vlpet_metrics():
    return [path for run in vlpet_runs() for path in per_run(vlpet_jobs(run)[1].output.metrics, [run])]


def vlpet_ledgers():
    return [path for run in vlpet_runs() for job in vlpet_jobs(run) for path in per_run(job.output.ledger, [run])]
