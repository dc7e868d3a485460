# Helpers of epalm.smk (included at its top).

PERCEPTION = f"resources/features/{VIT}/{DATASET}"


def check_epalm_layers():
    """eP-ALM's injection window (epalm.method_configs.<method>.start_layer / end_layer) must fit
    the OPT's depth: from backbones.opt.arch for a tiny one, the shipped table for a published
    name, a local `published.source` folder's config.json; unknown depths (a Hub id that is not
    shipped) are checked by finetune_epalm once the LM is loaded. Reads no weights, imports no torch
    beyond what check_method_configs already needs."""
    from vltune.backbones.pretrained import known_layers
    from vltune.pet import resolve_config

    e = config.get("epalm")
    if not e or not e["methods"]:
        return
    opt = config["backbones"]["opt"]
    if opt.get("published") is None:
        depth, lm = opt["arch"]["layers"], f"backbones.opt {opt['name']!r} (arch.layers)"
    else:
        source = opt["published"].get("source")
        depth = known_layers(opt["name"], source)
        lm = f"backbones.opt {opt['name']!r}" + (f" ({source}/config.json)" if source else "")
    if depth is None:
        return
    for method in e["methods"]:
        error = resolve_config({**e["method_configs"].get(method, {}), "method": method}).window_error(int(depth), lm)
        if error:
            raise ValueError(error)


check_epalm_layers()


def epalm_cached():
    """Cached perception unless the config asks for the encoder every step (augmentation needs it)."""
    e = config["epalm"]
    return e["perception"] == "cached" and not e["augment"]


def epalm_threads(wildcards=None):
    return config["epalm"]["threads"]


def vit_params(wildcards=None):
    return settings_json("VitTrain")


def perception_params(wildcards=None):
    return settings_json("Perception")


def epalm_inputs(wildcards):
    inputs = {"tables": expand(f"{DATA}/{{table}}.arrow", table=TABLES), "lm": f"resources/backbones/{OPT}",
              "encoder": f"resources/backbones/{VIT}"}
    if epalm_cached():
        inputs["perception"] = PERCEPTION
    return inputs


def perception_arg(wildcards):
    """`--perception <store>` when cached; nothing (the encoder runs) otherwise. Quoted here."""
    return f"--perception {shlex.quote(PERCEPTION)}" if epalm_cached() else ""


def epalm_train_params(wildcards):
    return settings_json("EpalmTrain", method_config=config["epalm"]["method_configs"].get(wildcards.method, {}))


def epalm_checkpoints(wildcards):
    return expand(rules.finetune_epalm.output.checkpoint, method=wildcards.method, seed=wildcards.seed,
                  task=config["epalm"]["tasks"])


def epalm_checkpoint_args(wildcards):
    """`task=dir` items for evaluate-epalm, each quoted."""
    return " ".join(shlex.quote(f"{t}={c}") for t, c in zip(config["epalm"]["tasks"], epalm_checkpoints(wildcards)))


def epalm_evaluate_params(wildcards):
    return settings_json("EpalmEvaluate")


# --- released checkpoints (epalm.init_from; vltune import-checkpoint) ------------------------------
def epalm_imports():
    return (config.get("epalm") or {}).get("init_from", {})


def imported_epalm_source(wildcards):
    return epalm_imports()[wildcards.method][wildcards.task]


def import_epalm_params(wildcards):
    return settings_json("ImportCheckpoint", method_config=config["epalm"]["method_configs"].get(wildcards.method, {}))


def imported_epalm_checkpoints(wildcards):
    return expand(rules.import_epalm.output.checkpoint, method=wildcards.method, task=epalm_imports()[wildcards.method])


def imported_epalm_checkpoint_args(wildcards):
    """`task=dir` items of the imported checkpoints, each quoted."""
    return " ".join(shlex.quote(f"{t}={c}") for t, c in zip(epalm_imports()[wildcards.method],
                                                            imported_epalm_checkpoints(wildcards)))


def epalm_trained():
    """The eP-ALM methods `all` trains (an imported one, epalm.init_from, is not), or none."""
    e = config.get("epalm")
    if not e or not (e["methods"] or epalm_imports()):
        return []
    return [m for m in e["methods"] if m not in epalm_imports()]


def epalm_metrics():
    e = config.get("epalm")
    if not e or not (e["methods"] or epalm_imports()):
        return []
    return (expand(rules.evaluate_epalm.output.metrics, method=epalm_trained(), seed=e["seeds"])
            + expand(rules.evaluate_imported_epalm.output.metrics, method=sorted(epalm_imports())))


def epalm_ledgers():
    """Ledger records of the eP-ALM jobs `all` runs."""
    e = config.get("epalm")
    if not e or not (e["methods"] or epalm_imports()):
        return []
    trained = {"method": epalm_trained(), "seed": e["seeds"]}
    imported = [(m, t) for m, tasks in sorted(epalm_imports().items()) for t in tasks]
    return [
        *([rules.extract_perception.output.ledger] if epalm_cached() else []),
        *expand(rules.finetune_epalm.output.ledger, **trained, task=e["tasks"]),
        *expand(rules.evaluate_epalm.output.ledger, **trained),
        *expand(rules.import_epalm.output.ledger, zip, method=[m for m, _ in imported], task=[t for _, t in imported]),
        *expand(rules.evaluate_imported_epalm.output.ledger, method=sorted(epalm_imports())),
    ]
