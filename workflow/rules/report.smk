# Report: summary.csv (one row per run and baseline), the papers' table, a score plot and
# a Pareto plot (trainable % vs Avg).


rule report:
    input:
        metrics=report_inputs(),
    output:
        csv=report(
            "results/report/summary.csv",
            caption="../report/summary.rst",
            category="Evaluation",
            labels={"table": "summary (CSV)"},
        ),
        md=report(
            "results/report/summary.md",
            caption="../report/summary_md.rst",
            category="Evaluation",
            labels={"table": "results (Markdown)"},
        ),
        plot=report(
            "results/report/scores.png",
            caption="../report/scores.rst",
            category="Evaluation",
            labels={"figure": "scores per task"},
        ),
        pareto=report(
            "results/report/pareto.png",
            caption="../report/pareto.rst",
            category="Evaluation",
            labels={"figure": "trainable % vs Avg"},
        ),
        merging=report(
            "results/report/merging.png",
            caption="../report/merging.rst",
            category="Merging",
            labels={"figure": "score vs interpolation ratio / arithmetic λ"},
        ),
    params:
        out_dir=report_dir,
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/vltune.yaml"
    shell:
        "vltune report --metrics {input.metrics:q} --out-dir {params.out_dir:q} > {log} 2>&1"
