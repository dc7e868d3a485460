# VL-PET experiment: VL-BART / VL-T5 multitask fine-tuning per (family, method, training steps, seed),
# then evaluation. The steps are in the path so a short-budget run never overwrites a full-length one.


include: "helpers/vlpet.smk"


rule finetune_vlbart:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
        features=FEATURES,
        backbone=family_backbone,
    output:
        checkpoint=report(
            directory("results/vlpet/{family}/{method}/steps{steps}/seed{seed}/checkpoint"),
            patterns=["train_{name}.json"],
            caption="../report/train_log.rst",
            category=CATEGORY["pet"],
            subcategory="{family}",
            labels=RUN_LABELS,
        ),
        ledger="results/ledger/finetune_vlbart/{family}/{method}/steps{steps}/seed{seed}.json",
    params:
        data=tables_dir,
        hp=finetune_params,
        # Resume state lives outside the declared outputs: Snakemake deletes those before a re-run.
        resume="resume/finetune_vlbart/{family}/{method}/steps{steps}/seed{seed}",
    log:
        "logs/finetune_vlbart/{family}/{method}/steps{steps}/seed{seed}.log",
    benchmark:
        "benchmarks/finetune_vlbart/{family}/{method}/steps{steps}/seed{seed}.tsv"
    threads: config["resources"]["threads"]
    priority: main_budget_first
    resources:
        **gpu_job(TRAIN_GPUS),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} finetune-vlbart"
        " --data {params.data:q} --features {input.features:q} --backbone {input.backbone:q} --family {wildcards.family:q} --out {output.checkpoint:q} --method {wildcards.method:q}"
        " --seed {wildcards.seed:q} --params {params.hp:q} --resume-dir {params.resume:q} > {log} 2>&1"


rule evaluate_vlbart:
    input:
        checkpoint="results/vlpet/{family}/{method}/steps{steps}/seed{seed}/checkpoint",
        # A PET checkpoint holds only its trainable tensors; it is applied to this backbone.
        backbone=family_backbone,
        features=FEATURES,
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        metrics=report(
            "results/vlpet/{family}/{method}/steps{steps}/seed{seed}/metrics.json",
            caption="../report/metrics.rst",
            category=CATEGORY["evaluation"],
            subcategory="{family}",
            labels=RUN_LABELS,
        ),
        ledger="results/ledger/evaluate_vlbart/{family}/{method}/steps{steps}/seed{seed}.json",
        predictions="results/vlpet/{family}/{method}/steps{steps}/seed{seed}/predictions.json",
    params:
        data=tables_dir,
        # One experiment per family (and budget) in the report, like the paper's VL-BART and VL-T5 tables.
        experiment=vlpet_experiment,
        hp=evaluate_params,
    log:
        "logs/evaluate_vlbart/{family}/{method}/steps{steps}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_vlbart/{family}/{method}/steps{steps}/seed{seed}.tsv"
    threads: config["resources"]["threads"]
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} evaluate-vlbart"
        " --checkpoint {input.checkpoint:q} --backbone {input.backbone:q} --data {params.data:q}"
        " --features {input.features:q} --experiment {params.experiment:q} --params {params.hp:q}"
        " --out {output.metrics:q} --predictions {output.predictions:q} > {log} 2>&1"


# A released VL-PET checkpoint (vlpet.init_from) instead of fine-tuning: its official names mapped
# onto vltune's, then scored by the evaluation rule above on the imported folders.
rule import_vlbart:
    input:
        source=imported_vlpet_source,
        backbone=family_backbone,
        features=FEATURES,
    output:
        checkpoint=directory("results/vlpet/{family}/{method}/imported/checkpoint"),
        backbone=directory("results/vlpet/{family}/{method}/imported/backbone"),
        ledger="results/ledger/import_vlbart/{family}/{method}/imported.json",
    params:
        hp=import_vlpet_params,
    log:
        "logs/import_vlbart/{family}/{method}.log",
    benchmark:
        "benchmarks/import_vlbart/{family}/{method}.tsv"
    threads: 1
    resources:
        **cpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --ledger {output.ledger:q} import-checkpoint --from vlpet {input.source:q}"
        " --family {wildcards.family:q} --out {output.checkpoint:q} --backbone-out {output.backbone:q}"
        " --method {wildcards.method:q} --backbone {input.backbone:q} --features {input.features:q}"
        " --params {params.hp:q} > {log} 2>&1"


use rule evaluate_vlbart as evaluate_imported_vlbart with:
    input:
        checkpoint="results/vlpet/{family}/{method}/imported/checkpoint",
        # the released model's own LM, which the imported adapters apply to
        backbone="results/vlpet/{family}/{method}/imported/backbone",
        features=FEATURES,
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        metrics=report(
            "results/vlpet/{family}/{method}/imported/metrics.json",
            caption="../report/metrics.rst",
            category=CATEGORY["evaluation"],
            subcategory="{family}",
            labels={"method": "{method}", "seed": "imported", "steps": "imported"},
        ),
        ledger="results/ledger/evaluate_vlbart/{family}/{method}/imported.json",
        predictions="results/vlpet/{family}/{method}/imported/predictions.json",
    params:
        data=tables_dir,
        experiment=imported_vlpet_experiment,
        hp=imported_evaluate_params,
    log:
        "logs/evaluate_vlbart/{family}/{method}/imported.log",
    benchmark:
        "benchmarks/evaluate_vlbart/{family}/{method}/imported.tsv"
