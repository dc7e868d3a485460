# Data: the canonical Arrow tables of the dataset (here the synthetic shapes world).


include: "helpers/data.smk"


# Generate the synthetic world deterministically from its seed.
rule make_world:
    output:
        tables=expand("resources/data/shapes/{table}.arrow", table=TABLES),
        manifest="resources/data/shapes/tables.json",
        info=report(
            "resources/data/shapes/world.json",
            caption="../report/world.rst",
            category=CATEGORY["data"],
            labels={"dataset": "shapes", "file": "world.json"},
        ),
        ledger="results/ledger/make_world/shapes.json",
    params:
        world=world_params(),
        out=world_dir,
    log:
        "logs/make_world/shapes.log",
    benchmark:
        "benchmarks/make_world/shapes.tsv"
    threads: 1
    resources:
        **cpu_job(mem_mb=2000, runtime=10),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} make-world --out {params.out:q} --params {params.world:q} > {log} 2>&1"


# Real data (dataset != shapes): each official source is downloaded and verified against its shipped
# manifest (a local mirror's files are verified where they lie, not copied; archives stay packed),
# then all of them are converted into the dataset's five canonical tables, the converter finding
# each source's files through its download.json.
if DATASET != "shapes":

    rule download:
        wildcard_constraints:
            source="coco2014|flickr30k|vqav2|gqa|nlvr2",  # the shipped manifests
        output:
            record="resources/raw/{source}/download.json",
            ledger="results/ledger/download/{source}.json",
        params:
            hp=download_params,
            manifest=download_manifest,
            out=record_dir,
        log:
            "logs/download/{source}.log",
        benchmark:
            "benchmarks/download/{source}.tsv"
        threads: 1
        resources:
            **cpu_job(mem_mb=2000),
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --ledger {output.ledger:q} download --dataset {params.manifest:q} --out {params.out:q}"
            " --params {params.hp:q} > {log} 2>&1"

    rule convert:
        input:
            records=expand("resources/raw/{source}/download.json", source=config["download"]["sources"]),
        output:
            tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
            manifest=f"{DATA}/tables.json",
            info=report(
                f"{DATA}/convert.json",
                caption="../report/convert.rst",
                category=CATEGORY["data"],
                labels={"dataset": DATASET, "file": "convert.json"},
            ),
            ledger=f"results/ledger/convert/{DATASET}.json",
        params:
            sources=convert_sources,
            hp=settings_json("Convert"),
            out=world_dir,
        log:
            f"logs/convert/{DATASET}.log",
        benchmark:
            f"benchmarks/convert/{DATASET}.tsv"
        threads: 1
        resources:
            **cpu_job(),
        conda:
            "../../envs/vltune.yaml"
        shell:
            "vltune --ledger {output.ledger:q} convert --source {params.sources} --out {params.out:q}"
            " --params {params.hp:q} > {log} 2>&1"
