# Features: CLIP grid / [CLS] / pooled vectors of every image, in the sharded feature store.


include: "helpers/features.smk"


rule extract_features:
    input:
        tables=[f"{DATA}/images.arrow"],
        backbone=f"resources/backbones/{CLIP}",
    output:
        features=directory(FEATURES),
        ledger=f"results/ledger/extract_features/{CLIP}/{DATASET}.json",
    params:
        data=tables_dir,
        hp=as_json(EXTRACTION),
    log:
        f"logs/extract_features/{CLIP}/{DATASET}.log",
    benchmark:
        f"benchmarks/extract_features/{CLIP}/{DATASET}.tsv"
    threads: config["resources"]["threads"]
    priority: 1  # on the main-budget VL-PET run's path (backbones.smk)
    resources:
        **gpu_job(),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} --gpus {resources.gpu} --ledger {output.ledger:q} extract-features"
        " --data {params.data:q} --backbone {input.backbone:q} --out {output.features:q} --params {params.hp:q} > {log} 2>&1"
