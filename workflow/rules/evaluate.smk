# Baselines every method must beat: per-question-type and overall majority, best constant caption.


rule baselines:
    input:
        tables=expand(f"{DATA}/{{table}}.arrow", table=TABLES),
    output:
        metrics=report(
            f"results/baselines/{DATASET}/metrics.json",
            caption="../report/baselines.rst",
            category=CATEGORY["evaluation"],
            subcategory="baselines",
            labels={"dataset": DATASET, "file": "metrics.json"},
        ),
        ledger=f"results/ledger/baselines/{DATASET}.json",
    params:
        data=tables_dir,
    log:
        f"logs/baselines/{DATASET}.log",
    benchmark:
        f"benchmarks/baselines/{DATASET}.tsv"
    threads: 1
    resources:
        **cpu_job(mem_mb=4000, runtime=20),
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune --ledger {output.ledger:q} baselines --data {params.data:q} --out {output.metrics:q} > {log} 2>&1"
