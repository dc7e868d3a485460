# Backbones: the tokenizer, the tiny backbones pretrained on the world, or published ones fetched.


include: "helpers/backbones.smk"


# Byte-level BPE on the train split's text, saved as a PreTrainedTokenizerFast.
rule train_tokenizer:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        tokenizer=directory("resources/backbones/tokenizer"),
        ledger="results/ledger/train_tokenizer/tokenizer.json",
    params:
        data=tables_dir,
        tok=settings_json("TokenizerTrain"),
    log:
        "logs/train_tokenizer/tokenizer.log",
    benchmark:
        "benchmarks/train_tokenizer/tokenizer.tsv"
    threads: 1
    resources:
        **cpu_job(mem_mb=2000, runtime=10),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} train-tokenizer --data {params.data:q} --out {output.tokenizer:q}"
        " --params {params.tok:q} > {log} 2>&1"


# The tiny backbones pretrained here (those with no `published`), one rule each, named after the
# key: CLIP (image + text towers, contrastive loss on image–caption pairs), BART (a denoising LM,
# text infilling) and T5 (span corruption, unique sentinels), all on the world's data.
for kind in PRETRAINED_HERE:

    rule:
        name:
            f"pretrain_{kind}"
        input:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            tokenizer="resources/backbones/tokenizer",
        output:
            backbone=report(
                directory(f"resources/backbones/{NAMES[kind]}"),
                patterns=["train_{name}.json"],
                caption="../report/backbone.rst",
                category=CATEGORY["backbones"],
                labels={"backbone": NAMES[kind], "file": "train_{name}.json"},
            ),
            ledger=f"results/ledger/pretrain_{kind}/{NAMES[kind]}.json",
        params:
            data=tables_dir,
            hp=backbone_params(kind),
            resume=f"resume/pretrain_{kind}/{NAMES[kind]}",
            # A param, not an f-string in `shell`: Snakemake evaluates the shell string when the
            # job runs, after the loop has moved on, so a loop variable there names the last kind.
            command=f"pretrain-{kind}",
        log:
            f"logs/pretrain_{kind}/{NAMES[kind]}.log",
        benchmark:
            f"benchmarks/pretrain_{kind}/{NAMES[kind]}.tsv"
        threads: config["resources"]["threads"]
        priority: 1  # on the main-budget VL-PET run's path, the DAG's longest: start first
        resources:
            **gpu_job(TRAIN_GPUS),
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} {params.command}"
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
        **cpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} fetch-backbone --name {wildcards.backbone:q} --out {output.backbone:q}"
        " --params {params.hp:q} > {log} 2>&1"
