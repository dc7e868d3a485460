# eP-ALM experiment: a frozen OPT and a frozen ViT, both pretrained unimodally on the world (the LM
# on its text, the ViT on its images' scene tags), joined only by a linear connection (+ a soft
# prompt) trained per task. The ViT's per-block [CLS] vectors are cached once (extract_perception);
# with epalm.perception: recomputed (or augment on), training runs the encoder every step instead.

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
    b = config["backbones"]["vit"]
    return as_json({k: b[k] for k in ("arch", "train", "batch_size", "patch_loss_weight")})


def perception_params(wildcards=None):
    return as_json({**EXTRACTION, "normalize": config["epalm"]["normalize"]})


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
    e = config["epalm"]
    keys = ("batch_size", "loss_weight", "dropout", "augment", "normalize")
    return as_json({**{k: e[k] for k in keys}, "train": e["train"],
                    "method_config": e["method_configs"].get(wildcards.method, {})})


def epalm_checkpoints(wildcards):
    return expand(rules.finetune_epalm.output.checkpoint, method=wildcards.method, seed=wildcards.seed,
                  task=config["epalm"]["tasks"])


def epalm_checkpoint_args(wildcards):
    """`task=dir` items for evaluate-epalm, each quoted."""
    return " ".join(shlex.quote(f"{t}={c}") for t, c in zip(config["epalm"]["tasks"], epalm_checkpoints(wildcards)))


def epalm_evaluate_params(wildcards):
    return as_json({"split": config["evaluate"]["split"], **config["epalm"]["evaluate"]})


# --- released checkpoints (epalm.init_from; vltune import-checkpoint) ------------------------------
def epalm_imports():
    return (config.get("epalm") or {}).get("init_from", {})


def imported_epalm_source(wildcards):
    return epalm_imports()[wildcards.method][wildcards.task]


def import_epalm_params(wildcards):
    return as_json({"method_config": config["epalm"]["method_configs"].get(wildcards.method, {})})


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


