# Report: summary.csv (one row per run and baseline), the papers' table, a score plot and
# a Pareto plot (trainable % vs Avg); the run ledger of every job; the rule graph.


include: "helpers/report.smk"


rule report:
    input:
        metrics=report_metrics,
        ledgers=ledgers,
    output:
        csv=report(
            "results/report/summary.csv",
            caption="../report/summary.rst",
            category=CATEGORY["evaluation"],
            labels={"table": "summary (CSV)"},
        ),
        md=report(
            "results/report/summary.md",
            caption="../report/summary_md.rst",
            category=CATEGORY["evaluation"],
            labels={"table": "results (Markdown)"},
        ),
        plot=report(
            "results/report/scores.png",
            caption="../report/scores.rst",
            category=CATEGORY["evaluation"],
            labels={"figure": "scores per task"},
        ),
        pareto=report(
            "results/report/pareto.png",
            caption="../report/pareto.rst",
            category=CATEGORY["evaluation"],
            labels={"figure": "trainable % vs Avg"},
        ),
        merging=report(
            "results/report/merging.png",
            caption="../report/merging.rst",
            category=CATEGORY["merge"],
            labels={"figure": "score vs interpolation ratio / arithmetic λ"},
        ),
        ledger=report(
            "results/report/ledger.csv",
            caption="../report/ledger.rst",
            category=CATEGORY["provenance"],
            labels={"table": "run ledger"},
        ),
    params:
        out_dir=report_dir,
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune report --metrics {input.metrics:q} --ledgers {input.ledgers:q} --out-dir {params.out_dir:q} > {log} 2>&1"


# The rule graph of this config (what `snakemake --rulegraph` prints), drawn as an SVG.
rule rulegraph:
    output:
        svg=report(
            "results/report/rulegraph.svg",
            caption="../report/rulegraph.rst",
            category=CATEGORY["provenance"],
            labels={"figure": "rule graph"},
        ),
    params:
        snakefile=workflow.main_snakefile,
        # The resolved config: the graph is redrawn when it changes.
        config=as_json(config),
    log:
        "logs/rulegraph/rulegraph.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune rulegraph --snakefile {params.snakefile:q} --config {params.config:q} --out {output.svg:q} > {log} 2>&1"
