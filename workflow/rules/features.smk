# Features: CLIP grid / [CLS] / pooled vectors of every image, in the sharded feature store.


rule extract_features:
    input:
        tables=[f"{DATA}/images.arrow"],
        backbone=f"resources/backbones/{CLIP}",
    output:
        directory(FEATURES),
    params:
        data=tables_dir,
        hp=as_json(config["features"]),
    log:
        f"logs/extract_features/{CLIP}/{DATASET}.log",
    benchmark:
        f"benchmarks/extract_features/{CLIP}/{DATASET}.tsv"
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=1,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --threads {threads} extract-features --data {params.data:q} --backbone {input.backbone:q}"
        " --out {output:q} --params {params.hp:q} > {log} 2>&1"