if published("opt") is None:

    rule pretrain_opt:
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            tokenizer="resources/backbones/tokenizer",
        output:
            backbone=report(
                directory(f"resources/backbones/{OPT}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": OPT, "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_opt/{OPT}.json",
        params:
            data=tables_dir,
            hp=backbone_params("opt"),
            resume=f"resume/pretrain_opt/{OPT}",
        log:
            f"logs/pretrain_opt/{OPT}.log",
        benchmark:
            f"benchmarks/pretrain_opt/{OPT}.tsv"
        threads: epalm_threads
        resources:
            **gpu_job(),
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-opt --data {params.data:q} --tokenizer {input.tokenizer:q}"
            " --out {output.backbone:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


# Unimodal: trained on image labels (the scene's tags) only, never on text.
if published("vit") is None:

    rule pretrain_vit:
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        output:
            backbone=report(
                directory(f"resources/backbones/{VIT}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": VIT, "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_vit/{VIT}.json",
        params:
            data=tables_dir,
            hp=vit_params,
            resume=f"resume/pretrain_vit/{VIT}",
        log:
            f"logs/pretrain_vit/{VIT}.log",
        benchmark:
            f"benchmarks/pretrain_vit/{VIT}.tsv"
        threads: epalm_threads
        resources:
            **gpu_job(),
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-vit --data {params.data:q} --out {output.backbone:q}"
            " --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


rule extract_perception:
    input:
        tables=[f"{DATA}/images.arrow"],
        encoder=f"resources/backbones/{VIT}",
    output:
        store=directory(PERCEPTION),
        ledger=f"results/ledger/extract_perception/{VIT}/{DATASET}.json",
    params:
        data=tables_dir,
        hp=perception_params,
    log:
        f"logs/extract_perception/{VIT}/{DATASET}.log",
    benchmark:
        f"benchmarks/extract_perception/{VIT}/{DATASET}.tsv"
    threads: epalm_threads
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} extract-perception --data {params.data:q} --encoder {input.encoder:q}"
        " --out {output.store:q} --params {params.hp:q} > {log} 2>&1"


# One run per task, as the reference's configs (ePALM_vqa / _caption / _gqa).
rule finetune_epalm:
    input:
        unpack(epalm_inputs),
    output:
        checkpoint=report(
            directory("results/epalm/{method}/seed{seed}/{task}/checkpoint"),
            patterns=["train_{name}.json"],
            caption="../report/epalm_train_log.rst",
            category=CATEGORY["epalm"],
            subcategory="{task}",
            labels={"method": "{method}", "seed": "{seed}", "task": "{task}"},
        ),
        ledger="results/ledger/finetune_epalm/{method}/seed{seed}/{task}.json",
    params:
        data=tables_dir,
        hp=epalm_train_params,
        perception=perception_arg,
        resume="resume/finetune_epalm/{method}/seed{seed}/{task}",
    log:
        "logs/finetune_epalm/{method}/seed{seed}/{task}.log",
    benchmark:
        "benchmarks/finetune_epalm/{method}/seed{seed}/{task}.tsv"
    threads: epalm_threads
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} finetune-epalm --data {params.data:q} --lm {input.lm:q} --encoder {input.encoder:q}"
        " {params.perception} --task {wildcards.task:q} --out {output.checkpoint:q} --method {wildcards.method:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


rule evaluate_epalm:
    input:
        unpack(epalm_inputs),
        checkpoints=epalm_checkpoints,
    output:
        metrics=report(
            "results/epalm/{method}/seed{seed}/metrics.json",
            caption="../report/epalm_metrics.rst",
            category=CATEGORY["epalm"],
            subcategory="metrics",
            labels={"method": "{method}", "seed": "{seed}"},
        ),
        ledger="results/ledger/evaluate_epalm/{method}/seed{seed}.json",
        predictions="results/epalm/{method}/seed{seed}/predictions.json",
    params:
        data=tables_dir,
        hp=epalm_evaluate_params,
        perception=perception_arg,
        checkpoints=epalm_checkpoint_args,
        experiment="epalm",
    log:
        "logs/evaluate_epalm/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_epalm/{method}/seed{seed}.tsv"
    threads: epalm_threads
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} evaluate-epalm --checkpoints {params.checkpoints} --data {params.data:q}"
        " --lm {input.lm:q} --encoder {input.encoder:q} {params.perception} --experiment {params.experiment:q}"
        " --params {params.hp:q} --out {output.metrics:q} --predictions {output.predictions:q} > {log} 2>&1"


# Released eP-ALM checkpoints (epalm.init_from) instead of training: each task's connection and
# prompt mapped onto vltune's names, then scored by the evaluation rule above.
rule import_epalm:
    input:
        source=imported_epalm_source,
        lm=f"resources/backbones/{OPT}",
        encoder=f"resources/backbones/{VIT}",
    output:
        checkpoint=directory("results/epalm/{method}/imported/{task}/checkpoint"),
        ledger="results/ledger/import_epalm/{method}/imported/{task}.json",
    params:
        hp=import_epalm_params,
    log:
        "logs/import_epalm/{method}/{task}.log",
    benchmark:
        "benchmarks/import_epalm/{method}/{task}.tsv"
    threads: 1
    resources:
        **cpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --ledger {output.ledger:q} import-checkpoint --from epalm {input.source:q}"
        " --out {output.checkpoint:q} --method {wildcards.method:q} --lm {input.lm:q} --encoder {input.encoder:q}"
        " --task {wildcards.task:q} --params {params.hp:q} > {log} 2>&1"


use rule evaluate_epalm as evaluate_imported_epalm with:
    input:
        unpack(epalm_inputs),
        checkpoints=imported_epalm_checkpoints,
    output:
        metrics=report(
            "results/epalm/{method}/imported/metrics.json",
            caption="../report/epalm_metrics.rst",
            category=CATEGORY["epalm"],
            subcategory="metrics",
            labels={"method": "{method}", "seed": "imported"},
        ),
        ledger="results/ledger/evaluate_epalm/{method}/imported.json",
        predictions="results/epalm/{method}/imported/predictions.json",
    params:
        data=tables_dir,
        hp=epalm_evaluate_params,
        perception=perception_arg,
        checkpoints=imported_epalm_checkpoint_args,
        experiment="epalm-imported",
    log:
        "logs/evaluate_epalm/{method}/imported.log",
    benchmark:
        "benchmarks/evaluate_epalm/{method}/imported.tsv"
