# Model-merging study (Sung et al., arXiv 2304.14933): seed pretraining → modality-specific pretraining → merge the
# experts (interpolation, arithmetic, RegMean, TIES, DARE) → fine-tune + evaluate every init; the
# modality-agnostic baseline is pretrained for the same total steps.


include: "helpers/merging.smk"


# Modality-agnostic "seed" pretraining (MLM + ITC + ITM), from random weights or the ViT
# (merging.pretrain.image_init: the paper starts from BEiT).
rule seed_pretrain:
    input:
        unpack(seed_inputs),
    output:
        model=directory("results/merging/pretrain/seed"),
        ledger="results/ledger/seed_pretrain/seed.json",
    params:
        data=tables_dir,
        hp=vlmo_pretrain_params("seed"),
        init=vlmo_init_arg,
        resume="resume/seed_pretrain",
    log:
        "logs/seed_pretrain/seed.log",
    benchmark:
        "benchmarks/seed_pretrain/seed.tsv"
    threads: config["merging"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-vlmo --data {params.data:q} --tokenizer {input.tokenizer:q} --mode agnostic"
        " {params.init} --stage seed --out {output.model:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


# Modality-specific pretraining from the seed: every expert starts as a copy of the shared weights.
rule specific_pretrain:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
        init=rules.seed_pretrain.output.model,
    output:
        model=directory("results/merging/pretrain/specific"),
        ledger="results/ledger/specific_pretrain/specific.json",
    params:
        data=tables_dir,
        hp=vlmo_pretrain_params("specific"),
        resume="resume/specific_pretrain",
    log:
        "logs/specific_pretrain/specific.log",
    benchmark:
        "benchmarks/specific_pretrain/specific.tsv"
    threads: config["merging"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-vlmo --data {params.data:q} --tokenizer {input.tokenizer:q} --mode specific"
        " --init {input.init:q} --stage specific --out {output.model:q} --params {params.hp:q}"
        " --resume-dir {params.resume:q} > {log} 2>&1"


# The baseline: modality-agnostic for the same total steps (from the seed, or from scratch).
rule agnostic_pretrain:
    input:
        unpack(agnostic_inputs),
    output:
        model=directory("results/merging/pretrain/agnostic"),
        ledger="results/ledger/agnostic_pretrain/agnostic.json",
    params:
        data=tables_dir,
        hp=vlmo_pretrain_params("agnostic"),
        init=vlmo_init_arg,
        resume="resume/agnostic_pretrain",
    log:
        "logs/agnostic_pretrain/agnostic.log",
    benchmark:
        "benchmarks/agnostic_pretrain/agnostic.tsv"
    threads: config["merging"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-vlmo --data {params.data:q} --tokenizer {input.tokenizer:q} --mode agnostic"
        " {params.init} --stage agnostic --out {output.model:q} --params {params.hp:q}"
        " --resume-dir {params.resume:q} > {log} 2>&1"


# RegMean's Gram matrices: Xᵀ X of every expert Linear's inputs over the task's validation split.
rule collect_grams:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        tokenizer="resources/backbones/tokenizer",
        model=rules.specific_pretrain.output.model,
    output:
        grams="results/merging/grams/{task}.safetensors",
        ledger="results/ledger/collect_grams/{task}.json",
    params:
        data=tables_dir,
        split=config["merging"]["grams"]["split"],
        hp=settings_json("CollectGrams"),
    log:
        "logs/collect_grams/{task}.log",
    benchmark:
        "benchmarks/collect_grams/{task}.tsv"
    threads: config["merging"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} collect-grams --model {input.model:q} --data {params.data:q}"
        " --tokenizer {input.tokenizer:q} --task {wildcards.task:q} --split {params.split:q} --params {params.hp:q}"
        " --out {output.grams:q} > {log} 2>&1"


# Merge the experts of the specific model into a modality-agnostic init (+ diagnostics.json).
rule merge_experts:
    input:
        unpack(merge_inputs),
    output:
        model=directory("results/merging/merged/{merge}"),
        ledger="results/ledger/merge_experts/{merge}.json",
    params:
        method=merge_method,
        args=merge_args,
    log:
        "logs/merge_experts/{merge}.log",
    benchmark:
        "benchmarks/merge_experts/{merge}.tsv"
    threads: 1
    resources:
        **cpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --ledger {output.ledger:q} merge-experts --method {params.method:q} --specific {input.specific:q}"
        " --seed {input.seed:q} {params.args} --out {output.model:q} > {log} 2>&1"


# Fine-tune one init on every task (full fine-tuning) and evaluate it: one row of the report.
rule finetune_vlmo:
    input:
        unpack(finetune_vlmo_inputs),
    output:
        metrics=report(
            "results/merging/finetune/{init}/seed{seed}/metrics.json",
            caption="../report/merging_metrics.rst",
            category=CATEGORY["merge"],
            subcategory="fine-tuned inits",
            labels={"init": "{init}", "seed": "{seed}"},
        ),
        checkpoints=directory("results/merging/finetune/{init}/seed{seed}/checkpoints"),
        ledger="results/ledger/finetune_vlmo/{init}/seed{seed}.json",
    params:
        data=tables_dir,
        tasks=config["merging"]["tasks"],
        hp=vlmo_finetune_params(),
        out=metrics_dir,
        resume="resume/finetune_vlmo/{init}/seed{seed}",
    log:
        "logs/finetune_vlmo/{init}/seed{seed}.log",
    benchmark:
        "benchmarks/finetune_vlmo/{init}/seed{seed}.tsv"
    threads: config["merging"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} finetune-vlmo --inits {input.inits:q} --tasks {params.tasks:q}"
        " --name {wildcards.init:q} --seed {wildcards.seed:q} --data {params.data:q} --tokenizer {input.tokenizer:q}"
        " --params {params.hp:q} --out {params.out:q} --resume-dir {params.resume:q} > {log} 2>&1"
