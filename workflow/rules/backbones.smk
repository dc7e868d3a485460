# Backbones the pipeline pretrains itself on the world: tokenizer, tiny CLIP, tiny BART, tiny T5.


# Byte-level BPE on the train split's text, saved as a PreTrainedTokenizerFast.
rule train_tokenizer:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        tokenizer=directory("resources/backbones/tokenizer"),
        ledger="results/ledger/train_tokenizer/tokenizer.json",
    params:
        data=tables_dir,
        tok=as_json(config["tokenizer"]),
    log:
        "logs/train_tokenizer/tokenizer.log",
    benchmark:
        "benchmarks/train_tokenizer/tokenizer.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        slurm_partition=RES["cpu_partition"],
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} train-tokenizer --data {params.data:q} --out {output.tokenizer:q}"
        " --params {params.tok:q} > {log} 2>&1"


# Tiny CLIP (image + text towers) trained with the contrastive loss on image–caption pairs.
if published("clip") is None:

    rule pretrain_clip:
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            tokenizer="resources/backbones/tokenizer",
        output:
            backbone=report(
                directory(f"resources/backbones/{CLIP}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": CLIP, "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_clip/{CLIP}.json",
        params:
            data=tables_dir,
            hp=backbone_params("clip"),
            resume=f"resume/pretrain_clip/{CLIP}",
        log:
            f"logs/pretrain_clip/{CLIP}.log",
        benchmark:
            f"benchmarks/pretrain_clip/{CLIP}.tsv"
        threads: config["resources"]["threads"]
        priority: 1  # on the main-budget VL-PET run's path, the DAG's longest: start first
        resources:
            mem_mb=RES["mem_mb"],
            runtime=attempt_runtime,
            gpu=TRAIN_GPUS,
            cpus_per_gpu=cpus_per_gpu(TRAIN_GPUS),
            gpu_model=RES["gpu_model"],
            slurm_partition=RES["gpu_partition"],
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-clip"
            " --data {params.data:q} --tokenizer {input.tokenizer:q} --out {output.backbone:q} --params {params.hp:q}"
            " --resume-dir {params.resume:q} > {log} 2>&1"


# Tiny BART pretrained as a denoising LM (text infilling) on the world's text.
if published("bart") is None:

    rule pretrain_bart:
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            tokenizer="resources/backbones/tokenizer",
        output:
            backbone=report(
                directory(f"resources/backbones/{BART}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": BART, "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_bart/{BART}.json",
        params:
            data=tables_dir,
            hp=backbone_params("bart"),
            resume=f"resume/pretrain_bart/{BART}",
        log:
            f"logs/pretrain_bart/{BART}.log",
        benchmark:
            f"benchmarks/pretrain_bart/{BART}.tsv"
        threads: config["resources"]["threads"]
        priority: 1  # on the main-budget VL-PET run's path, the DAG's longest: start first
        resources:
            mem_mb=RES["mem_mb"],
            runtime=attempt_runtime,
            gpu=TRAIN_GPUS,
            cpus_per_gpu=cpus_per_gpu(TRAIN_GPUS),
            gpu_model=RES["gpu_model"],
            slurm_partition=RES["gpu_partition"],
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-bart"
            " --data {params.data:q} --tokenizer {input.tokenizer:q} --out {output.backbone:q} --params {params.hp:q}"
            " --resume-dir {params.resume:q} > {log} 2>&1"


# Tiny T5 pretrained as a span-corruption denoiser (unique sentinels) on the world's text.
if published("t5") is None:

    rule pretrain_t5:
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            tokenizer="resources/backbones/tokenizer",
        output:
            backbone=report(
                directory(f"resources/backbones/{T5}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": T5, "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_t5/{T5}.json",
        params:
            data=tables_dir,
            hp=backbone_params("t5"),
            resume=f"resume/pretrain_t5/{T5}",
        log:
            f"logs/pretrain_t5/{T5}.log",
        benchmark:
            f"benchmarks/pretrain_t5/{T5}.tsv"
        threads: config["resources"]["threads"]
        priority: 1  # on the main-budget VL-PET run's path, the DAG's longest: start first
        resources:
            mem_mb=RES["mem_mb"],
            runtime=attempt_runtime,
            gpu=TRAIN_GPUS,
            cpus_per_gpu=cpus_per_gpu(TRAIN_GPUS),
            gpu_model=RES["gpu_model"],
            slurm_partition=RES["gpu_partition"],
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} pretrain-t5"
            " --data {params.data:q} --tokenizer {input.tokenizer:q} --out {output.backbone:q} --params {params.hp:q}"
            " --resume-dir {params.resume:q} > {log} 2>&1"


# Published backbones (backbones.<key>.published): loaded from the HF cache / timm / a local folder,
# honouring HF_HUB_OFFLINE, and saved under resources/backbones/<name> like a pretrained one.
rule fetch_backbone:
    output:
        backbone=directory("resources/backbones/{backbone}"),
        ledger="results/ledger/fetch_backbone/{backbone}.json",
    wildcard_constraints:
        backbone="|".join(re.escape(name) for name in PUBLISHED) or "(?!)",  # (?!) matches nothing
    params:
        hp=fetch_params,
    log:
        "logs/fetch_backbone/{backbone}.log",
    benchmark:
        "benchmarks/fetch_backbone/{backbone}.tsv"
    threads: 1
    resources:
        mem_mb=RES["mem_mb"],
        runtime=attempt_runtime,
        slurm_partition=RES["cpu_partition"],
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} fetch-backbone --name {wildcards.backbone:q} --out {output.backbone:q}"
        " --params {params.hp:q} > {log} 2>&1"
