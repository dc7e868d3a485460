# Data: the canonical Arrow tables of the dataset (here the synthetic shapes world).


# Generate the synthetic world deterministically from its seed.
rule make_world:
    output:
        tables=expand("resources/data/shapes/{table}.arrow", table=TABLES),
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
        mem_mb=2000,
        runtime=10,
        slurm_partition=RES["cpu_partition"],
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} make-world --out {params.out:q} --params {params.world:q} > {log} 2>&1"
