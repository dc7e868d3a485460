# eP-ALM experiment: a frozen OPT and a frozen ViT, both pretrained unimodally on the world (the LM
# on its text, the ViT on its images' scene tags), joined only by a linear connection (+ a soft
# prompt) trained per task. The ViT's per-block [CLS] vectors are cached once (extract_perception);
# with epalm.perception: recomputed (or augment on), training runs the encoder every step instead.


include: "helpers/epalm.smk"


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
